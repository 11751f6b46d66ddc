"""The search inside a grid cell: proposals drawn as the settings' types ask, the cell's result
the proposal of lowest val/loss (never its test AUC), a budget that a rerun finishes instead of
restarting, poor proposals pruned, and one clear error when no proposal finishes. The trial
runner is a stand-in: it trains nothing and answers as the test says."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import optuna
import pytest
import torch

from lightning_ad.errors import LightningADError
from lightning_ad.sweep.search import OptunaPruning, suggest, tune_cell
from lightning_ad.sweep.spec import SearchSpec
from lightning_ad.train import TrialResult

NAME = "quick-screw-abc/mobilenet_v2-arcface-class3-0"
LR = {"lr": {"low": 1e-5, "high": 1e-2, "log": True}}


class Proposals:
    """``tune_cell``'s ``train``: the n-th proposal answers ``answer(n, tuned, callbacks)``, a
    (val_loss, test AUC) pair or an exception; every call is recorded."""

    def __init__(self, answer: Callable[[int, dict, list], tuple | BaseException]) -> None:
        self.answer, self.calls = answer, []

    def __call__(self, tuned: dict, callbacks: list, tags: dict) -> TrialResult:
        n = len(self.calls)
        self.calls.append((tuned, callbacks, tags))
        answer = self.answer(n, tuned, callbacks)
        if isinstance(answer, BaseException):
            raise answer
        val_loss, auc = answer
        return TrialResult(f"run-{n}", {"test/auc": auc}, 1.0, val_loss)


def _tune(train: Proposals, storage=None, budget: int = 3, selected: list | None = None):
    storage = storage if storage is not None else optuna.storages.InMemoryStorage()
    return tune_cell(
        SearchSpec(budget, LR),
        NAME,
        storage,
        seed=0,
        train=train,
        mark_selected=(selected if selected is not None else []).append,
    )


def _trainer(epoch: int, metrics: dict, sanity_checking: bool = False) -> SimpleNamespace:
    """What OptunaPruning reads of Lightning's Trainer after a validation."""
    metrics = {k: torch.tensor(v) for k, v in metrics.items()}
    return SimpleNamespace(
        sanity_checking=sanity_checking,
        callback_metrics=metrics,
        current_epoch=epoch,
        should_stop=False,
    )


