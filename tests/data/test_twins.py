import re

import numpy as np
import pytest

from lightning_ad.data.classes import TwinClasses
from lightning_ad.data.masks import compactness, object_masks
from lightning_ad.data.twins import (
    CutPasteTwin,
    DistortionTwin,
    LineTwin,
    ScarTwin,
    build_twin,
    draw,
    keras_affine_rows,
)
from lightning_ad.errors import LightningADError
from tests.keras_reference import keras_reference_transform

SIZE = 96


def _image(grey: bool = True) -> np.ndarray:
    """A textured image (so that any move of a patch changes pixels) with a square object."""
    rng = np.random.default_rng(0)
    image = rng.integers(40, 90, (SIZE, SIZE, 1 if grey else 3)).astype(np.uint8)
    image[30:70, 30:70] += 120
    return np.repeat(image, 3, axis=2) if grey else image


def _object() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[30:70, 30:70] = True
    return mask


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-9), 0, 1)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


@pytest.mark.parametrize("seed", range(20))
def test_line_changes_pixels_along_one_segment(seed: int) -> None:
    twin, image = LineTwin(), _image(grey=False)
    params = twin.sample(image, _object(), np.random.default_rng(seed))
    out = twin.apply(image, params)
    ys, xs = np.nonzero((out != image).any(axis=2))
    points = np.stack([xs, ys], axis=1).astype(float)
    distance = _distance_to_segment(
        points, np.array(params.start, float), np.array(params.end, float)
    )
    assert distance.max() <= params.width / 2 + 1.5
    # Toward the centre, and no longer than daisukelab's 45 px at 224 scaled to this size.
    assert np.abs(np.subtract(params.end, params.start)).max() <= 45 / 224 * SIZE + 1
    assert 1 <= params.width <= round(16 / 224 * SIZE)


def test_line_is_grey_on_grey_images() -> None:
    out = LineTwin()(_image(grey=True), _object(), np.random.default_rng(1))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_blob_aware_line_starts_on_the_object() -> None:
    twin = LineTwin(blob_aware=True)
    for seed in range(30):
        x, y = twin.sample(_image(), _object(), np.random.default_rng(seed)).start
        assert _object()[y, x]


@pytest.mark.parametrize("seed", range(20))
def test_distortion_changes_pixels_only_inside_its_patch_on_the_object(seed: int) -> None:
    twin, image = DistortionTwin(), _image()
    params = twin.sample(image, _object(), np.random.default_rng(seed))
    out = twin.apply(image, params)
    x0, y0, x1, y1 = params.box
    changed = (out != image).any(axis=2)
    assert changed.any()
    assert not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    centre_x, centre_y = (x0 + x1) // 2, (y0 + y1) // 2
    assert _object()[min(centre_y, SIZE - 1), min(centre_x, SIZE - 1)] or x0 == 0 or y0 == 0
    side = max(x1 - x0, y1 - y0)
    assert side <= SIZE / 3 + 1


def test_distortion_matches_keras_scipy_reference() -> None:
    twin, image = DistortionTwin(), _image(grey=False)
    for seed in range(10):
        params = twin.sample(image, _object(), np.random.default_rng(seed))
        x0, y0, x1, y1 = params.box
        ours = twin.apply(image, params)[y0:y1, x0:x1].astype(np.float32)
        reference = keras_reference_transform(
            image[y0:y1, x0:x1], params.theta, params.tx, params.ty
        )
        assert np.abs(ours - reference).mean() < 1.0


@pytest.mark.parametrize(
    ("theta", "tx", "ty", "h", "w"), [(0, 0, 0, 8, 8), (-27.5, -4.8, 3.1, 25, 19)]
)
def test_keras_affine_rows_equal_keras_matrix_product(theta, tx, ty, h, w) -> None:
    """The closed form equals Keras' ``offset @ rotation @ shift @ reset`` written as Keras does."""
    t = np.deg2rad(theta)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    o_x, o_y = h / 2 + 0.5, w / 2 + 0.5
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    keras = offset @ rotation @ shift @ reset
    np.testing.assert_allclose(
        np.array(keras_affine_rows(theta, tx, ty, h, w)), keras[:2], atol=1e-12
    )


