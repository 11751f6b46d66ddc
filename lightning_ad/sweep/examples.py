"""A few anomaly maps per defect type for a sweep's report: those of the best trained cell and
of the frozen baseline, on the same test images, so a reader sees where each one looks.

Each detector is the trial's logged model, read as data after its digests are checked
(:func:`~lightning_ad.deploy.predict.load_detector`); of a cell's seeds, the run whose AUC is
nearest the cell's median stands for it. A sweep run with ``log_model: false`` has no maps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_ad.data.mvtec import GOOD, IMAGE_SUFFIXES
from lightning_ad.deploy.predict import ImageFile, load_detector, predict
from lightning_ad.errors import LightningADError
from lightning_ad.grid import NO_HEAD, cell_label
from lightning_ad.report import MAIN_METRIC

PER_DEFECT = 2
"""Test images shown per defect type."""


def example_maps(
    trials: pd.DataFrame, category_dir: Path, tracking_uri: str, out_dir: Path
) -> dict[str, list[Path]]:
    """Maps of the best trained cell and of its backbone's frozen baseline, into
    ``out_dir/maps/<best|frozen>/<defect>/``.

    Args:
        trials: the runs of one fingerprint (``report.fetch_trials``).
        category_dir: the category's folder (``test/<defect>/`` below it).
        tracking_uri: where the runs' models are.
        out_dir: the report's folder.

    Returns:
        A section title -> its map images; empty when the runs logged no model.
    """
    images = _examples(category_dir)
    maps = {}
    for title, (slug, run_id) in _representatives(trials).items():
        try:
            detector = load_detector(f"runs:/{run_id}/model", tracking_uri)
        except LightningADError:  # log_model: false, or a model that fails its digests
            continue
        folder = out_dir / "maps" / slug
        shutil.rmtree(folder, ignore_errors=True)  # an earlier refresh's cell may differ
        predict(detector, images, maps_dir=folder)
        maps[title] = sorted(folder.rglob("*.png"))
    return maps


def _representatives(trials: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """``best cell: <backbone> <head> <classes>`` and ``frozen <backbone>`` -> (folder name,
    the run nearest its cell's median)."""
    scored = trials.dropna(subset=[MAIN_METRIC])
    trained = scored[scored["head"] != NO_HEAD]
    if trained.empty:
        return {}
    medians = trained.groupby(["backbone", "head", "classes"])[MAIN_METRIC].median()
    backbone, head, classes = medians.idxmax()
    picks = {
        f"best cell: {backbone} {cell_label(head, classes)}": (
            "best",
            _nearest_median(trained, backbone, head, classes),
        )
    }
    frozen = scored[(scored["head"] == NO_HEAD) & (scored["backbone"] == backbone)]
    if not frozen.empty:
        picks[f"frozen {backbone}"] = ("frozen", _nearest_median(frozen, backbone, NO_HEAD, None))
    return picks


def _nearest_median(trials: pd.DataFrame, backbone: str, head: str, classes) -> str:
    cell = trials[(trials["backbone"] == backbone) & (trials["head"] == head)]
    if classes is not None:
        cell = cell[cell["classes"] == classes]
    values = cell[MAIN_METRIC].to_numpy(float)
    return str(cell["run_id"].iloc[int(np.argmin(np.abs(values - np.median(values))))])


def _examples(category_dir: Path) -> list[ImageFile]:
    """The first ``PER_DEFECT`` test images of each defect type, named ``<defect>/<file>``."""
    examples = []
    for folder in sorted(p for p in (category_dir / "test").iterdir() if p.is_dir()):
        if folder.name == GOOD:
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        examples += [ImageFile(p, Path(folder.name) / p.name) for p in files[:PER_DEFECT]]
    return examples
