"""A stored model is data: a file changed or added in the store after the trial logged it is
refused by ``predict`` and ``serve`` with one line, and a line planted in its code never runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import torch

from lightning_ad.errors import LightningADError
from lightning_ad.models.detector import Detector
from lightning_ad.packaging import digests
from lightning_ad.train import TrialResult
from tests.helpers import invoke


@pytest.fixture
def stored_model(trial: TrialResult, store: str, tmp_path: Path) -> Iterator[Path]:
    """The trial's model folder in the store's artifacts, put back as it was afterwards."""
    run = mlflow.MlflowClient(store).get_run(trial.run_id)
    folder = Path(urlparse(run.info.artifact_uri).path) / "model"
    backup = Path(shutil.copytree(folder, tmp_path / "backup"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        shutil.copytree(backup, folder)


def _predict_and_serve(trial: TrialResult, store: str, synthetic_root: Path, cwd: Path) -> list:
    model = f"runs:/{trial.run_id}/model"
    images = str(synthetic_root / "screw" / "test" / "good")
    return [
        invoke("predict", "--model", model, images, "--tracking-uri", store, cwd=cwd),
        # Refused before it execs mlflow: a pass would replace this process.
        invoke("serve", "--model", model, "--tracking-uri", store, cwd=cwd),
    ]


def test_a_line_planted_in_the_models_code_is_refused_and_never_runs(
    trial: TrialResult, store: str, synthetic_root: Path, stored_model: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "planted-line-ran"
    [code] = [p for p in stored_model.rglob("*.py")]
    code.write_text(code.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    for done in _predict_and_serve(trial, store, synthetic_root, tmp_path):
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert f"{code.name} differs from the file its trial logged" in line
    assert not marker.exists()


def test_changed_weights_and_an_added_file_are_refused(
    trial: TrialResult, store: str, synthetic_root: Path, stored_model: Path, tmp_path: Path
) -> None:
    [weights] = stored_model.rglob("weights.pt")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    for done in _predict_and_serve(trial, store, synthetic_root, tmp_path):
        assert done.returncode == 2 and "weights.pt differs" in done.stderr
    shutil.copy(tmp_path / "backup" / weights.relative_to(stored_model), weights)
    (stored_model / "loader.py").write_text("import os\n")
    for done in _predict_and_serve(trial, store, synthetic_root, tmp_path):
        assert done.returncode == 2 and "loader.py was added to the store" in done.stderr


def test_an_mlmodel_naming_another_loader_is_refused(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: attacker.loader\n"
    )
    with pytest.raises(LightningADError, match=r"names loader 'attacker\.loader'"):
        digests.check_loader(tmp_path, "models:/x/1")


def test_a_run_that_recorded_no_digests_is_refused(
    trial: TrialResult, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient(store)
    tags = client.get_run(trial.run_id).data.tags
    client.delete_tag(trial.run_id, digests.DIGESTS_TAG)
    try:
        done = _predict_and_serve(trial, store, synthetic_root, tmp_path)[0]
    finally:
        client.set_tag(trial.run_id, digests.DIGESTS_TAG, tags[digests.DIGESTS_TAG])
    assert done.returncode == 2 and "recorded no digests of its model files" in done.stderr


def test_a_pickled_weights_file_is_one_clear_line(
    trial: TrialResult, store: str, stored_model: Path, tmp_path: Path
) -> None:
    [spec] = stored_model.rglob("detector.json")
    folder = tmp_path / "detector"
    folder.mkdir()
    shutil.copy(spec, folder)
    torch.save(torch.nn.Linear(2, 2), folder / "weights.pt")  # a pickled module, not tensors
    with pytest.raises(LightningADError, match="is not a saved lightning_ad detector"):
        Detector.load(folder)


def test_only_a_finished_complete_trial_can_be_registered(store: str, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.get_experiment_by_name("deploy").experiment_id)
    done = invoke("register", run.info.run_id, "--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 2
    assert f"run {run.info.run_id} is RUNNING without lightning_ad.complete=true" in done.stderr
