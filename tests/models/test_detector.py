"""``Detector``: the threshold's false-alarm rate, save/load, and the preprocessing rules."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_ad.data.datamodule import load_images
from lightning_ad.data.mvtec import MVTecCategory
from lightning_ad.data.twins import is_grey
from lightning_ad.errors import LightningADError
from lightning_ad.models.config import NetConfig
from lightning_ad.models.detector import Detector, DetectorSpec, Threshold
from lightning_ad.models.net import AnomalyNet
from lightning_ad.models.scoring import SCORERS
from lightning_ad.packaging.mlflow_model import score_images


@pytest.mark.parametrize("n", [5, 64, 100, 257])
@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2, 0.5])
def test_the_threshold_lets_exactly_the_allowed_share_of_normals_above_it(
    n: int, rate: float
) -> None:
    scores = np.random.default_rng(n).normal(size=n)
    threshold = Threshold.at_rate(scores, rate)
    allowed = math.floor(rate * n)
    assert (scores > threshold.value).sum() == threshold.false_alarms == allowed
    assert threshold.false_alarms / threshold.normals <= rate
    assert threshold.false_alarm_rate == rate and threshold.normals == n
    assert f"{allowed} of {n} held-out normal images" in threshold.describe()
    assert threshold.expected_rate == (allowed + 1) / (n + 1)
    assert ("would meet it" in threshold.describe()) == (threshold.expected_rate > rate)


def test_scores_that_are_not_finite_are_refused_by_name() -> None:
    with pytest.raises(LightningADError, match=r"1 held-out normal image\(s\) scored NaN"):
        Threshold.at_rate(np.array([0.1, np.nan, 0.3]), 0.01)


@pytest.mark.parametrize("rate", [0, 1, -0.1, 1.5])
def test_a_false_alarm_rate_outside_0_1_is_refused(rate: float) -> None:
    with pytest.raises(LightningADError, match=f"false_alarm_rate {rate} must lie strictly"):
        Threshold.at_rate(np.ones(10), rate)


def _loader(root: Path, category: str) -> DataLoader:
    images = load_images(tuple(s.path for s in MVTecCategory.load(root / category).train), 64)
    tensor = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    return DataLoader(TensorDataset(tensor, torch.zeros(len(tensor))), batch_size=4)


@pytest.fixture(scope="module")
def detector(synthetic_root: Path) -> Detector:
    """An untrained mobilenet_v2 + arcface + patch head detector fitted on the tiny screw's
    normals."""
    torch.manual_seed(0)
    config = NetConfig("mobilenet_v2", "arcface", 3, {}, "false", "frozen", patch_head=True)
    net = AnomalyNet(config).eval()
    spec = DetectorSpec("mobilenet_v2", "arcface", 3, {}, "fused", 64, True, 0.1, patch_head=True)
    loader = _loader(synthetic_root, "screw")
    fitted = Detector.fit(spec, net, loader)
    fitted.calibrate(loader, 0.1)
    return fitted


def test_a_saved_detector_scores_as_the_one_in_memory_with_every_scorer(
    detector: Detector, synthetic_root: Path, tmp_path: Path
) -> None:
    loaded = Detector.load(detector.save(tmp_path / "detector"))
    assert loaded.spec == detector.spec and loaded.threshold == detector.threshold
    images = next(iter(_loader(synthetic_root, "screw")))[0]
    for scorer in SCORERS:
        expected, expected_maps = _with_spec(detector, scorer=scorer).score_batch(images)
        got, maps = _with_spec(loaded, scorer=scorer).score_batch(images)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=scorer)
        np.testing.assert_allclose(maps, expected_maps, rtol=1e-5, atol=1e-6)


def _with_spec(detector: Detector, **changes: object) -> Detector:
    spec = replace(detector.spec, **changes)
    return Detector(spec, detector.net, detector.reference, detector.bank, detector.frozen)


def test_only_a_fused_detector_runs_and_keeps_the_frozen_backbone(
    detector: Detector, synthetic_root: Path, tmp_path: Path
) -> None:
    """The frozen backbone serves the fused score only: another scorer never builds or runs it,
    and its file is about half."""
    fused = (detector.save(tmp_path / "fused") / "weights.pt").stat().st_size
    spec = replace(detector.spec, scorer="patch", threshold=None)
    fitted = Detector.fit(spec, detector.net, _loader(synthetic_root, "screw"))
    assert fitted.frozen is None and "frozen" not in fitted.reference
    patch = fitted.save(tmp_path / "patch") / "weights.pt"
    assert patch.stat().st_size < 0.6 * fused
    loaded = Detector.load(tmp_path / "patch")
    assert loaded.frozen is None and "frozen" not in loaded.reference
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    assert np.isfinite(loaded.score_batch(images)[0]).all()


def test_a_folder_that_is_no_detector_is_named(tmp_path: Path) -> None:
    with pytest.raises(LightningADError, match=f"{tmp_path} is not a saved lightning_ad detector"):
        Detector.load(tmp_path)


def test_a_grey_detector_greys_colour_input_and_a_colour_one_refuses_grey(
    detector: Detector,
) -> None:
    colour = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    prepared = detector.prepare(colour, "part.png")  # the built-in screw is grey
    assert prepared.shape == (64, 64, 3)
    assert is_grey(prepared)
    colour_detector = _with_spec(detector, grey=False)
    grey = np.repeat(colour[..., :1], 3, axis=2)
    with pytest.raises(LightningADError, match=r"grey\.png: a grey image, but this detector was"):
        colour_detector.prepare(grey, "grey.png")
    assert colour_detector.prepare(colour, "part.png").shape == (64, 64, 3)
    blank = np.zeros((64, 64, 3), np.uint8)  # a dark frame: scored (and likely flagged)
    assert colour_detector.prepare(blank, "blank.png").shape == (64, 64, 3)


def test_a_grey_image_in_a_batch_for_a_colour_detector_is_named_and_the_rest_scored(
    detector: Detector,
) -> None:
    colour_detector = _with_spec(detector, grey=False)
    colour = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    grey = np.repeat(colour[..., :1], 3, axis=2)
    encoded = [cv2.imencode(".png", image)[1].tobytes() for image in (colour, grey, colour)]
    out = score_images(colour_detector, encoded, ["a.png", "b.png", "c.png"])
    assert list(out.error == "") == [True, False, True]
    assert out.error[1].startswith("b.png: a grey image")
    assert np.isfinite(out.score[[0, 2]]).all() and np.isnan(out.score[1])
    assert out.anomalous[1] is pd.NA  # not scored: no verdict, neither way


def test_a_detector_without_a_patch_head_saves_and_loads_as_before(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """No patch head: no patch-head weights in the file, and a ``detector.json`` written before
    the field existed (no ``patch_head`` key) loads as one without."""
    net = AnomalyNet(NetConfig("mobilenet_v2", "arcface", 3, {}, "false", "frozen")).eval()
    spec = DetectorSpec("mobilenet_v2", "arcface", 3, {}, "patch", 64, True, 0.1)
    fitted = Detector.fit(spec, net, _loader(synthetic_root, "screw"))
    folder = fitted.save(tmp_path / "detector")
    raw = json.loads((folder / "detector.json").read_text())
    assert raw.pop("patch_head") is False
    (folder / "detector.json").write_text(json.dumps(raw))
    loaded = Detector.load(folder)
    assert loaded.net.patch_head is None and not loaded.spec.patch_head
    assert not any(k.startswith("patch_head") for k in loaded.net.state_dict())
    images = next(iter(_loader(synthetic_root, "screw")))[0]
    np.testing.assert_allclose(loaded.score_batch(images)[0], fitted.score_batch(images)[0])
