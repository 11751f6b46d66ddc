"""Built-in scenes in the spirit of MVTec AD 2 (Heckler-Kram et al., 2025): ``sheet_metal`` and
``vial``, with defect types (name: image count) and a renderer ``(rng, size, defect) -> RGB
uint8 image`` each, as in :mod:`lightning_ad.data.renderers`.

What makes them hard, on purpose: the normals vary (the light moves, reflections move, pose,
fill level and benign dust change from image to image); most defects are small or faint (a few
grey levels on a textured, moving background); and each category has a defect that resembles no
training twin (a stain, a floating particle).

The same contract as the article's scenes: everything the clean and the defective scene share
is drawn before the defect's own values, and the camera noise has its own generator, seeded
before them, so the same seed with ``defect=None`` renders the same scene without the defect.
"""

from __future__ import annotations

import cv2
import numpy as np

from lightning_ad.data.drawing import finish, pts, rotate, smooth_field

# --------------------------------------------------------------------------------------------
# sheet_metal: a brushed, stamped steel sheet under a light that moves between shots.

SHEET_METAL_DEFECTS = {"dent": 15, "scratch": 15, "stain": 15, "deformed_hole": 12}
SHEET_HOLES = ((0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73))
SHEET_HOLE_RADIUS = 0.055


def render_sheet_metal(rng: np.random.Generator, size: int, defect: str | None) -> np.ndarray:
    """A brushed steel sheet with four punched holes, lit by a moving light, with benign dust.

    Args:
        rng: the image's generator; every random value of the scene comes from it.
        size: the image side in pixels.
        defect: a key of ``SHEET_METAL_DEFECTS``, or None for a good part.

    Returns:
        The image, RGB uint8, ``size`` x ``size``.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # Brushing: noise smeared along one direction (a few degrees off horizontal).
    grain = rng.normal(0, 1, (size, size)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), sigmaX=size / 12, sigmaY=0.6)
    grain = _rotated(grain / (grain.std() + 1e-6), rng.uniform(-4, 4))
    # The moving light: a specular band anywhere at any angle, and a gradient across the sheet.
    band_angle, band_at = rng.uniform(0, np.pi), rng.uniform(0.1, 0.9)
    band_width, band_gain = rng.uniform(0.12, 0.3), rng.uniform(25, 60)
    distance = xs * np.cos(band_angle) + ys * np.sin(band_angle) - band_at
    light_dir = rng.uniform(0, 2 * np.pi)
    light = (
        band_gain * np.exp(-((distance / band_width) ** 2))
        + rng.uniform(-18, 18) * ((xs - 0.5) * np.cos(light_dir) + (ys - 0.5) * np.sin(light_dir))
        + smooth_field(rng, size, 3, 6)
    )
    image = 125 + light + rng.uniform(3, 6) * grain
    holes = [np.array(c) + rng.uniform(-0.012, 0.012, 2) for c in SHEET_HOLES]
    dust = [
        (rng.uniform(0.03, 0.97, 2), rng.uniform(0.8, 1.6), rng.uniform(-30, 30))
        for _ in range(int(rng.integers(0, 7)))
    ]
    finish_rng = np.random.default_rng(rng.integers(2**63))

    # A dent shades like a small bump under the light: bright on one side, dark on the other.
    if defect == "dent":
        c, sigma = rng.uniform(0.12, 0.88, 2), rng.uniform(0.012, 0.025)
        r2 = ((xs - c[0]) ** 2 + (ys - c[1]) ** 2) / (2 * sigma**2)
        slope = ((xs - c[0]) * np.cos(light_dir) + (ys - c[1]) * np.sin(light_dir)) / sigma
        image = image + rng.uniform(14, 28) * slope * np.exp(-r2)
    elif defect == "stain":
        c, radius = rng.uniform(0.15, 0.85, 2), rng.uniform(0.025, 0.05)
        blob = np.zeros((size, size), np.float32)
        outline = (
            c + rotate(rng.uniform(0.6, 1.0, (9, 1)) * _circle(9), rng.uniform(0, 90)) * radius
        )
        cv2.fillPoly(blob, [pts(outline, size)], 1.0, cv2.LINE_AA, shift=4)
        blob = cv2.GaussianBlur(blob, (0, 0), size / 180)
        image = image - rng.uniform(10, 20) * blob
    axes = [(SHEET_HOLE_RADIUS, SHEET_HOLE_RADIUS)] * len(holes)
    if defect == "deformed_hole":  # punched off its place and out of round: geometric
        k = int(rng.integers(len(holes)))
        holes[k] = holes[k] + rng.choice([-1, 1], 2) * rng.uniform(0.012, 0.025, 2)
        axes[k] = (SHEET_HOLE_RADIUS * rng.uniform(1.15, 1.3), SHEET_HOLE_RADIUS * 0.9)
    image = image[..., None].repeat(3, axis=2)
    for centre, hole_axes in zip(holes, axes, strict=True):
        _ellipse(image, centre, hole_axes, 38.0, size)
    for place, radius_px, contrast in dust:
        grey = float(image[int(place[1] * size), int(place[0] * size), 0]) + contrast
        _dot(image, place, radius_px, (grey,) * 3, size)
    if defect == "scratch":
        start = rng.uniform(0.12, 0.88, 2)
        direction = rotate(np.array([[rng.uniform(0.05, 0.14), 0.0]]), rng.uniform(0, 180))[0]
        t = np.linspace(0, 1, 16)[:, None]
        curve = start + t * direction + 4 * t * (1 - t) * rng.uniform(-0.01, 0.01, 2)
        marks = np.zeros((size, size), np.float32)
        cv2.polylines(marks, [pts(curve, size)], False, 1.0, 1, cv2.LINE_AA, shift=4)
        image = image + rng.choice([-1, 1]) * rng.uniform(16, 30) * marks[..., None]
    return finish(image, finish_rng, 2.5)


# --------------------------------------------------------------------------------------------
# vial: a glass vial of liquid, standing, under reflections that move between shots.

VIAL_DEFECTS = {"bubble": 14, "chip": 12, "crack": 14, "particle": 14}
VIAL_GLASS = (0.36, 0.64, 0.22, 0.86)  # left, right, shoulder, bottom (fractions of the side)


def render_vial(rng: np.random.Generator, size: int, defect: str | None) -> np.ndarray:
    """A glass vial with a crimped cap, partly filled, standing in front of a lit backdrop.

    Args:
        rng: the image's generator; every random value of the scene comes from it.
        size: the image side in pixels.
        defect: a key of ``VIAL_DEFECTS``, or None for a good part.

    Returns:
        The image, RGB uint8, ``size`` x ``size``.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    offset = rng.uniform(-0.025, 0.025)
    left, right, shoulder, bottom = VIAL_GLASS
    left, right = left + offset, right + offset
    level = rng.uniform(0.42, 0.52)  # the liquid's surface (normal variation)
    tint = rng.uniform([150, 120, 60], [175, 140, 75])  # amber liquid
    backdrop = 70 + smooth_field(rng, size, 3, 14) + 30 * (1 - ys)
    for _ in range(int(rng.integers(0, 5))):  # benign dust on the backdrop, seen through glass
        _dot(backdrop, rng.uniform(0.05, 0.95, 2), rng.uniform(0.8, 1.5), 45.0, size)
    image = backdrop[..., None].repeat(3, axis=2)
    glass = (xs >= left) & (xs <= right) & (ys >= shoulder) & (ys <= bottom)
    liquid = glass & (ys >= level)
    image[glass] = image[glass] * 0.9 + 14
    image[liquid] = image[liquid] * 0.35 + tint * 0.55
    # Reflections: bright vertical streaks whose place and strength change from shot to shot.
    across = (xs - left) / (right - left)
    for _ in range(int(rng.integers(2, 4))):
        at, width, gain = rng.uniform(0.12, 0.88), rng.uniform(0.02, 0.06), rng.uniform(25, 70)
        streak = gain * np.exp(-(((across - at) / width) ** 2)) * glass
        image += streak[..., None]
    edge = glass & ((np.abs(xs - left) < 0.012) | (np.abs(xs - right) < 0.012))
    image[edge] *= 0.55
    meniscus = glass & (np.abs(ys - level) < 0.004)
    image[meniscus] = image[meniscus] * 0.6 + 70
    cap = (xs >= left + 0.03) & (xs <= right - 0.03) & (ys >= shoulder - 0.09) & (ys < shoulder)
    image[cap] = (165, 168, 175) + (10 * np.cos(8 * np.pi * xs[cap]))[:, None]
    finish_rng = np.random.default_rng(rng.integers(2**63))

    inside = (left + 0.05, right - 0.05)
    # Faint on purpose: each defect adds or removes a few dozen grey levels at most.
    marks = np.zeros((size, size), np.float32)
    if defect == "bubble":
        for _ in range(int(rng.integers(1, 4))):
            c = np.array([rng.uniform(*inside), rng.uniform(level + 0.04, bottom - 0.04)])
            r = rng.uniform(0.005, 0.011)
            _ellipse(marks, c, (r, r), None, size, rim=1.0)
        image += rng.uniform(25, 45) * marks[..., None]
    elif defect == "particle":
        c = np.array([rng.uniform(*inside), rng.uniform(level + 0.03, bottom - 0.03)])
        shard = c + rng.uniform(-1, 1, (5, 2)) * rng.uniform(0.003, 0.007)
        hull = cv2.convexHull(shard.astype(np.float32)).reshape(-1, 2)
        cv2.fillPoly(marks, [pts(hull, size)], 1.0, cv2.LINE_AA, shift=4)
        image -= rng.uniform(25, 45) * marks[..., None]
    elif defect == "crack":
        p = np.array([rng.choice([left, right]) + rng.uniform(-0.01, 0.01), rng.uniform(0.3, 0.8)])
        for _ in range(int(rng.integers(2, 4))):  # a few branches from one point on the wall
            d = rotate(np.array([[rng.uniform(0.03, 0.06), 0.0]]), rng.uniform(0, 360))[0]
            t = np.linspace(0, 1, 8)[:, None]
            branch = p + t * d + rng.normal(0, 0.004, (8, 2)) * t
            cv2.polylines(marks, [pts(branch, size)], False, 1.0, 1, cv2.LINE_AA, shift=4)
        image += rng.uniform(20, 40) * marks[..., None]
    elif defect == "chip":
        side = rng.choice([left, right])
        c = np.array([side, rng.uniform(shoulder + 0.05, bottom - 0.05)])
        notch = c + rng.uniform(-1, 1, (6, 2)) * rng.uniform(0.01, 0.018)
        hull = cv2.convexHull(notch.astype(np.float32)).reshape(-1, 2)
        cv2.fillPoly(marks, [pts(hull, size)], 1.0, cv2.LINE_AA, shift=4)
        outside = ((xs < left) | (xs > right))[..., None]
        # Glass missing: the backdrop shows; the broken faces catch the light.
        chipped = np.where(outside, image, backdrop[..., None] + 25)
        image = image * (1 - marks[..., None]) + chipped * marks[..., None]
    return finish(image, finish_rng, 2.0)


