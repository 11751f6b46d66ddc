"""tracking.py: URLs safe to print, the default store, experiments tagged as model training."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from lightning_ad import tracking


def test_the_default_store_is_absolute_under_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    assert tracking.resolve_tracking_uri() == "http://elsewhere:5000"
    assert tracking.resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_experiments_open_as_model_training_also_old_ones(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    new = tracking.ensure_experiment("new", uri)
    old = client.create_experiment("made-by-an-older-version")
    assert tracking.ensure_experiment("made-by-an-older-version", uri) == old
    for experiment_id in (new, old):
        tags = client.get_experiment(experiment_id).tags
        assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_a_runs_scores_are_downloaded_once_and_a_failed_read_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("scores")).info.run_id
    downloads = []
    real = mlflow.MlflowClient.download_artifacts

    def counting(self, *args, **kwargs):
        downloads.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "download_artifacts", counting)
    assert tracking.test_scores(uri, run_id) is None  # not logged yet: a failure, not cached
    (tmp_path / "test_scores.csv").write_text("image,defect,label,knn\na.png,good,0,0.1\n")
    client.log_artifact(run_id, str(tmp_path / "test_scores.csv"), artifact_path="scores")
    first = tracking.test_scores(uri, run_id)
    assert list(first["knn"]) == [0.1] and tracking.test_scores(uri, run_id) is first
    assert len(downloads) == 2  # the failed try, then one download for two reads
