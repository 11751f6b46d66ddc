"""Object masks: where the part is in each training image, so that a twin lands on the part
(the distortion patch, blob-aware lines). Heuristics on pixel values; no model."""

from __future__ import annotations

import cv2
import numpy as np

from lightning_ad.errors import unknown

MASK_MODES: tuple[str, ...] = ("auto", "mean", "background", "full")


def mean_image(images: np.ndarray) -> np.ndarray:
    """Pixel-wise mean of a category's training images (N, H, W, 3) -> float32 (H, W, 3).

    Where the pose varies, the part averages away and the mean is the background (the article's
    "training data average")."""
    return images.mean(axis=0, dtype=np.float64).astype(np.float32)


def _binarise(difference: np.ndarray) -> np.ndarray:
    """Otsu threshold of a difference map, cleaned: an opening removes speckle, a closing fills."""
    diff = np.clip(difference, 0, 255).astype(np.uint8)
    _, binary = cv2.threshold(diff, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(3, (min(diff.shape) // 32) | 1)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8)).astype(bool)


def mask_from_mean(image: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The article's mask: |image - category mean|, largest channel difference, Otsu-binarised."""
    return _binarise(np.abs(image.astype(np.float32) - mean).max(axis=2))


def mask_from_background(image: np.ndarray) -> np.ndarray:
    """|image - the image's own median colour|, Otsu-binarised: needs no other image, so it
    follows the part however it lies."""
    median = np.median(image.reshape(-1, 3), axis=0).astype(np.float32)
    return _binarise(np.abs(image.astype(np.float32) - median).max(axis=2))


def compactness(mask: np.ndarray) -> float:
    """How much a mask looks like one solid part, in [0, 1]: the share of its pixels in its
    largest connected component (speckle scores low) times that component's solidity, its area
    over its convex hull's (a thin outline or ring scores low). 0 for an empty mask."""
    total = int(mask.sum())
    if total == 0:
        return 0.0
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[largest, cv2.CC_STAT_AREA])
    points = cv2.findNonZero((labels == largest).astype(np.uint8))
    hull_area = max(cv2.contourArea(cv2.convexHull(points)), 1.0)
    return float(area / total * min(1.0, area / hull_area))


def choose_mask_mode(images: np.ndarray, mean: np.ndarray, sample: int = 32) -> str:
    """What ``auto`` picks for a category: the mode whose masks come out more compact.

    Each mode scores the median :func:`compactness` of its masks over up to ``sample`` training
    images. The mean-image mask breaks up where the pose varies a lot (the part's smear in the
    mean leaves pieces and holes) and shrinks to fragments of the outline where the part never
    moves (the mean *is* the part); the per-image background mask stays one solid piece in both
    cases. The higher score wins; ties (within 0.05) keep ``mean``, the article's choice. When
    neither reaches 0.4 the category is a texture (grid): the part is the whole image, ``full``.
    """
    step = max(1, len(images) // sample)
    picked = images[::step][:sample]
    by_mean = float(np.median([compactness(mask_from_mean(im, mean)) for im in picked]))
    by_background = float(np.median([compactness(mask_from_background(im)) for im in picked]))
    if max(by_mean, by_background) < 0.4:
        return "full"
    return "background" if by_background > by_mean + 0.05 else "mean"


def check_mask_mode(mode: str) -> None:
    if mode not in MASK_MODES:
        raise unknown("mask mode", mode, MASK_MODES)


def object_masks(images: np.ndarray, mode: str = "auto") -> tuple[np.ndarray, str]:
    """Object masks (N, H, W) bool for a category's images, and the mode actually used.

    Modes: ``mean`` (the article: |image - category mean|), ``background`` (|image - its own
    median colour|), ``full`` (everything: for textures), ``auto`` (see :func:`choose_mask_mode`).
    """
    check_mask_mode(mode)
    mean = mean_image(images)
    if mode == "auto":
        mode = choose_mask_mode(images, mean)
    if mode == "full":
        return np.ones(images.shape[:3], bool), mode
    if mode == "mean":
        masks = [mask_from_mean(im, mean) for im in images]
    else:
        masks = [mask_from_background(im) for im in images]
    return np.stack(masks), mode
