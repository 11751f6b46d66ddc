"""Crashes and concurrency on the default local stores (Optuna journal + MLflow SQLite), through
the real command line: SIGKILL in the middle of a trial, four worker processes at once, and two
``lightning-ad sweep`` commands started at the same time on the same study."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import mlflow
import optuna
import pytest

from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from tests.helpers import (
    SWEEPS,
    assert_grid_filled_once,
    start_sweep,
    sweep_command,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _default_target(cwd: Path, data_root: Path) -> SweepTarget:
    """quick.yaml's screw sweep in the stores a plain ``lightning-ad sweep`` uses under
    ``cwd``."""
    return SweepTarget(
        SweepSpec.load(SWEEPS / "quick.yaml").with_category("screw"),
        "screw",
        storage=str(cwd / "mlruns" / "optuna.journal"),
        tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}",
        data_root=str(data_root),
    )


def _on_another_host(command: list[str]) -> list[str]:
    """``command`` in a UTS namespace of its own whose hostname is ``rerun-host``: a rerun
    from a new container, as far as the sweep can tell."""
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        return command  # not root: the rerun keeps this host's name, the rest is the same
    return ["unshare", "--uts", "sh", "-c", 'hostname rerun-host && exec "$@"', "sh", *command]


def test_sigkill_mid_trial_then_two_reruns_one_on_another_host_complete_the_grid(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """The killed worker's trial is found dead by its free file lock, not by hostname and PID:
    two reruns started together, one from a host of another name, recover the cell once."""
    target = _default_target(tmp_path, synthetic_root)
    held = tmp_path / "held"
    worker = start_sweep(sweep_command(synthetic_root, hold=held), tmp_path)
    wait_for(held.exists, 300, "a trial in the middle of training")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    orphan = mlflow.MlflowClient(target.tracking_uri).get_run(held.read_text())
    assert orphan.info.status == "RUNNING"  # what a killed process leaves behind
    killed = orphan.data.tags["optuna.trial"]

    # Two recoveries at once, one of them from a host of another name.
    reruns = [
        start_sweep(_on_another_host(sweep_command(synthetic_root)), tmp_path),
        start_sweep(sweep_command(synthetic_root), tmp_path),
    ]
    for rerun in reruns:
        output, _ = rerun.communicate(timeout=600)
        assert rerun.returncode == 0 and "Traceback" not in output, output
    study = assert_grid_filled_once(target)  # no cell trained twice
    assert study.trials[int(killed)].state == optuna.trial.TrialState.FAIL
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if _on_another_host(["true"]) != ["true"]:  # the other host did train cells
        assert any(t.user_attrs["worker"].startswith("rerun-host:") for t in complete)
    assert mlflow.MlflowClient(target.tracking_uri).get_run(orphan.info.run_id).info.status == (
        "FAILED"
    )  # closed by the rerun, not left "running"


@pytest.mark.parametrize("how", ["--workers 4", "two commands at once"])
def test_concurrent_workers_on_the_default_stores(
    how: str, synthetic_root: Path, tmp_path: Path
) -> None:
    """No "database is locked", no lost or doubled trial, whether the processes come from one
    ``--workers 4`` or from two ``make sweep`` started together."""
    if how == "--workers 4":
        processes = [start_sweep(sweep_command(synthetic_root, "--workers", "4"), tmp_path)]
    else:
        processes = [start_sweep(sweep_command(synthetic_root), tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "locked" not in output.lower(), output
    target = _default_target(tmp_path, synthetic_root)
    study = assert_grid_filled_once(target)
    assert not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) >= 2  # the processes really shared the grid
