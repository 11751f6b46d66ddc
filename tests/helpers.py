"""Shared by the tests: the CLI in a subprocess, fresh MLflow stores, and what sweep tests check
at the end (the grid filled, each cell once, nothing left running)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import mlflow
import optuna
import yaml

from lightning_ad import cli
from lightning_ad.sweep.recovery import trial_cell
from lightning_ad.sweep.spec import SweepTarget, cell_key
from lightning_ad.sweep.study import load_study

REPO = Path(__file__).parents[1]
SWEEPS = REPO / "sweeps"
HOLD_TRIAL = Path(__file__).with_name("hold_trial.py")
TINY = dict(  # a trial in seconds: mobilenet_v2 at 32 px, one epoch, random weights
    category="screw",
    backbone="mobilenet_v2",
    image_size=32,
    epochs=1,
    batch_size=8,
    pretrained="false",
)
QUICK_FINISHED = 8
"""sweeps/quick.yaml: 2 seeds x (frozen, arcface class2/class3, adacos class3); 4 cells n/a."""


@functools.cache
def _empty_mlflow_db() -> Path:
    """An MLflow SQLite store with its tables and nothing else, made once per process."""
    folder = Path(tempfile.mkdtemp(prefix="lightning_ad-tests-mlflow-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def mlflow_store(folder: Path) -> str:
    """The URI of the MLflow SQLite store in ``folder``; when there is none yet, a copy of an
    empty one made once, because MLflow's schema migrations take seconds per new database."""
    db = folder / "mlflow.db"
    if not db.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_mlflow_db(), db)
    return f"sqlite:///{db}"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m lightning_ad ARGS`` in a subprocess: for what only a process shows (the entry
    point, signals, exit codes from the OS); the exit code and both streams are kept."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_ad", *args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lightning-ad ARGS`` run by ``cli.main`` in this process, from ``cwd``: the same parser,
    handlers and error lines as the command, without a second torch import per test."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exit_:  # argparse: --help, usage errors
                code = exit_.code
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def quick_sweep_file(folder: Path, name: str, **fixed: object) -> Path:
    """sweeps/quick.yaml saved as ``folder/name.yaml`` (so its own study and experiment), with
    ``fixed`` settings changed: more epochs make a trial last long enough to be killed in."""
    raw = yaml.safe_load((SWEEPS / "quick.yaml").read_text())
    raw["fixed"].update(fixed)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def sweep_command(
    data_root: Path,
    *extra: str,
    sweep_file: Path | None = None,
    hold: Path | None = None,
    hold_nth: int = 1,
    release: Path | None = None,
) -> list[str]:
    """``lightning-ad sweep`` over ``sweep_file`` (quick.yaml); with ``hold``, the ``hold_nth``
    training trial writes that file and waits for a signal, or for ``release`` to exist
    (``tests/hold_trial.py``)."""
    entry = ["-m", "lightning_ad"]
    if hold is not None:
        released = [str(release)] if release is not None else []
        entry = [str(HOLD_TRIAL), str(hold), str(hold_nth), *released, "--"]
    return [
        sys.executable,
        *entry,
        "sweep",
        "--sweep",
        str(sweep_file or SWEEPS / "quick.yaml"),
        "--data-root",
        str(data_root),
        "--quiet",
        *extra,
    ]


def start_sweep(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def wait_for_holds(
    markers: list[Path], processes: list[subprocess.Popen], timeout: float = 300
) -> None:
    """Wait until every process holds a trial (each wrote its marker: ``hold_trial``), so that
    all of them have taken a cell, whichever started first. A process that ends before then
    fails the test with its output."""

    def all_held() -> bool:
        for process in processes:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(  # not its arguments: a storage URL may hold a password
                    f"process {process.pid} ended ({process.returncode}) before holding a "
                    f"trial: {output}"
                )
        return all(marker.exists() for marker in markers)

    wait_for(all_held, timeout, f"{len(markers)} processes to hold a trial each")


def trial_runs(target: SweepTarget, status: str | None = None) -> list:
    client = mlflow.MlflowClient(target.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    query = "tags.`lightning_ad.role` = 'trial'"
    if status:
        query += f" and attributes.status = '{status}'"
    return client.search_runs([experiment.experiment_id], query)


def assert_grid_filled_once(target: SweepTarget) -> optuna.Study:
    """Every runnable cell COMPLETE exactly once in the study and FINISHED exactly once in
    MLflow, one MLflow run per completed trial under one parent, nothing left RUNNING."""
    study = load_study(target)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    cells = [cell_key(trial_cell(t)) for t in complete]
    assert len(cells) == QUICK_FINISHED and len(set(cells)) == QUICK_FINISHED, cells
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    finished = trial_runs(target, "FINISHED")
    assert sorted(r.data.tags["optuna.trial"] for r in finished) == sorted(
        str(t.number) for t in complete
    )
    assert not trial_runs(target, "RUNNING")
    client = mlflow.MlflowClient(target.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    parents = client.search_runs([experiment.experiment_id], "tags.`lightning_ad.role` = 'sweep'")
    assert [p.info.run_id for p in parents] == list(
        {r.data.tags["mlflow.parentRunId"] for r in finished}
    )  # one parent run, holding every trial
    assert parents[0].info.status == "FINISHED"  # closed by the last worker to finish
    return study


def wait_for_http(url: str, server: subprocess.Popen, timeout: float = 180) -> str:
    """The body of ``url`` once ``server`` (a process started to serve it) answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"{server.args} exited with {server.returncode}: "
                                 f"{server.stdout.read() if server.stdout else ''}")  # fmt: skip
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return response.read().decode()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"nothing answered on {url} within {timeout:.0f} s")
