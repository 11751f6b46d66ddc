"""The MVTec AD 2-style built-in categories and the test-time shifts (issue: built-in data that
can still tell detectors apart)."""

from pathlib import Path

import numpy as np
import pytest

from lightning_ad.data.mvtec import MVTecCategory, read_image, read_mask
from lightning_ad.data.shifts import SHIFTS
from lightning_ad.data.synthetic import (
    CATEGORIES,
    SPECS,
    generate_category,
    generate_shift,
    render_clean,
    render_sample,
)
from lightning_ad.errors import DataError

HARD = ("sheet_metal", "vial")


def test_the_hard_categories_come_after_the_article_ones() -> None:
    """The article's three keep their place (and their numbers); the new ones are added."""
    assert ("screw", "grid", "transistor", *HARD) == CATEGORIES


@pytest.mark.parametrize("name", HARD)
def test_layout_and_counts(tmp_path: Path, name: str) -> None:
    spec = SPECS[name]
    folder = generate_category(name, tmp_path, image_size=32)
    counts = MVTecCategory.load(folder).counts()
    assert counts["train/good"] == spec.train_count
    assert counts["test/good"] == spec.good_test_count
    assert {k: v for k, v in counts.items() if k not in ("train/good", "test/good")} == {
        f"test/{d}": n for d, n in spec.defect_counts.items()
    }


@pytest.mark.parametrize("name", HARD)
@pytest.mark.parametrize("shift", [None, *SHIFTS])
def test_masks_are_where_the_image_differs_from_the_clean_scene(
    name: str, shift: str | None
) -> None:
    """Every changed pixel is in the mask, and nothing outside it changed; under a shift the
    mask also keeps the unshifted defect's pixels (the part did not change)."""
    spec = SPECS[name]
    assert render_sample(spec, 0, "test/good", 0, 128, shift)[1] is None
    for defect in spec.defect_counts:
        folder = f"test/{defect}"
        image, mask = render_sample(spec, 0, folder, 1, 128, shift)
        clean = render_clean(spec, 0, folder, 1, 128, shift)
        changed = np.abs(image.astype(np.int16) - clean).max(axis=2) > spec.mask_threshold
        assert changed.any(), f"{name}/{defect}: the defect changed nothing"
        assert 0 < mask.mean() < 0.2, f"{name}/{defect}"
        assert mask[changed].all() and not changed[~mask].any()
        if shift is not None:
            unshifted = render_sample(spec, 0, folder, 1, 128)[1]
            assert mask[unshifted].all()


@pytest.mark.parametrize("name", HARD)
def test_deterministic_per_seed(name: str) -> None:
    spec = SPECS[name]
    defect = next(iter(spec.defect_counts))
    a, mask_a = render_sample(spec, 3, f"test/{defect}", 2, 64, "lighting")
    b, mask_b = render_sample(spec, 3, f"test/{defect}", 2, 64, "lighting")
    c, _ = render_sample(spec, 4, f"test/{defect}", 2, 64, "lighting")
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", HARD)
def test_normals_vary(name: str) -> None:
    """High normal variability is what makes these hard: the light or the reflections move."""
    images = np.stack([render_sample(SPECS[name], 0, "train/good", i, 64)[0] for i in range(8)])
    assert images.astype(np.float32).std(axis=0).mean() > 5


@pytest.mark.parametrize("shift", SHIFTS)
def test_a_shifted_split_holds_the_same_parts_under_another_camera(
    tmp_path: Path, shift: str
) -> None:
    generate_category("vial", tmp_path, seed=2, image_size=48, max_per_folder=2)
    folder = generate_shift("vial", tmp_path, shift, max_per_folder=2)
    assert folder == tmp_path / "vial" / "shifts" / shift
    category = MVTecCategory.load(tmp_path / "vial")
    shifted = category.shifts[shift]
    assert [s.path.relative_to(folder) for s in shifted] == [
        s.path.relative_to(category.root) for s in category.test
    ]
    for plain, moved in zip(category.test, shifted, strict=True):
        assert plain.defect == moved.defect
        assert not np.array_equal(read_image(plain.path), read_image(moved.path))
        if moved.defect == "good":
            assert moved.mask_path is None  # a good image stays good: an empty mask
        else:
            assert read_mask(moved.mask_path).any()
    assert category.counts()[f"shifts/{shift}/test"] == len(category.test)


def test_a_shift_needs_a_rendered_category_and_a_known_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="render it first: lightning-ad data synth"):
        generate_shift("vial", tmp_path, "lighting")
    generate_category("vial", tmp_path, image_size=32, max_per_folder=1)
    with pytest.raises(DataError, match="no test-time shift 'fog'; known: lighting, blur"):
        generate_shift("vial", tmp_path, "fog")
