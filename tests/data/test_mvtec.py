from pathlib import Path

import cv2
import numpy as np
import pytest

from lightning_ad.data.mvtec import MVTecCategory, decode_image, find_category_dir, read_image
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


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds none of them."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_an_image_over_the_pixel_limit_is_refused_from_its_header() -> None:
    with pytest.raises(DataError, match=r"part.png is 12000 x 12001 pixels, over the limit"):
        decode_image(_png_header(12000, 12001), "part.png")
    with pytest.raises(DataError, match=r"part.png declares more than [\d,]+ pixels, over the"):
        decode_image(_png_header(32768, 32769), "part.png")  # past Pillow's own cap
    with pytest.raises(DataError, match=r"is 300 x 300 pixels, over the limit of 40,000"):
        decode_image(_png_header(300, 300), "part.png", max_pixels=200 * 200)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_png_or_jpeg_is_refused(suffix: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(suffix, image)[1].tobytes()
    assert decode_image(data, "whole").shape == (64, 64, 3)
    with pytest.raises(DataError, match=r"part is a truncated (PNG|JPEG) file \(no end marker\)"):
        decode_image(data[: len(data) * 2 // 3], "part")
