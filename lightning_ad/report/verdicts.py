"""class3 - class2 from the runs' per-image test scores: the verdict per (category, backbone,
head) and scorer, per defect type with Holm's adjustment, and the same as sentences, display
tables and the parent run's metrics; and each trained cell against the frozen baseline.
:class:`Verdicts` computes each table once for everything made from one set of trials."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from lightning_ad import verdict
from lightning_ad.data.classes import CLASS2, CLASS3
from lightning_ad.grid import NO_HEAD
from lightning_ad.report.formats import format_value
from lightning_ad.report.trials import SCORES, frozen_reader

DELTA_COLUMNS = [
    "category", "backbone", "head", "scorer", "seeds", "wins", "losses", "mean_delta",
    "median_delta", "ci_low", "ci_high", "p", "df", "ceiling", "claim", "p_delong_by_seed",
]  # fmt: skip
"""A verdict row (:mod:`lightning_ad.verdict`): ``mean_delta`` with its 95 % interval
``ci_low``-``ci_high`` and ``p`` over seeds and test images (``df``: the t-interval's degrees of
freedom); at the ``ceiling`` all four are NaN; ``p_delong_by_seed``: each seed's DeLong p, the
test set's noise alone."""
DEFECT_COLUMNS = [*DELTA_COLUMNS[:4], "defect", *DELTA_COLUMNS[4:], "p_holm"]
FROZEN_COLUMNS = [*DELTA_COLUMNS[:3], "classes", "scorer", "frozen_scorer", *DELTA_COLUMNS[4:]]
"""A trained cell against the frozen baseline (:func:`frozen_verdicts`): ``mean_delta`` is
trained - frozen, the frozen runs scored by ``frozen_scorer``."""


VERDICT_TABLES = {"delta": "pairs", "defects": "defects", "frozen": "frozen"}
"""A verdict table's name (``report.TABLES``) -> the :class:`Verdicts` property holding it."""


class Verdicts:
    """The verdict tables of one trials table, each computed on first use and then shared by
    every table, plot, metric and sentence made from those trials (a report asks for them many
    times). The frames are shared: copy one before changing it."""

    def __init__(self, trials: pd.DataFrame) -> None:
        self.trials = trials

    @functools.cached_property
    def pairs(self) -> pd.DataFrame:
        """:func:`paired_verdicts` of every scorer the paired runs share."""
        return paired_verdicts(self.trials)

    @functools.cached_property
    def main(self) -> pd.DataFrame:
        """:func:`paired_verdicts` of the trials' own scorer."""
        return paired_verdicts(self.trials, main_only=True)

    @functools.cached_property
    def defects(self) -> pd.DataFrame:
        """:func:`defect_verdicts`."""
        return defect_verdicts(self.trials)

    @functools.cached_property
    def frozen(self) -> pd.DataFrame:
        """:func:`frozen_verdicts`."""
        return frozen_verdicts(self.trials)


