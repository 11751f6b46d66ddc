"""Comparison tables from MLflow: median AUC per cell, class3 - class2 deltas, per-defect deltas.

Everything is read back with ``mlflow.search_runs``, never from local state, so a table can be
made from any tracking server that holds the sweep's runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_ad.config import FROZEN, GRID_KEYS, SweepSpec, cell_label
from lightning_ad.models.heads import NO_HEAD

FORMATS = ("md", "csv", "html", "latex")
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
        row = {key: run.data.params.get(key) for key in GRID_KEYS}
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


def paired_deltas(
    trials: pd.DataFrame, metric: str, a: str = "class2", b: str = "class3"
) -> pd.DataFrame:
    """Per (category, backbone, head): ``b - a`` of ``metric`` paired by seed, with a Wilcoxon
    signed-rank test (two-sided) over the seeds; p is NaN with fewer than 2 pairs."""
    from scipy.stats import wilcoxon

    rows = []
    if trials.empty or metric not in trials:
        return pd.DataFrame(rows)
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
    return pd.DataFrame(rows)


def defect_deltas(trials: pd.DataFrame) -> pd.DataFrame:
    """class3 - class2 per defect type, from ``test/auc_lof/<defect>``: which defects the third
    class helps and which it hurts."""
    frames = []
    for column in sorted(c for c in trials.columns if c.startswith(f"{DEFECT_METRIC}/")):
        deltas = paired_deltas(trials, column)
        if not deltas.empty:
            frames.append(deltas.assign(defect=column.rsplit("/", 1)[1]))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames)
    return table[
        [
            "category",
            "backbone",
            "head",
            "defect",
            "median_delta",
            "pairs",
            "wins",
            "losses",
            "p_wilcoxon",
        ]
    ]


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
    """One table as md, csv, html or latex."""
    if fmt == "csv":
        return table.to_csv(index=False)
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


def write_report(trials: pd.DataFrame, spec: SweepSpec, out_dir: Path) -> list[Path]:
    """Every table in every format, and the two plots, into ``out_dir``; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "median_auc": (main_table(trials, spec), True),
        "class3_vs_class2": (paired_deltas(trials, MAIN_METRIC), False),
        "class3_vs_class2_by_defect": (defect_deltas(trials), False),
    }
    long_medians = main_table(trials, spec, long=True)  # csv and html have room for min-max
    written = []
    for fmt in FORMATS:
        for name, (table, bold) in tables.items():
            shown = long_medians if name == "median_auc" and fmt in ("csv", "html") else table
            path = out_dir / f"{name}.{'tex' if fmt == 'latex' else fmt}"
            path.write_text(render(shown, fmt, bold_best=bold))
            written.append(path)
    written += _plots(trials, out_dir)
    return written


def summary_text(trials: pd.DataFrame, spec: SweepSpec, fmt: str = "md") -> str:
    """What ``lightning-ad table`` prints: the three tables in one format."""
    parts = [
        "Median test AUC over seeds (n seeds)",
        render(main_table(trials, spec), fmt, bold_best=True),
        "class3 - class2, paired by seed (Wilcoxon signed-rank, two-sided)",
        render(paired_deltas(trials, MAIN_METRIC), fmt),
        "class3 - class2 per defect type (LOF AUROC)",
        render(defect_deltas(trials), fmt),
    ]
    return "\n".join(parts)


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
