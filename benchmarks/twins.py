"""B2: the distortion twin against the article's Keras/scipy way of warping a patch."""

from __future__ import annotations

import statistics

import cv2
import numpy as np

from benchmarks.harness import Row, Setup, benchmark, category, ratio_row, side_by_side
from lightning_ad.data.datamodule import load_images
from lightning_ad.data.masks import object_masks
from lightning_ad.data.twins import DistortionTwin, warp_patch
from tests.keras_reference import keras_reference_transform


@benchmark("B2")
def distortion_vs_keras(setup: Setup) -> Row:
    """At the trial's image size (the goal) and at the article's 224 px (for the trend)."""
    ratios, diffs = _distortion_ratios(setup, setup.image_size)
    large_ratios, _ = _distortion_ratios(setup, 224)
    row = ratio_row(
        "B2",
        "distortion twin: scipy (Keras' way) time / OpenCV time",
        ">= 10x, outputs agree",
        ratios,
        f"{{:.1f}}x faster at {setup.image_size} px, "
        f"{statistics.median(large_ratios):.1f}x at 224 px",
        lambda r: r >= 10,
    )
    row.result += f"; mean |diff| {np.mean(diffs):.3f} grey levels"
    return row


def _distortion_ratios(setup: Setup, size: int) -> tuple[list[float], list[float]]:
    """Keras/OpenCV time ratios over the same 200 patches and angles, and the mean |difference|
    per patch. Both sides transform the patch only; cutting and pasting it is the same work.
    OpenCV runs single-threaded, as ``AnomalyDataModule.setup`` sets it for training."""
    cv2.setNumThreads(1)
    images = load_images(tuple(s.path for s in category(setup).train[:64]), size)
    masks, _ = object_masks(images, "auto")
    twin = DistortionTwin()
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(200):
        params = twin.sample(images[i % len(images)], masks[i % len(images)], rng)
        x0, y0, x1, y1 = params.box
        jobs.append((images[i % len(images)][y0:y1, x0:x1], params.theta, params.tx, params.ty))

    def opencv() -> list[np.ndarray]:
        return [warp_patch(*job) for job in jobs]

    def keras() -> list[np.ndarray]:
        return [keras_reference_transform(*job) for job in jobs]

    ratios = side_by_side(opencv, keras, setup.repeats)
    diffs = [
        float(np.abs(ours.astype(np.float32) - reference).mean())
        for ours, reference in zip(opencv(), keras(), strict=True)
    ]
    return ratios, diffs
