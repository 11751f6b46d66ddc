"""The built-in synthetic scenes: ``screw``, ``grid`` and ``transistor``, each with MVTec AD's
defect types (name: image count) and a renderer ``(rng, size, defect) -> RGB uint8 image``.

A renderer draws everything a clean and a defective scene share (pose, shape, light) before it
draws the defect's own values (the camera noise has its own generator, seeded before them), so
that the same seed with ``defect=None`` renders the same scene without the defect:
:func:`lightning_ad.data.synthetic.render_sample` takes the ground-truth mask from the difference.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from lightning_ad.data.drawing import (
    composite,
    fill,
    finish,
    line,
    pts,
    rotate,
    scratch,
    smooth_field,
)

# --------------------------------------------------------------------------------------------
# screw: a metal screw seen from the side, lying anywhere at any angle.

SCREW_METAL = (95, 95, 95, 255)
SCREW_DEFECTS = {
    "manipulated_front": 24,
    "scratch_head": 24,
    "scratch_neck": 25,
    "thread_side": 23,
    "thread_top": 23,
}


def _thread_teeth(shaft_length: float, pitch: float) -> int:
    """How many thread teeth fit between the neck (18 % of the shaft) and the tip (85 %)."""
    return int((0.85 - 0.18) * shaft_length / pitch)


def _screw_outline(
    length: float, radius: float, pitch: float, damaged: dict[int, float], tip_cut: float
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Polygon of neck + thread + tip along +x from x=0, and the thread crest x positions.

    ``damaged`` maps a tooth index to how much of its height is left (0 = flattened);
    ``tip_cut`` is the fraction of the tip that is missing.
    """
    tooth = 0.35 * radius
    neck_end, tip_start = 0.18 * length, 0.85 * length
    tip_len = (length - tip_start) * (1 - tip_cut)
    top, bottom = [(0.0, -radius), (neck_end, -radius)], [(0.0, radius), (neck_end, radius)]
    crests = []
    x = neck_end
    for k in range(_thread_teeth(length, pitch)):
        h = tooth * damaged.get(k, 1.0)
        top += [(x + pitch / 2, -radius - h), (x + pitch, -radius)]
        bottom += [(x + pitch / 2 + pitch / 4, radius + h), (x + pitch, radius)]
        crests.append((x + pitch / 2, h))
        x += pitch
    end_r = radius * (1 - 0.8 * (tip_len / max(length - tip_start, 1e-6)))
    top += [(x, -radius), (x + tip_len, -end_r)]
    bottom += [(x, radius), (x + tip_len, end_r)]
    return np.array(top + bottom[::-1]), crests


