"""The queue of cells: every cell of the grid without a finished trial is queued once (a few
dozen at a time); nothing finished is lost, nothing unfinished is left behind; and where the
grid stands. The one module that reads Optuna's internals (a trial's ``fixed_params``, the
storage's trial states), so that an Optuna upgrade touches one file.

Cells are queued with ``study.enqueue_trial`` and workers take queued trials only: a cell is
identified by its grid values (in the study of one settings fingerprint), not by a position in a
grid, so adding a seed queues the new cells alone and removing one queues nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from lightning_ad import tracking
from lightning_ad.grid import GRID_KEYS
from lightning_ad.sweep import liveness
from lightning_ad.sweep.spec import SweepSpec, SweepTarget, cell_key
from lightning_ad.sweep.storage import rdb_backend, trials_with_heartbeat, worker_locks

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


def trial_count(study: optuna.Study) -> int:
    """How many trials the study holds: a command's trials are numbered from here on."""
    return study._storage.get_n_trials(study._study_id)


def plan(study: optuna.Study, target: SweepTarget, retry_failed_before: int) -> int:
    """Fail the trials of dead workers, then queue the next runnable cells that have no
    finished, running or queued trial, until ``target.queue_ahead`` are waiting. A cell whose last
    trial raised an error is queued only when that trial is numbered below
    ``retry_failed_before`` (the study's ``trial_count`` when this command started): a failing
    cell is retried once per command, not in a loop (a trial another command started before
    this one, and that failed since, is retried too: once). Returns how many of the grid's
    cells are waiting: none means nothing is left to queue.

    On the local stores two commands or workers plan one after the other (a file lock), so a
    cell is queued once; on PostgreSQL a cell queued twice is run once all the same
    (``TrialIndex.surplus_reason``), and each worker starts at a random cell of those left
    (:func:`next_cells`)."""
    with _planning(target) as locked:
        fail_dead_trials(study, target)
        cells = CellStates.of(study)
        runnable = target.spec.runnable_keys
        waiting = len(cells.waiting & runnable)
        retried = {
            key for key, (number, _) in cells.failures.items() if number < retry_failed_before
        }
        skip = cells.finished | cells.pending | (set(cells.failures) - retried)
        todo = [cell for cell in target.spec.runnable_cells() if cell_key(cell) not in skip]
        room = max(target.queue_ahead - waiting, 0)
        for cell in next_cells(todo, room, spread=None if locked else random.Random()):
            study.enqueue_trial(cell)
            waiting += 1
        return waiting


def next_cells(todo: list[dict], room: int, spread: random.Random | None) -> list[dict]:
    """The cells to queue: the first ``room`` of ``todo`` (grid order); with a ``spread``, from
    a point of it that it draws, so that workers planning at once without a lock (PostgreSQL)
    seldom queue the same cells."""
    if spread is not None and len(todo) > room:
        start = spread.randrange(len(todo))
        todo = todo[start:] + todo[:start]
    return todo[:room]


@contextlib.contextmanager
def _planning(target: SweepTarget) -> Iterator[bool]:
    """The local stores' planning lock; yields whether there is one."""
    folder = worker_locks(target.storage)
    if folder is None:
        yield False
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "plan.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield True


def fail_dead_trials(study: optuna.Study, target: SweepTarget) -> None:
    """RUNNING trials whose worker is gone: FAIL, and their MLflow runs FAILED. Local stores ask
    the workers' file locks; RDB storages their heartbeats (which queue the cell themselves)."""
    folder = worker_locks(target.storage)
    if folder is None:
        with warnings.catch_warnings():  # "experimental since 2.9", once per planning pass
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        _fail_trials_that_never_beat(study)
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if liveness.is_dead(folder, trial):
            _fail(study, trial)
            _fail_runs(target, trial)


_SILENT_SINCE: dict[tuple[str, int], float] = {}
"""(study, trial id) of RUNNING trials of an RDB storage without a heartbeat -> when this
process first saw them, by its monotonic clock (a trial's start time is its worker's clock,
which may differ from this machine's)."""


def _fail_trials_that_never_beat(study: optuna.Study) -> None:
    """RUNNING trials of an RDB storage that this process has watched for the storage's grace
    period without one heartbeat: the worker died between taking the trial and its first beat
    (or took it with ``ask`` and left). Failed and handed to the stale-trial callback as Optuna
    does with silent ones; the storage's row lock lets exactly one worker win each."""
    backend = rdb_backend(study)
    if backend is None:
        return
    running = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    silent = set(running) - trials_with_heartbeat(backend, running) if running else set()
    now = time.monotonic()
    for key in [k for k in _SILENT_SINCE if k[0] == study.study_name and k[1] not in silent]:
        del _SILENT_SINCE[key]  # it beat, or it ended
    callback = backend.get_heartbeat_stale_trial_callback()
    for trial_id in silent:
        since = _SILENT_SINCE.setdefault((study.study_name, trial_id), now)
        if now - since <= backend.grace_period:
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            failed = study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
            if failed and callback is not None:
                callback(study, study._storage.get_trial(trial_id))


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
    running: set[tuple]
    """Cells with a RUNNING trial."""
    waiting: set[tuple]
    """Cells with a WAITING (queued) trial."""
    failures: dict[tuple, tuple[int, str]]
    """Cells neither finished nor pending whose last trial failed (not interrupted): that
    trial's number and the error's first line."""

    @property
    def pending(self) -> set[tuple]:
        """Cells with a RUNNING or WAITING trial."""
        return self.running | self.waiting

    @classmethod
    def of(cls, study: optuna.Study) -> CellStates:
        finished, running, waiting, failures = set(), set(), set(), {}
        for trial in study.get_trials(deepcopy=False):
            key = cell_key(trial_cell(trial))
            if key is None or SURPLUS_ATTR in trial.user_attrs:
                continue
            if trial.state == TrialState.COMPLETE:
                finished.add(key)
            elif trial.state == TrialState.RUNNING:
                running.add(key)
            elif trial.state == TrialState.WAITING:
                waiting.add(key)
            elif trial.state == TrialState.FAIL:
                failures.pop(key, None)
                if not trial.user_attrs.get(INTERRUPTED):
                    error = str(trial.user_attrs.get("error") or "failed (no error recorded)")
                    failures[key] = (trial.number, error.strip().splitlines()[0])
        done = finished | running | waiting
        failures = {k: f for k, f in failures.items() if k not in done}
        return cls(finished, running, waiting, failures)


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
        if study.study_name != self.target.study_name:
            return  # a cell's inner search study shares the storage: Optuna's FAIL is enough
        # Queue first: Optuna calls this outside optimize's catch, so an MLflow error after it
        # must neither kill the surviving worker nor lose the cell.
        cell = trial_cell(trial)
        if cell is not None:
            study.enqueue_trial(cell)
        _fail_runs(self.target, trial)


UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


class TrialIndex:
    """One worker's view of the study's trials of ``spec``'s grid, by cell, kept up to date
    incrementally: a finished trial never changes, so after the first read only the trials
    unfinished at the last read and the ones created since are looked at. What a worker asks
    before and after every trial (which step is next, whether its cell is taken, the seeds of
    its table cell) then costs one list of the study's trials from the storage (which reads
    only what changed) instead of walks over every trial, whose cost grows with the study
    (``docs/design-notes.md``)."""

    def __init__(self, study: optuna.Study, spec: SweepSpec) -> None:
        self.study, self.spec = study, spec
        self._values: dict[tuple, dict[tuple, float]] = {}
        """Table cell (grid values but the seed) -> key of a runnable cell -> the value of its
        latest COMPLETE trial."""
        self._completed_by: dict[tuple, int] = {}
        """Key of a runnable cell -> the number of that trial."""
        self._unfinished: list[optuna.trial.FrozenTrial] | None = None
        """The trials RUNNING or WAITING at the last read; None before the first."""
        self._cells: dict[int, tuple | None] = {}
        """Trial number -> its cell's key: fixed when the trial is queued."""
        self._n = 0

    def refresh(self) -> None:
        """Read what changed since the last call."""
        # One list of every trial, which the storage itself keeps up to date incrementally
        # (the journal replays new lines, Optuna's RDB cache reads unfinished and new rows);
        # a trial's number is its position in it.
        trials = self.study.get_trials(deepcopy=False)
        if trials and trials[-1].number != len(trials) - 1:  # never seen; guards the above
            raise RuntimeError(
                f"study {self.study.study_name}: its trials are not numbered 0 to n-1, as "
                "Optuna numbers them; this TrialIndex cannot follow it"
            )
        if self._unfinished is None:
            changed = trials
        else:
            changed = [trials[t.number] for t in self._unfinished] + trials[self._n :]
        self._n = len(trials)
        self._unfinished = []
        for trial in changed:
            if trial.state in UNFINISHED:
                self._unfinished.append(trial)
            else:  # looked at once: it was unfinished at the last read, or is new
                self._add_finished(trial)

    def _add_finished(self, trial: optuna.trial.FrozenTrial) -> None:
        self._cells.pop(trial.number, None)
        cell = trial_cell(trial)
        key = cell_key(cell)
        if key not in self.spec.runnable_keys or trial.state != TrialState.COMPLETE:
            return
        if SURPLUS_ATTR not in trial.user_attrs:
            self._values.setdefault(_table_cell(cell), {})[key] = trial.value
            self._completed_by[key] = trial.number

    def _cell_key(self, trial: optuna.trial.FrozenTrial) -> tuple | None:
        if trial.number not in self._cells:
            self._cells[trial.number] = cell_key(trial_cell(trial))
        return self._cells[trial.number]

    def next_step(self) -> str:
        """``take`` a queued cell of the grid, ``wait`` for its running trials (they finish,
        or their worker is found dead and their cell queued again), or ``done``. Cells queued
        by a command with another grid on the same study are left to it."""
        self.refresh()
        runnable, running = self.spec.runnable_keys, False
        for trial in self._unfinished:
            if self._cell_key(trial) in runnable:
                if trial.state == TrialState.WAITING:
                    return "take"
                running = True
        return "wait" if running else "done"

    def surplus_reason(self, trial: optuna.Trial, cell: dict | None) -> str | None:
        """Why ``trial`` must not run its cell, or None when it is the cell's one live trial.

        Of several trials queued for one cell (two recoveries on PostgreSQL at once), the
        lowest numbered live one runs it; the others stand down, whichever worker asks
        first."""
        if cell is None:
            return "no queued cell"
        key = cell_key(cell)
        if key not in self.spec.runnable_keys:
            return "its cell is no longer in the sweep's grid"
        self.refresh()
        number = self._completed_by.get(key, trial.number)
        if number != trial.number:
            return f"its cell was completed by trial {number}"
        for other in self._unfinished:
            live = other.number < trial.number and SURPLUS_ATTR not in other.user_attrs
            if live and self._cell_key(other) == key:
                return f"its cell is taken by trial {other.number}"
        return None

    def seeds_of(self, cell: dict) -> dict[tuple, float]:
        """Cell key -> value of every complete cell of the grid in ``cell``'s table cell: the
        cells that differ from it in the seed alone."""
        self.refresh()
        return dict(self._values.get(_table_cell(cell), {}))


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
    failed = {k: error for k, (_, error) in cells.failures.items() if k in runnable}
    return GridStatus(
        len(runnable), len(runnable & cells.finished), len(runnable & cells.running), failed
    )
