"""Grad-CAM (the ``grad-cam`` package) per anomaly class: the article's explanation.

For a test image and an anomaly class c, Grad-CAM shows where the evidence for c lies (the
article's "Grad-CAM(Distortion)"). Its pixel AUROC compares the larger of the anomaly classes'
maps with the ground-truth masks. Grad-CAM scales each map to [0, 1] per image, so this measures
*where* the network looks, not how anomalous an image is: PatchCore's maps
(:mod:`lightning_ad.models.patchcore`) are the ones that localise defects.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch.utils.data import DataLoader

from lightning_ad.models.net import AnomalyNet


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


def strongest(maps: dict[int, np.ndarray]) -> np.ndarray:
    """Per pixel, the largest of the anomaly classes' maps."""
    return np.max(np.stack(list(maps.values())), axis=0)