def render_screw(rng: np.random.Generator, size: int, defect: str | None) -> np.ndarray:
    """A metal screw lying at a random place and angle on a grey background.

    Args:
        rng: the image's generator; every random value of the scene comes from it.
        size: the image side in pixels.
        defect: a key of ``SCREW_DEFECTS``, or None for a good part.

    Returns:
        The image, RGB uint8, ``size`` x ``size``.
    """
    # Pose, shape and light: everything the clean and the defective scene share.
    length = rng.uniform(0.50, 0.58)
    radius, pitch = rng.uniform(0.034, 0.04), rng.uniform(0.026, 0.03)
    head_w, head_h = rng.uniform(0.07, 0.085), rng.uniform(0.17, 0.19)
    angle = rng.uniform(0, 360)
    centre = rng.uniform(0.32, 0.68, 2)
    background = 185 + smooth_field(rng, size, 4, 12)
    background = np.repeat(background[..., None], 3, axis=2)
    finish_rng = np.random.default_rng(rng.integers(2**63))

    damaged: dict[int, float] = {}
    tip_cut = 0.0
    tip_bend = 0.0
    n_teeth = _thread_teeth(length - head_w, pitch)
    if defect == "manipulated_front":
        tip_cut, tip_bend = rng.uniform(0.4, 0.9), rng.choice([-1, 1]) * rng.uniform(8, 20)
    elif defect == "thread_side":
        first = int(rng.integers(1, n_teeth - 4))
        damaged = {k: 0.0 for k in range(first, first + int(rng.integers(2, 5)))}
    elif defect == "thread_top":
        damaged = {
            k: rng.uniform(0.0, 0.2) for k in range(n_teeth - int(rng.integers(3, 5)), n_teeth)
        }

    layer = np.zeros((size, size, 4), np.uint8)
    mid = 0.5
    shaft_x0 = mid - length / 2 + head_w
    body, crests = _screw_outline(length - head_w, radius, pitch, damaged, tip_cut)
    body = body + np.array([shaft_x0, mid])
    if tip_bend:
        # Bend the front part about the tip start (a geometric defect).
        pivot = np.array([shaft_x0 + 0.8 * (length - head_w), mid])
        front = body[:, 0] > pivot[0]
        body[front] = rotate(body[front] - pivot, tip_bend) + pivot
    fill(layer, body, SCREW_METAL, size)
    head = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [head_w / 2, head_h / 2]
    fill(layer, head + np.array([mid - length / 2 + head_w / 2, mid]), (120, 120, 120, 255), size)
    for x, h in crests:  # thread crests as dark diagonals
        x0 = shaft_x0 + x
        line(
            layer,
            (x0 - pitch / 4, mid - radius - h),
            (x0 + pitch / 4, mid + radius),
            (60, 60, 60, 255),
            1,
            size,
        )
    line(
        layer,
        (shaft_x0, mid - radius / 3),
        (shaft_x0 + 0.7 * (length - head_w), mid - radius / 3),
        (150, 150, 150, 255),
        max(1, size / 128),
        size,
    )

    if defect == "scratch_head":
        c = (
            mid - length / 2 + head_w / 2 + rng.uniform(-0.015, 0.015),
            mid + rng.uniform(-0.06, 0.06),
        )
        scratch(
            layer,
            rng,
            c,
            rng.uniform(0.04, 0.08),
            rng.uniform(0, 180),
            (215, 215, 215, 255),
            size / 90,
            size,
        )
    elif defect == "scratch_neck":
        c = (shaft_x0 + rng.uniform(0.01, 0.07), mid + rng.uniform(-0.01, 0.01))
        scratch(
            layer,
            rng,
            c,
            rng.uniform(0.035, 0.06),
            rng.uniform(20, 160),
            (215, 215, 215, 255),
            size / 90,
            size,
        )

    # Rotate the canonical screw about the image centre and move it to its place.
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    matrix[:, 2] += (centre - 0.5) * size
    image = composite(background, layer, matrix)
    return finish(image, finish_rng, 2.5)


# --------------------------------------------------------------------------------------------
# grid: a woven wire mesh, a texture in an almost fixed pose.

GRID_DEFECTS = {"bent": 12, "broken": 12, "glue": 11, "metal_contamination": 11, "thread": 11}


