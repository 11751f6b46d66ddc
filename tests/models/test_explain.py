"""Grad-CAM maps of a small untrained AnomalyNet (mobilenet_v2, random weights): one map per
test image and anomaly class, the image's size, in [0, 1], and following the image.

The images are 96 px: mobilenet_v2 downsamples 32 times, so its last feature map (Grad-CAM's
layer) is 3 x 3 there; at 32 px it is a single pixel and every map is flat."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch

from lightning_ad.explain import gradcam_maps, strongest
from lightning_ad.models.config import NetConfig
from lightning_ad.models.net import AnomalyNet

SIZE = 96


class Batch(NamedTuple):
    """What the test loader yields, as far as Grad-CAM reads it: uint8 images (B, 3, H, W)."""

    image: torch.Tensor


@pytest.fixture(scope="module")
def net() -> AnomalyNet:
    """Three classes: normal and two anomaly classes, the ones Grad-CAM explains."""
    torch.manual_seed(0)
    return AnomalyNet(
        NetConfig("mobilenet_v2", "arcface", 3, {}, pretrained="false", bn_mode="frozen")
    )


def _images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def test_one_map_per_image_and_class_in_0_1(net: AnomalyNet) -> None:
    loader = [Batch(_images(3, seed=1)), Batch(_images(2, seed=2))]  # two batches, 5 images
    maps = gradcam_maps(net, loader, range(1, 3))
    assert sorted(maps) == [1, 2]
    for cam in maps.values():
        assert cam.shape == (5, SIZE, SIZE) and np.isfinite(cam).all()
        assert cam.min() >= 0.0 and cam.max() <= 1.0
        assert all(image.max() > 0.5 for image in cam)  # scaled per image: each has a peak


def test_the_map_follows_the_image_not_its_position_in_the_loader(net: AnomalyNet) -> None:
    images = _images(2, seed=3)
    together = gradcam_maps(net, [Batch(images)], range(1, 2))[1]
    swapped = gradcam_maps(net, [Batch(images.flip(0))], range(1, 2))[1]
    alone = gradcam_maps(net, [Batch(images[1:])], range(1, 2))[1]
    assert not np.allclose(together[0], together[1], atol=1e-3)  # two images, two maps
    np.testing.assert_allclose(swapped, together[::-1], atol=1e-4)
    np.testing.assert_allclose(alone[0], together[1], atol=1e-4)


def test_a_mark_moves_the_map(net: AnomalyNet) -> None:
    """The same image with a bright square added in one corner: the map changes."""
    plain = torch.full((1, 3, SIZE, SIZE), 90, dtype=torch.uint8)
    marked = plain.clone()
    marked[..., : SIZE // 4, : SIZE // 4] = 255
    before, after = (gradcam_maps(net, [Batch(x)], range(1, 3)) for x in (plain, marked))
    assert any(not np.allclose(before[c], after[c], atol=1e-3) for c in (1, 2))


def test_the_strongest_map_is_the_per_pixel_maximum_of_the_classes(net: AnomalyNet) -> None:
    maps = gradcam_maps(net, [Batch(_images(2, seed=4))], range(1, 3))
    top = strongest(maps)
    assert top.shape == (2, SIZE, SIZE)
    np.testing.assert_array_equal(top, np.maximum(maps[1], maps[2]))
    assert not np.array_equal(maps[1], maps[2])  # so the maximum chooses between them


def test_a_one_pixel_feature_map_gives_flat_finite_maps(net: AnomalyNet) -> None:
    """32 px, the quick sweep's size: nothing to localise, and nothing undefined either."""
    maps = gradcam_maps(net, [Batch(_images(2, seed=5, size=32))], range(1, 3))
    for cam in maps.values():
        assert cam.shape == (2, 32, 32) and np.isfinite(cam).all()
        assert all(np.ptp(image) == 0 for image in cam)  # one value over the whole image
