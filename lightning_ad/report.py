"""Comparison tables from MLflow: median AUC per cell, class3 - class2 deltas, per-defect deltas.

Everything is read back with ``mlflow.search_runs``, never from local state, so a table can be
made from any tracking server that holds the sweep's runs. Each table exists twice: *tidy* (one
row per cell, pair or defect, numeric columns at full precision; CSV and Parquet, for programs)
and *display* (the article's wide layout, rounded; Markdown, HTML, LaTeX, for people).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_ad import tracking
from lightning_ad.config import FROZEN, GRID_KEYS, SweepSpec, cell_label
from lightning_ad.models.heads import NO_HEAD

DISPLAY_FORMATS = ("md", "html", "latex")
DATA_FORMATS = ("csv", "parquet")
FORMATS = (*DISPLAY_FORMATS, *DATA_FORMATS)
TABLES = ("median", "delta", "defects")
"""``median``: median test AUC per cell; ``delta``: class3 - class2 per (backbone, head);
``defects``: class3 - class2 per defect type."""
FILE_NAMES = {
    "median": "median_auc",
    "delta": "class3_vs_class2",
    "defects": "class3_vs_class2_by_defect",
}
DELTA_COLUMNS = [
    "category", "backbone", "head", "median_delta", "pairs", "wins", "losses", "p_wilcoxon"
]  # fmt: skip
DEFECT_COLUMNS = [*DELTA_COLUMNS[:3], "defect", *DELTA_COLUMNS[3:]]
RUN_FACTS = ("dataset", "data_root", "git_commit")
"""Run parameters that say where a cell's numbers came from; the tidy table carries them."""
MAIN_METRIC = "test/auc"
DEFECT_METRIC = "test/auc_lof"
TRIAL_ROLE = "trial"
SELECTED_TAG = "lightning_ad.selected"