@pytest.mark.parametrize(
    "twin", [LineTwin(), DistortionTwin(), CutPasteTwin(), ScarTwin()], ids=type
)
def test_deterministic_per_seed_and_input_untouched(twin) -> None:
    image = _image(grey=False)
    before = image.copy()
    a = twin(image, _object(), np.random.default_rng(5))
    b = twin(image, _object(), np.random.default_rng(5))
    c = twin(image, _object(), np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(image, before)
    assert a.shape == image.shape and a.dtype == np.uint8


@pytest.mark.parametrize(
    "twin", [LineTwin(), DistortionTwin(), CutPasteTwin(), ScarTwin()], ids=type
)
@pytest.mark.parametrize("seed", range(5))
def test_a_twins_mask_is_exactly_the_pixels_it_changed(twin, seed: int) -> None:
    image = _image(grey=False)
    out, mask = draw(twin, image, _object(), np.random.default_rng(seed))
    assert np.array_equal(out, twin(image, _object(), np.random.default_rng(seed)))
    assert mask.shape == image.shape[:2] and mask.dtype == bool and mask.any()
    assert np.array_equal(mask, (out != image).any(axis=2))
    assert np.array_equal(out[~mask], image[~mask])  # nothing changed outside it


def test_a_twin_that_changes_nothing_is_an_error_not_an_empty_mask() -> None:
    flat = np.full((SIZE, SIZE, 3), 128, np.uint8)  # a rotated patch of it is the same patch
    with pytest.raises(LightningADError, match="changed no pixel"):
        draw(DistortionTwin(), flat, np.ones((SIZE, SIZE), bool), np.random.default_rng(0))


def test_cutpaste_area_within_paper_bounds() -> None:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:, :] = np.arange(SIZE, dtype=np.uint8)[:, None, None] * 2  # rows differ: a move shows
    for seed in range(20):
        out = CutPasteTwin(jitter=0.0)(image, _object(), np.random.default_rng(seed))
        changed = (out != image).any(axis=2)
        assert changed.mean() <= 0.15 + 0.01


def test_scar_is_a_thin_strip() -> None:
    image = _image(grey=False)
    for seed in range(20):
        out = ScarTwin()(image, _object(), np.random.default_rng(seed))
        changed = (out != image).any(axis=2)
        assert changed.sum() <= (16 / 256 * SIZE + 1) * (25 / 256 * SIZE + 1) + 4


def test_build_twin_rejects_typos() -> None:
    with pytest.raises(
        LightningADError,
        match=re.escape(
            "unknown twin 'lines' (did you mean 'line'?); valid: normal, line, distortion, "
            "cutpaste, scar"
        ),
    ):
        build_twin("lines")
    with pytest.raises(LightningADError, match="unknown parameter 'blobaware' for twin 'line'"):
        build_twin("line", blobaware=True)
    assert build_twin("line", blob_aware=True).blob_aware


def _posed_objects(n: int, moving: bool) -> np.ndarray:
    """Bright bars on a dark background, either fixed or at a random place and angle."""
    import cv2

    rng = np.random.default_rng(0)
    images = np.full((n, SIZE, SIZE, 3), 50, np.uint8)
    for image in images:
        centre = rng.uniform(30, 66, 2) if moving else np.array([48.0, 48.0])
        angle = rng.uniform(0, 180) if moving else 0.0
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (40, 12), angle)).astype(
            np.int32
        )
        cv2.fillPoly(image, [box], (200, 200, 200))
    return images


@pytest.mark.parametrize("mode", ["mean", "background"])
def test_mask_modes_cover_the_object(mode: str) -> None:
    images = _posed_objects(64, moving=True)
    truth = images[..., 0] > 120
    masks, used = object_masks(images, mode)
    assert used == mode
    assert (masks & truth).sum() / truth.sum() > 0.9
    assert (masks & ~truth).sum() / masks.sum() < 0.3


def test_background_mask_is_tight_where_the_mean_mask_smears() -> None:
    images = _posed_objects(16, moving=True)  # few images: the mean keeps a smear of the part
    truth = images[..., 0] > 120
    outside = {
        m: (masks & ~truth).sum() / masks.sum()
        for m in ("mean", "background")
        for masks in [object_masks(images, m)[0]]
    }
    assert outside["background"] < 0.05 < outside["mean"]


def test_auto_picks_a_compact_mode_and_full_for_textures() -> None:
    masks, used = object_masks(_posed_objects(16, moving=True), "auto")
    assert used in ("mean", "background")
    assert np.median([compactness(m) for m in masks]) > 0.9
    texture = np.random.default_rng(0).integers(0, 255, (8, SIZE, SIZE, 3)).astype(np.uint8)
    masks, used = object_masks(texture, "auto")
    assert used == "full" and masks.all()


def test_unknown_mask_mode() -> None:
    with pytest.raises(LightningADError, match="unknown mask mode 'median'"):
        object_masks(_posed_objects(2, moving=False), "median")


@pytest.mark.parametrize(
    ("value", "names", "label"),
    [
        (2, ("normal", "line"), "class2"),
        ("class3", ("normal", "line", "distortion"), "class3"),
        ("3", ("normal", "line", "distortion"), "class3"),
        (["normal", "cutpaste", "scar"], ("normal", "cutpaste", "scar"), "normal+cutpaste+scar"),
        ("normal,cutpaste", ("normal", "cutpaste"), "normal+cutpaste"),
        ("normal+line+distortion", ("normal", "line", "distortion"), "class3"),
    ],
)
def test_twin_classes_parse_every_way_and_round_trip(value, names, label) -> None:
    classes = TwinClasses.parse(value)
    assert classes.names == names and classes.label == label and len(classes) == len(names)
    assert TwinClasses.parse(classes.label) == classes == TwinClasses.parse(classes)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (4, "classes=4 has no preset"),
        (["line", "normal"], "must start with 'normal'"),
        (["normal", "lines"], "unknown twin 'lines' (did you mean 'line'?)"),
        (["normal", "line", "line"], "two distinct names"),
    ],
)
def test_bad_twin_classes(classes, message: str) -> None:
    with pytest.raises(LightningADError, match=re.escape(message)):
        TwinClasses.parse(classes)
