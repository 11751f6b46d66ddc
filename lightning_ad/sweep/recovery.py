"""The queue of cells: every cell of the grid without a finished trial is queued once; nothing
finished is lost, nothing unfinished is left behind; and where the grid stands. The one module
that reads Optuna's internals (a trial's ``fixed_params``, the storage's trial states), so that
an Optuna upgrade touches one file.

Cells are queued with ``study.enqueue_trial`` and workers take queued trials only: a cell is
identified by its grid values (in the study of one settings fingerprint), not by a position in a
grid, so adding a seed queues the new cells alone and removing one queues nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from lightning_ad import tracking
from lightning_ad.config import GRID_KEYS
from lightning_ad.sweep import liveness
from lightning_ad.sweep.spec import SweepSpec, SweepTarget, cell_key
from lightning_ad.sweep.storage import worker_locks

INTERRUPTED = "interrupted"
"""A trial's user attribute: Ctrl-C or SIGTERM stopped it, or its worker died; its cell is
queued again, not reported failed."""
CELL_ATTR = "cell"
"""A trial's user attribute: the grid values of its cell."""
SURPLUS_ATTR = "surplus"
"""A trial's user attribute: why it ran nothing (its cell was already taken, or no longer in the
grid). Such trials are not a cell's result and are ignored."""


def worker_id() -> str:
    """Who ran a trial, for people reading the study (liveness asks the lock, not this)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def plan(study: optuna.Study, target: SweepTarget, retry_failed: bool) -> int:
    """Fail the trials of dead workers, and queue every runnable cell that has no finished,
    running or queued trial; cells whose last trial raised an error only when
    ``retry_failed`` (once per command, at its start: a cell that fails is not retried in a
    loop). Returns how many cells were queued.

    On the local stores two commands started together plan one after the other (a file lock),
    so a cell is queued once; on PostgreSQL a cell queued twice is run once all the same
    (``TrialIndex.surplus_reason``)."""
    with _planning(target):
        fail_dead_trials(study, target)
        cells = CellStates.of(study)
        queued = 0
        skip = cells.finished | cells.pending | (set() if retry_failed else set(cells.errors))
        for cell in target.spec.runnable_cells():
            if cell_key(cell) not in skip:
                study.enqueue_trial(cell)
                queued += 1
        return queued


@contextlib.contextmanager
def _planning(target: SweepTarget) -> Iterator[None]:
    folder = worker_locks(target.storage)
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "plan.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fail_dead_trials(study: optuna.Study, target: SweepTarget) -> None:
    """RUNNING trials whose worker is gone: FAIL, and their MLflow runs FAILED. Local stores ask
    the workers' file locks; RDB storages their heartbeats (which queue the cell themselves)."""
    folder = worker_locks(target.storage)
    if folder is None:
        optuna.storages.fail_stale_trials(study)
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if liveness.is_dead(folder, trial):
            _fail(study, trial)
            _fail_runs(target, trial)


