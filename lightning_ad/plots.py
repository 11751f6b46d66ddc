"""Figures. Per trial: one ROC curve per scorer, score histograms per defect type, and a sheet of
anomaly maps (PatchCore's, Grad-CAM's) over a few test images of each defect type. Per sweep
(:func:`sweep_plots`): each cell's seeds as dots, and class3 - class2 per pair as a forest
plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lightning_ad.grid import NO_HEAD, cell_label

if TYPE_CHECKING:
    from types import ModuleType

    import pandas as pd

CELL_PLOT, FOREST_PLOT = "auc_per_cell.png", "class3_vs_class2_forest.png"
"""The file names of a sweep report's two plots (:func:`sweep_plots`)."""


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the file-only Agg backend: every figure here is written to disk."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def roc_curves(
    labels: np.ndarray, scores: dict[str, np.ndarray], metrics: dict[str, float], out: Path
) -> Path:
    """ROC of good (0) vs every defect (1), one curve per scorer, AUROC in the legend."""
    from sklearn.metrics import roc_curve  # only here: the report imports this module too

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, values in scores.items():
        fpr, tpr, _ = roc_curve(labels, values)
        ax.plot(fpr, tpr, label=f"{name}: AUROC {metrics[f'test/auc_{name}']:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="test ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def score_histograms(
    scores: np.ndarray, defects: np.ndarray, names: tuple[str, ...], scorer: str, out: Path
) -> Path:
    """One panel per defect type: its scores against the good images' scores."""
    plt = pyplot()
    kinds = [i for i in range(1, len(names)) if (defects == i).any()]
    fig, axes = plt.subplots(
        1, max(1, len(kinds)), figsize=(3.2 * max(1, len(kinds)), 2.8), squeeze=False
    )
    bins = np.linspace(scores.min(), scores.max(), 25)
    for ax, index in zip(axes[0], kinds, strict=False):
        ax.hist(scores[defects == 0], bins=bins, alpha=0.6, label="good")
        ax.hist(scores[defects == index], bins=bins, alpha=0.6, label=names[index])
        ax.set_title(names[index], fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{scorer} score by defect type", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def overlay(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """An RGB image (H, W, 3) half covered by a heat map of ``values`` (H, W) in [0, 1]."""
    heat = cv2.applyColorMap((np.clip(values, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return (0.5 * image + 0.5 * heat[..., ::-1]).astype(np.uint8)


EXAMPLES_PER_DEFECT = 3


def map_sheet(
    images: np.ndarray,
    masks: np.ndarray,
    defects: np.ndarray,
    defect_names: tuple[str, ...],
    maps: dict[str, np.ndarray],
    out: Path,
) -> Path:
    """Rows: a few test images (N, H, W, 3) of each defect type; columns: the image with its mask
    outlined, then each of ``maps`` (title -> (N, H, W) in [0, 1]) overlaid on it."""
    plt = pyplot()
    rows = [
        i
        for d in range(1, len(defect_names))
        for i in np.flatnonzero(defects == d)[:EXAMPLES_PER_DEFECT]
    ]
    columns = 1 + len(maps)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.9 * columns, 1.9 * len(rows)), squeeze=False
    )
    for r, i in enumerate(rows):
        image = images[i].copy()
        contours, _ = cv2.findContours(
            masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        panels = [cv2.drawContours(image.copy(), contours, -1, (255, 40, 40), 1)]
        panels += [overlay(image, values[i]) for values in maps.values()]
        for ax, panel in zip(axes[r], panels, strict=True):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(defect_names[defects[i]], fontsize=7)
    for ax, title in zip(axes[0], ["image + mask", *maps], strict=True):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def sweep_plots(
    trials: pd.DataFrame, metric: str, verdicts: pd.DataFrame
) -> dict[str, Callable[[Path], Path]]:
    """A sweep report's two plots, file name -> what draws it into a PNG: :data:`CELL_PLOT`
    (each cell's seeds and median of ``metric``, each frozen baseline's median as a line) and
    :data:`FOREST_PLOT` (the ``verdicts``' intervals per head and scorer); none without trials.

    Args:
        trials: a row per trial run: ``backbone``, ``head``, ``classes`` and ``metric``.
        metric: the column plotted per cell (the test AUC of the trials' own scorer).
        verdicts: a class3 - class2 verdict row per pair and scorer (``report.paired_verdicts``).
    """
    if trials.empty:
        return {}
    cells, floors = {}, {}
    for (backbone, head, classes), group in trials.groupby(["backbone", "head", "classes"]):
        values = group[metric].dropna().to_numpy(float)
        if not len(values):
            continue
        if head == NO_HEAD:
            floors[f"frozen {backbone}"] = float(np.median(values))
        cells[f"{backbone} · {cell_label(head, classes)}"] = values
    rows = [
        row | {"label": f"{row['backbone']} · {row['head']} · {row['scorer']}"}
        for row in verdicts.to_dict("records")
    ]
    return {
        CELL_PLOT: lambda out: cell_dots(cells, floors, "test AUC, the trials' own scorer", out),
        FOREST_PLOT: lambda out: forest(rows, out),
    }


def cell_dots(
    cells: dict[str, np.ndarray], floors: dict[str, float], metric: str, out: Path
) -> Path:
    """One row per table cell: each seed's value as a dot and the median as a bar, on an axis
    fitted to the values (cells that differ by 0.01 must look different), each frozen
    baseline's median as a dashed line.

    Args:
        cells: the cell's label -> its seeds' values.
        floors: a baseline's label -> its median, drawn across every row.
        metric: the axis' name.
        out: the PNG to write.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.32 * max(len(cells), 1)))
    for row, values in enumerate(cells.values()):
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(values, row + jitter, s=14, color="tab:blue", alpha=0.7, zorder=3)
        ax.plot([np.median(values)] * 2, [row - 0.3, row + 0.3], color="black", linewidth=2)
    for i, (label, value) in enumerate(floors.items()):
        ax.axvline(value, color="grey", linestyle="--", linewidth=1)
        ax.annotate(label, (value, len(cells) - 0.4 + 0.35 * i), fontsize=7, color="grey")
    every = np.concatenate([*cells.values(), list(floors.values())]) if cells else np.zeros(1)
    low, high = float(np.min(every)), float(np.max(every))
    pad = max(0.1 * (high - low), 0.002)
    ax.set_xlim(low - pad, min(high + pad, 1.0 + pad / 2))
    ax.set_ylim(-0.7, len(cells) + 0.2)
    return _save_rows(fig, ax, list(cells), metric, "dots: seeds, bar: median, dashed: frozen", out)


def forest(rows: list[dict], out: Path) -> Path:
    """class3 - class2 per pair: the mean over seeds and its 95 % interval as a line, zero
    marked; a pair at the ceiling is written as such (it has no interval).

    Args:
        rows: ``label``, ``mean_delta``, ``ci_low``, ``ci_high`` and ``claim`` of each pair
            (a verdict row, :mod:`lightning_ad.verdict`).
        out: the PNG to write.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.32 * max(len(rows), 1)))
    ax.axvline(0, color="grey", linewidth=1)
    for i, row in enumerate(rows):
        if not np.isfinite(row["mean_delta"]) or not np.isfinite(row["ci_low"]):
            what = "ceiling: no information" if row["claim"] == "ceiling" else row["claim"]
            ax.annotate(what, (0, i), fontsize=7, color="grey", va="center")
            continue
        color = "tab:red" if row["claim"] in ("better", "worse") else "black"
        ax.plot([row["ci_low"], row["ci_high"]], [i, i], color=color, linewidth=1.5)
        ax.scatter([row["mean_delta"]], [i], color=color, s=18, zorder=3)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    labels = [row["label"] for row in rows]
    xlabel = "class3 - class2: mean over seeds, 95 % interval"
    return _save_rows(fig, ax, labels, xlabel, "red: the interval excludes 0 (a claim)", out)


def _save_rows(fig, ax, labels: list[str], xlabel: str, title: str, out: Path) -> Path:
    """A figure of one row per label, top to bottom, written to ``out`` and closed."""
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=8)
    ax.grid(axis="x", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    pyplot().close(fig)
    return out