def test_proposals_are_drawn_as_each_settings_type_asks() -> None:
    params = {
        "lr": {"low": 1e-5, "high": 1e-2, "log": True},
        "epochs": {"low": 2, "high": 8, "step": 2},
        "backbone_lr": {"low": 0.0, "high": 1e-3},  # its default is None: a float range
        "amsgrad": {"choices": [True, False]},
        "score": {"choices": ["knn", "mahalanobis"]},
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(20):
        trial = study.ask()
        drawn.append(suggest(trial, params))
        study.tell(trial, 0.0)
    for values in drawn:
        assert type(values["lr"]) is float and 1e-5 <= values["lr"] <= 1e-2
        assert type(values["epochs"]) is int and values["epochs"] in (2, 4, 6, 8)
        assert type(values["backbone_lr"]) is float and 0.0 <= values["backbone_lr"] <= 1e-3
        assert values["amsgrad"] in (True, False) and values["score"] in ("knn", "mahalanobis")
    assert len({v["epochs"] for v in drawn}) > 1 and len({v["lr"] for v in drawn}) == 20
    distributions = study.trials[0].distributions
    assert distributions["lr"].log and not distributions["backbone_lr"].log
    assert distributions["epochs"].step == 2


def test_the_cell_is_worth_its_lowest_validation_loss_not_its_best_test_auc() -> None:
    losses = [(0.9, 0.99), (0.2, 0.60), (0.5, 0.95)]  # the best loss has the worst test AUC
    train, selected = Proposals(lambda n, tuned, callbacks: losses[n]), []
    best = _tune(train, selected=selected)
    assert best.value == 0.2 and best.user_attrs["test_auc"] == 0.60
    assert best.user_attrs["mlflow_run_id"] == "run-1" and selected == ["run-1"]
    assert len(train.calls) == 3
    for n, (tuned, callbacks, tags) in enumerate(train.calls):
        assert set(tuned) == {"lr"} and 1e-5 <= tuned["lr"] <= 1e-2
        assert [type(c) for c in callbacks] == [OptunaPruning]
        assert tags == {"optuna.inner_study": NAME, "optuna.inner_trial": str(n)}
    assert best.params == train.calls[1][0]


def test_a_rerun_spends_only_what_is_left_of_the_budget() -> None:
    """Finished proposals count, failed ones do not: the cell's search resumes where an
    interrupted command left it, and a spent budget trains nothing more."""
    storage = optuna.storages.InMemoryStorage()
    failing_second = Proposals(
        lambda n, tuned, callbacks: RuntimeError("flaky") if n == 1 else (0.5 - n / 10, 0.7)
    )
    first = _tune(failing_second, storage)
    assert len(failing_second.calls) == 3 and first.user_attrs["mlflow_run_id"] == "run-2"
    again = Proposals(lambda n, tuned, callbacks: (0.1, 0.8))
    assert _tune(again, storage).value == 0.1 and len(again.calls) == 1  # the failed one's place
    spent, selected = Proposals(lambda n, tuned, callbacks: (0.0, 0.9)), []
    assert _tune(spent, storage, selected=selected).value == 0.1
    assert spent.calls == [] and selected == ["run-0"]  # the rerun's own run, chosen again


def test_a_poor_proposal_is_pruned_once_two_have_finished() -> None:
    """Each proposal validates after every epoch; a third far worse than the first two is
    stopped after its second validation (the pruner's warm-up is one epoch)."""
    curves = [[1.0, 0.5, 0.3], [0.9, 0.6, 0.4], [5.0, 5.0, 5.0]]
    epochs_run = []

    def fit(n: int, tuned: dict, callbacks: list) -> tuple:
        [pruning] = callbacks
        for epoch, loss in enumerate(curves[n]):
            trainer = _trainer(epoch, {"val/loss": loss})
            pruning.on_validation_end(trainer, None)
            if trainer.should_stop:
                break
        epochs_run.append(epoch + 1)
        return min(curves[n][: epoch + 1]), 0.9

    storage, selected = optuna.storages.InMemoryStorage(), []
    best = _tune(Proposals(fit), storage, selected=selected)
    assert epochs_run == [3, 3, 2]
    inner = optuna.load_study(study_name=NAME, storage=storage)
    states = [t.state for t in inner.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    assert inner.trials[2].user_attrs["mlflow_run_id"] == "run-2"  # its run is kept, not chosen
    assert inner.trials[0].intermediate_values == pytest.approx({0: 1.0, 1: 0.5, 2: 0.3})
    assert best.number == 0 and selected == ["run-0"]


def test_pruning_reports_only_real_validations_of_its_metric() -> None:
    study = optuna.create_study()
    trial = study.ask()
    pruning = OptunaPruning(trial)
    sanity = _trainer(0, {"val/loss": 9.0}, sanity_checking=True)
    pruning.on_validation_end(sanity, None)  # Lightning's sanity check before training
    pruning.on_validation_end(_trainer(0, {"val/acc": 0.5}), None)  # no val/loss logged
    pruning.on_validation_end(_trainer(1, {"val/loss": 0.25}), None)
    study.tell(trial, 0.25)
    assert study.trials[0].intermediate_values == {1: 0.25}
    assert pruning.pruned_at is None and not sanity.should_stop


def test_a_cell_none_of_whose_proposals_finishes_is_one_error_naming_the_first() -> None:
    errors = [RuntimeError("loss is nan at epoch 0\nTraceback ..."), ValueError("x"), OSError()]
    train, selected = Proposals(lambda n, tuned, callbacks: errors[n]), []
    with pytest.raises(LightningADError) as raised:
        _tune(train, selected=selected)
    assert str(raised.value) == (
        f"inner study {NAME}: none of its 3 proposals finished with a val/loss (3 failed, "
        "0 pruned); the first failed with RuntimeError: loss is nan at epoch 0"
    )
    assert selected == []


def test_a_proposal_without_a_validation_loss_cannot_win() -> None:
    """A run that logged no val/loss (a head that does not validate) is a failed proposal."""
    train = Proposals(lambda n, tuned, callbacks: (None, 0.99) if n == 0 else (0.4, 0.7))
    best = _tune(train, budget=2)
    assert best.user_attrs["mlflow_run_id"] == "run-1"
    with pytest.raises(LightningADError, match="the first failed with RuntimeError: no val/loss"):
        _tune(Proposals(lambda n, tuned, callbacks: (None, 0.99)), budget=1)
