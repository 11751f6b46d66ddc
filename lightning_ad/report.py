"""Comparison tables from MLflow: median AUC per cell (image, pixel, AUPRO), class3 - class2
deltas overall and per defect type, each with two paired tests.

Everything is read back from the tracking server (runs, and each trial's per-image test scores
artifact), never from local state, so a table can be made from any server that holds the sweep's
runs. Each table exists twice: *tidy* (one
row per cell, pair or defect, numeric columns at full precision; CSV and Parquet, for programs)
and *display* (the article's wide layout, rounded; Markdown, HTML, LaTeX, for people).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lightning_ad import tracking, verdict
from lightning_ad.data.classes import CLASS2, CLASS3, TwinClasses
from lightning_ad.grid import CELL_KEYS, GRID_KEYS, NO_HEAD, cell_label

if TYPE_CHECKING:
    from lightning_ad.sweep.fingerprint import Settings
    from lightning_ad.sweep.spec import SweepSpec

DISPLAY_FORMATS = ("md", "html", "latex")
DATA_FORMATS = ("csv", "parquet")
FORMATS = (*DISPLAY_FORMATS, *DATA_FORMATS)
TABLES = ("median", "pixel", "aupro", "delta", "defects")
"""``median``: median test AUC per cell; ``pixel``, ``aupro``: the median pixel AUROC and AUPRO
of its anomaly maps; ``delta``: class3 - class2 per (backbone, head); ``defects``: class3 -
class2 per defect type."""
FILE_NAMES = {
    "median": "median_auc",
    "pixel": "median_pixel_auc",
    "aupro": "median_aupro",
    "delta": "class3_vs_class2",
    "defects": "class3_vs_class2_by_defect",
}
TITLES = {
    "median": "Median test AUC over seeds (n seeds)",
    "pixel": "Median pixel AUROC of the anomaly maps (n seeds)",
    "aupro": "Median AUPRO of the anomaly maps, up to FPR 0.3 (n seeds)",
    "delta": "class3 - class2 per scorer: mean over seeds, 95 % interval over training "
    "runs and the shared test images (ceiling: every run at AUROC 1, no information)",
    "defects": "class3 - class2 per defect type (the trials' own scorer; p Holm-adjusted "
    "over the defect types)",
}
"""Each table's title, as ``table`` prints it and the report page shows it."""
CELL_PLOT, FOREST_PLOT = "auc_per_cell.png", "class3_vs_class2_forest.png"
"""The report's two plots (``_plots``)."""
SETTINGS_FILE = "settings.json"
LATEST = "latest"
"""``reports/<sweep>/<category>/latest``: a link to the fingerprint folder written last."""
DELTA_COLUMNS = [
    "category", "backbone", "head", "scorer", "seeds", "wins", "losses", "mean_delta",
    "median_delta", "ci_low", "ci_high", "p", "df", "ceiling", "claim", "p_delong_by_seed",
]  # fmt: skip
"""A verdict row (:mod:`lightning_ad.verdict`): ``mean_delta`` with its 95 % interval
``ci_low``-``ci_high`` and ``p`` over seeds and test images (``df``: the t-interval's degrees of
freedom); at the ``ceiling`` all four are NaN; ``p_delong_by_seed``: each seed's DeLong p, the
test set's noise alone."""
DEFECT_COLUMNS = [*DELTA_COLUMNS[:4], "defect", *DELTA_COLUMNS[4:], "p_holm"]
RUN_FACTS = ("dataset", "data_root", "git_commit", "score_used")
"""Run parameters that say where a cell's numbers came from; the tidy table carries them."""
MAIN_METRIC = "test/auc"
MAP_METRICS = {"pixel": "test/pixel_auc", "aupro": "test/aupro"}
SCORES = "scores"
"""The trials-table column holding each run's per-image test scores (see :func:`fetch_trials`)."""


