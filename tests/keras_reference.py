"""What Keras computes for the article's distortion twin, kept as the slow reference that
``tests/data/test_twins.py`` and ``make bench`` (B2) compare ``warp_patch`` against."""

from __future__ import annotations

import numpy as np

from lightning_ad.data.twins import keras_affine_rows


def keras_reference_transform(crop: np.ndarray, theta: float, tx: float, ty: float) -> np.ndarray:
    """What Keras computes: ``scipy.ndimage.affine_transform`` per channel, ``mode="nearest"``."""
    from scipy import ndimage

    (a00, a01, b0), (a10, a11, b1) = keras_affine_rows(theta, tx, ty, crop.shape[0], crop.shape[1])
    matrix, offset = np.array([[a00, a01], [a10, a11]]), np.array([b0, b1])
    channels = [
        ndimage.affine_transform(
            crop[..., c].astype(np.float32), matrix, offset, order=1, mode="nearest"
        )
        for c in range(crop.shape[2])
    ]
    return np.stack(channels, axis=-1)
