"""Built-in categories, rendered procedurally with OpenCV.

The article's ``screw`` (grey, an object lying at a random position and angle), ``grid`` (grey,
a woven wire texture) and ``transistor`` (colour, a part that sits almost fixed) come with MVTec
AD's image counts and defect-type folder names; ``sheet_metal`` and ``vial`` are harder, in the
spirit of MVTec AD 2 (:mod:`lightning_ad.data.hard_renderers`). So every command runs offline
on data that behaves like the real thing. Everything is deterministic from one seed: image ``i``
of a folder draws from ``default_rng([seed, folder, i])``, so the order of generation does not
matter.

Defects are made by editing the *scene* (the part's geometry or surface), never by the image
operations that the training twins use (:mod:`lightning_ad.data.twins`): a model cannot score
well here by recognising its own twins. Each category has both kinds the article discusses:
geometric distortions (a bent grid wire, a manipulated screw tip, a bent or cut lead, a misplaced
transistor) and surface marks (scratches, glue, contamination, a damaged case).

The ground-truth mask of a defective image is where it differs from the same scene rendered
without the defect (same pose, light and noise), so it covers exactly what the defect changed.
A shifted test split (:func:`generate_shift`, :mod:`lightning_ad.data.shifts`) renders the same
scenes under a camera change.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lightning_ad.data.hard_renderers import (
    SHEET_METAL_DEFECTS,
    VIAL_DEFECTS,
    render_sheet_metal,
    render_vial,
)
from lightning_ad.data.mvtec import GOOD, MASK_SUFFIX, SHIFTS_DIR
from lightning_ad.data.renderers import (
    GRID_DEFECTS,
    SCREW_DEFECTS,
    TRANSISTOR_DEFECTS,
    render_grid,
    render_screw,
    render_transistor,
)
from lightning_ad.data.shifts import shift_named
from lightning_ad.errors import DataError

Renderer = Callable[[np.random.Generator, int, "str | None"], np.ndarray]
MARKER = "synthetic.json"
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """What one built-in category holds: MVTec AD's counts and defect names, and its renderer."""

    name: str
    train_count: int
    good_test_count: int
    defect_counts: dict[str, int]
    grey: bool
    render: Renderer
    mask_threshold: int = 12
    """A pixel is in the mask where some channel differs from the clean scene by more than
    this: the faint defects of the MVTec AD 2-style scenes need a lower one (the camera noise
    is the same in both renders, so only the defect differs)."""


SPECS: dict[str, SyntheticSpec] = {
    "screw": SyntheticSpec("screw", 320, 41, SCREW_DEFECTS, grey=True, render=render_screw),
    "grid": SyntheticSpec("grid", 264, 21, GRID_DEFECTS, grey=True, render=render_grid),
    "transistor": SyntheticSpec(
        "transistor", 213, 60, TRANSISTOR_DEFECTS, grey=False, render=render_transistor
    ),
    "sheet_metal": SyntheticSpec(
        "sheet_metal", 240, 40, SHEET_METAL_DEFECTS, True, render_sheet_metal, mask_threshold=3
    ),
    "vial": SyntheticSpec("vial", 240, 40, VIAL_DEFECTS, False, render_vial, mask_threshold=3),
}
CATEGORIES = tuple(SPECS)


# --------------------------------------------------------------------------------------------
# Writing a category to disk in MVTec AD layout.


def render_sample(
    spec: SyntheticSpec, seed: int, folder: str, index: int, size: int, shift: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image of ``folder`` (``train/good``, ``test/<defect>``) and its defect mask, if any;
    with ``shift`` (a key of :data:`~lightning_ad.data.shifts.SHIFTS`), the same scene under
    that camera change. A shift does not change the part: its mask is the unshifted one, and
    any pixel the shift spread the defect to (a blur)."""
    key = [seed, zlib.crc32(folder.encode()), index]
    defect = folder.split("/")[1]
    defect = None if defect == GOOD else defect
    image = spec.render(np.random.default_rng(key), size, defect)
    if defect is None:
        return _camera(shift, key)(image), None
    clean = render_clean(spec, seed, folder, index, size)
    changed = _changed(spec, image, clean)
    if shift is not None:
        camera = _camera(shift, key)
        image = camera(image)
        changed |= _changed(spec, image, camera(clean))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    return image, cv2.dilate(mask, kernel) > 0


def render_clean(
    spec: SyntheticSpec, seed: int, folder: str, index: int, size: int, shift: str | None = None
) -> np.ndarray:
    """The scene of :func:`render_sample`'s image without its defect (the same pose, light and
    noise), under ``shift`` if given: what a defect's mask is measured against."""
    key = [seed, zlib.crc32(folder.encode()), index]
    return _camera(shift, key)(spec.render(np.random.default_rng(key), size, None))


