"""Drawing helpers shared by the synthetic scenes (:mod:`lightning_ad.data.renderers`).

Coordinates are fractions of the image side (``size``, in pixels), scaled on use, so that a
scene looks the same at every image size; a colour has one value per channel of the canvas.
Every random draw comes from the ``rng`` passed in, so that a seed renders the same scene.
"""

from __future__ import annotations

import cv2
import numpy as np


def pts(points: np.ndarray, size: int) -> np.ndarray:
    """Fraction coordinates -> int32 pixel points with 4 fractional bits (cv2 ``shift=4``)."""
    return np.round(np.asarray(points) * size * 16).astype(np.int32).reshape(-1, 1, 2)


def fill(canvas: np.ndarray, points: np.ndarray, colour: tuple, size: int) -> None:
    """Fill the polygon ``points`` (fractions) on ``canvas``, anti-aliased."""
    cv2.fillPoly(canvas, [pts(points, size)], colour, cv2.LINE_AA, shift=4)


def line(
    canvas: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    colour: tuple,
    width_px: float,
    size: int,
) -> None:
    """Draw a line from ``p0`` to ``p1`` (fractions), ``width_px`` pixels wide, anti-aliased."""
    a, b = pts(np.array([p0, p1]), size)
    cv2.line(canvas, a[0], b[0], colour, max(1, round(width_px)), cv2.LINE_AA, shift=4)


def rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    """``points`` (N x 2) rotated by ``degrees`` about the origin."""
    t = np.deg2rad(degrees)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.asarray(points) @ r.T


def finish(image: np.ndarray, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    """Camera look: a slight blur, a global gain and sensor noise (drawn from ``rng``)."""
    gain = rng.uniform(0.95, 1.05)
    noise = rng.normal(0.0, noise_sigma, image.shape)
    blurred = cv2.GaussianBlur(image.astype(np.float32), (3, 3), 0)
    return np.clip(blurred * gain + noise, 0, 255).astype(np.uint8)


def composite(background: np.ndarray, layer: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Warp an RGBA ``layer`` by the 2x3 ``matrix`` and blend it over ``background`` (float RGB)."""
    size = background.shape[1], background.shape[0]
    warped = cv2.warpAffine(layer, matrix, size, flags=cv2.INTER_LINEAR).astype(np.float32)
    alpha = warped[..., 3:] / 255.0
    return background * (1 - alpha) + warped[..., :3] * alpha


def smooth_field(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """Low-frequency shading: random values on a coarse grid, upsampled smoothly."""
    coarse = rng.uniform(-amplitude, amplitude, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def scratch(
    canvas: np.ndarray,
    rng: np.random.Generator,
    centre: np.ndarray,
    length: float,
    angle: float,
    colour: tuple,
    width_px: float,
    size: int,
) -> None:
    """A short straight mark through ``centre``: the surface-defect primitive."""
    d = rotate(np.array([[length / 2, 0.0]]), angle)[0]
    line(canvas, np.array(centre) - d, np.array(centre) + d, colour, width_px, size)
