"""Test-time shifts: what the camera sees changes between training and test, the parts do not.

MVTec AD 2's point (Heckler-Kram et al., 2025): a detector in a plant sees its parts under
lighting it was never trained on, and must not call the lighting an anomaly. A shift is applied
to a finished image, good or defective alike, so a shifted test split holds the same scenes as
the unshifted one under another camera condition; its masks are the unshifted ones, and any
pixel the shift spread a defect to (:func:`lightning_ad.data.synthetic.render_sample`).

Each shift is ``(image, rng) -> image`` on RGB uint8, with its random values from ``rng``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from lightning_ad.errors import DataError

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lamp moved aside: brightness falls along a random direction, from 1.25x in one corner
    to 0.6x in the opposite one along a diagonal (1.16x to 0.69x edge to edge along an axis);
    the train split's light never varies this much."""
    size = image.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (xs - 0.5) * np.cos(direction) + (ys - 0.5) * np.sin(direction)  # -0.71 .. 0.71
    gain = 0.925 + 0.46 * ramp
    return np.clip(image * gain[..., None], 0, 255).astype(np.uint8)


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The lens out of focus: a Gaussian blur of sigma 1.2-1.8 px at 256 px (scaled with the
    image, and at least 0.6 px, which still blurs)."""
    sigma = max(0.6, rng.uniform(1.2, 1.8) * image.shape[0] / 256)
    return cv2.GaussianBlur(image, (0, 0), sigma)


def exposure(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A longer exposure: 1.3-1.5x the light, bright parts clipping, and a gamma of 0.85."""
    gain = rng.uniform(1.3, 1.5)
    scaled = np.clip(image.astype(np.float32) * gain / 255.0, 0, 1) ** 0.85
    return np.round(scaled * 255).astype(np.uint8)


SHIFTS: dict[str, Shift] = {"lighting": lighting, "blur": blur, "exposure": exposure}


def shift_named(name: str) -> Shift:
    """The shift ``name``.

    Raises:
        DataError: no such shift (the known ones listed).
    """
    try:
        return SHIFTS[name]
    except KeyError:
        raise DataError(f"no test-time shift '{name}'; known: {', '.join(SHIFTS)}") from None
