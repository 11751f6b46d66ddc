from pathlib import Path

import cv2
import numpy as np
import pytest

from lightning_ad.data.mvtec import MVTecCategory, find_category_dir, read_image
from lightning_ad.errors import DataError


def test_lists_splits_defects_and_masks(synthetic_root: Path) -> None:
    category = MVTecCategory.load(synthetic_root / "screw")
    assert category.name == "screw"
    assert category.defect_types == (
        "manipulated_front",
        "scratch_head",
        "scratch_neck",
        "thread_side",
        "thread_top",
    )
    counts = category.counts()
    assert counts["train/good"] == 10 and counts["test/good"] == 10
    assert sum(counts.values()) == len(category.train) + len(category.test)
    defective = [s for s in category.test if s.label == 1]
    assert defective and all(s.mask_path is not None and s.mask_path.is_file() for s in defective)
    assert all(s.mask_path is None for s in category.test if s.label == 0)


def test_grey_png_becomes_three_equal_channels(synthetic_root: Path) -> None:
    path = MVTecCategory.load(synthetic_root / "grid").train[0].path
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 2
    image = read_image(path)
    assert image.shape[2] == 3 and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 2]).all()


def test_colour_png_is_rgb(synthetic_root: Path) -> None:
    path = MVTecCategory.load(synthetic_root / "transistor").train[0].path
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert np.array_equal(read_image(path), bgr[..., ::-1])


def test_any_image_size(tmp_path: Path) -> None:
    folder = tmp_path / "parts" / "train" / "good"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), np.zeros((37, 81, 3), np.uint8))
    assert read_image(folder / "a.png").shape == (37, 81, 3)


def test_missing_category_lists_the_ones_found(synthetic_root: Path) -> None:
    with pytest.raises(
        DataError, match=r"no category 'scerw'.*found: grid, screw, transistor.*'screw'"
    ):
        find_category_dir(synthetic_root, "scerw")


def test_empty_train_good_names_the_folder(screw_copy: Path) -> None:
    for p in (screw_copy / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=str(screw_copy / "train" / "good")):
        MVTecCategory.load(screw_copy)


def test_corrupt_image_names_the_file(screw_copy: Path) -> None:
    bad = screw_copy / "test" / "good" / "000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DataError, match=f"cannot decode image {bad}.*corrupt"):
        read_image(bad)


def test_mask_without_image_is_reported(screw_copy: Path) -> None:
    (screw_copy / "test" / "scratch_head" / "003.png").unlink()
    with pytest.raises(DataError, match=r"mask .*scratch_head/003_mask.png has no image"):
        MVTecCategory.load(screw_copy)


def test_mask_folder_without_test_folder_is_reported(screw_copy: Path) -> None:
    import shutil

    shutil.rmtree(screw_copy / "test" / "thread_top")
    with pytest.raises(DataError, match="thread_top"):
        MVTecCategory.load(screw_copy)
