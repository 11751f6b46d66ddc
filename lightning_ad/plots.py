"""Per-trial figures: one ROC curve per scorer, score histograms per defect type, and a sheet of
anomaly maps (PatchCore's, Grad-CAM's) over a few test images of each defect type."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_curve


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend: every figure here is written to disk."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def roc_curves(
    labels: np.ndarray, scores: dict[str, np.ndarray], metrics: dict[str, float], out: Path
) -> Path:
    """ROC of good (0) vs every defect (1), one curve per scorer, AUROC in the legend."""
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
