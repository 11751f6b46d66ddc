"""``lightning-ad predict``: a logged or registered detector scores image files.

One row per image (path, score, anomalous at the stored threshold, error); an image that cannot
be read or taken is skipped with its reason, and the others are still scored. Optionally a heat
map per image, overlaid on it, on one colour scale for all (:meth:`Detector.heat`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lightning_ad import plots
from lightning_ad.data.mvtec import IMAGE_SUFFIXES
from lightning_ad.errors import LightningADError
from lightning_ad.models.detector import Detector
from lightning_ad.packaging import digests
from lightning_ad.packaging.mlflow_model import (
    BATCH_SIZE,
    DETECTOR_ARTIFACT,
    ERROR,
    IMAGE,
    MAP,
    prepare_images,
    score_pictures,
)


@dataclass(frozen=True)
class ImageFile:
    path: Path
    name: Path
    """The path below the folder it was found in (or the file's name): where its map goes."""


def find_images(inputs: list[Path]) -> list[ImageFile]:
    """The image files among ``inputs`` and below the folders among them, sorted per input."""
    found: list[ImageFile] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise LightningADError(
                    f"{item} holds no image ({', '.join(IMAGE_SUFFIXES)}); point at a folder of "
                    "images or at image files"
                )
            found += [ImageFile(p, p.relative_to(item)) for p in files]
        elif item.is_file():
            found.append(ImageFile(item, Path(item.name)))
        else:
            raise LightningADError(f"{item}: no such file or folder")
    return found


def load_detector(model_uri: str, tracking_uri: str) -> Detector:
    """The detector behind a model URI, read as data: its ``detector.json`` and tensors, after
    checking every file of the model against the digests its trial recorded. Nothing from the
    store is imported, executed or unpickled.

    Args:
        model_uri: ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``, or a local folder (a saved
            MLflow model or a detector's own folder: yours, so not checked).
        tracking_uri: where the run or registered version lives.

    Returns:
        The :class:`~lightning_ad.models.detector.Detector`, on the CPU.

    Raises:
        LightningADError: not a stored detector, no recorded digests, or a file that differs.
    """
    local = Path(model_uri)
    if local.is_dir():
        nested = local / "artifacts" / DETECTOR_ARTIFACT
        return Detector.load(nested if nested.is_dir() else local)
    with tempfile.TemporaryDirectory(prefix="lightning_ad-predict-") as tmp:
        model = digests.fetch_verified(tracking_uri, model_uri, into=Path(tmp))
        return Detector.load(model / "artifacts" / DETECTOR_ARTIFACT)


def predict(
    detector: Detector,
    images: list[ImageFile],
    maps_dir: Path | None = None,
    advance: Callable[[int], None] = lambda n: None,
    batch_size: int = BATCH_SIZE,
    max_pixels: int | None = None,
) -> pd.DataFrame:
    """Score image files with a detector.

    Args:
        detector: the detector (:func:`load_detector`).
        images: the files (:func:`find_images`).
        maps_dir: where to write each scored image's anomaly map (PNG), when given.
        advance: called with each chunk's size as it is scored (a progress bar's).
        batch_size: images per forward pass.
        max_pixels: images over this many pixels are refused (see
            :func:`~lightning_ad.packaging.mlflow_model.prepare_images`).

    Returns:
        One row per file: its path, ``score``, ``anomalous`` and ``error`` (why an image was
        not scored: unreadable, too large, grey for a colour detector; the others still are).
    """
    rows = []
    for chunk in _chunks(images, 4 * batch_size):
        read, unreadable = {}, {}
        for i, image in enumerate(chunk):
            try:
                read[i] = image.path.read_bytes()
            except OSError as err:
                unreadable[i] = f"cannot read {shown(image.path)}: {err.strerror or err}"
        names = [shown(chunk[i].path) for i in read]
        pictures, errors = prepare_images(detector, list(read.values()), names, max_pixels)
        scored = score_pictures(detector, pictures, errors, maps_dir is not None, batch_size)
        scored.index = list(read)
        if maps_dir is not None:
            for i, picture, heatmap in zip(read, pictures, scored.pop(MAP), strict=True):
                if heatmap is not None:
                    _write_map(detector, chunk[i], picture, heatmap, maps_dir)
        failed = pd.DataFrame({ERROR: list(unreadable.values())}, index=list(unreadable))
        scored = pd.concat([scored, failed]).sort_index() if unreadable else scored
        scored.insert(0, IMAGE, [shown(image.path) for image in chunk])
        rows.append(scored)
        advance(len(chunk))
    return pd.concat(rows, ignore_index=True)


def shown(path: Path) -> str:
    """A path as text that any output takes: bytes of a file name that are not UTF-8 written
    as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write_map(
    detector: Detector,
    image: ImageFile,
    picture: np.ndarray,
    heatmap: np.ndarray,
    maps_dir: Path,
) -> None:
    """``picture`` (the image as scored) beside its ``heatmap`` overlaid, into ``maps_dir``."""
    # part.png -> part.png; part.jpg -> part.jpg.png (beside a part.png of its own)
    name = image.name if image.name.suffix.lower() == ".png" else Path(f"{image.name}.png")
    out = maps_dir / name
    out.parent.mkdir(parents=True, exist_ok=True)
    panel = np.hstack([picture, plots.overlay(picture, detector.heat(heatmap))])
    if not cv2.imwrite(str(out), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
        raise LightningADError(f"cannot write {out}; check that the --maps folder is writable")
