"""The faults of docs/robustness.md that no other test module covers: what the user sees (one
line, exit code 2) and what is kept. Each test is named in that table."""

from __future__ import annotations

import errno
from pathlib import Path

import mlflow
import optuna
import pytest

from lightning_ad.config import TrialConfig
from lightning_ad.errors import LightningADError
from lightning_ad.sweep.runner import run_sweep
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from lightning_ad.sweep.study import load_study
from lightning_ad.train import run_trial
from tests.helpers import SWEEPS, invoke, mlflow_store, run_cli, trial_runs


def _error_line(stderr: str) -> str:
    """The one line a user error prints (Lightning's own warnings may come before it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lightning-ad: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize("split", ["train", "test"])
def test_corrupt_png_fails_the_run_with_the_file_named(
    split: str, screw_copy: Path, tmp_path: Path
) -> None:
    bad = screw_copy / split / "good" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = invoke(
        "train", "--category", "screw", "--data-root", str(tmp_path), "--head", "none",
        "--image-size", "32", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot decode image {bad}" in _error_line(result.stderr)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("lightning_ad").experiment_id])
    assert run.info.status == "FAILED"  # kept, and marked as failed


@pytest.mark.parametrize(
    ("make_root", "message"),
    [
        (lambda tmp: tmp / "nope", "does not exist; pass the folder that holds the category"),
        (lambda tmp: tmp, "found: none (no folder with train/good inside)"),
    ],
    ids=["missing folder", "empty folder"],
)
def test_missing_or_empty_data_root(make_root, message: str, tmp_path: Path) -> None:
    root = make_root(tmp_path)
    result = invoke("data", "info", "--category", "screw", "--data-root", str(root), cwd=tmp_path)
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert str(root) in line and message in line


def test_disk_full_while_writing_an_artifact(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(self, run_id, local_path, artifact_path=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(local_path))

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", no_space)
    store = mlflow_store(tmp_path)
    config = TrialConfig(
        category="screw", data_root=str(synthetic_root), backbone="mobilenet_v2", head="none",
        image_size=32, pretrained="false", artifacts="full",
    )  # fmt: skip
    with pytest.raises(
        LightningADError, match=r"disk full while writing .*test_scores\.csv for run"
    ):
        run_trial(config, tracking_uri=store, experiment="full-disk", progress_bar=False)
    client = mlflow.MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("full-disk").experiment_id])
    assert run.info.status == "FAILED" and "test/auc" in run.data.metrics  # metrics kept


def test_nan_loss_fails_the_trial_and_the_sweep_goes_on(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """An absurd learning rate drives the loss to NaN: that cell fails, the frozen one runs."""
    spec = SweepSpec.from_dict(
        {
            "grid": {"category": ["screw"], "backbone": ["mobilenet_v2"],
                     "head": ["arcface", "none"], "classes": [2], "seed": [0]},
            "fixed": {"image_size": 32, "epochs": 2, "pretrained": "false", "lr": 1e30,
                      "artifacts": "minimal"},
        },
        default_name="nan",
    )  # fmt: skip
    target = SweepTarget(
        spec, "screw", storage=str(tmp_path / "optuna.journal"),
        tracking_uri=mlflow_store(tmp_path), data_root=str(synthetic_root),
        reports_dir=str(tmp_path / "reports"),
    )  # fmt: skip
    outcome = run_sweep(target, show_progress=False)
    [line] = outcome.status.failed.values()  # what `lightning-ad sweep` lists, then exits 1
    assert line.startswith("LightningADError: ") and "loss is nan" in line and "lower --lr" in line
    study = load_study(target)
    [failed] = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert (
        failed.user_attrs["cell"]["head"] == "arcface"
        and "loss is nan" in failed.user_attrs["error"]
    )
    [complete] = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete.user_attrs["cell"]["head"] == "none"
    statuses = sorted(r.info.status for r in trial_runs(target))
    assert statuses == ["FAILED", "FINISHED"]


@pytest.mark.e2e  # a sweep command in a process of its own
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--tracking-uri", "http://127.0.0.1:9", "cannot reach the MLflow tracking server"),
        ("--storage", "postgresql+psycopg://me:secret@127.0.0.1:9/x", "cannot open the Optuna"),
    ],
    ids=["tracking URI", "storage URL"],
)
def test_unreachable_services_are_one_line_without_the_password(
    flag: str, value: str, message: str, tmp_path: Path
) -> None:
    # A process of its own: a password leaked through logging would not reach invoke's capture.
    result = run_cli("sweep", "--sweep", str(SWEEPS / "quick.yaml"), flag, value, cwd=tmp_path)
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert message in line and "secret" not in result.stderr + result.stdout
