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
    wait_for_holds,
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

    # Two recoveries at once, one of them from a host of another name. Each holds in its first
    # training trial until both do: both take cells, whichever starts first.
    release, rerun_held = tmp_path / "release", [tmp_path / f"rerun-held{i}" for i in range(2)]
    reruns = [
        start_sweep(
            _on_another_host(sweep_command(synthetic_root, hold=rerun_held[0], release=release)),
            tmp_path,
        ),
        start_sweep(sweep_command(synthetic_root, hold=rerun_held[1], release=release), tmp_path),
    ]
    wait_for_holds(rerun_held, reruns)
    release.touch()
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
        # Each command holds in its first training trial until both do: both take cells,
        # whichever starts first.
        release, held = tmp_path / "release", [tmp_path / f"held{i}" for i in range(2)]
        processes = [
            start_sweep(sweep_command(synthetic_root, hold=marker, release=release), tmp_path)
            for marker in held
        ]
        wait_for_holds(held, processes)
        release.touch()
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "locked" not in output.lower(), output
    target = _default_target(tmp_path, synthetic_root)
    study = assert_grid_filled_once(target)
    assert not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    worker_pids = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in study.trials}
    if how == "--workers 4":
        # How the four share the cells is the scheduler's affair; all ran in worker processes.
        assert 1 <= len(worker_pids) <= 4 and processes[0].pid not in worker_pids
    else:
        assert worker_pids == {p.pid for p in processes}  # both commands took cells
