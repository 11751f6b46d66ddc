"""The queue of cells: dead workers found by their file locks, their cells queued again;
interrupted cells are not failed cells; a cell queued twice runs once; a failing cell is retried
once per command, not in a loop."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import optuna
import pytest

from lightning_ad.sweep import liveness, recovery
from lightning_ad.sweep.liveness import WorkerLock
from lightning_ad.sweep.recovery import (
    CELL_ATTR,
    INTERRUPTED,
    TrialIndex,
    fail_dead_trials,
    grid_status,
    next_cells,
    plan,
    queued_cell,
    trial_count,
)
from lightning_ad.sweep.spec import SweepTarget, cell_key
from lightning_ad.sweep.storage import worker_locks
from lightning_ad.sweep.study import load_study

RUNNING, WAITING, FAIL = (
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
    optuna.trial.TrialState.FAIL,
)


def _take(study: optuna.Study, cell: dict, lock: WorkerLock | None) -> optuna.Trial:
    """A trial of ``cell`` left RUNNING, claimed by ``lock``'s worker."""
    study.enqueue_trial(cell)
    trial = study.ask()
    if lock is not None:
        lock.claim(trial)
    return trial


def _unclaimed(study: optuna.Study, cell: dict, started_s_ago: float) -> int:
    """A trial of ``cell`` RUNNING since ``started_s_ago`` seconds, whose worker never wrote
    its lock's name on it; its number."""
    trial = optuna.trial.create_trial(state=RUNNING, user_attrs={CELL_ATTR: cell})
    trial.datetime_start = datetime.datetime.now() - datetime.timedelta(seconds=started_s_ago)
    study.add_trial(trial)
    return trial_count(study) - 1


def test_a_dead_workers_trial_is_failed_and_queued_a_live_ones_is_left(
    target: SweepTarget,
) -> None:
    study = load_study(target)
    dead_cell, live_cell = target.spec.runnable_cells()[:2]
    folder = worker_locks(target.storage)
    with WorkerLock.held(folder) as dead:
        dead_trial = _take(study, dead_cell, dead)
    # The dead worker's lock file is gone; a crashed one's would be there but free.
    (folder / "crashed.lock").touch()
    with WorkerLock.held(folder) as live:
        live_trial = _take(study, live_cell, live)
        crashed_trial = _take(study, target.spec.runnable_cells()[2], None)
        crashed_trial.set_user_attr(liveness.LOCK_ATTR, "crashed.lock")
        plan(study, target, retry_failed_before=trial_count(study))
        states = {t.number: t.state for t in study.get_trials()}
        assert states[dead_trial.number] == FAIL and states[crashed_trial.number] == FAIL
        assert states[live_trial.number] == RUNNING  # its lock is held: alive, whatever its host
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(WAITING,))]
    assert dead_cell in waiting and live_cell not in waiting
    assert len(waiting) == len({cell_key(c) for c in waiting})  # each cell queued once


def test_an_unclaimed_trial_is_dead_only_after_the_grace_period(target: SweepTarget) -> None:
    """A worker killed between taking a trial and writing its lock's name on it: its trial is
    failed as interrupted (queued again, not a failed cell) once the grace has passed."""
    study = load_study(target)
    cells = target.spec.runnable_cells()
    taken = _take(study, cells[0], None).number  # a live worker, about to claim it
    inside = _unclaimed(study, cells[1], liveness.UNCLAIMED_GRACE_S - 5)
    past = _unclaimed(study, cells[2], liveness.UNCLAIMED_GRACE_S + 5)
    fail_dead_trials(study, target)
    fail_dead_trials(study, target)  # again, as a second command would: no error
    trials = study.get_trials()
    assert [trials[n].state for n in (taken, inside, past)] == [RUNNING, RUNNING, FAIL]
    assert trials[past].user_attrs[INTERRUPTED] is True
    assert not grid_status(study, target.spec).failed
    plan(study, target, retry_failed_before=0)
    waiting = [recovery.trial_cell(t) for t in study.get_trials(states=(WAITING,))]
    assert cells[2] in waiting and cells[0] not in waiting and cells[1] not in waiting


def test_an_interrupted_cell_is_queued_again_a_failed_one_once_per_command(
    target: SweepTarget,
) -> None:
    study = load_study(target)
    interrupted, failed = target.spec.runnable_cells()[:2]
    for cell, attrs in (
        (interrupted, {INTERRUPTED: True}),
        (failed, {"error": "RuntimeError: boom\nthe traceback"}),
    ):
        trial = _take(study, cell, None)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=FAIL)
    others = len(target.spec.runnable_cells()) - 2
    assert grid_status(study, target.spec).failed == {cell_key(failed): "RuntimeError: boom"}
    # Inside the command it failed in (a worker waiting): the cell is not run again in a loop.
    assert plan(study, target, retry_failed_before=0) == others + 1  # cells now waiting
    # A new command: it is.
    assert plan(study, target, retry_failed_before=trial_count(study)) == others + 2