def fetch_trials(
    tracking_uri: str,
    experiment: str,
    spec: SweepSpec,
    fingerprint: str,
    category: str | None = None,
) -> pd.DataFrame:
    """The complete trial runs of ``spec``'s grid under a settings ``fingerprint``, one row per
    run (see :func:`trials_frame`), each with its per-image test scores in column ``scores``
    (None where the run has none): from the parent runs' bundles where they hold the run
    (:data:`tracking.SCORES_BUNDLE`), else read. Cells no longer in the grid are left out."""
    runs = tracking.finished_trial_runs(tracking_uri, experiment, spec.name, fingerprint, category)
    trials = in_grid(trials_frame(runs), spec)
    parents = tracking.sweep_parents(tracking_uri, experiment, spec.name, category, fingerprint)
    bundled = tracking.bundled_test_scores(tracking_uri, parents, set(trials["run_id"]))
    runs = list(zip(trials["run_id"], trials["artifact_uri"], strict=True))
    trials[SCORES] = tracking.runs_test_scores(tracking_uri, runs, bundled)
    return trials


def trials_frame(runs: Iterable) -> pd.DataFrame:
    """Trial runs as a table: the grid keys (``seed`` as int), where each came from, every
    ``test/*`` metric, the run id and artifact root; the latest run wins for a repeated
    cell. ``runs`` is read once, so it may be a page-by-page search."""
    rows = []
    for run in runs:
        row = {key: run.data.params.get(key) for key in (*GRID_KEYS, *RUN_FACTS)}
        row |= {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}
        rows.append(row | {"run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri})
    if not rows:
        return pd.DataFrame(columns=[*GRID_KEYS, MAIN_METRIC, "run_id", "artifact_uri"])
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype(int)
    return table.drop_duplicates(subset=list(GRID_KEYS), keep="last").reset_index(drop=True)


def in_grid(trials: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """The rows whose cell is one of ``spec``'s runnable cells."""
    cells = {tuple(str(v) for v in key) for key in spec.runnable_keys}
    keep = [tuple(str(v) for v in row) in cells for row in trials[list(GRID_KEYS)].to_numpy()]
    return trials.loc[np.array(keep, dtype=bool)].reset_index(drop=True)


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


def columns(spec: SweepSpec) -> dict[str, tuple[str, str]]:
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


PARENT_MEDIANS = {
    "median_auc": MAIN_METRIC,
    "median_pixel_auc": MAP_METRICS["pixel"],
    "median_aupro": MAP_METRICS["aupro"],
    "median_detection_rate": "test/detection_rate",
}
"""The parent run's per-cell metrics (``<name>/<backbone>/<head>/<classes>``) and the trial
metric each is the median of."""


def median_metrics(trials: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """``median_auc/<backbone>/<head>/<classes>`` -> (median, seeds) of one category's trials,
    and the same for every :data:`PARENT_MEDIANS` metric, for its parent run (where the MLflow
    UI charts and compares them); the frozen baseline's classes are ``any``."""
    return {
        median_metric(backbone, head, classes, name): (stats.median, stats.n)
        for name, metric in PARENT_MEDIANS.items()
        for (_category, backbone, head, classes), stats in cell_stats(trials, metric).items()
    }


def verdict_metrics(trials: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """``class3_vs_class2/<backbone>/<head>/<scorer>/{mean_delta,ci_low,ci_high}`` -> (value,
    seeds) for the trials' own scorer; none at the ceiling, where there is nothing to plot."""
    values = {}
    for row in paired_verdicts(trials, main_only=True).to_dict("records"):
        pair = f"class3_vs_class2/{row['backbone']}/{row['head']}/{row['scorer']}"
        for field in ("mean_delta", "ci_low", "ci_high"):
            if np.isfinite(row[field]):
                key = f"{pair}/{field}"
                values[key] = (float(row[field]), int(row["seeds"]))
    return values


def median_metric(backbone: str, head: str, classes: str, name: str = "median_auc") -> str:
    """The parent run's metric holding one table cell's median (of ``test/auc`` by default)."""
    return f"{name}/{backbone}/{head}/{_classes_or_any(head, classes)}"


def _classes_or_any(head: str, classes: str) -> str:
    return "any" if head == NO_HEAD else classes


def tidy_medians(trials: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """One row per (category, backbone, head, classes) cell, full precision: ``median``, ``min``,
    ``max`` and ``n_seeds`` of ``test/auc``, the median of every other image-level ``test/*``
    metric (``median_auc_lof``, ``median_pixel_auc_gradcam``, ...), and where the numbers came
    from (sweep, fixed settings, dataset, data root, commits). The frozen baseline does not
    depend on the class count: its ``classes`` is ``any``."""
    columns = ["sweep", *CELL_KEYS, "n_seeds", "median", "min", "max"]
    other = sorted(
        c
        for c in trials.columns
        if c.startswith("test/") and c.count("/") == 1 and c != MAIN_METRIC
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
        pairs = _pairs(group, a, b)
        scorers = _scorers(pairs, main_only)
        for scorer in scorers:
            labels, scores_a, scores_b = _aligned(pairs, scorer, defect)
            result = verdict.compare(labels, scores_a, scores_b)
            if result.seeds:
                rows.append(_verdict_row((category, backbone, head, scorer), result))
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def _verdict_row(key: tuple[str, str, str, str], result: verdict.Verdict) -> dict:
    deltas = np.array(result.deltas)
    return dict(zip(DELTA_COLUMNS[:4], key, strict=True)) | {
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


def _pairs(group: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """One row per seed that ran both class counts with scores: ``scores_a``, ``scores_b`` and
    ``score_used``."""
    runs = group[group[SCORES].notna()][["classes", "seed", SCORES, "score_used"]]
    pairs = pd.merge(
        runs[runs["classes"] == a].drop(columns="classes"),
        runs[runs["classes"] == b].drop(columns=["classes", "score_used"]),
        on="seed",
        suffixes=("_a", "_b"),
    )
    return pairs.sort_values("seed")


def _scorers(pairs: pd.DataFrame, main_only: bool) -> list[str]:
    """The scorers every paired run logged scores for (or the runs' own one)."""
    if pairs.empty:
        return []
    if main_only:
        return sorted(set(pairs["score_used"].dropna()))
    frames = [*pairs[f"{SCORES}_a"], *pairs[f"{SCORES}_b"]]
    common = set.intersection(*(set(f.columns) for f in frames)) - {"image", "defect", "label"}
    return sorted(common)


def _aligned(
    pairs: pd.DataFrame, scorer: str, defect: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (n,) and scores of both class counts (seeds, n) on the test images every paired
    run scored, in one order; good images and ``defect`` only when given."""
    frames = [f for f in (*pairs[f"{SCORES}_a"], *pairs[f"{SCORES}_b"]) if scorer in f]
    if len(frames) < 2 * len(pairs) or pairs.empty:
        return np.array([]), np.empty((0, 0)), np.empty((0, 0))
    images = set.intersection(*(set(f["image"]) for f in frames))
    kept = [f[f["image"].isin(images)].sort_values("image") for f in frames]
    if defect is not None:
        kept = [f[f["defect"].isin(["good", defect])] for f in kept]
    labels = kept[0]["label"].to_numpy(int)
    scores = np.array([f[scorer].to_numpy(float) for f in kept])
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


def verdict_display(table: pd.DataFrame) -> pd.DataFrame:
    """A verdict table for people: the interval in one column, ``ceiling`` spelled out."""
    shown = [c for c in ("category", "backbone", "head", "scorer", "defect") if c in table]
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
            "class3 − class2 [95 % CI]": interval,
            "p": "–" if row["ceiling"] else _fmt("p", row["p"]),
        }
        if "p_holm" in row:
            out["p (Holm)"] = "–" if row["ceiling"] else _fmt("p", row["p_holm"])
        out |= {"verdict": row["claim"], "DeLong p per seed": row["p_delong_by_seed"]}
        rows.append(out)
    return pd.DataFrame(rows)


def main_table(
    trials: pd.DataFrame, spec: SweepSpec, long: bool = False, metric: str = MAIN_METRIC
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


def _head_problem(head: str, classes: str) -> str | None:
    from lightning_ad.models.heads import head_class_count_problem  # torch: only when drawn

    return head_class_count_problem(head, len(TwinClasses.parse(classes)))


def _bold_best(table: pd.DataFrame, bold) -> pd.DataFrame:
    """Bold the best median of each row, as the article did."""
    out = table.copy()
    value_columns = [c for c in table.columns if c not in ("backbone", "category")]
    for i, row in table.iterrows():
        values = {c: _median_of(row[c]) for c in value_columns}
        best = max((v for v in values.values() if not math.isnan(v)), default=None)
        for c, v in values.items():
            if best is not None and v == best:
                out.at[i, c] = bold(row[c])
    return out


def _median_of(cell: str) -> float:
    try:
        return float(str(cell).split(" ")[0])
    except ValueError:
        return float("nan")


def render(table: pd.DataFrame, fmt: str, bold_best: bool = False) -> str:
    """One display table as md, html or latex."""
    if fmt not in DISPLAY_FORMATS:
        raise ValueError(f"{fmt} is not a display format; valid: {', '.join(DISPLAY_FORMATS)}")
    if bold_best:
        marker = {
            "md": lambda s: f"**{s}**",
            "html": lambda s: f"<b>{s}</b>",
            "latex": lambda s: f"\\textbf{{{s}}}",
        }[fmt]
        table = _bold_best(table, marker)
    if fmt == "md":
        return _markdown(table)
    if fmt == "html":
        return table.to_html(index=False, escape=False, float_format=lambda v: f"{v:.3f}")
    return table.to_latex(index=False, escape=False, float_format=lambda v: f"{v:.3f}")


def _markdown(table: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    if table.empty:
        return "(no finished trials yet)\n"
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = [
        "| " + " | ".join(_fmt(c, v) for c, v in zip(table.columns, row, strict=True)) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body]) + "\n"


def _fmt(column: str, value) -> str:
    """Deltas with their sign, p-values down to 0.001, other numbers plain, three decimals."""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if column.startswith("p") and value < 0.001:
            return "<0.001"
        return f"{value:+.3f}" if "delta" in column else f"{value:.3f}"
    return str(value)


def tidy_table(trials: pd.DataFrame, spec: SweepSpec, name: str) -> pd.DataFrame:
    """One table (see ``TABLES``) in tidy form, the sweep's name in its first column; ``pixel``
    and ``aupro`` are columns of the tidy ``median`` table."""
    if name in ("median", *MAP_METRICS):
        return tidy_medians(trials, spec)
    table = paired_verdicts(trials) if name == "delta" else defect_verdicts(trials)
    table.insert(0, "sweep", spec.name)
    return table


def display_table(
    trials: pd.DataFrame, spec: SweepSpec, name: str, fmt: str
) -> tuple[pd.DataFrame, bool]:
    """The table a person reads, and whether its best cells are bolded."""
    if name == "median":
        return main_table(trials, spec, long=fmt == "html"), True  # html has room for min-max
    if name in MAP_METRICS:
        return main_table(trials, spec, long=fmt == "html", metric=MAP_METRICS[name]), True
    if name == "delta":
        return verdict_display(paired_verdicts(trials)), False
    return verdict_display(defect_verdicts(trials)), False


def write_table(trials: pd.DataFrame, spec: SweepSpec, name: str, fmt: str, path: Path) -> Path:
    """One table in one format: tidy data for csv and parquet, the display table otherwise,
    written whole or not at all (``replace_whole``)."""
    if fmt in DATA_FORMATS:
        table = tidy_table(trials, spec, name)
        if fmt == "csv":
            return replace_whole(path, lambda staging: table.to_csv(staging, index=False))
        return replace_whole(path, lambda staging: table.to_parquet(staging, index=False))
    table, bold = display_table(trials, spec, name, fmt)
    text = render(table, fmt, bold_best=bold)
    return replace_whole(path, lambda staging: staging.write_text(text))


def replace_whole(path: Path, write: Callable[[Path], object]) -> Path:
    """``write`` a file beside ``path`` and rename it to ``path``: a reader, or a crash in the
    middle, sees the old file or the new one, never half a table. The staging name keeps the
    suffix, which pandas and matplotlib read the format from."""
    staging = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def tables_in(fmt: str) -> tuple[str, ...]:
    """The tables a folder of ``fmt`` files holds: all of them for people; for programs, the
    tidy median table already holds every cell's median pixel AUROC and AUPRO."""
    return TABLES if fmt in DISPLAY_FORMATS else tuple(t for t in TABLES if t not in MAP_METRICS)


def suffix(fmt: str) -> str:
    return ".tex" if fmt == "latex" else f".{fmt}"


def write_report(
    trials: pd.DataFrame, spec: SweepSpec, settings: Settings, out_dir: Path
) -> list[Path]:
    """Every table in every format, the two plots and ``settings.json`` (the settings whose
    fingerprint names the folder) into ``out_dir``, then points ``latest`` beside it there.

    Args:
        trials: the runs of one fingerprint (``fetch_trials``).
        spec: their sweep.
        settings: their settings.
        out_dir: ``reports/<sweep>/<category>/<fingerprint>`` (``SweepTarget.reports``).

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        write_table(trials, spec, name, fmt, out_dir / f"{FILE_NAMES[name]}{suffix(fmt)}")
        for fmt in FORMATS
        for name in tables_in(fmt)
    ]
    written += _plots(trials, out_dir)
    text = settings.to_json()
    written.append(replace_whole(out_dir / SETTINGS_FILE, lambda path: path.write_text(text)))
    _point_latest(out_dir)
    return written


def _point_latest(out_dir: Path) -> None:
    """``latest`` beside ``out_dir``, a relative link to it, swapped in whole (a reader never
    finds it missing)."""
    replace_whole(
        out_dir.with_name(LATEST),
        lambda staging: staging.symlink_to(out_dir.name, target_is_directory=True),
    )


def verdict_sentences(trials: pd.DataFrame) -> list[str]:
    """One line per (category, backbone, head): class3 - class2 for the trials' own scorer,
    with its interval and what it allows (a claim, no claim, or a ceiling)."""
    table = paired_verdicts(trials, main_only=True)
    lines = []
    for row in table.to_dict("records"):
        line = verdict.sentence(
            row["claim"], row["mean_delta"], row["ci_low"], row["ci_high"], row["seeds"]
        )
        lines.append(
            f"{row['category']}, {row['backbone']}, {row['head']} ({row['scorer']}): {line}"
        )
    return lines


def summary_text(
    trials: pd.DataFrame, spec: SweepSpec, fmt: str = "md", tables: tuple[str, ...] = TABLES
) -> str:
    """What ``lightning-ad table`` prints: the verdicts, then the display tables, each under
    its title."""
    parts = []
    if "delta" in tables:
        lines = verdict_sentences(trials)
        parts += ["Verdict: class3 - class2 (the trials' own scorer)", *(f"- {x}" for x in lines)]
        parts += [""] if lines else ["- (no pair of class2 and class3 runs yet)", ""]
    for name in tables:
        table, bold = display_table(trials, spec, name, fmt)
        parts += [TITLES[name], render(table, fmt, bold_best=bold)]
    return "\n".join(parts)


def parent_description(trials: pd.DataFrame, spec: SweepSpec, settings: Settings) -> str:
    """The parent run's description (markdown on its Overview in the UI), the answer first:
    the class3 - class2 verdicts, the median table and the intervals per scorer, then how many
    trials and which settings."""
    tables = summary_text(trials, spec, "md", ("median", "delta"))
    for title in ("Verdict:", "Median test AUC", "class3 - class2 per scorer"):
        tables = tables.replace(title, f"### {title}", 1)
    text = (
        f"{tables}\n\n**{spec.name}**: {len(trials)} finished trials. Tables, plots and the "
        "HTML report: the `report/` artifacts (written when the sweep ends).\n\n"
        f"Settings {settings.describe()} (all of them: `settings.json`).\n"
    )
    return text[: tracking.MAX_TAG_LENGTH]


def _plots(trials: pd.DataFrame, out_dir: Path) -> list[Path]:
    """:data:`CELL_PLOT` (each cell's seeds and median, frozen as a line) and
    :data:`FOREST_PLOT` (the verdict's intervals per head and scorer)."""
    if trials.empty:
        return []
    from lightning_ad import plots

    cells, floors = {}, {}
    for (backbone, head, classes), group in trials.groupby(["backbone", "head", "classes"]):
        values = group[MAIN_METRIC].dropna().to_numpy(float)
        if not len(values):
            continue
        if head == NO_HEAD:
            floors[f"frozen {backbone}"] = float(np.median(values))
        cells[f"{backbone} · {cell_label(head, classes)}"] = values
    dots = replace_whole(
        out_dir / CELL_PLOT,
        lambda path: plots.cell_dots(cells, floors, "test AUC, the trials' own scorer", path),
    )
    verdicts = paired_verdicts(trials)
    rows = [
        row | {"label": f"{row['backbone']} · {row['head']} · {row['scorer']}"}
        for row in verdicts.to_dict("records")
    ]
    forest = replace_whole(out_dir / FOREST_PLOT, lambda path: plots.forest(rows, path))
    return [dots, forest]
