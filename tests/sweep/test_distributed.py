"""The distributed mode with the real parts: a PostgreSQL server for the Optuna study and an
``mlflow server`` over HTTP, workers as separate ``lightning-ad sweep`` commands (as on separate
machines). Marked ``integration``: ``make test-integration`` and ``.ci/run`` run them.

Where PostgreSQL cannot be started the tests are skipped with the reason, unless
``LIGHTNING_AD_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) turns that into a failure."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest

from lightning_ad import report, tracking
from lightning_ad.errors import LightningADError
from lightning_ad.mlflow_server import ServerOptions
from lightning_ad.services import (
    PG_USER,
    Services,
    app_password,
    free_port,
    local_services,
    sampled_connections,
)
from lightning_ad.sweep.recovery import plan, trial_cell
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from lightning_ad.sweep.storage import RDB_CONNECTIONS, rdb_backend
from lightning_ad.sweep.study import load_study
from tests.helpers import (
    REPO,
    assert_grid_filled_once,
    quick_sweep_file,
    start_sweep,
    sweep_command,
    wait_for,
    wait_for_holds,
)

pytestmark = pytest.mark.integration
ONE_FROZEN_CELL = (
    "grid: {category: [screw], backbone: [mobilenet_v2], head: [none], classes: [2], seed: [0]}\n"
    "fixed: {image_size: 32, pretrained: 'false', artifacts: minimal}\n"
)


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    # Not pytest's tmp_path: its parents are private to root, and PostgreSQL runs as "postgres".
    root = Path(tempfile.mkdtemp(prefix="lightning-ad-services-"))
    root.chmod(0o755)
    try:
        context = local_services(root, free_port(), ServerOptions(port=free_port()))
        started = context.__enter__()
    except (LightningADError, ImportError) as err:
        if os.environ.get("LIGHTNING_AD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL + mlflow server could not be started: {err}")
        pytest.skip(f"PostgreSQL + mlflow server could not be started: {err}")
    yield started
    context.__exit__(None, None, None)


def _target(services: Services, sweep_file: Path, data_root: Path) -> SweepTarget:
    return SweepTarget(
        SweepSpec.load(sweep_file).with_category("screw"),
        "screw",
        storage=services.storage,
        tracking_uri=services.tracking_uri,
        data_root=str(data_root),
    )


def _command(
    target: SweepTarget,
    data_root: Path,
    sweep_file: Path,
    *extra: str,
    hold: Path | None = None,
    release: Path | None = None,
) -> list[str]:
    where = ["--storage", target.storage, "--tracking-uri", target.tracking_uri]
    return sweep_command(
        data_root, *where, *extra, sweep_file=sweep_file, hold=hold, release=release
    )


def _sweep_file(tmp_path: Path, name: str, **fixed: object) -> Path:
    """quick.yaml under its own name (its own study and experiment), and a working folder per
    worker, as if each ran on its own machine."""
    for machine in ("machine0", "machine1"):
        (tmp_path / machine).mkdir()
    return quick_sweep_file(tmp_path, name, **fixed)


def test_two_workers_on_postgres_and_mlflow_server(
    services: Services, synthetic_root: Path, tmp_path: Path
) -> None:
    """Also: the real password, given in the storage URL instead of through PGPASSFILE,
    appears in no output, parameter, tag or Optuna attribute."""
    sweep_file = _sweep_file(tmp_path, "pg-two")
    password = app_password(services.password_file)
    target = dataclasses.replace(
        _target(services, sweep_file, synthetic_root),
        storage=services.storage.replace(f"{PG_USER}@", f"{PG_USER}:{password}@"),
    )
    # Each worker holds in its first training trial until both do: both take cells, whichever
    # starts first or runs faster.
    release, held = tmp_path / "release", [tmp_path / f"held{i}" for i in range(2)]
    workers = [
        start_sweep(
            _command(target, synthetic_root, sweep_file, hold=held[i], release=release),
            tmp_path / f"machine{i}",
        )
        for i in range(2)
    ]
    with sampled_connections(services.storage) as counts:
        wait_for_holds(held, workers)
        release.touch()
        for worker in workers:
            output, _ = worker.communicate(timeout=900)
            assert worker.returncode == 0, output
            assert password not in output
    assert 1 <= max(counts) <= 2 * RDB_CONNECTIONS, counts  # one storage, one pool a process
    study = assert_grid_filled_once(target)
    assert password not in repr([(t.user_attrs, t.system_attrs) for t in study.trials])
    worker_pids = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in study.trials}
    assert worker_pids == {w.pid for w in workers}  # both took cells
    client = mlflow.MlflowClient(target.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    for run in client.search_runs([experiment.experiment_id]):
        assert password not in repr(run.data.params) + repr(run.data.tags)

    # The table is the medians of what the trials logged.
    trials = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec, target.fingerprint
    )
    medians = report.median_metrics(trials)
    for (head, classes), values in _values_by_cell(study).items():
        key = f"median_auc/mobilenet_v2/{head}/{classes}"
        assert medians[key][0] == pytest.approx(statistics.median(values))  # (median, seeds)

    # Over HTTP the scores come from the parent's bundle, as each run's own file gives them.
    assert all(scores.attrs[tracking.BUNDLED] for scores in trials[report.SCORES])
    runs = list(zip(trials["run_id"], trials["artifact_uri"], strict=True))
    files = tracking.runs_test_scores(target.tracking_uri, runs)
    for bundled, file in zip(trials[report.SCORES], files, strict=True):
        pd.testing.assert_frame_equal(bundled, file, check_exact=True)


def _values_by_cell(study: optuna.Study) -> dict[tuple[str, str], list[float]]:
    cells: dict[tuple[str, str], list[float]] = {}
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        cell = trial.user_attrs["cell"]
        head = cell["head"]  # the frozen baseline has one column whatever the classes
        key = (head, "any" if head == "none" else cell["classes"])
        cells.setdefault(key, []).append(trial.value)
    return cells


def test_killed_worker_trial_goes_stale_and_the_other_worker_runs_it(
    services: Services, synthetic_root: Path, tmp_path: Path
) -> None:
    """SIGKILL one of two workers mid-trial: the survivor sees the heartbeat stop, fails the
    trial, closes its MLflow run and runs the cell itself; no rerun needed."""
    sweep_file = _sweep_file(tmp_path, "pg-kill")
    target = _target(services, sweep_file, synthetic_root)
    command = _command(target, synthetic_root, sweep_file, "--heartbeat", "2")
    held = tmp_path / "held"
    # The victim starts alone and holds in its first training trial; then the survivor joins.
    victim = start_sweep(
        _command(target, synthetic_root, sweep_file, "--heartbeat", "2", hold=held),
        tmp_path / "machine0",
    )
    wait_for(held.exists, 300, "the victim's trial to start training")
    survivor = start_sweep(command, tmp_path / "machine1")

    def survivor_took_a_cell() -> bool:  # so its start-up recovery is over: the heartbeat acts
        study = optuna.load_study(study_name=target.study_name, storage=target.storage)
        workers = {t.user_attrs.get("worker", "") for t in study.get_trials(deepcopy=False)}
        return any(w.endswith(f":{survivor.pid}") for w in workers)

    wait_for(survivor_took_a_cell, 300, "the survivor to take a cell")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    killed_run = mlflow.MlflowClient(target.tracking_uri).get_run(held.read_text())
    killed = int(killed_run.data.tags["optuna.trial"])

    output, _ = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, output
    study = assert_grid_filled_once(target)
    assert study.trials[killed].state == optuna.trial.TrialState.FAIL
    assert mlflow.MlflowClient(target.tracking_uri).get_run(held.read_text()).info.status == (
        "FAILED"
    )


def test_make_services_starts_both_prints_the_urls_and_stops_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lightning-ad services`` as ``make services`` runs it: both servers answer at the URLs
    it prints, and Ctrl-C stops both (exit 0, PostgreSQL's pid file gone)."""
    root = Path(tempfile.mkdtemp(prefix="lightning-ad-make-services-"))
    root.chmod(0o755)
    pg_port, mlflow_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "lightning_ad", "services", "--dir", str(root),
        "--pg-port", str(pg_port), "--port", str(mlflow_port),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # blocks until the servers are up, or '' if it died
    if not first:
        process.wait(timeout=60)
        message = f"lightning-ad services could not start: {process.stderr.read()}"
        if os.environ.get("LIGHTNING_AD_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    storage = first.split()[-1]
    tracking_uri = process.stdout.readline().split()[-1]
    password_file = Path(process.stdout.readline().split()[-3])
    assert storage == f"postgresql+psycopg://{PG_USER}@127.0.0.1:{pg_port}/optuna"
    assert tracking_uri == f"http://127.0.0.1:{mlflow_port}"
    assert password_file == (root / "pgpass").resolve()
    assert password_file.stat().st_mode & 0o777 == 0o600
    _assert_the_password_is_needed(storage, password_file)
    monkeypatch.setenv("PGPASSFILE", str(password_file))
    optuna.create_study(study_name="smoke", storage=storage)
    with urllib.request.urlopen(f"{tracking_uri}/health", timeout=5) as response:
        assert response.status == 200
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0
    assert not (root / "postgres" / "postmaster.pid").exists()


def _assert_the_password_is_needed(storage: str, password_file: Path) -> None:
    """Over TCP: refused without the password and with a wrong one; in with PGPASSFILE. The
    superuser cannot log in over TCP at all."""
    import psycopg

    port = storage.rsplit(":", 1)[1].split("/")[0]
    empty = password_file.with_name("empty-pgpass")
    empty.write_text("")
    empty.chmod(0o600)
    for user, password in ((PG_USER, None), (PG_USER, "wrong"), ("postgres", None)):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host="127.0.0.1", port=port, user=user, dbname="optuna", password=password,
                passfile=str(empty), connect_timeout=5,
            )  # fmt: skip
    with psycopg.connect(
        host="127.0.0.1", port=port, user=PG_USER, dbname="optuna", passfile=str(password_file)
    ) as connection:
        assert connection.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False,)


