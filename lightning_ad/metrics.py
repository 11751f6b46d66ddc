"""Detection and localisation metrics.

- image AUROC, overall and per defect type (good = 0, every defect = 1);
- pixel AUROC and AUPRO of anomaly maps against the ground-truth masks.

Comparing two recipes over training runs is :mod:`lightning_ad.verdict`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from sklearn.metrics import auc, roc_auc_score

SHIFTED_PREFIX = "test_"
"""A shifted test split's metrics are the test split's, ``test/`` read ``test_<shift>/``."""


def shifted_metric(key: str, shift: str) -> str:
    """The name of the test split's metric ``key`` (``test/auc``) on shifted split ``shift``:
    ``test_<shift>/auc``."""
    return f"{SHIFTED_PREFIX}{shift}/{key.removeprefix('test/')}"


AUPRO_MAX_FPR = 0.3
"""AUPRO integrates the per-region overlap up to this false positive rate (Bergmann et al.)."""


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image AUROC with good = 0 and every defect = 1; NaN when only one class is present."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def per_defect(defects: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """For each defect type present: the images to compare, good ones (index 0) and its own."""
    good = defects == 0
    return {
        name: good | (defects == index)
        for index, name in enumerate(names)
        if index > 0 and (defects == index).any()
    }


def auroc_per_defect(
    defects: np.ndarray, scores: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """AUROC of good (index 0 in ``names``) against each defect type alone."""
    return {
        name: auroc((defects[keep] > 0).astype(int), scores[keep])
        for name, keep in per_defect(defects, names).items()
    }


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """AUROC over every pixel of every image: (N, H, W) anomaly maps against (N, H, W) masks."""
    truth = masks.reshape(-1).astype(bool)
    if truth.all() or not truth.any():
        return float("nan")
    fpr, tpr = binned_roc(truth, maps.reshape(-1))
    return float(auc(fpr, tpr))


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = AUPRO_MAX_FPR) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr``.

    Bergmann et al., "The MVTec Anomaly Detection Dataset" (IJCV 2021), as anomalib computes
    it: each connected region of a mask counts equally, whatever its size. At a threshold, PRO
    is the mean over regions of the share of the region's pixels above it; FPR is the share of
    all defect-free pixels above it. PRO is a TPR in which each defect pixel weighs
    1 / (its region's area), so one weighted ROC curve gives the whole PRO curve.
    """
    regions = np.zeros(masks.shape, np.int64)
    offset = 0
    for i, mask in enumerate(masks):
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions[i] = np.where(labels > 0, labels + offset, 0)
        offset += count - 1
    if offset == 0 or masks.all():
        return float("nan")
    flat = regions.reshape(-1)
    weight = 1.0 / np.bincount(flat)[flat]
    fpr, pro = binned_roc(flat > 0, maps.reshape(-1), positive_weight=weight)
    end = np.searchsorted(fpr, max_fpr, side="right")
    fpr_cut = np.concatenate([fpr[:end], [max_fpr]])
    pro_cut = np.concatenate([pro[:end], [np.interp(max_fpr, fpr, pro)]])
    return float(auc(fpr_cut, pro_cut) / max_fpr)


PIXEL_BINS = 100_000


def binned_roc(
    positive: np.ndarray,
    scores: np.ndarray,
    positive_weight: np.ndarray | None = None,
    bins: int = PIXEL_BINS,
) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at ``bins`` thresholds evenly spread over the score range.

    A test split holds millions of pixels; an exact ROC curve sorts them all (seconds per
    metric), a histogram does not. Scores within one bin count as tied, so the area is exact to
    about 1 / ``bins``. ``positive_weight``: a weight per element, read where ``positive``.
    """
    low, high = float(scores.min()), float(scores.max())
    scale = bins / (high - low) if high > low else 0.0
    index = np.minimum(((scores - low) * scale).astype(np.int64), bins - 1)
    weights = None if positive_weight is None else positive_weight[positive]
    hits = np.bincount(index[positive], weights=weights, minlength=bins)[::-1].cumsum()
    false = np.bincount(index[~positive], minlength=bins)[::-1].cumsum()
    return (
        np.concatenate([[0.0], false / false[-1]]),
        np.concatenate([[0.0], hits / hits[-1]]),
    )
