import zlib
from pathlib import Path

import numpy as np
import pytest

from lightning_ad.data.mvtec import MVTecCategory, read_image, read_mask
from lightning_ad.data.synthetic import SPECS, generate_category, render_sample
from lightning_ad.errors import DataError

# MVTec AD's own counts and defect folders (METHOD.md section 6).
MVTEC = {
    "screw": (
        320,
        41,
        119,
        {"manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"},
    ),
    "grid": (264, 21, 57, {"bent", "broken", "glue", "metal_contamination", "thread"}),
    "transistor": (213, 60, 40, {"bent_lead", "cut_lead", "damaged_case", "misplaced"}),
}


@pytest.mark.parametrize("name", sorted(MVTEC))
def test_counts_and_defect_names_match_mvtec(name: str) -> None:
    train, good, defective, defects = MVTEC[name]
    spec = SPECS[name]
    assert (spec.train_count, spec.good_test_count, sum(spec.defect_counts.values())) == (
        train,
        good,
        defective,
    )
    assert set(spec.defect_counts) == defects


def test_full_category_on_disk(tmp_path: Path) -> None:
    folder = generate_category("transistor", tmp_path, image_size=32)
    counts = MVTecCategory.load(folder).counts()
    assert counts["train/good"] == 213 and counts["test/good"] == 60
    assert sum(v for k, v in counts.items() if k not in ("train/good", "test/good")) == 40


@pytest.mark.parametrize(("name", "grey"), [("screw", True), ("grid", True), ("transistor", False)])
def test_grey_and_colour(synthetic_root: Path, name: str, grey: bool) -> None:
    image = read_image(MVTecCategory.load(synthetic_root / name).train[0].path)
    assert image.shape == (64, 64, 3)
    assert bool((image[..., 0] == image[..., 1]).all()) is grey


@pytest.mark.parametrize("name", sorted(MVTEC))
def test_every_defect_has_a_mask_covering_what_changed(synthetic_root: Path, name: str) -> None:
    category = MVTecCategory.load(synthetic_root / name)
    for defect in category.defect_types:
        sample = next(s for s in category.test if s.defect == defect)
        mask = read_mask(sample.mask_path)
        assert 0 < mask.mean() < 0.6, f"{name}/{defect}: mask covers {mask.mean():.1%}"


def test_mask_is_where_the_defect_differs_from_the_clean_scene() -> None:
    spec = SPECS["grid"]
    image, mask = render_sample(spec, 0, "test/glue", 0, 128)
    # The same scene without the defect: the same random stream as render_sample draws from.
    key = [0, zlib.crc32(b"test/glue"), 0]
    clean = spec.render(np.random.default_rng(key), 128, None)
    changed = np.abs(image.astype(np.int16) - clean).max(axis=2) > 12
    assert changed.any() and mask.any() and not mask.all()
    assert mask[changed].all()  # every changed pixel is inside the mask
    assert not changed[~mask].any()  # and nothing outside it changed


def test_deterministic_per_seed() -> None:
    spec = SPECS["screw"]
    a, mask_a = render_sample(spec, 3, "test/thread_side", 2, 64)
    b, mask_b = render_sample(spec, 3, "test/thread_side", 2, 64)
    c, _ = render_sample(spec, 4, "test/thread_side", 2, 64)
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(a, c)


def test_pose_varies_for_screw_and_barely_for_transistor() -> None:
    def spread(name: str) -> float:
        images = np.stack(
            [render_sample(SPECS[name], 0, "train/good", i, 64)[0] for i in range(12)]
        )
        return float(images.astype(np.float32).std(axis=0).mean())

    assert spread("screw") > 2 * spread("transistor")


def test_existing_category_is_kept_unless_overwritten(tmp_path: Path) -> None:
    folder = generate_category("grid", tmp_path, image_size=32, max_per_folder=2)
    stamp = (folder / "synthetic.json").stat().st_mtime_ns
    assert generate_category("grid", tmp_path, image_size=32, max_per_folder=2) == folder
    assert (folder / "synthetic.json").stat().st_mtime_ns == stamp
    generate_category("grid", tmp_path, image_size=32, max_per_folder=3, overwrite=True)
    assert len(list((folder / "train" / "good").iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["grid"]  # no staging folders left behind


def test_unknown_category_lists_the_built_in_ones(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"no built-in category 'pill'; built-in: screw, grid, transistor, sheet"
    ):
        generate_category("pill", tmp_path)
