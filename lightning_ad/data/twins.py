"""Anomaly twins: synthetic anomalies made from normal images, one small class each.

Every twin is a frozen dataclass of named parameters with one call,
``twin(image, object_mask, rng) -> image``, on RGB uint8 arrays of shape (H, W, 3);
``object_mask`` is a bool (H, W) array of where the part is (:mod:`lightning_ad.data.masks`).
``draw`` makes a twin and its mask: the pixels it changed. The line and the distortion also
split their call into ``sample`` (draw the random parameters) and ``apply`` (draw them on the
image), so that tests can check the geometry.

Lengths are fractions of the image side, so a twin means the same at 96 px and at 224 px.
Parameters the source article leaves open say so in their docstring: they are choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Protocol

import cv2
import numpy as np

from lightning_ad.errors import LightningADError, unknown


class Twin(Protocol):
    """What the DataModule calls: a normal image in, an anomalous one out."""

    def __call__(
        self, image: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray: ...


def draw(
    twin: Twin, image: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``twin`` drawn on ``image``, and its mask: the pixels it changed.

    The one place a twin's mask is made, from the pixels themselves, so it is exact for every
    twin type: a patch rotated onto itself marks only the pixels that moved.

    Args:
        twin: any twin.
        image: RGB uint8 (H, W, 3); left as it is.
        object_mask: bool (H, W), where the part is.
        rng: the twin's random draws.

    Returns:
        The twin image and a bool (H, W) mask, true where any channel changed.

    Raises:
        LightningADError: the twin changed no pixel (e.g. a patch of flat colour rotated):
            an image labelled with a twin's class must show one.
    """
    out = twin(image, object_mask, rng)
    changed = (out != image).any(axis=2)
    if not changed.any():
        raise LightningADError(
            f"{twin!r} changed no pixel of a {image.shape[1]}x{image.shape[0]} image: the region "
            "it drew on is flat; check the object masks (mask_mode) or the twin's parameters"
        )
    return out, changed


def is_grey(image: np.ndarray) -> bool:
    """True when all three channels are equal, i.e. a grey image stored as RGB."""
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def _random_colour(rng: np.random.Generator, grey: bool) -> tuple[int, int, int]:
    if grey:
        v = int(rng.integers(0, 256))
        return v, v, v
    r, g, b = (int(c) for c in rng.integers(0, 256, 3))
    return r, g, b


def _random_point(mask: np.ndarray | None, shape: tuple[int, ...], rng: np.random.Generator):
    """(x, y) of a random pixel of ``mask``, or of the whole image when the mask is empty."""
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        i = int(rng.integers(len(xs)))
        return int(xs[i]), int(ys[i])
    return int(rng.integers(shape[1])), int(rng.integers(shape[0]))


# --------------------------------------------------------------------------------------------
# line: daisukelab's anomaly twin


