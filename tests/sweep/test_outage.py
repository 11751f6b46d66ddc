"""The tracking server goes away for a while in the middle of a sweep: no cell is lost.

A real ``mlflow server`` (SQLite behind it) and a real ``lightning-ad sweep`` process. The
sweep's first training trial holds mid-epoch; the server is stopped; the trial is released and
trains on, logging into the void (MLflow's client retries with backoff) or finishing and the
worker waiting for the server; the server comes back on the same port. Either way the sweep
must end with every cell complete exactly once and no failed trial. Marked ``integration``."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from lightning_ad.mlflow_server import ServerOptions
from lightning_ad.services import free_port, start_mlflow_server, stop_process
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from tests.helpers import SWEEPS, assert_grid_filled_once, start_sweep, sweep_command, wait_for

pytestmark = pytest.mark.integration


def test_mlflow_down_for_a_few_seconds_mid_sweep_loses_no_cell(
    synthetic_root: Path, tmp_path: Path
) -> None:
    backend, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts"
    log = tmp_path / "server.log"
    options = ServerOptions(port=free_port())
    server = start_mlflow_server(backend, artifacts, options, log_file=log)
    target = SweepTarget(
        SweepSpec.load(SWEEPS / "quick.yaml").with_category("screw"),
        "screw",
        storage=str(tmp_path / "optuna.journal"),
        tracking_uri=f"http://127.0.0.1:{options.port}",
        data_root=str(synthetic_root),
    )
    held, release = tmp_path / "held", tmp_path / "release"
    command = sweep_command(
        synthetic_root,
        "--storage", target.storage, "--tracking-uri", target.tracking_uri,
        hold=held, release=release,
    )  # fmt: skip
    sweep = start_sweep(command, tmp_path)
    try:
        wait_for(held.exists, 300, "the first training trial to start")
        stop_process(server)  # the outage begins
        release.touch()  # the held trial trains on, logging into the outage
        server = start_mlflow_server(backend, artifacts, options, log_file=log)  # it ends
        output, _ = sweep.communicate(timeout=900)
        assert sweep.returncode == 0, output
        study = assert_grid_filled_once(target)
        assert not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    finally:
        sweep.kill()
        stop_process(server)
