"""The twin-supervised patch head: its targets, and that it learns where a planted defect is
from masks alone."""

from __future__ import annotations

import numpy as np
import torch

from lightning_ad import metrics
from lightning_ad.models import patchcore
from lightning_ad.models.config import NetConfig
from lightning_ad.models.net import AnomalyNet
from lightning_ad.models.patch_head import patch_loss, patch_targets

SIDE = 64


def test_a_patch_is_a_twin_patch_when_it_holds_one_changed_pixel() -> None:
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 5, 9] = True
    targets = patch_targets(masks, (4, 4))
    expected = torch.zeros(1, 4, 4)
    expected[0, 1, 2] = 1.0
    assert torch.equal(targets, expected)


def _planted_squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat noisy grey images, each with one square 12-20 px wide, brighter or darker."""
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(128, 4, (n, SIDE, SIDE)), 0, 255)
    masks = np.zeros((n, SIDE, SIDE), bool)
    for image, mask in zip(images, masks, strict=True):
        side = int(rng.integers(12, 21))
        y, x = rng.integers(0, SIDE - side, 2)
        mask[y : y + side, x : x + side] = True
        image[mask] += rng.choice([-1, 1]) * 40
    pixels = np.repeat(images.astype(np.uint8)[:, None], 3, axis=1)
    return torch.from_numpy(pixels), torch.from_numpy(masks)


def test_the_patch_head_learns_a_planted_square_from_masks_alone() -> None:
    """On an untrained backbone's patch features: after a few hundred steps on 32 images, the
    map of each of 16 new images peaks inside its square, and its pixel AUROC is above 0.95."""
    torch.manual_seed(0)
    config = NetConfig("mobilenet_v2", "arcface", 2, {}, "false", "frozen", patch_head=True)
    net = AnomalyNet(config).eval()
    train_images, train_masks = _planted_squares(32, seed=0)
    test_images, test_masks = _planted_squares(16, seed=1)
    with torch.no_grad():
        train_patches, test_patches = (net.embed(x)[1] for x in (train_images, test_images))
    optimizer = torch.optim.Adam(net.patch_head.parameters(), lr=1e-3)
    for _ in range(300):
        optimizer.zero_grad()
        patch_loss(net.patch_head(train_patches), train_masks).backward()
        optimizer.step()
    with torch.no_grad():
        probabilities = torch.sigmoid(net.patch_head(test_patches))
    maps = patchcore.anomaly_maps(probabilities, SIDE).numpy()
    masks = test_masks.numpy()
    assert metrics.pixel_auroc(maps, masks) > 0.95
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    assert all(mask[peak] for mask, peak in zip(masks, peaks, strict=True))