def test_the_queue_is_refilled_a_few_cells_at_a_time_and_retries_old_failures_once(
    target: SweepTarget,
) -> None:
    """Three cells failed before this command; the queue holds two cells. Refills queue the
    old failures as room frees up, never a cell that failed again in this command."""
    target = dataclasses.replace(target, queue_ahead=2)
    study, cells = load_study(target), target.spec.runnable_cells()
    for cell in cells[:3]:
        study.tell(_take(study, cell, None), state=FAIL)
    first_trial = trial_count(study)
    assert plan(study, target, retry_failed_before=first_trial) == 2
    assert plan(study, target, retry_failed_before=first_trial) == 2  # full: nothing more
    again, done = study.ask(), study.ask()
    assert [queued_cell(t) for t in (again, done)] == cells[:2]
    study.tell(again, state=FAIL)  # this command's failure
    study.tell(done, 0.8)
    assert plan(study, target, retry_failed_before=first_trial) == 2
    waiting = [recovery.trial_cell(t) for t in study.get_trials(states=(WAITING,))]
    assert waiting == [cells[2], cells[3]]  # the old failure, then a new cell; not cells[0]


class _SecondToLast:
    """A random draw that always picks the second-to-last of ``n``."""

    def randrange(self, n: int) -> int:
        return n - 2


def test_without_a_planning_lock_workers_queue_from_a_random_point_of_the_rest(
    target: SweepTarget,
) -> None:
    """On PostgreSQL (no file lock) two workers refilling at once seldom queue the same cells:
    each takes a run of the remaining cells that starts at a random one; with the lock, the
    grid's order."""
    cells = target.spec.runnable_cells()
    assert next_cells(cells, 3, spread=_SecondToLast()) == [cells[-2], cells[-1], cells[0]]
    assert next_cells(cells, 3, spread=None) == cells[:3]
    assert next_cells(cells[:2], 3, spread=_SecondToLast()) == cells[:2]  # room for all


def test_cells_queued_by_a_command_with_another_grid_are_left_to_it(
    target: SweepTarget,
) -> None:
    study = load_study(target)
    study.enqueue_trial({**target.spec.runnable_cells()[0], "seed": 99})  # a grown grid's cell
    index = TrialIndex(study, target.spec)
    assert index.next_step() == "done"
    study.enqueue_trial(target.spec.runnable_cells()[0])
    assert index.next_step() == "take"


def test_a_cell_queued_twice_is_run_by_the_lower_trial_alone(target: SweepTarget) -> None:
    """Two recoveries at once on PostgreSQL (no file lock there) may queue a cell twice."""
    study = load_study(target)
    cell = target.spec.runnable_cells()[0]
    study.enqueue_trial(cell)
    study.enqueue_trial(cell)
    first, second = study.ask(), study.ask()  # two workers take them at the same moment
    index = TrialIndex(study, target.spec)
    assert index.surplus_reason(first, cell) is None
    assert "taken by trial" in index.surplus_reason(second, cell)
    study.tell(first, 0.9)
    assert "completed by trial" in index.surplus_reason(second, cell)
    assert "no queued cell" in index.surplus_reason(second, None)
    removed = {**cell, "seed": 99}
    assert "no longer in the sweep's grid" in index.surplus_reason(second, removed)


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_the_index_kept_up_to_date_agrees_with_a_fresh_read(
    target: SweepTarget, storage: str, tmp_path: Path
) -> None:
    """A worker's TrialIndex, refreshed between other workers' trials, answers as an index
    that reads the whole study anew (on the journal, and on an RDB storage, which Optuna wraps
    in its cache)."""
    if storage == "sqlite":
        target = dataclasses.replace(target, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study, spec = load_study(target), target.spec
    cells = spec.runnable_cells()
    [other_seed] = [c for c in cells if c != cells[0] and _same_table_cell(c, cells[0])]
    index = TrialIndex(study, spec)
    index.refresh()
    study.tell(_take(study, cells[0], None), 0.7)  # other workers' trials, meanwhile
    study.tell(_take(study, other_seed, None), 0.8)
    study.tell(_take(study, cells[1], None), state=FAIL)
    running = _take(study, cells[2], None)
    duplicate = _take(study, cells[2], None)  # the running cell, queued twice
    study.enqueue_trial(cells[3])
    assert index.next_step() == "take"
    fresh = TrialIndex(study, spec)
    assert index.seeds_of(cells[0]) == {cell_key(cells[0]): 0.7, cell_key(other_seed): 0.8}
    assert index.seeds_of(cells[0]) == fresh.seeds_of(cells[0])
    assert index.next_step() == fresh.next_step()
    assert "taken by trial" in index.surplus_reason(duplicate, queued_cell(duplicate))
    assert index.surplus_reason(running, queued_cell(running)) is None
    queued = study.ask()  # the trial WAITING at the last read, taken and finished since
    study.tell(queued, 0.6)
    study.tell(running, 0.9)  # RUNNING at the last read, finished since
    assert index.seeds_of(cells[3])[cell_key(cells[3])] == 0.6
    assert index.seeds_of(cells[2])[cell_key(cells[2])] == 0.9
    assert "completed by trial" in index.surplus_reason(duplicate, queued_cell(duplicate))
    fresh = TrialIndex(study, spec)
    for cell in cells:
        assert index.seeds_of(cell) == fresh.seeds_of(cell)
    assert index.next_step() == fresh.next_step() == "wait"  # for the duplicate, still RUNNING


def _same_table_cell(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in a if k != "seed")