def paired_verdicts(
    trials: pd.DataFrame,
    defect: str | None = None,
    main_only: bool = False,
    a: str = CLASS2,
    b: str = CLASS3,
) -> pd.DataFrame:
    """Per (category, backbone, head) and scorer: the verdict on ``b - a`` over the seeds that
    ran both (:func:`lightning_ad.verdict.compare`), from the runs' per-image test scores
    (column ``scores``); restricted to good images and ``defect`` when given; only the trials'
    own scorer (``score_used``) when ``main_only``."""
    rows = []
    if trials.empty or SCORES not in trials:
        return pd.DataFrame(rows, columns=DELTA_COLUMNS)
    for (category, backbone, head), group in trials.groupby(["category", "backbone", "head"]):
        pairs = _pairs(group[group["classes"] == a], group[group["classes"] == b])
        scorers = _scorers(pairs, main_only)
        for scorer in scorers:
            labels, scores_a, scores_b = _aligned(pairs, scorer, scorer, defect)
            result = verdict.compare(labels, scores_a, scores_b)
            if result.seeds:
                key = dict(category=category, backbone=backbone, head=head, scorer=scorer)
                rows.append(key | _verdict_fields(result))
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def frozen_verdicts(trials: pd.DataFrame) -> pd.DataFrame:
    """Per trained cell (category, backbone, head, classes) and scorer: the verdict on
    trained - frozen over the seeds that ran both (:func:`lightning_ad.verdict.compare`), the
    frozen baseline read as :func:`~lightning_ad.report.trials.frozen_reader` says (by the
    same scorer where it needs no training: ``knn``, ``lof``, ``patch``; PatchCore in place of
    a scorer with maps, kNN in place of ``prob``): whether training on the twins beat not
    training at all, and by how much."""
    rows = []
    if trials.empty or SCORES not in trials:
        return pd.DataFrame(rows, columns=FROZEN_COLUMNS)
    for (category, backbone), group in trials.groupby(["category", "backbone"]):
        frozen = group[group["head"] == NO_HEAD]
        trained = group[group["head"] != NO_HEAD]
        for (head, classes), cell in trained.groupby(["head", "classes"]):
            pairs = _pairs(frozen, cell)
            for scorer in _scorers(pairs, main_only=False, side="b"):
                baseline = frozen_reader(scorer)
                labels, scores_a, scores_b = _aligned(pairs, baseline, scorer)
                result = verdict.compare(labels, scores_a, scores_b)
                if result.seeds:
                    key = dict(category=category, backbone=backbone, head=head, classes=classes)
                    key |= {"scorer": scorer, "frozen_scorer": baseline}
                    rows.append(key | _verdict_fields(result))
    return pd.DataFrame(rows, columns=FROZEN_COLUMNS)


def _verdict_fields(result: verdict.Verdict) -> dict:
    """A verdict as the columns every verdict table shares (``DELTA_COLUMNS[4:]``)."""
    deltas = np.array(result.deltas)
    return {
        "seeds": result.seeds,
        "wins": int((deltas > 0).sum()),
        "losses": int((deltas < 0).sum()),
        "mean_delta": result.mean,
        "median_delta": result.median,
        "ci_low": result.low,
        "ci_high": result.high,
        "p": result.p,
        "df": result.df,
        "ceiling": result.ceiling,
        "claim": result.claim,
        "p_delong_by_seed": ";".join(f"{p:.3g}" for p in result.p_delong),
    }


