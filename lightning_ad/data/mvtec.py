"""The MVTec AD folder layout, handled in one place.

::

    ROOT/<category>/train/good/*.png
    ROOT/<category>/test/good/*.png
    ROOT/<category>/test/<defect>/*.png
    ROOT/<category>/ground_truth/<defect>/<stem>_mask.png
    ROOT/<category>/shifts/<shift>/test/...          (optional: the test split under a
    ROOT/<category>/shifts/<shift>/ground_truth/...   camera change, same layout)

Any folder in this layout works: real MVTec AD, the built-in synthetic categories, or a user's
own parts. Images may be grey or colour and of any size; :func:`read_image` always returns
3-channel RGB uint8 so that every backbone sees the same thing.
"""

from __future__ import annotations

import difflib
import io
import re
import urllib.parse
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lightning_ad.data.download import download, safe_extract
from lightning_ad.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
MASK_SUFFIX = "_mask"
SHIFTS_DIR = "shifts"


@dataclass(frozen=True)
class Sample:
    """One image of a category: where it is, whether it is anomalous, and its defect mask."""

    path: Path
    defect: str
    mask_path: Path | None = None

    @property
    def label(self) -> int:
        """0 for a good image, 1 for any defect."""
        return 0 if self.defect == GOOD else 1


@dataclass(frozen=True)
class MVTecCategory:
    """The files of one category in MVTec AD layout (nothing decoded yet)."""

    name: str
    root: Path
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    shifts: dict[str, tuple[Sample, ...]] = field(default_factory=dict)
    """Shifted test splits by name (``shifts/<name>/``), each with the test split's layout."""

    @classmethod
    def load(cls, category_dir: Path | str) -> MVTecCategory:
        """List and check the files of the category folder ``category_dir``.

        Raises :class:`DataError` naming the path when train/good is missing or empty, or when a
        mask has no image beside it.
        """
        root = Path(category_dir)
        if not root.is_dir():
            raise DataError(f"category folder {root} does not exist")
        train_dir = root / "train" / GOOD
        train = tuple(Sample(p, GOOD) for p in _image_files(train_dir))
        if not train:
            raise DataError(
                f"{train_dir} has no images: a category needs normal training images in "
                f"train/{GOOD}/ (MVTec AD layout, see README)"
            )
        return cls(root.name, root, train, _test_samples(root), _shifted_splits(root))

    @property
    def defect_types(self) -> tuple[str, ...]:
        """Defect folder names under test/, sorted, without ``good``."""
        return tuple(sorted({s.defect for s in self.test} - {GOOD}))

    def counts(self) -> dict[str, int]:
        """Image counts per split and defect type, e.g.
        ``{"train/good": 320, "test/scratch_head": 24}``."""
        counts = {f"train/{GOOD}": len(self.train)}
        per_defect = Counter(s.defect for s in self.test)
        counts[f"test/{GOOD}"] = per_defect.pop(GOOD, 0)
        counts.update({f"test/{d}": n for d, n in sorted(per_defect.items())})
        for name, samples in self.shifts.items():
            counts[f"{SHIFTS_DIR}/{name}/test"] = len(samples)
        return counts


