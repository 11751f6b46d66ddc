"""Recovery: nothing finished is lost, nothing unfinished is left behind; and where the grid
stands. The one module that reads Optuna's internals (a trial's ``grid_id``, the sampler's grid,
the storage's trial states), so that an Optuna upgrade touches one file.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from lightning_ad import tracking
from lightning_ad.config import GRID_KEYS
from lightning_ad.sweep.spec import SweepSpec, SweepTarget

HOST = socket.gethostname()
INTERRUPTED = "interrupted"
"""A trial's user attribute: Ctrl-C stopped it; its cell is queued again, not reported failed."""


def worker_id() -> str:
    return f"{HOST}:{os.getpid()}"


def _is_dead_local_worker(worker: str | None) -> bool:
    host, _, pid = (worker or "").rpartition(":")
    if host != HOST or not pid.isdigit():
        return False  # another machine's trial: its own heartbeat (RDB storage) handles it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover(study: optuna.Study, target: SweepTarget) -> int:
    """Fail the trials of dead local workers, and queue every cell that has no finished trial
    again. Returns how many cells were queued."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _is_dead_local_worker(trial.user_attrs.get("worker")):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            tracking.fail_orphan_runs(
                target.tracking_uri, target.experiment, target.study_name, trial.number
            )
    cells = CellStates.of(study)
    for params in cells.retry.values():
        study.enqueue_trial(params)
    return len(cells.retry)


@dataclass(frozen=True)
class CellStates:
    """The study's trials, grouped by grid cell (a cell may have several trials: retries)."""

    finished: set[tuple]
    """Cells with a COMPLETE trial, or PRUNED (skipped as n/a)."""
    pending: set[tuple]
    """Cells with a RUNNING or WAITING trial."""
    retry: dict[tuple, dict]
    """Cells neither finished nor pending whose last trial failed or was interrupted: their
    grid values, to queue again."""
    errors: dict[tuple, str]
    """Of those, the cells whose last trial failed (not interrupted): the error's first line."""

    @classmethod
    def of(cls, study: optuna.Study) -> CellStates:
        finished, pending, retry, errors = set(), set(), {}, {}
        for trial in study.get_trials(deepcopy=False):
            params = cell_params(study, trial)
            key = cell_key(params)
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                finished.add(key)
            elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.add(key)
            elif trial.state == TrialState.FAIL and key:
                retry[key] = params
                errors.pop(key, None)
                if not trial.user_attrs.get(INTERRUPTED):
                    error = str(trial.user_attrs.get("error") or "failed (no error recorded)")
                    errors[key] = error.strip().splitlines()[0]
        retry = {k: p for k, p in retry.items() if k not in finished | pending}
        return cls(finished, pending, retry, {k: e for k, e in errors.items() if k in retry})


def cell_key(params: dict | None) -> tuple | None:
    return tuple(params[k] for k in GRID_KEYS) if params else None


def cell_params(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict | None:
    """The grid cell of a trial, also when its worker died before suggesting every parameter."""
    params = trial.system_attrs.get("fixed_params") or trial.params
    if all(k in params for k in GRID_KEYS):
        return {k: params[k] for k in GRID_KEYS}
    if "grid_id" in trial.system_attrs and isinstance(study.sampler, optuna.samplers.GridSampler):
        values = study.sampler._all_grids[trial.system_attrs["grid_id"]]
        return dict(zip(study.sampler._param_names, values, strict=True))
    return None


class RequeueStaleTrial:
    """The ``heartbeat_stale_trial_callback`` for a trial whose worker stopped beating (a killed
    process, a dead machine): its MLflow run is marked FAILED and its cell queued again, so the
    sweep is delayed, never left with a hole. Optuna's ``RetryHeartbeatStaleTrialCallback``
    re-adds the trial with the sampler's ``grid_id``; this goes through ``enqueue_trial``, the
    path ``recover`` uses too, and also closes the MLflow run."""

    def __init__(self, target: SweepTarget) -> None:
        self.target = target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Queue first: Optuna calls this outside optimize's catch, so an MLflow error after it
        # must neither kill the surviving worker nor lose the cell.
        params = cell_params(study, trial)
        if params:
            study.enqueue_trial(params)
        target = self.target
        try:
            tracking.fail_orphan_runs(
                target.tracking_uri, target.experiment, target.study_name, trial.number
            )
        except Exception as err:  # the run stays RUNNING; the next recovery closes it
            warnings.warn(f"could not mark trial {trial.number}'s run FAILED: {err}", stacklevel=1)


def next_step(study: optuna.Study, n_cells: int) -> str:
    """``take`` a cell, ``wait`` for running trials that may still come back as stale (RDB
    storages), or ``done``."""
    visited, running = set(), False
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING:
            return "take"
        running |= trial.state == TrialState.RUNNING
        if "grid_id" in trial.system_attrs:
            visited.add(trial.system_attrs["grid_id"])
    if len(visited) < n_cells:
        return "take"
    return "wait" if running and _has_heartbeats(study) else "done"


def _has_heartbeats(study: optuna.Study) -> bool:
    storage = study._storage
    return isinstance(storage, optuna.storages.RDBStorage) and bool(
        storage.get_heartbeat_interval()
    )


@dataclass(frozen=True)
class GridStatus:
    """Where the runnable cells of the grid stand."""

    cells: int
    complete: int
    running: int
    failed: dict[tuple, str]
    """Cells whose last trial failed (not interrupted) and none is queued: the error's line."""

    @property
    def finished(self) -> bool:
        """Nothing left to run: every cell complete or failed."""
        return self.complete + len(self.failed) == self.cells and not self.running


def grid_status(study: optuna.Study, spec: SweepSpec) -> GridStatus:
    runnable = {cell_key(c) for c in spec.runnable_cells()}
    cells = CellStates.of(study)
    failed = {k: e for k, e in cells.errors.items() if k in runnable}
    return GridStatus(
        len(runnable), len(runnable & cells.finished), len(runnable & cells.pending), failed
    )