@dataclass(frozen=True)
class LineParams:
    start: tuple[int, int]
    end: tuple[int, int]
    width: int
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class LineTwin:
    """One straight line drawn on the image (daisukelab, "Self-supervised learning for anomaly
    detection", 2019: the "anomaly twin"; the predecessor of the article).

    Defaults are daisukelab's values at 224 px expressed as fractions of the side: offsets dx,
    dy ~ U(0, 45 px) pointing toward the centre, width ~ U(1, 16 px), a random colour (grey on grey
    images). ``blob_aware`` starts the line on the object (his later variant).
    """

    max_offset: float = 45 / 224
    """Largest |dx| and |dy| as a fraction of the side (daisukelab: 45 px at 224)."""
    min_width: float = 1 / 224
    """Thinnest line as a fraction of the side (daisukelab: 1 px at 224); at least 1 px."""
    max_width: float = 16 / 224
    """Thickest line as a fraction of the side (daisukelab: 16 px at 224)."""
    blob_aware: bool = False
    """Start on an object pixel instead of anywhere (daisukelab's blob-aware variant)."""

    def sample(
        self, image: np.ndarray, object_mask: np.ndarray | None, rng: np.random.Generator
    ) -> LineParams:
        h, w = image.shape[:2]
        side = min(h, w)
        x0, y0 = _random_point(object_mask if self.blob_aware else None, image.shape, rng)
        dx, dy = rng.uniform(0, self.max_offset * side, 2)
        # Toward the centre, so the line stays on the image.
        x1 = x0 + (dx if x0 < w / 2 else -dx)
        y1 = y0 + (dy if y0 < h / 2 else -dy)
        width = max(1, round(rng.uniform(self.min_width, self.max_width) * side))
        end = round(x1), round(y1)
        return LineParams((x0, y0), end, width, _random_colour(rng, is_grey(image)))

    def apply(self, image: np.ndarray, params: LineParams) -> np.ndarray:
        out = image.copy()
        cv2.line(out, params.start, params.end, params.colour, params.width, cv2.LINE_8)
        return out

    def __call__(
        self, image: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return self.apply(image, self.sample(image, object_mask, rng))


# --------------------------------------------------------------------------------------------
# distortion: the article's partial rotation


@dataclass(frozen=True)
class DistortionParams:
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) of the patch, end exclusive."""
    theta: float
    """Rotation in degrees (Keras ``theta``)."""
    tx: float
    """Shift along rows in pixels (Keras ``tx``, from ``height_shift_range``)."""
    ty: float
    """Shift along columns in pixels (Keras ``ty``, from ``width_shift_range``)."""


@dataclass(frozen=True)
class DistortionTwin:
    """A patch on the object rotated and shifted, then pasted back (shinmura0, "Detect image
    distortion by deep distance learning", 2020: the article's third class).

    The affine equals Keras ``ImageDataGenerator(rotation_range=30, width_shift_range=0.2,
    height_shift_range=0.2)`` applied to the crop, bilinear, fill "nearest" (= OpenCV
    ``BORDER_REPLICATE``), computed with OpenCV instead of scipy.
    """

    rotation_range: float = 30.0
    """Rotation ~ U(-r, r) degrees (the article's Keras setting)."""
    shift_range: float = 0.2
    """Shift ~ U(-s, s) x crop size, per axis (the article's Keras setting)."""
    min_patch: float = 1 / 8
    """Smallest patch side as a fraction of the image side. A choice: the article's is unknown."""
    max_patch: float = 1 / 3
    """Largest patch side as a fraction of the image side. A choice: the article's is unknown."""

    def sample(
        self, image: np.ndarray, object_mask: np.ndarray | None, rng: np.random.Generator
    ) -> DistortionParams:
        h, w = image.shape[:2]
        side = max(2, round(rng.uniform(self.min_patch, self.max_patch) * min(h, w)))
        cx, cy = _random_point(object_mask, image.shape, rng)
        x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
        x1, y1 = min(w, x0 + side), min(h, y0 + side)
        theta = rng.uniform(-self.rotation_range, self.rotation_range)
        tx = rng.uniform(-self.shift_range, self.shift_range) * (y1 - y0)
        ty = rng.uniform(-self.shift_range, self.shift_range) * (x1 - x0)
        return DistortionParams((x0, y0, x1, y1), theta, tx, ty)

    def apply(self, image: np.ndarray, params: DistortionParams) -> np.ndarray:
        x0, y0, x1, y1 = params.box
        out = image.copy()
        out[y0:y1, x0:x1] = warp_patch(image[y0:y1, x0:x1], params.theta, params.tx, params.ty)
        return out

    def __call__(
        self, image: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return self.apply(image, self.sample(image, object_mask, rng))


AffineRows = tuple[tuple[float, float, float], tuple[float, float, float]]


def keras_affine_rows(theta: float, tx: float, ty: float, h: int, w: int) -> AffineRows:
    """Keras' output->input affine in (row, col) coordinates, centred as Keras centres it.

    Mirrors ``keras_preprocessing.image.apply_affine_transform`` with rotation and shift only:
    ``offset @ rotation @ shift @ reset`` with its centre at ``size / 2 + 0.5``. Written out in
    plain floats because the four 3x3 numpy products cost more than warping a small patch
    (``make bench`` B2).
    """
    cos, sin = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    o_row, o_col = h / 2 + 0.5, w / 2 + 0.5
    d_row, d_col = tx - o_row, ty - o_col
    return (
        (cos, -sin, cos * d_row - sin * d_col + o_row),
        (sin, cos, sin * d_row + cos * d_col + o_col),
    )


def warp_patch(patch: np.ndarray, theta: float, tx: float, ty: float) -> np.ndarray:
    """Keras' rotation + shift of one patch, bilinear, fill "nearest", done by OpenCV on uint8."""
    h, w = patch.shape[:2]
    return cv2.warpAffine(
        patch,
        opencv_inverse_map(keras_affine_rows(theta, tx, ty, h, w)),
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def opencv_inverse_map(rows: AffineRows) -> np.ndarray:
    """The same map for ``cv2.warpAffine(..., WARP_INVERSE_MAP)``, which works in (x=col, y=row)."""
    (a00, a01, b0), (a10, a11, b1) = rows
    return np.array([[a11, a10, b1], [a01, a00, b0]], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# cutpaste and scar: CutPaste (Li et al., CVPR 2021)


def colour_jitter(patch: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast, and for colour patches saturation and hue, each by up to
    ``strength``."""
    out = patch.astype(np.float32) * rng.uniform(1 - strength, 1 + strength)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    out = np.clip(out, 0, 255).astype(np.uint8)
    if is_grey(patch):
        return out
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-strength, strength) * 180) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - strength, 1 + strength), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


@dataclass(frozen=True)
class CutPasteTwin:
    """A rectangle cut from the image, colour-jittered and pasted elsewhere (Li et al.,
    "CutPaste: Self-Supervised Learning for Anomaly Detection and Localization", CVPR 2021)."""

    min_area: float = 0.02
    """Smallest patch area as a fraction of the image (paper: 2 %)."""
    max_area: float = 0.15
    """Largest patch area as a fraction of the image (paper: 15 %)."""
    max_aspect: float = 3.3
    """Aspect ratio ~ U(1/a, 1) or U(1, a) with equal odds (paper: (0.3, 1) U (1, 3.3))."""
    jitter: float = 0.1
    """Colour-jitter strength (paper: 0.1)."""

    def __call__(
        self, image: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        h, w = image.shape[:2]
        area = rng.uniform(self.min_area, self.max_area) * h * w
        aspect = (
            rng.uniform(1 / self.max_aspect, 1)
            if rng.uniform() < 0.5
            else rng.uniform(1, self.max_aspect)
        )
        pw = int(np.clip(round(np.sqrt(area * aspect)), 1, w))
        ph = int(np.clip(round(np.sqrt(area / aspect)), 1, h))
        sx, sy = int(rng.integers(w - pw + 1)), int(rng.integers(h - ph + 1))
        dx, dy = int(rng.integers(w - pw + 1)), int(rng.integers(h - ph + 1))
        out = image.copy()
        out[dy : dy + ph, dx : dx + pw] = colour_jitter(
            image[sy : sy + ph, sx : sx + pw], rng, self.jitter
        )
        return out


@dataclass(frozen=True)
class ScarTwin:
    """A thin strip cut, colour-jittered, rotated and pasted elsewhere: CutPaste's "scar"
    (Li et al., CVPR 2021). Sizes are the paper's pixels at 256 px as fractions of the side."""

    min_width: float = 2 / 256
    max_width: float = 16 / 256
    min_length: float = 10 / 256
    max_length: float = 25 / 256
    rotation: float = 45.0
    """Rotation ~ U(-r, r) degrees (paper: 45)."""
    jitter: float = 0.1

    def __call__(
        self, image: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        h, w = image.shape[:2]
        side = min(h, w)
        sw = max(1, round(rng.uniform(self.min_width, self.max_width) * side))
        sl = max(1, round(rng.uniform(self.min_length, self.max_length) * side))
        sx, sy = int(rng.integers(w - sw + 1)), int(rng.integers(h - sl + 1))
        strip = colour_jitter(image[sy : sy + sl, sx : sx + sw], rng, self.jitter)
        # Rotate the strip inside a square canvas big enough for any angle, with its own mask.
        box = int(np.ceil(np.hypot(sw, sl))) + 2
        canvas = np.zeros((box, box, 3), np.uint8)
        inside = np.zeros((box, box), np.uint8)
        oy, ox = (box - sl) // 2, (box - sw) // 2
        canvas[oy : oy + sl, ox : ox + sw] = strip
        inside[oy : oy + sl, ox : ox + sw] = 1
        m = cv2.getRotationMatrix2D(
            (box / 2, box / 2), rng.uniform(-self.rotation, self.rotation), 1
        )
        canvas = cv2.warpAffine(canvas, m, (box, box), flags=cv2.INTER_NEAREST)
        inside = cv2.warpAffine(inside, m, (box, box), flags=cv2.INTER_NEAREST).astype(bool)
        dx, dy = int(rng.integers(max(1, w - box + 1))), int(rng.integers(max(1, h - box + 1)))
        out = image.copy()
        region = out[dy : dy + box, dx : dx + box]
        keep = inside[: region.shape[0], : region.shape[1]]
        region[keep] = canvas[: region.shape[0], : region.shape[1]][keep]
        return out


# --------------------------------------------------------------------------------------------
# the registry

TWINS: dict[str, type] = {
    "line": LineTwin,
    "distortion": DistortionTwin,
    "cutpaste": CutPasteTwin,
    "scar": ScarTwin,
}
NORMAL = "normal"


def build_twin(name: str, **params: object) -> Twin:
    """The twin called ``name`` with ``params`` overriding its defaults; clear errors for typos."""
    if name not in TWINS:
        raise unknown("twin", name, [NORMAL, *TWINS])
    cls = TWINS[name]
    known = sorted(f.name for f in fields(cls))
    extra = sorted(set(params) - set(known))
    if extra:
        raise unknown("parameter", extra[0], known, of=f"twin '{name}'")
    return cls(**params)