def _changed(spec: SyntheticSpec, image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    return np.abs(image.astype(np.int16) - clean).max(axis=2) > spec.mask_threshold


def _camera(shift: str | None, key: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    """The shift as image -> image, its random values the same for a scene's clean and
    defective renders."""
    if shift is None:
        return lambda image: image
    apply = shift_named(shift)
    return lambda image: apply(image, np.random.default_rng([*key, zlib.crc32(shift.encode())]))


def generate_category(
    category: str,
    root: Path | str,
    seed: int = 0,
    image_size: int = 256,
    max_per_folder: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Render ``category`` into ``root/<category>`` in MVTec AD layout; return that folder.

    The folder appears atomically (written under a temporary name, then renamed), so workers
    that generate the same category at once never see half a data set. An existing complete
    folder is kept unless ``overwrite``.

    Args:
        category: a key of :data:`SPECS` (``screw``, ``grid``, ``transistor``,
            ``sheet_metal``, ``vial``).
        root: the folder that gets ``<category>/``.
        seed: the render's seed (another seed is another split: the development data).
        image_size: the images' side.
        max_per_folder: caps every folder's count (tests).
        overwrite: render again over an existing folder.

    Returns:
        The category folder.

    Raises:
        DataError: an unknown category, or an image side under 32.
    """
    spec = _spec(category)
    if image_size < 32:
        raise DataError(f"--image-size {image_size} is too small; use 32 or more")
    root = Path(root)
    target = root / category
    if (target / MARKER).is_file() and not overwrite:
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{category}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        _write_category(spec, staging, seed, image_size, max_per_folder)
        try:
            if overwrite:
                _swap_in(staging, target)
            else:
                staging.rename(target)
        except OSError:
            if not (target / MARKER).is_file():
                raise  # not a lost race with another worker: a real error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def generate_shift(
    category: str, root: Path | str, shift: str, max_per_folder: int | None = None
) -> Path:
    """Render ``root/<category>``'s test split again under the camera change ``shift`` into
    ``root/<category>/shifts/<shift>`` (test/ and ground_truth/, MVTec AD layout), atomically;
    return that folder. The scenes, seed and image size are the category's own (read from its
    ``synthetic.json``), so good and defective images are the same parts as in ``test/``.

    Args:
        category: a built-in category already rendered into ``root``.
        root: the folder that holds ``<category>/``.
        shift: ``lighting``, ``blur`` or ``exposure``.
        max_per_folder: caps every folder's count (tests).

    Returns:
        The shifted split's folder.

    Raises:
        DataError: an unknown category or shift, or no rendered category in ``root``.
    """
    spec = _spec(category)
    shift_named(shift)
    marker = Path(root) / category / MARKER
    if not marker.is_file():
        raise DataError(
            f"{marker.parent} is not a rendered built-in category (no {MARKER}); render it "
            f"first: lightning-ad data synth --category {category} --root {root}"
        )
    meta = json.loads(marker.read_text())
    if meta.get("version") != GENERATOR_VERSION:
        raise DataError(
            f"{marker} was written by renderer version {meta.get('version')}, this is "
            f"{GENERATOR_VERSION}: its scenes would differ from a shifted split's; render the "
            f"category again: lightning-ad data synth --category {category} --root {root}"
        )
    target = marker.parent / SHIFTS_DIR / shift
    # Staged beside the category, not in it: a reader of the category never sees it.
    staging = Path(root) / f".{category}-{shift}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        folders = _test_folders(spec)
        size, seed = meta["image_size"], meta["seed"]
        _write_folders(spec, staging, folders, seed, size, max_per_folder, shift)
        target.parent.mkdir(exist_ok=True)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _swap_in(staging: Path, target: Path) -> None:
    """``staging`` renamed to ``target``; an old ``target`` moved aside first and deleted after,
    so ``target`` is at every moment the old folder, absent, or the new one, never half."""
    trash = staging.with_suffix(".old")
    if target.exists():
        target.rename(trash)
    try:
        staging.rename(target)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _test_folders(spec: SyntheticSpec) -> dict[str, int]:
    return {f"test/{GOOD}": spec.good_test_count} | {
        f"test/{d}": n for d, n in spec.defect_counts.items()
    }


def _write_category(
    spec: SyntheticSpec, folder: Path, seed: int, size: int, cap: int | None
) -> None:
    started = time.perf_counter()
    folders = {f"train/{GOOD}": spec.train_count} | _test_folders(spec)
    _write_folders(spec, folder, folders, seed, size, cap)
    meta = {
        "category": spec.name,
        "seed": seed,
        "image_size": size,
        "version": GENERATOR_VERSION,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (folder / MARKER).write_text(json.dumps(meta, indent=1))


def _write_folders(
    spec: SyntheticSpec,
    folder: Path,
    folders: dict[str, int],
    seed: int,
    size: int,
    cap: int | None,
    shift: str | None = None,
) -> None:
    """Render ``folders`` (name -> image count) into ``folder``, masks under ground_truth/."""
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for name, count in folders.items():
        (folder / name).mkdir(parents=True)
        defect = name.split("/")[1]
        for i in range(count if cap is None else min(count, cap)):
            image, mask = render_sample(spec, seed, name, i, size, shift)
            pixels = image[..., 0] if spec.grey else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / name / f"{i:03d}.png"), pixels, png)
            if mask is not None:
                truth = folder / "ground_truth" / defect
                truth.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(
                    str(truth / f"{i:03d}{MASK_SUFFIX}.png"), mask.astype(np.uint8) * 255, png
                )


def _spec(category: str) -> SyntheticSpec:
    try:
        return SPECS[category]
    except KeyError:
        raise DataError(
            f"no built-in category '{category}'; built-in: {', '.join(CATEGORIES)}"
        ) from None