# --------------------------------------------------------------------------------------------
# Shared strokes of these scenes.


def _rotated(field: np.ndarray, degrees: float) -> np.ndarray:
    size = field.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0)
    return cv2.warpAffine(field, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)


def _circle(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _ellipse(
    canvas: np.ndarray,
    centre: np.ndarray,
    axes: tuple[float, float],
    fill: float | None,
    size: int,
    rim: float | None = None,
) -> None:
    """An upright ellipse filled with grey ``fill`` (or only its outline, of grey ``rim``),
    anti-aliased."""
    centre_px = tuple(np.round(np.asarray(centre) * size * 16).astype(int))
    axes_px = tuple(max(16, round(a * size * 16)) for a in axes)
    if fill is not None:
        cv2.ellipse(canvas, centre_px, axes_px, 0, 0, 360, (fill,) * 3, -1, cv2.LINE_AA, 4)
    if rim is not None:
        cv2.ellipse(canvas, centre_px, axes_px, 0, 0, 360, (rim,) * 3, 1, cv2.LINE_AA, 4)


def _dot(
    canvas: np.ndarray, place: np.ndarray, radius_px: float, colour: float | tuple, size: int
) -> None:
    """A speck ``radius_px`` pixels wide at 256 px, scaled with the image."""
    centre = tuple(np.round(np.asarray(place) * size * 16).astype(int))
    cv2.circle(canvas, centre, max(8, round(radius_px * 16 * size / 256)), colour, -1,
               cv2.LINE_AA, shift=4)  # fmt: skip