def fetch_trials(
    tracking_uri: str, experiment: str, sweep: str, category: str | None = None
) -> pd.DataFrame:
    """The finished trial runs of a sweep (one row per run; the latest wins for a repeated cell).

    Columns: the grid keys, ``seed`` as int, and every ``test/*`` metric.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame(columns=[*GRID_KEYS, MAIN_METRIC])
    query = f"tags.`lightning_ad.sweep` = '{sweep}' and tags.`lightning_ad.role` = '{TRIAL_ROLE}'"
    query += " and attributes.status = 'FINISHED'"
    if category:
        query += f" and params.category = '{category}'"
    runs, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id],
            query,
            order_by=["attributes.end_time ASC"],
            max_results=1000,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            break
    # With a ``search`` block a cell trains several proposals; only its selected one counts.
    runs = [run for run in runs if run.data.tags.get(SELECTED_TAG) != "false"]
    if not runs:
        return pd.DataFrame(columns=[*GRID_KEYS, MAIN_METRIC])
    rows = []
    for run in runs:
        row = {key: run.data.params.get(key) for key in (*GRID_KEYS, *RUN_FACTS)}
        row |= {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}
        rows.append(row | {"run_id": run.info.run_id})
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype(int)
    return table.drop_duplicates(subset=list(GRID_KEYS), keep="last").reset_index(drop=True)


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


def columns(spec: SweepSpec) -> list[str]:
    """Table columns in grid order: the frozen baseline first, then head x class count."""
    labels = [cell_label(h, c) for h in spec.grid["head"] for c in spec.grid["classes"]]
    ordered = [FROZEN] if FROZEN in labels else []
    return ordered + [label for label in dict.fromkeys(labels) if label != FROZEN]


def cell_stats(
    trials: pd.DataFrame, metric: str = MAIN_METRIC
) -> dict[tuple[str, str, str], CellStats]:
    """(category, backbone, column) -> median over seeds of ``metric``."""
    stats = {}
    if trials.empty or metric not in trials:
        return stats
    for (category, backbone, head, classes), group in trials.groupby(
        ["category", "backbone", "head", "classes"]
    ):
        values = group[metric].dropna().to_numpy(float)
        if len(values):
            stats[(category, backbone, cell_label(head, classes))] = CellStats(
                float(np.median(values)), len(values), float(values.min()), float(values.max())
            )
    return stats


def median_metrics(trials: pd.DataFrame) -> dict[str, float]:
    """``median_auc/<backbone>/<head>/<classes>`` of one category's trials, for its parent run
    (where the MLflow UI shows them)."""
    result = {}
    for (_category, backbone, column), stats in cell_stats(trials).items():
        head, _, classes = column.partition(" ")
        result[
            f"median_auc/{backbone}/{NO_HEAD if head == FROZEN else head}/{classes or 'any'}"
        ] = stats.median
    return result


def tidy_medians(trials: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """One row per (category, backbone, head, classes) cell, full precision: ``median``, ``min``,
    ``max`` and ``n_seeds`` of ``test/auc``, the median of every other image-level ``test/*``
    metric (``median_auc_lof``, ``median_pixel_auc_gradcam``, ...), and where the numbers came
    from (sweep, fixed settings, dataset, data root, commits). The frozen baseline does not
    depend on the class count: its ``classes`` is ``any``."""
    columns = ["sweep", *GRID_KEYS[:-1], "n_seeds", "median", "min", "max"]
    if trials.empty or MAIN_METRIC not in trials:
        return pd.DataFrame(columns=columns)
    other = sorted(
        c
        for c in trials.columns
        if c.startswith("test/") and c.count("/") == 1 and c != MAIN_METRIC
    )
    rows = []
    for (category, backbone, head, classes), group in trials.groupby(list(GRID_KEYS[:-1])):
        values = group[MAIN_METRIC].dropna()
        if values.empty:
            continue
        row = {
            "sweep": spec.name,
            "category": category,
            "backbone": backbone,
            "head": head,
            "classes": "any" if head == NO_HEAD else classes,
            "n_seeds": len(values),
            "median": float(values.median()),
            "min": float(values.min()),
            "max": float(values.max()),
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


def paired_deltas(
    trials: pd.DataFrame, metric: str, a: str = "class2", b: str = "class3"
) -> pd.DataFrame:
    """Per (category, backbone, head): ``b - a`` of ``metric`` paired by seed, with a Wilcoxon
    signed-rank test (two-sided) over the seeds; p is NaN with fewer than 2 pairs."""
    from scipy.stats import wilcoxon

    rows = []
    if trials.empty or metric not in trials:
        return pd.DataFrame(rows, columns=DELTA_COLUMNS)
    for (category, backbone, head), group in trials.groupby(["category", "backbone", "head"]):
        by_seed = group.pivot_table(index="seed", columns="classes", values=metric, aggfunc="last")
        if a not in by_seed or b not in by_seed:
            continue
        delta = (by_seed[b] - by_seed[a]).dropna().to_numpy(float)
        if not len(delta):
            continue
        p = float("nan")
        if len(delta) >= 2 and np.any(delta != 0):
            p = float(wilcoxon(delta).pvalue)
        rows.append(
            {
                "category": category,
                "backbone": backbone,
                "head": head,
                "median_delta": float(np.median(delta)),
                "pairs": len(delta),
                "wins": int((delta > 0).sum()),
                "losses": int((delta < 0).sum()),
                "p_wilcoxon": p,
            }
        )
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def defect_deltas(trials: pd.DataFrame) -> pd.DataFrame:
    """class3 - class2 per defect type, from ``test/auc_lof/<defect>``: which defects the third
    class helps and which it hurts."""
    frames = []
    for column in sorted(c for c in trials.columns if c.startswith(f"{DEFECT_METRIC}/")):
        deltas = paired_deltas(trials, column)
        if not deltas.empty:
            frames.append(deltas.assign(defect=column.rsplit("/", 1)[1]))
    if not frames:
        return pd.DataFrame(columns=DEFECT_COLUMNS)
    return pd.concat(frames)[DEFECT_COLUMNS]


def main_table(trials: pd.DataFrame, spec: SweepSpec, long: bool = False) -> pd.DataFrame:
    """The article's layout: a block per backbone, rows = categories, columns = head x classes.

    Cells hold the median over seeds with the seed count (and min-max when ``long``); cells that
    cannot exist say n/a, cells not run yet say "missing"."""
    stats = cell_stats(trials)
    rows = []
    for backbone in spec.grid["backbone"]:
        for category in spec.grid["category"]:
            row = {"backbone": backbone, "category": category}
            for column in columns(spec):
                cell = stats.get((category, backbone, column))
                if cell is not None:
                    row[column] = cell.long() if long else cell.short()
                else:
                    row[column] = "n/a" if _impossible(spec, column) else "missing"
            rows.append(row)
    return pd.DataFrame(rows)


def _impossible(spec: SweepSpec, column: str) -> bool:
    head, _, classes = column.partition(" ")
    if column == FROZEN:
        return False
    cell = {"category": "", "backbone": "", "head": head, "classes": classes, "seed": 0}
    return spec.skip_reason(cell) is not None


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
    """Deltas with their sign, other numbers plain, three decimals."""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:+.3f}" if "delta" in column else f"{value:.3f}"
    return str(value)


def tidy_table(trials: pd.DataFrame, spec: SweepSpec, name: str) -> pd.DataFrame:
    """One table (see ``TABLES``) in tidy form, the sweep's name in its first column."""
    if name == "median":
        return tidy_medians(trials, spec)
    table = paired_deltas(trials, MAIN_METRIC) if name == "delta" else defect_deltas(trials)
    table.insert(0, "sweep", spec.name)
    return table


def display_table(
    trials: pd.DataFrame, spec: SweepSpec, name: str, fmt: str
) -> tuple[pd.DataFrame, bool]:
    """The table a person reads, and whether its best cells are bolded."""
    if name == "median":
        return main_table(trials, spec, long=fmt == "html"), True  # html has room for min-max
    if name == "delta":
        return paired_deltas(trials, MAIN_METRIC), False
    return defect_deltas(trials), False


def write_table(trials: pd.DataFrame, spec: SweepSpec, name: str, fmt: str, path: Path) -> Path:
    """One table in one format: tidy data for csv and parquet, the display table otherwise."""
    if fmt in DATA_FORMATS:
        table = tidy_table(trials, spec, name)
        if fmt == "csv":
            table.to_csv(path, index=False)
        else:
            table.to_parquet(path, index=False)
    else:
        table, bold = display_table(trials, spec, name, fmt)
        path.write_text(render(table, fmt, bold_best=bold))
    return path


def suffix(fmt: str) -> str:
    return ".tex" if fmt == "latex" else f".{fmt}"


def write_report(trials: pd.DataFrame, spec: SweepSpec, out_dir: Path) -> list[Path]:
    """Every table in every format, and the two plots, into ``out_dir``; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        write_table(trials, spec, name, fmt, out_dir / f"{FILE_NAMES[name]}{suffix(fmt)}")
        for fmt in FORMATS
        for name in TABLES
    ]
    written += _plots(trials, out_dir)
    return written


def summary_text(
    trials: pd.DataFrame, spec: SweepSpec, fmt: str = "md", tables: tuple[str, ...] = TABLES
) -> str:
    """What ``lightning-ad table`` prints: the display tables, each under its title."""
    titles = {
        "median": "Median test AUC over seeds (n seeds)",
        "delta": "class3 - class2, paired by seed (Wilcoxon signed-rank, two-sided)",
        "defects": "class3 - class2 per defect type (LOF AUROC)",
    }
    parts = []
    for name in tables:
        table, bold = display_table(trials, spec, name, fmt)
        parts += [titles[name], render(table, fmt, bold_best=bold)]
    return "\n".join(parts)


def parent_description(trials: pd.DataFrame, spec: SweepSpec) -> str:
    """The parent run's description (markdown on its Overview in the UI): the median table and
    class3 - class2, where a person comparing the class counts looks first."""
    text = (
        f"**{spec.name}**: {len(trials)} finished trials. "
        "Tables and plots: the `report/` artifacts (written when the sweep ends).\n\n"
        + summary_text(trials, spec, "md", ("median", "delta"))
        .replace("Median test AUC", "### Median test AUC")
        .replace("class3 - class2, paired", "### class3 - class2, paired")
    )
    return text[: tracking.MAX_TAG_LENGTH]


def _plots(trials: pd.DataFrame, out_dir: Path) -> list[Path]:
    if trials.empty:
        return []
    from lightning_ad.plots import pyplot

    plt = pyplot()

    trained = trials[trials["head"] != NO_HEAD]
    medians = (
        trained.groupby(["backbone", "head", "classes"])[MAIN_METRIC].median().unstack("classes")
    )
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(medians)), 3.5))
    if not medians.empty:  # e.g. every trained cell failed: the frozen lines are still worth it
        medians.plot.bar(ax=ax)
    for backbone, value in (
        trials[trials["head"] == NO_HEAD].groupby("backbone")[MAIN_METRIC].median().items()
    ):
        ax.axhline(value, linestyle=":", linewidth=1, color="grey")
        ax.annotate(f"frozen {backbone}", (0, value), fontsize=7, color="grey")
    ax.set(ylabel="median test AUC", xlabel="", ylim=(0, 1))
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    bars = out_dir / "median_auc_bars.png"
    fig.savefig(bars, dpi=100)
    plt.close(fig)

    groups = list(trials.groupby(["backbone", "head", "classes"]))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(groups)), 3.5))
    ax.boxplot([g[MAIN_METRIC].dropna() for _, g in groups], showmeans=False)
    for i, (_, g) in enumerate(groups, start=1):
        ax.scatter(np.full(len(g), i), g[MAIN_METRIC], s=10, color="black", zorder=3)
    ax.set_xticks(
        range(1, len(groups) + 1),
        [cell_label(h, c) + f"\n{b}" for (b, h, c), _ in groups],
        rotation=60,
        fontsize=7,
    )
    ax.set(ylabel="test AUC per seed")
    fig.tight_layout()
    boxes = out_dir / "auc_per_seed.png"
    fig.savefig(boxes, dpi=100)
    plt.close(fig)
    return [bars, boxes]