def find_category_dir(root: Path | str, category: str) -> Path:
    """``root/category``, or a clear error listing the categories that ``root`` does hold."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist; pass the folder that holds the category folders"
        )
    candidate = root / category
    if candidate.is_dir():
        return candidate
    found = list_categories(root)
    hint = difflib.get_close_matches(category, found, n=1)
    did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
    listing = ", ".join(found) if found else "none (no folder with train/good inside)"
    raise DataError(f"no category '{category}' in {root}; found: {listing}{did_you_mean}")


def list_categories(root: Path | str) -> list[str]:
    """Names of the sub-folders of ``root`` that look like categories (they have train/good)."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def read_image(path: Path | str) -> np.ndarray:
    """Decode an image file as RGB uint8 of shape (H, W, 3); grey images are repeated to 3
    channels."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise DataError(f"image {path} does not exist")
    return decode_image(data, f"image {path}")


MAX_PIXELS = 10_000 * 10_000
"""The largest image decoded (width x height) unless a caller asks for less. MVTec AD's largest
is 1024 x 1024; a 1 MB PNG can declare 32768 x 32768 pixels, 3 GiB once decoded."""
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def decode_image(data: bytes | np.ndarray, source: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) -> RGB uint8 (H, W, 3), as :func:`read_image`.

    Args:
        data: the file's bytes.
        source: names the image in the error.
        max_pixels: refuse a larger image, read from its header before anything is decoded.

    Raises:
        DataError: not an image, over ``max_pixels``, or a truncated PNG or JPEG (OpenCV would
            decode what is there and leave the rest grey).
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    _check_header(buffer, source, max_pixels)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    except cv2.error:  # over OpenCV's own pixel cap, for a format the header check cannot read
        image = None
    if image is None:
        raise DataError(
            f"cannot decode {source}: the file is corrupt or not an image; replace or delete it"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_header(buffer: np.ndarray, source: str, max_pixels: int) -> None:
    """Size and completeness from the file's header and end, before decoding (Pillow reads
    only the header here)."""
    from PIL import Image, UnidentifiedImageError

    data = buffer.tobytes()
    refusal = "refused before decoding; resize it, or raise the limit (--max-pixels)"
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the limit is checked here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                (width, height), kind = header.size, header.format
    except Image.DecompressionBombError:
        cap = 2 * Image.MAX_IMAGE_PIXELS  # Pillow refuses to read on past this many
        if max_pixels >= cap:
            return  # a limit above Pillow's own: OpenCV decides
        raise DataError(
            f"{source} declares more than {cap:,} pixels, over the limit of {max_pixels:,}: "
            f"{refusal}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        return  # not a format Pillow knows: OpenCV decides (and its own pixel cap holds)
    if width * height > max_pixels:
        raise DataError(
            f"{source} is {width} x {height} pixels, over the limit of {max_pixels:,}: {refusal}"
        )
    ends = {"PNG": _PNG_END, "JPEG": _JPEG_END}
    if kind in ends and not data.rstrip(b"\0").endswith(ends[kind]):
        raise DataError(
            f"{source} is a truncated {kind} file (no end marker): its missing part would be "
            "scored as grey; copy the file again"
        )


def resize(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """``image`` as a ``size`` x ``size`` square (unchanged when it is one already)."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=interpolation)


def read_mask(path: Path | str) -> np.ndarray:
    """Decode a ground-truth mask as bool (H, W): any non-zero pixel is defective."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data is not None and data.size else None
    if mask is None:
        raise DataError(f"cannot decode mask {path}: the file is missing, corrupt or not an image")
    return mask > 0


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


SHIFT_NAME = re.compile(r"[A-Za-z0-9_-]+")
"""A shifted split's folder name: it names its metrics (``test_<name>/auc``) in MLflow."""


def _shifted_splits(root: Path) -> dict[str, tuple[Sample, ...]]:
    """``root/shifts/<name>/``'s test splits by name, each checked as ``root``'s test split."""
    shifted = root / SHIFTS_DIR
    splits = {}
    for folder in sorted(shifted.iterdir() if shifted.is_dir() else []):
        if not folder.is_dir():
            continue
        samples = _test_samples(folder)
        if not SHIFT_NAME.fullmatch(folder.name) or not samples:
            raise DataError(
                f"{folder} is no shifted test split: its name must be letters, digits, _ or - "
                "and it must hold test/<defect>/ images; rename or delete it"
            )
        splits[folder.name] = samples
    return splits


def _test_samples(root: Path) -> tuple[Sample, ...]:
    test_dir, truth_dir = root / "test", root / "ground_truth"
    # ground_truth/ is listed too, so that a mask folder with no test folder is reported.
    defects = sorted(
        {p.name for d in (test_dir, truth_dir) if d.is_dir() for p in d.iterdir() if p.is_dir()}
    )
    samples: list[Sample] = []
    for defect in defects:
        images = _image_files(test_dir / defect)
        masks = {m.stem.removesuffix(MASK_SUFFIX): m for m in _image_files(truth_dir / defect)}
        orphans = sorted(set(masks) - {p.stem for p in images})
        if orphans:
            raise DataError(
                f"mask {masks[orphans[0]]} has no image {test_dir / defect / orphans[0]}.*; "
                "restore the image or delete the mask"
            )
        samples += [Sample(p, defect, masks.get(p.stem)) for p in images]
    return tuple(samples)


MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
    "420938113-1629952094/mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_LICENCE = (
    "MVTec AD is licensed under CC BY-NC-SA 4.0 "
    "(https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial use only, share alike, "
    "and cite Bergmann et al., 'MVTec AD', CVPR 2019."
)


def download_mvtec(
    root: Path | str, url: str = MVTEC_URL, sha256: str = MVTEC_SHA256, show_progress: bool = True
) -> list[str]:
    """Download, verify and extract MVTec AD into ``root``; return the categories now there.

    The archive is kept beside the categories (``root/<archive name>``) so that a rerun neither
    downloads nor extracts again; delete it yourself to save 4.9 GB.
    """
    root = Path(root)
    name = Path(urllib.parse.urlparse(url).path).name or "mvtec_anomaly_detection.tar.xz"
    archive = download(url, root / name, sha256, show_progress=show_progress)
    done = root / f".{archive.name}.extracted"
    if not done.is_file():
        safe_extract(archive, root)
        done.write_text(sha256)
    return list_categories(root)
