"""tracking: URLs safe to print, the default store, experiments tagged as model training."""

from __future__ import annotations

import http.server
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.utils.file_utils import local_file_uri_to_path

from lightning_ad import tracking
from lightning_ad.errors import LightningADError


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


def test_a_runs_scores_are_read_in_place_from_a_local_store_and_none_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local artifact store's file is read where it lies (no copy); a tracking server's is
    downloaded (``tests/sweep/test_distributed.py`` reads tables through one)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("scores")).info.run_id
    downloads = []
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: downloads.append(kw))
    assert tracking.test_scores(uri, run_id) is None  # not logged yet
    (tmp_path / "test_scores.csv").write_text("image,defect,label,knn\na.png,good,0,0.1\n")
    client.log_artifact(run_id, str(tmp_path / "test_scores.csv"), artifact_path="scores")
    assert list(tracking.test_scores(uri, run_id)["knn"]) == [0.1]  # logged since: read now
    other = client.create_run(client.get_experiment_by_name("scores").experiment_id).info
    many = tracking.runs_test_scores(
        uri,
        [(run_id, client.get_run(run_id).info.artifact_uri), (other.run_id, other.artifact_uri)],
    )
    assert list(many[0]["label"]) == [0] and many[1] is None and not downloads


def test_a_parents_bundle_gives_each_runs_scores_file_as_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking.scores, "local_artifacts", lambda uri: None)  # as on a server
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("bundle")
    files = {  # an empty scorer, a flag, a comma in a name, floats that print long
        "a": "image,defect,label,knn,lof,ok\na.png,good,0,0.1,,True\nb.png,x,1,0.9,,False\n",
        "b": 'image,defect,label,knn\n"test/good/q,1.png",good,0,0.3333333333333333\n',
    }
    runs = []
    for name, text in files.items():
        run = client.create_run(experiment).info
        (tmp_path / name).mkdir()
        (tmp_path / name / "test_scores.csv").write_text(text)
        client.log_artifact(run.run_id, str(tmp_path / name / "test_scores.csv"), "scores")
        runs.append((run.run_id, run.artifact_uri))
    read = tracking.runs_test_scores(uri, runs)
    parent, bare = (client.create_run(experiment).info.run_id for _ in range(2))
    tracking.log_scores_bundle(uri, parent, [(runs[0][0], read[0]), (runs[1][0], read[1])])

    parents = [client.get_run(parent), client.get_run(bare)]
    assert set(tracking.bundled_test_scores(uri, parents, {runs[1][0], "x"})) == {runs[1][0]}
    bundled = tracking.bundled_test_scores(uri, parents, {runs[0][0], runs[1][0]})
    assert set(bundled) == {runs[0][0], runs[1][0]}
    for (run_id, _), text, frame in zip(runs, files.values(), read, strict=True):
        assert bundled[run_id].attrs[tracking.SCORES_TEXT] == text
        pd.testing.assert_frame_equal(bundled[run_id], frame, check_exact=True)
    shutil.rmtree(local_file_uri_to_path(runs[0][1]))  # a bundled run is not read again
    assert tracking.runs_test_scores(uri, runs)[0] is None
    pd.testing.assert_frame_equal(tracking.runs_test_scores(uri, runs, bundled)[0], read[0])
    monkeypatch.setattr(tracking.scores, "client", lambda uri: pytest.fail("nothing new, logged"))
    tracking.log_scores_bundle(uri, parent, list(bundled.items()))


class _FakeTime:
    """A clock for ``ensure_reachable`` where sleeping takes no time but is counted."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_tracking_server_coming_back_within_the_patience_is_waited_for() -> None:
    """The server answers only from its third probe on (a restart): no error."""
    probes, real_urlopen = [], urllib.request.urlopen

    def closed_twice(url, timeout):
        probes.append(url)
        if len(probes) < 3:
            raise urllib.error.URLError("connection refused")
        return real_urlopen(url, timeout=timeout)

    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tracking.store.urllib.request, "urlopen", closed_twice)
            tracking.ensure_reachable(
                f"http://127.0.0.1:{server.server_port}", patience_s=60, clock=_FakeTime()
            )
    finally:
        server.shutdown()
    assert len(probes) == 3


def test_a_tracking_server_that_stays_away_is_one_error_naming_it_and_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeTime()
    with pytest.raises(LightningADError, match=r"at http://127.0.0.1:9 for 60 s"):
        tracking.ensure_reachable("http://127.0.0.1:9", patience_s=60, clock=fake)
    assert fake.slept == [1, 2, 4, 8, 10, 10, 10, 10]  # backoff, capped, within the 60 s


def test_mlflow_client_retries_are_set_unless_the_user_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "")  # recorded: restored after the test
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "3")
    tracking.use_retries()
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    )

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 6
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 3  # the user's value wins
