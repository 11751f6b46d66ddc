"""The comparison tables: median AUC per cell (image, pixel, AUPRO) and class3 - class2 per
pair and per defect type, each *tidy* (one row per cell, pair or defect, full precision, for
programs) and *display* (the article's wide layout, rounded, for people); and the parent run's
per-cell median metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lightning_ad.data.classes import TwinClasses
from lightning_ad.grid import CELL_KEYS, NO_HEAD, cell_label
from lightning_ad.report.formats import render
from lightning_ad.report.trials import (
    MAIN_METRIC,
    MAP_METRICS,
    RUN_FACTS,
    SCORES,
    Sweep,
    is_test_metric,
    shifted_metrics,
)
from lightning_ad.report.verdicts import (
    VERDICT_TABLES,
    Verdicts,
    verdict_display,
    verdict_sentences,
)

TABLES = ("median", "pixel", "aupro", "shift", "delta", "defects", "frozen")
"""``median``: median test AUC per cell; ``pixel``, ``aupro``: the median pixel AUROC and AUPRO
of its anomaly maps; ``shift``: the median test AUC on each shifted test split (only where the
runs were scored on one: ``data synth --shift``); ``delta``: class3 - class2 per (backbone,
head); ``defects``: class3 - class2 per defect type; ``frozen``: each trained cell - the frozen
baseline (only where the runs have both)."""
TITLES = {
    "median": "Median test AUC over seeds (n seeds)",
    "pixel": "Median pixel AUROC of the anomaly maps (n seeds)",
    "aupro": "Median AUPRO of the anomaly maps, up to FPR 0.3 (n seeds)",
    "shift": "Median test AUC under a camera change the train split never saw (n seeds)",
    "delta": "class3 - class2 per scorer: mean over seeds, 95 % interval over training "
    "runs and the shared test images (ceiling: every run at AUROC 1, no information)",
    "defects": "class3 - class2 per defect type (the trials' own scorer; p Holm-adjusted "
    "over the defect types)",
    "frozen": "trained - frozen per cell and scorer: mean over seeds, 95 % interval over "
    "training runs and the shared test images (the frozen baseline scored by the same scorer, "
    "or in its place by PatchCore or kNN)",
}
"""Each table's title, as ``table`` prints it and the report page shows it."""
PARENT_MEDIANS = {
    "median_auc": MAIN_METRIC,
    "median_pixel_auc": MAP_METRICS["pixel"],
    "median_aupro": MAP_METRICS["aupro"],
    "median_detection_rate": "test/detection_rate",
}
"""The parent run's per-cell metrics (``<name>/<backbone>/<head>/<classes>``) and the trial
metric each is the median of."""


@dataclass(frozen=True)
class CellStats:
    median: float
    n: int
    low: float
    high: float

    def short(self) -> str:
        return f"{self.median:.3f} ({self.n})"

    def long(self) -> str:
        return f"{self.median:.3f} [{self.low:.3f}-{self.high:.3f}] n={self.n}"


def columns(spec: Sweep) -> dict[str, tuple[str, str]]:
    """Table columns in grid order, label -> (head, classes): the frozen baseline first (one
    column, whatever the class count), then head x class count."""
    labelled = {
        cell_label(head, classes): (head, classes)
        for head in spec.grid["head"]
        for classes in spec.grid["classes"]
        if not (head == NO_HEAD and classes != spec.grid["classes"][0])
    }
    frozen = {k: v for k, v in labelled.items() if v[0] == NO_HEAD}
    return frozen | {k: v for k, v in labelled.items() if v[0] != NO_HEAD}


def cell_stats(
    trials: pd.DataFrame, metric: str = MAIN_METRIC
) -> dict[tuple[str, str, str, str], CellStats]:
    """(category, backbone, head, classes) -> ``metric`` over the cell's seeds."""
    stats = {}
    if trials.empty or metric not in trials:
        return stats
    for cell, group in trials.groupby(list(CELL_KEYS)):
        values = group[metric].dropna().to_numpy(float)
        if len(values):
            stats[cell] = CellStats(
                float(np.median(values)), len(values), float(values.min()), float(values.max())
            )
    return stats