def _fail(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """FAIL a dead worker's trial (its cell to be run again, not a failed cell), fine if
    another process has just done it."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _fail_runs(target: SweepTarget, trial: optuna.trial.FrozenTrial) -> None:
    """Best effort: a run left RUNNING is closed by the next recovery, the cell is queued now."""
    try:
        tracking.fail_orphan_runs(
            target.tracking_uri, target.experiment, target.study_name, trial.number
        )
    except Exception as err:
        warnings.warn(f"could not mark trial {trial.number}'s run FAILED: {err}", stacklevel=2)


@dataclass(frozen=True)
class CellStates:
    """The study's trials, grouped by cell (a cell may have several trials: retries)."""

    finished: set[tuple]
    """Cells with a COMPLETE trial."""
    pending: set[tuple]
    """Cells with a RUNNING or WAITING trial."""
    running: set[tuple]
    """Cells with a RUNNING trial."""
    errors: dict[tuple, str]
    """Cells neither finished nor pending whose last trial failed (not interrupted): the
    error's first line."""

    @classmethod
    def of(cls, study: optuna.Study) -> CellStates:
        finished, pending, running, errors = set(), set(), set(), {}
        for trial in study.get_trials(deepcopy=False):
            key = cell_key(trial_cell(trial))
            if key is None or SURPLUS_ATTR in trial.user_attrs:
                continue
            if trial.state == TrialState.COMPLETE:
                finished.add(key)
            elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.add(key)
                if trial.state == TrialState.RUNNING:
                    running.add(key)
            elif trial.state == TrialState.FAIL:
                errors.pop(key, None)
                if not trial.user_attrs.get(INTERRUPTED):
                    error = str(trial.user_attrs.get("error") or "failed (no error recorded)")
                    errors[key] = error.strip().splitlines()[0]
        done = finished | pending
        errors = {k: e for k, e in errors.items() if k not in done}
        return cls(finished, pending, running, errors)


def trial_cell(trial: optuna.trial.FrozenTrial) -> dict | None:
    """The grid values of a trial's cell: as queued, also when its worker died at once."""
    cell = trial.user_attrs.get(CELL_ATTR) or trial.system_attrs.get("fixed_params") or {}
    return {k: cell[k] for k in GRID_KEYS} if all(k in cell for k in GRID_KEYS) else None


def queued_cell(trial: optuna.Trial) -> dict | None:
    """The cell a running trial was queued for (None: it was not queued)."""
    return trial_cell(trial.study._storage.get_trial(trial._trial_id))


class RequeueStaleTrial:
    """The ``heartbeat_stale_trial_callback`` for a trial whose worker stopped beating (a killed
    process, a dead machine): its cell is queued again and its MLflow run marked FAILED, so the
    sweep is delayed, never left with a hole."""

    def __init__(self, target: SweepTarget) -> None:
        self.target = target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Queue first: Optuna calls this outside optimize's catch, so an MLflow error after it
        # must neither kill the surviving worker nor lose the cell.
        cell = trial_cell(trial)
        if cell is not None:
            study.enqueue_trial(cell)
        _fail_runs(self.target, trial)


UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


class TrialIndex:
    """One worker's view of the study's trials by cell, read incrementally: a finished trial
    never changes, so after the first read only the trials unfinished at the last read and the
    ones created since are looked at. What a worker asks before and after every trial (which
    step is next, whether its cell is taken, the seeds of its table cell) then no longer walks
    the whole study (three walks a trial took about 60 ms at 7,500 trials; ``make bench``
    B10 measures the whole)."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._finished: set[int] = set()
        self._complete: dict[tuple, list[tuple[int, dict, float]]] = {}
        """Table cell (grid values but the seed) -> its COMPLETE trials: number, cell, value."""
        self._unfinished: list[optuna.trial.FrozenTrial] | None = None
        """The trials RUNNING or WAITING at the last read; None before the first."""
        self._cells: dict[int, tuple | None] = {}
        """Trial number -> its cell's key: fixed when the trial is queued."""
        self._n = 0

    def refresh(self) -> None:
        """Read what changed since the last call."""
        if self._unfinished is None:
            trials = self.study.get_trials(deepcopy=False)  # the first read: all of them
        else:
            storage, study_id = self.study._storage, self.study._study_id
            unfinished = self.study.get_trials(deepcopy=False, states=UNFINISHED)
            live = {t.number for t in unfinished}
            n = storage.get_n_trials(study_id)
            # Finished since the last read, or created and finished in between.
            changed = {t.number for t in self._unfinished} | set(range(self._n, n))
            trials = unfinished + [
                storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, i))
                for i in sorted(changed - live)
            ]
        self._unfinished = []
        for trial in trials:
            self._n = max(self._n, trial.number + 1)
            if trial.state in UNFINISHED:
                self._unfinished.append(trial)
            elif trial.number not in self._finished:
                self._add_finished(trial)

    def _add_finished(self, trial: optuna.trial.FrozenTrial) -> None:
        self._finished.add(trial.number)
        self._cells.pop(trial.number, None)
        cell = trial_cell(trial)
        if cell is None or trial.state != TrialState.COMPLETE or SURPLUS_ATTR in trial.user_attrs:
            return
        entry = (trial.number, cell, trial.value)
        self._complete.setdefault(_table_cell(cell), []).append(entry)

    def _cell_key(self, trial: optuna.trial.FrozenTrial) -> tuple | None:
        if trial.number not in self._cells:
            self._cells[trial.number] = cell_key(trial_cell(trial))
        return self._cells[trial.number]

    def next_step(self, spec: SweepSpec) -> str:
        """``take`` a queued cell of ``spec``'s grid, ``wait`` for its running trials (they
        finish, or their worker is found dead and their cell queued again), or ``done``. Cells
        queued by a command with another grid on the same study are left to it."""
        self.refresh()
        runnable, running = spec.runnable_keys, False
        for trial in self._unfinished:
            if self._cell_key(trial) in runnable:
                if trial.state == TrialState.WAITING:
                    return "take"
                running = True
        return "wait" if running else "done"

    def surplus_reason(self, trial: optuna.Trial, cell: dict | None, spec: SweepSpec) -> str | None:
        """Why ``trial`` must not run its cell, or None when it is the cell's one live trial.

        Of several trials queued for one cell (two recoveries on PostgreSQL at once), the
        lowest numbered live one runs it; the others stand down, whichever worker asks
        first."""
        if cell is None:
            return "no queued cell"
        if cell_key(cell) not in spec.runnable_keys:
            return "its cell is no longer in the sweep's grid"
        self.refresh()
        for number, other, _ in self._complete.get(_table_cell(cell), []):
            if other == cell and number != trial.number:
                return f"its cell was completed by trial {number}"
        key = cell_key(cell)
        for other in self._unfinished:
            live = other.number < trial.number and SURPLUS_ATTR not in other.user_attrs
            if live and self._cell_key(other) == key:
                return f"its cell is taken by trial {other.number}"
        return None

    def seeds_of(self, cell: dict, spec: SweepSpec) -> list[tuple[dict, float]]:
        """``(grid values, value)`` of every complete trial of ``cell``'s table cell in
        ``spec``'s grid: the cells that differ from it in the seed alone (a seed removed from
        the grid not)."""
        self.refresh()
        return [
            (other, value)
            for _, other, value in self._complete.get(_table_cell(cell), [])
            if cell_key(other) in spec.runnable_keys
        ]


def _table_cell(cell: dict) -> tuple:
    """A cell's grid values but its seed: the seeds of one table cell share it."""
    return tuple(cell[k] for k in GRID_KEYS if k != "seed")


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

    @property
    def all_complete(self) -> bool:
        return self.complete == self.cells


def grid_status(study: optuna.Study, spec: SweepSpec) -> GridStatus:
    runnable = spec.runnable_keys
    cells = CellStates.of(study)
    failed = {k: e for k, e in cells.errors.items() if k in runnable}
    return GridStatus(
        len(runnable), len(runnable & cells.finished), len(runnable & cells.running), failed
    )