def render_grid(rng: np.random.Generator, size: int, defect: str | None) -> np.ndarray:
    """A woven wire mesh in an almost fixed pose, unevenly lit.

    Args:
        rng: the image's generator; every random value of the scene comes from it.
        size: the image side in pixels.
        defect: a key of ``GRID_DEFECTS``, or None for a good part.

    Returns:
        The image, RGB uint8, ``size`` x ``size``.
    """
    spacing = rng.uniform(0.095, 0.105)
    angle = np.deg2rad(45 + rng.uniform(-3, 3))
    phase = rng.uniform(0, 1, 2)
    shading = smooth_field(rng, size, 3, 15)
    finish_rng = np.random.default_rng(rng.integers(2**63))

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if defect == "bent":  # a local displacement of the wires: geometric
        c, r = rng.uniform(0.2, 0.8, 2), rng.uniform(0.07, 0.12)
        amp, direction = rng.uniform(0.35, 0.5) * spacing, rng.uniform(0, 2 * np.pi)
        bump = amp * np.exp(-((xs - c[0]) ** 2 + (ys - c[1]) ** 2) / (2 * (r / 2) ** 2))
        xs, ys = xs + bump * np.cos(direction), ys + bump * np.sin(direction)
    u = (xs * np.cos(angle) + ys * np.sin(angle)) / spacing + phase[0]
    v = (-xs * np.sin(angle) + ys * np.cos(angle)) / spacing + phase[1]
    half_width = 0.13
    wire_u = np.clip(1 - np.abs(u - np.round(u)) / half_width, 0, 1)
    wire_v = np.clip(1 - np.abs(v - np.round(v)) / half_width, 0, 1)
    # Weave: each wire dips where the crossing wire passes over it.
    over = (np.floor(u + 0.5) + np.floor(v + 0.5)) % 2 == 0
    wire_u = wire_u * np.where(over, 1.0, 0.75 + 0.25 * np.abs(np.sin(np.pi * v)))
    wire_v = wire_v * np.where(over, 0.75 + 0.25 * np.abs(np.sin(np.pi * u)), 1.0)
    if defect == "broken":  # a gap in one wire near a random point
        target = rng.uniform(0.2, 0.8, 2) @ [
            [np.cos(angle), -np.sin(angle)],
            [np.sin(angle), np.cos(angle)],
        ]
        tu, tv = target / spacing + phase
        gap = (np.abs(u - np.round(tu)) < 0.3) & (
            np.abs(v - (np.round(tv) + 0.5)) < rng.uniform(0.25, 0.45)
        )
        wire_u = np.where(gap, 0.0, wire_u)
    wires = np.maximum(wire_u, wire_v) ** 0.7
    image = 70 + shading + wires * 120
    image = np.repeat(image[..., None], 3, axis=2).astype(np.float32)

    if defect == "glue":
        c, axes = rng.uniform(0.2, 0.8, 2), rng.uniform(0.04, 0.09, 2)
        blob = np.zeros((size, size), np.float32)
        cv2.ellipse(
            blob,
            tuple(np.round(c * size).astype(int)),
            tuple(np.round(axes * size).astype(int)),
            rng.uniform(0, 180),
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
        )
        blob = cv2.GaussianBlur(blob, (0, 0), size / 100)[..., None] * rng.uniform(0.6, 0.85)
        image = image * (1 - blob) + rng.uniform(200, 235) * blob
    elif defect == "metal_contamination":
        c = rng.uniform(0.2, 0.8, 2)
        for _ in range(int(rng.integers(2, 5))):
            shard = rotate(
                rng.uniform(-1, 1, (5, 2)) * rng.uniform(0.012, 0.03), rng.uniform(0, 360)
            )
            shard = (
                cv2.convexHull(shard.astype(np.float32)).reshape(-1, 2)
                + c
                + rng.uniform(-0.03, 0.03, 2)
            )
            fill(image, shard, (245.0, 245.0, 245.0), size)
            cv2.polylines(
                image, [pts(shard, size)], True, (30.0, 30.0, 30.0), 1, cv2.LINE_AA, shift=4
            )
    elif defect == "thread":
        p = rng.uniform(0.15, 0.85, 2)
        bend = rng.uniform(-0.08, 0.08, 2)
        d = rotate(np.array([[rng.uniform(0.15, 0.3), 0.0]]), rng.uniform(0, 180))[0]
        t = np.linspace(0, 1, 24)[:, None]
        curve = p + t * d + 4 * t * (1 - t) * bend  # a gently bent fibre
        cv2.polylines(
            image,
            [pts(curve, size)],
            False,
            (25.0, 25.0, 25.0),
            max(1, round(size / 170)),
            cv2.LINE_AA,
            shift=4,
        )
    return finish(image, finish_rng, 3.0)


# --------------------------------------------------------------------------------------------
# transistor: a colour part (case, tab and three leads) that sits almost fixed.

TRANSISTOR_DEFECTS = {"bent_lead": 10, "cut_lead": 10, "damaged_case": 10, "misplaced": 10}
LEAD_X = (-0.09, 0.0, 0.09)


