"""Grad-CAM (the ``grad-cam`` package) per anomaly class, its pixel AUROC, and the sheet.

For a test image and an anomaly class c, Grad-CAM shows where the evidence for c lies (the
article's "Grad-CAM(Distortion)"). The pixel AUROC compares, over every pixel of every test
image, the larger of the anomaly classes' maps with the ground-truth masks. Grad-CAM scales each
map to [0, 1] per image, so this measures *where* the network looks, not how anomalous an image
is.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from lightning_ad.models.net import AnomalyNet

EXAMPLES_PER_DEFECT = 3


def gradcam_maps(net: AnomalyNet, loader: DataLoader, classes: range) -> dict[int, np.ndarray]:
    """Grad-CAM maps (N, H, W) in [0, 1] of every test image, for each class in ``classes``."""
    classifier = net.classifier().eval()
    device = net.pixel_mean.device
    maps: dict[int, list[np.ndarray]] = {c: [] for c in classes}
    with (
        torch.enable_grad(),
        GradCAM(model=classifier, target_layers=[net.backbone.target_layer]) as cam,
    ):
        for batch in loader:
            pixels = net.normalise(batch.image.to(device))
            for c in classes:
                maps[c].append(
                    cam(input_tensor=pixels, targets=[ClassifierOutputTarget(c)] * len(pixels))
                )
    return {c: np.concatenate(m) for c, m in maps.items()}


def pixel_auroc(maps: dict[int, np.ndarray], masks: np.ndarray) -> float:
    """AUROC of the per-pixel max over anomaly classes against the ground-truth masks."""
    anomaly = np.max(np.stack(list(maps.values())), axis=0)
    truth = masks.reshape(-1)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, anomaly.reshape(-1)))


def gradcam_sheet(
    images: np.ndarray,
    masks: np.ndarray,
    defects: np.ndarray,
    defect_names: tuple[str, ...],
    maps: dict[int, np.ndarray],
    class_names: tuple[str, ...],
    out: Path,
) -> Path:
    """Rows: a few test images (N, H, W, 3) of each defect type; columns: the image with its mask
    outlined, then the Grad-CAM overlay for each anomaly class."""
    from lightning_ad.plots import pyplot

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
        for c in maps:
            heat = cv2.applyColorMap((maps[c][i] * 255).astype(np.uint8), cv2.COLORMAP_JET)[
                ..., ::-1
            ]
            panels.append((0.5 * image + 0.5 * heat).astype(np.uint8))
        for ax, panel in zip(axes[r], panels, strict=True):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(defect_names[defects[i]], fontsize=7)
    for ax, title in zip(
        axes[0], ["image + mask", *[f"Grad-CAM({class_names[c]})" for c in maps]], strict=True
    ):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
