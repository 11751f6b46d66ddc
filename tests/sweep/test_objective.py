"""The cell objective, with its trial runner given: a queued cell -> one trial of its config ->
the trial's value (its test AUC); failures and interruptions recorded on the trial; cells that
are not this trial's to run left alone; a searched cell -> the run of its lowest val/loss."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import mlflow
import optuna
import pytest

from lightning_ad import tracking
from lightning_ad.sweep.liveness import LOCK_ATTR, WorkerLock
from lightning_ad.sweep.objective import CellObjective
from lightning_ad.sweep.recovery import (
    CELL_ATTR,
    INTERRUPTED,
    SURPLUS_ATTR,
    TrialIndex,
    grid_status,
    worker_id,
)
from lightning_ad.sweep.spec import SweepSpec, SweepTarget, cell_key
from lightning_ad.sweep.study import load_study
from lightning_ad.train import TrialResult
from tests.fakes import NoOpTrials, RecordingParent, RecordingTrials
from tests.sweep.conftest import temporary_target

COMPLETE, FAIL, PRUNED, WAITING = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.WAITING,
)


def _arcface(target: SweepTarget, classes: str = "class3", seed: int = 0) -> dict:
    [cell] = [
        c
        for c in target.spec.runnable_cells()
        if (c["head"], c["classes"], c["seed"]) == ("arcface", classes, seed)
    ]
    return cell


def _answers(*aucs: float) -> RecordingTrials:
    """A trial runner whose n-th call reports test AUC ``aucs[n]``."""
    results = iter(aucs)
    return RecordingTrials(
        lambda config: TrialResult(
            f"run-{config.params()['seed']}", {"test/auc": next(results)}, 12.34, 0.4
        )
    )


def _take_one(study: optuna.Study, objective: CellObjective) -> optuna.trial.FrozenTrial:
    """One trial, as a worker runs it: a failing one is recorded, the sweep goes on."""
    ran: list[optuna.trial.FrozenTrial] = []
    study.optimize(
        objective, n_trials=1, catch=(Exception,), callbacks=[lambda _, t: ran.append(t)]
    )
    [trial] = ran
    return trial


@pytest.fixture
def study(target: SweepTarget) -> optuna.Study:
    return load_study(target)


def test_a_queued_cell_is_trained_once_and_its_test_auc_is_the_trials_value(
    target: SweepTarget, study: optuna.Study
) -> None:
    cell, parent, train = _arcface(target), RecordingParent(target), _answers(0.83)
    study.enqueue_trial(cell)
    trial = _take_one(study, CellObjective(parent, TrialIndex(study, target.spec), train=train))

    assert trial.state == COMPLETE and trial.value == 0.83
    assert trial.user_attrs[CELL_ATTR] == cell and trial.user_attrs["mlflow_run_id"] == "run-0"
    assert trial.user_attrs["seconds"] == 12.3 and trial.user_attrs["worker"] == worker_id()
    [call] = train.calls
    params = call.config.params()
    assert {k: params[k] for k in ("head", "classes", "seed")} == {
        "head": "arcface",
        "classes": "class3",
        "seed": 0,
    }
    assert (params["image_size"], params["epochs"]) == (32, 1)  # the sweep file's fixed ones
    assert (call.tracking_uri, call.experiment) == (target.tracking_uri, target.experiment)
    assert call.callbacks == [] and call.kwargs == {"progress_bar": False}
    assert call.tags == {
        tracking.PARENT_TAG: parent.run_id,
        tracking.ROLE_TAG: tracking.TRIAL_ROLE,
        tracking.SWEEP_TAG: target.spec.name,
        tracking.STUDY_TAG: target.study_name,
        tracking.TRIAL_TAG: str(trial.number),
        tracking.FINGERPRINT_TAG: target.fingerprint,
        tracking.CELL_TAG: target.settings.cell_id(cell),
        tracking.SELECTED_TAG: "true",
    }
    assert parent.done == [(cell, [0.83])]


def test_the_parent_hears_the_aucs_of_every_seed_of_the_table_cell(
    target: SweepTarget, study: optuna.Study
) -> None:
    first, second = _arcface(target, seed=0), _arcface(target, seed=1)
    parent = RecordingParent(target)
    objective = CellObjective(parent, TrialIndex(study, target.spec), train=_answers(0.8, 0.6))
    for cell in (first, second):
        study.enqueue_trial(cell)
        _take_one(study, objective)
    assert parent.done == [(first, [0.8]), (second, [0.8, 0.6])]


def test_a_failing_trial_records_its_error_and_the_cell_is_failed(
    target: SweepTarget, study: optuna.Study
) -> None:
    cell, parent = _arcface(target), RecordingParent(target)
    train = RecordingTrials(lambda config: RuntimeError("simulated bad data\nthe traceback"))
    study.enqueue_trial(cell)
    trial = _take_one(study, CellObjective(parent, TrialIndex(study, target.spec), train=train))

    assert trial.state == FAIL and len(train.calls) == 1
    assert trial.user_attrs["error"].startswith("RuntimeError: simulated bad data")
    assert INTERRUPTED not in trial.user_attrs and "mlflow_run_id" not in trial.user_attrs
    assert grid_status(study, target.spec).failed == {
        cell_key(cell): "RuntimeError: simulated bad data"
    }
    assert parent.done == []


def test_an_error_naming_a_password_is_recorded_without_it(
    target: SweepTarget, study: optuna.Study
) -> None:
    leak = RuntimeError("cannot log to postgresql://me:hunter2@db:5432/mlflow")
    study.enqueue_trial(_arcface(target))
    objective = CellObjective(
        RecordingParent(target),
        TrialIndex(study, target.spec),
        train=RecordingTrials(lambda c: leak),
    )
    trial = _take_one(study, objective)
    assert "me:***@db" in trial.user_attrs["error"] and "hunter2" not in trial.user_attrs["error"]


def test_an_interrupted_trial_is_marked_so_and_its_cell_is_not_failed(
    target: SweepTarget, study: optuna.Study
) -> None:
    """Ctrl-C or SIGTERM during training: the trial ends FAIL, but its cell is queued again
    by the next command instead of being reported failed."""
    study.enqueue_trial(_arcface(target))
    train = RecordingTrials(lambda config: KeyboardInterrupt())
    objective = CellObjective(RecordingParent(target), TrialIndex(study, target.spec), train=train)
    with pytest.raises(KeyboardInterrupt):
        _take_one(study, objective)
    [trial] = study.get_trials()
    assert trial.state == FAIL and trial.user_attrs[INTERRUPTED] is True
    assert not grid_status(study, target.spec).failed


def test_a_cell_taken_by_a_lower_trial_is_not_trained_again(
    target: SweepTarget, study: optuna.Study
) -> None:
    """The cell queued twice (two recoveries at once on PostgreSQL): the second trial stands
    down while the first runs."""
    cell, train = _arcface(target), _answers(0.9)
    study.enqueue_trial(cell)
    study.enqueue_trial(cell)
    first = study.ask()  # another worker's, running
    objective = CellObjective(RecordingParent(target), TrialIndex(study, target.spec), train=train)
    trial = _take_one(study, objective)
    assert trial.state == PRUNED and trial.number > first.number
    assert f"taken by trial {first.number}" in trial.user_attrs[SURPLUS_ATTR]
    assert train.calls == []


def test_another_commands_cell_goes_back_to_the_queue_untrained(
    target: SweepTarget, study: optuna.Study
) -> None:
    """A command with a grown grid queued a cell this grid lacks; this worker took it."""
    theirs = {**_arcface(target), "seed": 99}
    study.enqueue_trial(theirs)
    train = _answers(0.9)
    objective = CellObjective(RecordingParent(target), TrialIndex(study, target.spec), train=train)
    trial = _take_one(study, objective)
    assert (
        trial.state == PRUNED and "no longer in the sweep's grid" in trial.user_attrs[SURPLUS_ATTR]
    )
    [requeued] = study.get_trials(states=(WAITING,))
    assert requeued.system_attrs["fixed_params"] == theirs
    assert train.calls == []


def test_a_parent_run_that_cannot_be_told_leaves_the_trial_complete(
    target: SweepTarget, study: optuna.Study
) -> None:
    """The trial is trained and logged: a tracking hiccup afterwards must not retrain it."""
    parent = RecordingParent(target, fail=ConnectionError("http://me:hunter2@mlflow down"))
    train = _answers(0.75)
    study.enqueue_trial(_arcface(target))
    objective = CellObjective(parent, TrialIndex(study, target.spec), train=train)
    with pytest.warns(UserWarning, match="could not log the cell's median") as warned:
        trial = _take_one(study, objective)
    assert trial.state == COMPLETE and trial.value == 0.75 and len(train.calls) == 1
    assert "hunter2" not in str(warned[0].message)


def test_the_worker_lock_claims_the_trial_before_anything_else(
    target: SweepTarget, study: optuna.Study, tmp_path: Path
) -> None:
    claimed = []

    def train(config, *args, **kwargs) -> TrialResult:  # what a live worker's trial shows
        [running] = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        claimed.append(running.user_attrs.get(LOCK_ATTR))
        return TrialResult("run", {"test/auc": 0.7}, 1.0)

    study.enqueue_trial(_arcface(target))
    with WorkerLock.held(tmp_path / "locks") as lock:
        objective = CellObjective(
            RecordingParent(target), TrialIndex(study, target.spec), lock, train=train
        )
        trial = _take_one(study, objective)
    assert trial.state == COMPLETE and claimed == [lock.name] == [trial.user_attrs[LOCK_ATTR]]


SEARCHED = {
    "grid": {
        "category": ["screw"],
        "backbone": ["mobilenet_v2"],
        "head": ["none", "arcface"],
        "classes": [3],
        "seed": [0],
    },
    "fixed": {"image_size": 32, "pretrained": "false", "artifacts": "minimal"},
    "search": {"trials_per_cell": 3, "params": {"lr": {"low": 1e-6, "high": 1e-2, "log": True}}},
}


def test_a_searched_cell_is_worth_the_test_auc_of_its_lowest_validation_loss(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """Three proposals, each an MLflow run; the one with the lowest val/loss is selected (its
    run tagged so, the others not) and its test AUC is the cell's, whatever the others'."""
    target = temporary_target(
        SweepSpec.from_dict(SEARCHED, default_name="searched"), synthetic_root, tmp_path
    )
    study, noop, results, lrs = load_study(target), NoOpTrials(), [], {}

    def train(config, *args, **kwargs) -> TrialResult:  # the closer lr is to 1e-4, the better
        lr = config.params()["lr"]
        result = noop(config, *args, **kwargs)
        results.append(dataclasses.replace(result, val_loss=abs(math.log10(lr) + 4)))
        lrs[result.run_id] = lr
        return results[-1]

    [frozen, arcface] = target.spec.runnable_cells()
    parent = RecordingParent(target)
    objective = CellObjective(parent, TrialIndex(study, target.spec), train=train)
    study.enqueue_trial(arcface)
    trial = _take_one(study, objective)

    assert trial.state == COMPLETE and len(results) == 3
    best = min(results, key=lambda r: r.val_loss)
    assert (
        trial.value == best.metrics["test/auc"] and trial.user_attrs["mlflow_run_id"] == best.run_id
    )
    assert trial.user_attrs["tuned"] == {"lr": lrs[best.run_id]}
    assert len(set(lrs.values())) == 3  # three proposals, not one three times
    client = mlflow.MlflowClient(target.tracking_uri)
    selected = {
        r.run_id: client.get_run(r.run_id).data.tags[tracking.SELECTED_TAG] for r in results
    }
    assert selected == {r.run_id: "true" if r is best else "false" for r in results}
    inner = f"{target.study_name}/mobilenet_v2-arcface-class3-0"
    assert all(client.get_run(r.run_id).data.tags["optuna.inner_study"] == inner for r in results)
    assert parent.done == [(arcface, [trial.value])]

    study.enqueue_trial(frozen)  # never searched: one run, selected as it is
    assert _take_one(study, objective).state == COMPLETE and len(results) == 4
    assert client.get_run(results[-1].run_id).data.tags[tracking.SELECTED_TAG] == "true"
    assert "optuna.inner_study" not in client.get_run(results[-1].run_id).data.tags
