"""Recovery: dead workers' trials failed and their cells queued again; interrupted cells are
not failed cells."""

from __future__ import annotations

import optuna

from lightning_ad.sweep.recovery import HOST, INTERRUPTED, cell_key, grid_status, recover
from lightning_ad.sweep.spec import SweepTarget
from lightning_ad.sweep.storage import load_study


def test_dead_local_worker_is_failed_and_its_cell_requeued(target: SweepTarget) -> None:
    study = load_study(target)
    trial = study.ask()  # a trial left RUNNING by a worker that no longer exists
    cell = {
        k: trial.suggest_categorical(k, list(target.spec.grid[k]))
        for k in ("category", "backbone", "head", "classes", "seed")
    }
    trial.set_user_attr("worker", f"{HOST}:999999999")
    queued = recover(study, target)
    state = study._storage.get_trial(trial._trial_id).state
    assert state == optuna.trial.TrialState.FAIL and queued == 1
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting[0].system_attrs["fixed_params"] == cell


def test_an_interrupted_cell_is_queued_again_not_reported_failed(target: SweepTarget) -> None:
    study = load_study(target)
    interrupted, failed = target.spec.runnable_cells()[:2]
    for cell, attrs in (
        (interrupted, {INTERRUPTED: True}),
        (failed, {"error": "RuntimeError: boom\nthe traceback"}),
    ):
        study.enqueue_trial(cell)
        trial = study.ask()
        assert {k: trial.suggest_categorical(k, list(target.spec.grid[k])) for k in cell} == cell
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert grid_status(study, target.spec).failed == {cell_key(failed): "RuntimeError: boom"}
    assert recover(study, target) == 2  # both are queued again