def _pairs(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> pd.DataFrame:
    """One row per seed that ran both recipes with scores: ``scores_a``, ``scores_b``,
    ``score_used_a`` and ``score_used_b``."""
    columns = ["seed", SCORES, "score_used"]
    pairs = pd.merge(
        runs_a[runs_a[SCORES].notna()][columns],
        runs_b[runs_b[SCORES].notna()][columns],
        on="seed",
        suffixes=("_a", "_b"),
    )
    return pairs.sort_values("seed")


def _scorers(pairs: pd.DataFrame, main_only: bool, side: str = "ab") -> list[str]:
    """The scorers every paired run of ``side`` (``ab`` both, or ``b``) logged scores for, or
    recipe a's own one (``main_only``)."""
    if pairs.empty:
        return []
    if main_only:
        return sorted(set(pairs["score_used_a"].dropna()))
    frames = [frame for s in side for frame in pairs[f"{SCORES}_{s}"]]
    common = set.intersection(*(set(f.columns) for f in frames)) - {"image", "defect", "label"}
    return sorted(common)


def _aligned(
    pairs: pd.DataFrame, scorer_a: str, scorer_b: str, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (n,) and the scores (seeds, n) of recipe a by ``scorer_a`` and of recipe b by
    ``scorer_b`` on the test images every paired run scored, in one order; good images and
    ``defect`` only when given."""
    sides = [(frame, scorer_a) for frame in pairs[f"{SCORES}_a"] if scorer_a in frame]
    sides += [(frame, scorer_b) for frame in pairs[f"{SCORES}_b"] if scorer_b in frame]
    if len(sides) < 2 * len(pairs) or pairs.empty:
        return np.array([]), np.empty((0, 0)), np.empty((0, 0))
    images = set.intersection(*(set(f["image"]) for f, _ in sides))
    kept = [(f[f["image"].isin(images)].sort_values("image"), s) for f, s in sides]
    if defect is not None:
        kept = [(f[f["defect"].isin(["good", defect])], s) for f, s in kept]
    labels = kept[0][0]["label"].to_numpy(int)
    scores = np.array([f[s].to_numpy(float) for f, s in kept])
    return labels, scores[: len(pairs)], scores[len(pairs) :]


def defect_verdicts(trials: pd.DataFrame) -> pd.DataFrame:
    """class3 - class2 per defect type (good images and that defect's), the trials' own scorer,
    with Holm's adjustment over the defect types of each (category, backbone, head): which
    defects the third class helps and which it hurts, corrected for asking several times."""
    defects = sorted(
        {d for frame in trials.get(SCORES, pd.Series()).dropna() for d in frame["defect"]}
        - {"good"}
    )
    frames = [paired_verdicts(trials, d, main_only=True).assign(defect=d) for d in defects]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=DEFECT_COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    family = ["category", "backbone", "head", "scorer"]
    table["p_holm"] = table.groupby(family)["p"].transform(lambda p: verdict.holm(p.to_numpy()))
    return table.sort_values([*family, "defect"])[DEFECT_COLUMNS].reset_index(drop=True)


def verdict_display(table: pd.DataFrame, delta: str = "class3 − class2") -> pd.DataFrame:
    """A verdict table for people: the interval of ``delta`` in one column, ``ceiling``
    spelled out."""
    keys = ("category", "backbone", "head", "classes", "scorer", "frozen_scorer", "defect")
    shown = [c for c in keys if c in table]
    rows = []
    for row in table.to_dict("records"):
        interval = (
            "ceiling"
            if row["ceiling"]
            else f"{row['mean_delta']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        )
        out = {c: row[c] for c in shown}
        out |= {
            "seeds (won/lost)": f"{row['seeds']} ({row['wins']}/{row['losses']})",
            f"{delta} [95 % CI]": interval,
            "p": "–" if row["ceiling"] else format_value("p", row["p"]),
        }
        if "p_holm" in row:
            out["p (Holm)"] = "–" if row["ceiling"] else format_value("p", row["p_holm"])
        out |= {"verdict": row["claim"], "DeLong p per seed": row["p_delong_by_seed"]}
        rows.append(out)
    return pd.DataFrame(rows)


def verdict_sentences(trials: pd.DataFrame, verdicts: Verdicts | None = None) -> list[str]:
    """One line per (category, backbone, head): class3 - class2 for the trials' own scorer,
    with its interval and what it allows (a claim, no claim, or a ceiling). ``verdicts``: those
    of ``trials``, when the caller has them."""
    table = (verdicts or Verdicts(trials)).main
    lines = []
    for row in table.to_dict("records"):
        line = verdict.sentence(
            row["claim"], row["mean_delta"], row["ci_low"], row["ci_high"], row["seeds"]
        )
        lines.append(
            f"{row['category']}, {row['backbone']}, {row['head']} ({row['scorer']}): {line}"
        )
    return lines


def verdict_metrics(
    trials: pd.DataFrame, verdicts: Verdicts | None = None
) -> dict[str, tuple[float, int]]:
    """``class3_vs_class2/<backbone>/<head>/<scorer>/{mean_delta,ci_low,ci_high}`` -> (value,
    seeds) for the trials' own scorer; none at the ceiling, where there is nothing to plot.
    ``verdicts``: those of ``trials``, when the caller has them."""
    values = {}
    for row in (verdicts or Verdicts(trials)).main.to_dict("records"):
        pair = f"class3_vs_class2/{row['backbone']}/{row['head']}/{row['scorer']}"
        for field in ("mean_delta", "ci_low", "ci_high"):
            if np.isfinite(row[field]):
                key = f"{pair}/{field}"
                values[key] = (float(row[field]), int(row["seeds"]))
    return values
