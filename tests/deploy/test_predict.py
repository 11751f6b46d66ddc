"""A trial's detector, registered and used on new images: ``lightning-ad register`` and
``predict`` reproduce the trial's own scores, and bad input gets one clear line each."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from lightning_ad import metrics, tracking
from lightning_ad.config import TrialConfig
from lightning_ad.deploy import predict
from lightning_ad.train import TrialResult, run_trial
from tests.helpers import TINY, invoke


@pytest.fixture(scope="module")
def registered(trial: TrialResult, store: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    done = invoke("register", trial.run_id, "--name", "screw-detector", "--tracking-uri", store,
                  cwd=tmp_path_factory.mktemp("register"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "registered run" in done.stdout and "models:/screw-detector/" in done.stdout
    return done.stdout.split()[-1]


def test_predict_on_the_test_folder_reproduces_the_trials_scores_and_auc(
    trial: TrialResult, registered: str, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    test = synthetic_root / "screw" / "test"
    done = invoke("predict", "--model", registered, str(test), "--out", "scores.csv",
                  "--maps", "maps", "--tracking-uri", store, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "0 of 2 held-out normal images above it (false-alarm rate asked for: 1.00%; expected on "
        "new normal parts: about 33.3%); 99 held-out normals would meet it"
    ) in done.stderr
    rows = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    logged = tracking.test_scores(store, trial.run_id)
    assert len(rows) == len(logged) and (rows.error == "").all()
    names = [str(Path(p).relative_to(synthetic_root / "screw")) for p in rows.image]
    assert names == list(logged.image)
    np.testing.assert_allclose(rows.score, logged["fused"], rtol=1e-5, atol=1e-6)
    labels = np.array([0 if Path(p).parent.name == "good" else 1 for p in rows.image])
    assert metrics.auroc(labels, rows.score.to_numpy()) == pytest.approx(
        trial.metrics["test/auc"], abs=1e-6
    )
    threshold = mlflow.MlflowClient(store).get_run(trial.run_id).data.metrics["val/threshold"]
    assert list(rows.anomalous) == list(rows.score > threshold)
    maps = sorted(p.relative_to(tmp_path / "maps") for p in (tmp_path / "maps").rglob("*.png"))
    assert maps == sorted(Path(p).relative_to(test) for p in rows.image)
    assert cv2.imread(str(tmp_path / "maps" / maps[0])).shape == (
        32,
        64,
        3,
    )  # image | map, at the scoring side


def test_the_threshold_is_logged_with_its_rate_and_met_on_the_held_out_normals(
    trial: TrialResult, store: str
) -> None:
    logged = mlflow.MlflowClient(store).get_run(trial.run_id).data.metrics
    assert logged["val/false_alarm_rate"] <= 0.01  # 2 held-out normals: none may lie above
    assert 0 <= logged["test/false_alarm_rate"] <= 1 and 0 <= logged["test/detection_rate"] <= 1
    model = mlflow.models.get_model_info(f"runs:/{trial.run_id}/model")
    assert "of 2 held-out normal images above it" in model.metadata["threshold"]


def test_a_corrupt_image_is_skipped_and_the_rest_scored(
    registered: str, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "parts"
    shutil.copytree(synthetic_root / "screw" / "test" / "good", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    done = invoke("predict", "--model", registered, str(folder), "--tracking-uri", store,
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1
    broken = folder / "broken.png"
    assert f"skipped: cannot decode {broken}: the file is corrupt or not an image" in done.stderr
    assert "10 of 11 images scored" in done.stderr
    rows = pd.read_csv(io.StringIO(done.stdout))
    scored = rows.error.isna()
    assert scored.sum() == 10 and rows.score[scored].notna().all()
    assert rows.score[~scored].isna().all() and rows.anomalous[~scored].isna().all()


def test_an_image_gone_before_it_is_read_is_named_in_its_place(
    registered: str, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    """A file listed, then gone (or unreadable) when its turn comes: its row says why, in the
    input's order, and the others are scored."""
    good = predict.find_images([synthetic_root / "screw" / "test" / "good"])[:3]
    gone = predict.ImageFile(tmp_path / "gone.png", Path("gone.png"))
    rows = predict.predict(predict.load_detector(registered, store), [good[0], gone, *good[1:]])
    assert list(rows.image) == [str(i.path) for i in [good[0], gone, *good[1:]]]
    assert rows.error[1] == f"cannot read {gone.path}: No such file or directory"
    assert rows.score.notna().tolist() == [True, False, True, True]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("models:/no-such-detector/1", "model models:/no-such-detector/1: "),
        ("runs:/0123456789abcdef/model", "model runs:/0123456789abcdef/model: "),
    ],
)
def test_an_unknown_model_is_one_line(
    model: str, expected: str, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    done = invoke("predict", "--model", model, str(synthetic_root / "screw" / "test"),
                  "--tracking-uri", store, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("lightning-ad: error: ") and expected in line


def test_an_empty_folder_is_one_line(registered: str, store: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = invoke("predict", "--model", registered, "empty", "--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 2
    assert "empty holds no image (.png, .jpg" in done.stderr


def test_a_run_without_a_detector_cannot_be_registered(
    synthetic_root: Path, store: str, tmp_path: Path
) -> None:
    from lightning_ad.config import TrialConfig
    from lightning_ad.train import run_trial

    config = TrialConfig(
        category="screw",
        backbone="mobilenet_v2",
        head="none",
        image_size=32,
        pretrained="false",
        log_model=False,
        data_root=str(synthetic_root),
    )
    result = run_trial(config, tracking_uri=store, experiment="deploy", progress_bar=False)
    done = invoke("register", result.run_id, "--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 2
    assert f"run {result.run_id} has no detector (model/): it ran with log_model: false" in (
        done.stderr
    )


def test_a_huge_and_a_truncated_image_are_skipped_and_the_good_one_scored(
    registered: str, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    """A 32768 x 32769 PNG (a few bytes that would decode to 3 GiB; past Pillow's own cap of
    2 x 89,478,485 pixels) and a truncated copy of a good image: each one line, refused before
    decoding; the good image still scored."""
    import struct
    import zlib

    good = synthetic_root / "screw" / "test" / "good" / "000.png"
    folder = tmp_path / "parts"
    folder.mkdir()
    shutil.copy(good, folder / "a-good.png")
    (folder / "b-cut.png").write_bytes(good.read_bytes()[:-40])
    ihdr = struct.pack(">IIBBBBB", 32768, 32769, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    huge = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc
    (folder / "c-huge.png").write_bytes(huge + b"\0\0\0\0IEND\xaeB`\x82")
    done = invoke("predict", "--model", registered, "parts", "--out", "s.csv",
                  "--tracking-uri", store, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "b-cut.png is a truncated PNG file (no end marker)" in done.stderr
    limit = "over the limit of 16,777,216"  # 4096 x 4096: the floor of the default limit
    assert "c-huge.png declares more than 178,956,970 pixels, " + limit in done.stderr
    rows = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert list(rows.error == "") == [True, False, False]


def test_a_file_name_that_is_not_utf8_is_written_escaped_and_no_score_is_lost(
    registered: str, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    import os

    good = synthetic_root / "screw" / "test" / "good" / "000.png"
    folder = tmp_path / "parts"
    folder.mkdir()
    shutil.copy(good, Path(os.fsdecode(bytes(folder) + b"/part-\xff.png")))
    done = invoke("predict", "--model", registered, "parts", "--out", "s.csv",
                  "--tracking-uri", store, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [row] = pd.read_csv(tmp_path / "s.csv", keep_default_na=False).to_dict("records")
    assert row["image"].endswith("part-\\xff.png") and row["error"] == ""
    (tmp_path / "a-file").write_text("")  # no folder can be made below it, even by root
    done = invoke("predict", "--model", registered, "parts", "--out", "a-file/s.csv",
                  "--tracking-uri", store, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "the scores went to stdout instead" in done.stderr
    assert "part-\\xff.png" in done.stdout


def test_a_registered_twinseg_detector_predicts_the_trials_scores(
    synthetic_root: Path, store: str, tmp_path: Path
) -> None:
    """A trial with a patch head scored by its map: the trial logs the map's image and pixel
    metrics, and its registered detector gives the test images the trial's scores."""
    config = TrialConfig(
        **TINY, head="arcface", patch_head_weight=1.0, score="twinseg",
        data_root=str(synthetic_root),
    )  # fmt: skip
    trial = run_trial(config, tracking_uri=store, experiment="twinseg", progress_bar=False)
    for name in ("test/auc_twinseg", "test/pixel_auc_twinseg", "test/aupro_twinseg/scratch_head"):
        assert 0 <= trial.metrics[name] <= 1, name
    assert trial.metrics["test/auc"] == trial.metrics["test/auc_twinseg"]
    # The maps it serves are its own: the plain map metrics are twinseg's, PatchCore's beside.
    for metric, own in [
        ("test/pixel_auc", "test/pixel_auc_twinseg"),
        ("test/aupro", "test/aupro_twinseg"),
        ("test/aupro/scratch_head", "test/aupro_twinseg/scratch_head"),
    ]:
        assert trial.metrics[metric] == trial.metrics[own], metric
    assert trial.metrics["test/pixel_auc_patch"] != trial.metrics["test/pixel_auc"]
    run = mlflow.MlflowClient(store).get_run(trial.run_id)
    assert "train/patch_loss" in run.data.metrics
    done = invoke("register", trial.run_id, "--name", "twinseg", "--tracking-uri", store,
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    test = synthetic_root / "screw" / "test"
    done = invoke("predict", "--model", done.stdout.split()[-1], str(test), "--out", "scores.csv",
                  "--tracking-uri", store, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    logged = tracking.test_scores(store, trial.run_id)
    np.testing.assert_allclose(rows.score, logged["twinseg"], rtol=1e-5, atol=1e-6)
