"""The verdict on two training recipes (class3 against class2): an interval over training runs.

The unit of replication is a training run (a seed), not a test image. Seed ``s`` trains both
recipes and scores the same test images: ``d_s = AUROC_b,s - AUROC_a,s``. The estimate is the
mean of the ``d_s`` over ``k`` seeds, and its variance has two parts:

- *training*: the spread of the ``d_s`` across seeds, ``s² / k``;
- *the shared test set*: every seed is scored on the same images, so their errors do not average
  out. DeLong's structural components (DeLong et al., 1988) give the covariance of every
  seed's delta with every other's on those images; the mean off-diagonal covariance is the part
  all seeds share. (The part each seed has alone is already in ``s²``.)

The interval is Student's t with Welch-Satterthwaite degrees of freedom: ``k - 1`` when training
dominates, the normal when the test set does. With one seed only DeLong's variance is left: an
interval about that test set, not about training. When every run of both recipes scores AUROC
1 (or the variance is 0) there is nothing to compare: a *ceiling*, never p = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, t

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Verdict:
    """``b - a`` over seeds: the per-seed deltas, their mean with a ``CONFIDENCE`` interval and
    a two-sided p, or ``ceiling`` (then the interval and p are NaN)."""

    deltas: tuple[float, ...]
    mean: float
    low: float
    high: float
    p: float
    df: float
    ceiling: bool
    p_delong: tuple[float, ...]
    """Each seed's own DeLong p: the test set's noise alone, training held fixed."""

    @property
    def seeds(self) -> int:
        return len(self.deltas)

    @property
    def median(self) -> float:
        """The median per-seed delta; NaN at the ceiling or without seeds."""
        return float(np.median(self.deltas)) if self.deltas and not self.ceiling else float("nan")

    @property
    def claim(self) -> str:
        """``better`` or ``worse`` when the interval excludes 0; ``no claim``; ``ceiling``;
        ``no data`` without a pair."""
        if self.ceiling:
            return "ceiling"
        if not self.deltas or not np.isfinite(self.low):
            return "no data"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no claim"

    def sentence(self, a: str = "class2", b: str = "class3") -> str:
        """One line for people (see :func:`sentence`)."""
        return sentence(self.claim, self.mean, self.low, self.high, self.seeds, a, b)


def sentence(
    claim: str,
    mean: float,
    low: float,
    high: float,
    seeds: int,
    a: str = "class2",
    b: str = "class3",
) -> str:
    """One line for people: the estimate, its interval, the seeds, what the interval allows."""
    if claim == "ceiling":
        return f"{b} − {a}: ceiling (every run at AUROC 1.000, or no variance: no information)"
    if claim == "no data":
        return f"{b} − {a}: no paired runs"
    what = {"better": f"{b} better", "worse": f"{b} worse", "no claim": "no claim"}[claim]
    basis = "seeds" if seeds > 1 else "seed: test-set noise only"
    return f"{b} − {a} = {mean:+.3f} [{low:+.3f}, {high:+.3f}], {seeds} {basis}: {what}"


def compare(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> Verdict:
    """The verdict on ``b - a`` from per-image scores of paired runs on one test set.

    Args:
        labels: (n,) 0 = good, 1 = defective, the same images for every run.
        scores_a, scores_b: (k, n) the scores of recipe a and recipe b, one row per seed; row
            ``s`` of both comes from seed ``s``.

    Returns:
        The :class:`Verdict`; with fewer than two images of a class, one with no seeds.
    """
    labels = np.asarray(labels)
    scores_a, scores_b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    k = len(scores_a)
    positive, negative = labels == 1, labels == 0
    if k == 0 or positive.sum() < 2 or negative.sum() < 2:
        nan = float("nan")
        return Verdict((), nan, nan, nan, nan, nan, False, ())
    # AUROCs and their covariance over the test images: rows a_1..a_k, b_1..b_k.
    aucs, covariance = _delong_covariance(np.concatenate([scores_a, scores_b]), positive, negative)
    contrast = np.hstack([-np.eye(k), np.eye(k)])
    deltas = contrast @ aucs
    delta_cov = contrast @ covariance @ contrast.T
    per_seed_p = tuple(
        _two_sided(d, v, np.inf) for d, v in zip(deltas, np.diag(delta_cov), strict=True)
    )
    nan = float("nan")
    if np.all(aucs == 1.0):
        return Verdict(tuple(deltas), nan, nan, nan, nan, nan, True, per_seed_p)
    shared = float(np.diag(delta_cov)[0]) if k == 1 else _mean_off_diagonal(delta_cov)
    training = float(np.var(deltas, ddof=1)) / k if k > 1 else 0.0
    variance = training + max(shared, 0.0)
    mean = float(deltas.mean())
    if variance <= 0:
        return Verdict(tuple(deltas), nan, nan, nan, nan, nan, True, per_seed_p)
    df = np.inf if training == 0 else variance**2 / (training**2 / (k - 1))
    half = float(t.ppf(0.5 + CONFIDENCE / 2, df)) * np.sqrt(variance)
    return Verdict(
        tuple(float(d) for d in deltas),
        mean,
        mean - half,
        mean + half,
        float(_two_sided(mean, variance, df)),
        float(df),
        False,
        per_seed_p,
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (Holm, 1979) of a family of p-values; NaNs stay NaN and do not
    count towards the family's size."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    known = np.flatnonzero(np.isfinite(p))
    order = known[np.argsort(p[known], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _delong_covariance(
    scores: np.ndarray, positive: np.ndarray, negative: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC of each row of ``scores`` (r, n) and their (r, r) covariance over test images."""
    pos, neg = scores[:, positive][:, :, None], scores[:, negative][:, None, :]
    psi = (pos > neg) + 0.5 * (pos == neg)
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)  # per positive image; per negative image
    covariance = np.cov(v10) / positive.sum() + np.cov(v01) / negative.sum()
    return v10.mean(axis=1), np.atleast_2d(covariance)


def _mean_off_diagonal(matrix: np.ndarray) -> float:
    k = len(matrix)
    return float((matrix.sum() - np.trace(matrix)) / (k * (k - 1)))


def _two_sided(estimate: float, variance: float, df: float) -> float:
    if variance <= 0:
        return float("nan")
    z = abs(estimate) / np.sqrt(variance)
    return float(2 * (norm.sf(z) if np.isinf(df) else t.sf(z, df)))