def test_an_mlflow_server_beyond_loopback_needs_its_login(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``services --host 0.0.0.0 --auth``: MLflow's REST API answers 401 without the login;
    a sweep with ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` works; the password is printed
    nowhere."""
    root = Path(tempfile.mkdtemp(prefix="lightning-ad-auth-services-"))
    root.chmod(0o755)
    options = ServerOptions(host="0.0.0.0", port=free_port(), auth_dir=root)
    with local_services(root, free_port(), options) as services:
        search = f"{services.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(search, timeout=10)
        assert refused.value.code == 401
        password = services.mlflow_auth.password()
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        sweep_file = tmp_path / "auth.yaml"
        sweep_file.write_text(ONE_FROZEN_CELL)
        target = _target(services, sweep_file, synthetic_root)
        sweep = start_sweep(_command(target, synthetic_root, sweep_file), tmp_path)
        output, _ = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, output
        assert password not in output
        client = mlflow.MlflowClient(services.tracking_uri)
        experiment = client.get_experiment_by_name(target.experiment)
        [run] = client.search_runs([experiment.experiment_id], "tags.`lightning_ad.role` = 'trial'")
        assert run.info.status == "FINISHED"
        assert password not in repr(run.data.params) + repr(run.data.tags)


@pytest.mark.parametrize("form", ["query", "userinfo"])
def test_a_password_in_the_storage_url_through_make_sweep_appears_nowhere(
    form: str, services: Services, synthetic_root: Path, tmp_path: Path
) -> None:
    """``make sweep STORAGE=...?password=...`` (or ``user:password@``): the password reaches
    PostgreSQL, and no output line, MLflow param or tag, or Optuna attribute."""
    password = app_password(services.password_file)
    if form == "query":
        storage = f"{services.storage}?password={password}"
    else:
        storage = services.storage.replace(f"{PG_USER}@", f"{PG_USER}:{password}@")
    name = f"make-password-{form}"
    sweep_file = tmp_path / f"{name}.yaml"
    sweep_file.write_text(ONE_FROZEN_CELL)
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSFILE", "MLFLOW_TRACKING_URI")}
    make = [
        "make", "--no-print-directory", "sweep", f"VENV={sys.prefix}", f"SWEEP={sweep_file}",
        "CATEGORY=screw", f"DATA_ROOT={synthetic_root}", f"STORAGE={storage}",
        f"TRACKING_URI={services.tracking_uri}",
    ]  # fmt: skip
    try:
        done = subprocess.run(make, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(REPO / "reports" / name, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
    target = dataclasses.replace(
        _target(services, sweep_file, synthetic_root), storage=services.storage
    )
    study = optuna.load_study(study_name=target.study_name, storage=services.storage)
    assert study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert password not in repr([(t.user_attrs, t.system_attrs) for t in study.trials])
    client = mlflow.MlflowClient(services.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2  # the parent and the trial
    for run in runs:
        assert password not in repr(run.data.params) + repr(run.data.tags)


def test_a_trial_that_never_beat_is_failed_and_its_cell_run_again(
    services: Services, synthetic_root: Path, tmp_path: Path
) -> None:
    """A worker that took a trial and died before its first heartbeat (here: ``ask`` and
    leave): Optuna's stale check skips such a trial, so without its own check every later
    worker waited for it forever."""
    sweep_file = tmp_path / "never-beat.yaml"
    sweep_file.write_text(ONE_FROZEN_CELL)
    target = dataclasses.replace(_target(services, sweep_file, synthetic_root), heartbeat=1)
    study = load_study(target)
    plan(study, target, retry_failed_before=0)
    study.ask()  # takes the queued cell: RUNNING, no heartbeat row

    sweep = start_sweep(_command(target, synthetic_root, sweep_file, "--heartbeat", "1"), tmp_path)
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output
    trials = load_study(target).trials  # the silent trial failed, its cell run again
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]
    assert trial_cell(trials[0]) == trial_cell(trials[1])


def test_the_heartbeat_interval_is_the_studys_whatever_a_later_worker_asks(
    services: Services, tmp_path: Path, synthetic_root: Path
) -> None:
    sweep_file = tmp_path / "heartbeat.yaml"
    sweep_file.write_text(ONE_FROZEN_CELL)
    first = dataclasses.replace(_target(services, sweep_file, synthetic_root), heartbeat=60)
    assert rdb_backend(load_study(first)).heartbeat_interval == 60
    with pytest.warns(UserWarning, match=r"--heartbeat 10 ignored: .* every 60 s"):
        study = load_study(dataclasses.replace(first, heartbeat=10))
    backend = rdb_backend(study)
    assert (backend.heartbeat_interval, backend.grace_period) == (60, 180)
