"""Crashes and concurrency on the default local stores (Optuna journal + MLflow SQLite), through
the real command line: SIGKILL in the middle of a trial, four worker processes at once, and two
``lightning-ad sweep`` commands started at the same time on the same study."""

from __future__ import annotations

import signal
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


def _default_target(cwd: Path, sweep_file: Path = SWEEPS / "quick.yaml") -> SweepTarget:
    """The screw sweep of ``sweep_file`` in the stores a plain ``lightning-ad sweep`` uses under
    ``cwd``."""
    return SweepTarget(
        SweepSpec.load(sweep_file).with_category("screw"),
        "screw",
        storage=str(cwd / "mlruns" / "optuna.journal"),
        tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}",
    )


def test_sigkill_mid_trial_then_rerun_completes_the_grid(
    synthetic_root: Path, tmp_path: Path
) -> None:
    target = _default_target(tmp_path)
    held = tmp_path / "held"
    worker = start_sweep(sweep_command(synthetic_root, hold=held), tmp_path)
    wait_for(held.exists, 300, "a trial in the middle of training")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    orphan = mlflow.MlflowClient(target.tracking_uri).get_run(held.read_text())
    assert orphan.info.status == "RUNNING"  # what a killed process leaves behind
    killed = orphan.data.tags["optuna.trial"]

    rerun = start_sweep(sweep_command(synthetic_root), tmp_path)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    study = assert_grid_filled_once(target)
    assert study.trials[int(killed)].state == optuna.trial.TrialState.FAIL
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
    target = _default_target(tmp_path)
    study = assert_grid_filled_once(target)
    assert not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) >= 2  # the processes really shared the grid