def median_metrics(trials: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """``median_auc/<backbone>/<head>/<classes>`` -> (median, seeds) of one category's trials,
    and the same for every :data:`PARENT_MEDIANS` metric, for its parent run (where the MLflow
    UI charts and compares them); the frozen baseline's classes are ``any``."""
    return {
        median_metric(backbone, head, classes, name): (stats.median, stats.n)
        for name, metric in PARENT_MEDIANS.items()
        for (_category, backbone, head, classes), stats in cell_stats(trials, metric).items()
    }


def median_metric(backbone: str, head: str, classes: str, name: str = "median_auc") -> str:
    """The parent run's metric holding one table cell's median (of ``test/auc`` by default)."""
    return f"{name}/{backbone}/{head}/{_classes_or_any(head, classes)}"


def _classes_or_any(head: str, classes: str) -> str:
    return "any" if head == NO_HEAD else classes


def tidy_medians(trials: pd.DataFrame, spec: Sweep) -> pd.DataFrame:
    """One row per (category, backbone, head, classes) cell, full precision: ``median``, ``min``,
    ``max`` and ``n_seeds`` of ``test/auc``, the median of every other image-level ``test/*``
    metric (``median_auc_lof``, ``median_pixel_auc_gradcam``, ...), and where the numbers came
    from (sweep, fixed settings, dataset, data root, commits). The frozen baseline does not
    depend on the class count: its ``classes`` is ``any``."""
    columns = ["sweep", *CELL_KEYS, "n_seeds", "median", "min", "max"]
    other = sorted(
        c for c in trials.columns if is_test_metric(c) and c.count("/") == 1 and c != MAIN_METRIC
    )
    groups = dict(iter(trials.groupby(list(CELL_KEYS)))) if not trials.empty else {}
    rows = []
    for (category, backbone, head, classes), stats in cell_stats(trials).items():
        group = groups[(category, backbone, head, classes)]
        row = {
            "sweep": spec.name,
            "category": category,
            "backbone": backbone,
            "head": head,
            "classes": _classes_or_any(head, classes),
            "n_seeds": stats.n,
            "median": stats.median,
            "min": stats.low,
            "max": stats.high,
        }
        row |= {f"median_{c.removeprefix('test/')}": float(group[c].median()) for c in other}
        row |= {fact: _joined(group.get(fact)) for fact in RUN_FACTS}
        row["settings"] = json.dumps(spec.fixed, sort_keys=True)
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def _joined(values: pd.Series | None) -> str:
    """The distinct values of a run fact in one cell (one, unless the cell mixes runs)."""
    if values is None:
        return ""
    return ";".join(sorted({str(v) for v in values.dropna()}))


def main_table(
    trials: pd.DataFrame, spec: Sweep, long: bool = False, metric: str = MAIN_METRIC
) -> pd.DataFrame:
    """The article's layout: a block per backbone, rows = categories, columns = head x classes.

    Cells hold the median of ``metric`` over seeds with the seed count (and min-max when
    ``long``); cells that cannot exist say n/a, cells not run yet say "missing"."""
    stats = {
        (category, backbone, cell_label(head, classes)): cell
        for (category, backbone, head, classes), cell in cell_stats(trials, metric).items()
    }
    rows = []
    for backbone in spec.grid["backbone"]:
        for category in spec.grid["category"]:
            row = {"backbone": backbone, "category": category}
            for column, (head, classes) in columns(spec).items():
                cell = stats.get((category, backbone, column))
                if cell is not None:
                    row[column] = cell.long() if long else cell.short()
                else:
                    problem = _head_problem(head, classes)
                    row[column] = "n/a" if problem else "missing"
            rows.append(row)
    return pd.DataFrame(rows)


def shift_table(trials: pd.DataFrame, spec: Sweep, long: bool = False) -> pd.DataFrame:
    """:func:`main_table` of each shifted test split's AUC, a ``shift`` column after the
    category; only the categories scored on that shift."""
    frames = []
    for shift, metric in shifted_metrics(trials).items():
        table = main_table(trials, spec, long, metric)
        scored = set(trials.loc[trials[metric].notna(), "category"])
        table = table[table["category"].isin(scored)]
        frames.append(table.assign(shift=shift))
    if not frames:
        return pd.DataFrame(columns=["backbone", "category", "shift"])
    table = pd.concat(frames, ignore_index=True)
    order = ["backbone", "category", "shift"]
    return table[order + [c for c in table if c not in order]]


def tables_for(trials: pd.DataFrame, tables: tuple[str, ...] = TABLES) -> tuple[str, ...]:
    """``tables`` less ``shift`` when no run was scored on a shifted test split, and less
    ``frozen`` unless both frozen and trained runs have per-image scores to pair."""
    scored = trials[trials[SCORES].notna()] if SCORES in trials else trials.iloc[:0]
    heads = set(scored["head"]) if "head" in scored else set()
    skip = {
        "shift": not shifted_metrics(trials),
        "frozen": NO_HEAD not in heads or heads <= {NO_HEAD},
    }
    return tuple(t for t in tables if not skip.get(t, False))


def _head_problem(head: str, classes: str) -> str | None:
    from lightning_ad.models.heads import head_class_count_problem  # torch: only when drawn

    return head_class_count_problem(head, len(TwinClasses.parse(classes)))


def tidy_table(
    trials: pd.DataFrame, spec: Sweep, name: str, verdicts: Verdicts | None = None
) -> pd.DataFrame:
    """One table (see ``TABLES``) in tidy form, the sweep's name in its first column; ``pixel``
    and ``aupro`` are columns of the tidy ``median`` table. ``verdicts``: those of ``trials``,
    when the caller has them."""
    if name in ("median", "shift", *MAP_METRICS):
        return tidy_medians(trials, spec)
    table = getattr(verdicts or Verdicts(trials), VERDICT_TABLES[name]).copy()
    table.insert(0, "sweep", spec.name)
    return table


def display_table(
    trials: pd.DataFrame, spec: Sweep, name: str, fmt: str, verdicts: Verdicts | None = None
) -> tuple[pd.DataFrame, bool]:
    """The table a person reads, and whether its best cells are bolded. ``verdicts``: those of
    ``trials``, when the caller has them."""
    if name == "median":
        return main_table(trials, spec, long=fmt == "html"), True  # html has room for min-max
    if name in MAP_METRICS:
        return main_table(trials, spec, long=fmt == "html", metric=MAP_METRICS[name]), True
    if name == "shift":
        return shift_table(trials, spec, long=fmt == "html"), True
    table = getattr(verdicts or Verdicts(trials), VERDICT_TABLES[name])
    return verdict_display(
        table, "trained − frozen" if name == "frozen" else "class3 − class2"
    ), False


def summary_text(
    trials: pd.DataFrame,
    spec: Sweep,
    fmt: str = "md",
    tables: tuple[str, ...] = TABLES,
    verdicts: Verdicts | None = None,
) -> str:
    """What ``lightning-ad table`` prints: the verdicts, then the display tables, each under
    its title. ``verdicts``: those of ``trials``, when the caller has them."""
    verdicts = verdicts or Verdicts(trials)
    parts = []
    if "delta" in tables:
        lines = verdict_sentences(trials, verdicts)
        parts += ["Verdict: class3 - class2 (the trials' own scorer)", *(f"- {x}" for x in lines)]
        parts += [""] if lines else ["- (no pair of class2 and class3 runs yet)", ""]
    for name in tables_for(trials, tables):
        table, bold = display_table(trials, spec, name, fmt, verdicts)
        parts += [TITLES[name], render(table, fmt, bold_best=bold)]
    return "\n".join(parts)