def render_transistor(rng: np.random.Generator, size: int, defect: str | None) -> np.ndarray:
    """A transistor (case, tab and three leads) that sits almost fixed.

    Args:
        rng: the image's generator; every random value of the scene comes from it.
        size: the image side in pixels.
        defect: a key of ``TRANSISTOR_DEFECTS``, or None for a good part.

    Returns:
        The image, RGB uint8, ``size`` x ``size``.
    """
    shift = rng.uniform(-0.012, 0.012, 2)
    angle = rng.uniform(-2, 2)
    lead_colour = (*(int(c) for c in rng.uniform([185, 160, 95], [205, 180, 115])), 255)
    background = np.empty((size, size, 3), np.float32)
    background[:] = (150, 168, 160)
    background += smooth_field(rng, size, 4, 8)[..., None]
    finish_rng = np.random.default_rng(rng.integers(2**63))

    lead_ends = {x: (x, 0.9) for x in LEAD_X}
    lead_bends: dict[float, tuple[float, float]] = {}
    if defect == "bent_lead":
        x = LEAD_X[int(rng.integers(3))]
        y = rng.uniform(0.62, 0.75)
        lean = rng.choice([-1, 1]) * rng.uniform(25, 50)
        lead_bends[x] = (x, y)
        lead_ends[x] = tuple(np.array([x, y]) + rotate(np.array([[0.0, 0.9 - y]]), lean)[0])
    elif defect == "cut_lead":
        x = LEAD_X[int(rng.integers(3))]
        lead_ends[x] = (x, rng.uniform(0.62, 0.78))
    if defect == "misplaced":
        if rng.uniform() < 0.25:
            return finish(background, finish_rng, 2.0)  # the part is missing altogether
        angle += rng.choice([-1, 1]) * rng.uniform(20, 70)
        shift = shift + rng.uniform(-0.12, 0.12, 2)

    layer = np.zeros((size, size, 4), np.uint8)
    cx = 0.5
    for x in LEAD_X:
        bend = [(cx + lead_bends[x][0], lead_bends[x][1])] if x in lead_bends else []
        path = [(cx + x, 0.5), *bend, (cx + lead_ends[x][0], lead_ends[x][1])]
        for a, b in itertools.pairwise(path):
            line(layer, a, b, lead_colour, 0.032 * size, size)
    tab = np.array([[-0.17, 0.12], [0.17, 0.12], [0.17, 0.27], [-0.17, 0.27]]) + np.array([cx, 0])
    fill(layer, tab, (185, 188, 192, 255), size)
    cv2.circle(
        layer,
        tuple(np.round(np.array([cx, 0.185]) * size).astype(int)),
        round(0.035 * size),
        (0, 0, 0, 0),
        -1,
        cv2.LINE_AA,
    )
    body = np.array([[-0.17, 0.26], [0.17, 0.26], [0.17, 0.52], [-0.17, 0.52]]) + np.array([cx, 0])
    fill(layer, body, (32, 32, 36, 255), size)
    cv2.putText(
        layer,
        "TIP31",
        tuple(np.round(np.array([cx - 0.11, 0.41]) * size).astype(int)),
        cv2.FONT_HERSHEY_SIMPLEX,
        size / 480,
        (170, 170, 170, 255),
        max(1, size // 200),
        cv2.LINE_AA,
    )

    if defect == "damaged_case":
        corner = np.array([rng.choice([-0.17, 0.17]) + cx, rng.choice([0.26, 0.52])])
        if rng.uniform() < 0.5:  # a chipped corner: case material missing
            chip = corner + rng.uniform(-1, 1, (6, 2)) * rng.uniform(0.03, 0.06)
            fill(layer, cv2.convexHull(chip.astype(np.float32)).reshape(-1, 2), (0, 0, 0, 0), size)
        else:  # a scuff: a lighter, rough patch on the case
            c = np.array([cx, 0.39]) + rng.uniform(-0.1, 0.1, 2)
            for _ in range(6):
                scratch(
                    layer,
                    rng,
                    c + rng.uniform(-0.02, 0.02, 2),
                    rng.uniform(0.03, 0.07),
                    rng.uniform(0, 180),
                    (120, 118, 115, 255),
                    size / 120,
                    size,
                )

    matrix = cv2.getRotationMatrix2D((size / 2, size * 0.45), angle, 1.0)
    matrix[:, 2] += shift * size
    return finish(composite(background, layer, matrix), finish_rng, 2.0)
