"""Tuning inside a grid cell: an inner Optuna study on ``val/loss``, with pruning.

A sweep file's ``search`` block names settings to tune (see ``sweep.spec.SearchSpec``).
Each grid cell then gets its own study, ``<sweep>-<category>/<cell>``, in the sweep's storage:
TPE proposes settings, each proposal is one trial (one MLflow run), a median pruner stops poor
ones after an epoch, and the cell's result is the test AUC of the trial with the lowest
validation loss. Test AUROC never steers anything here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytorch_lightning as pl

from lightning_ad.config import SETTINGS
from lightning_ad.errors import LightningADError, describe
from lightning_ad.sweep.spec import SearchSpec
from lightning_ad.train import TrialResult


class OptunaPruning(pl.Callback):
    """Report ``monitor`` to an Optuna trial after each validation; stop training when Optuna
    says prune. Written for ``pytorch_lightning`` (optuna-integration's callback imports the
    ``lightning`` namespace, which this project does not mix in)."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val/loss") -> None:
        self.trial, self.monitor = trial, monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            # Stop, rather than raise through Lightning: the run ends cleanly and is tagged.
            self.pruned_at = epoch
            trainer.should_stop = True


def suggest(trial: optuna.Trial, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw each tuned setting from its range or choices, typed like the TrialConfig field."""
    values = {}
    for name, dist in params.items():
        default = SETTINGS[name].default
        if "choices" in dist:
            values[name] = trial.suggest_categorical(name, dist["choices"])
        elif isinstance(default, int) and not isinstance(default, bool):
            values[name] = trial.suggest_int(
                name,
                dist["low"],
                dist["high"],
                step=dist.get("step", 1),
                log=dist.get("log", False),
            )
        else:
            values[name] = trial.suggest_float(
                name, dist["low"], dist["high"], step=dist.get("step"), log=dist.get("log", False)
            )
    return values


def tune_cell(
    search: SearchSpec,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    seed: int,
    train: Callable[[dict[str, Any], list[pl.Callback], dict[str, str]], TrialResult],
    mark_selected: Callable[[str], None],
) -> optuna.trial.FrozenTrial:
    """Run what is left of the cell's budget and return its best trial (lowest ``val/loss``).

    Args:
        search: the settings to tune and the budget of proposals per cell.
        study_name: the cell's inner study; an existing one is resumed (its finished proposals
            count against the budget, failed ones do not).
        storage: the sweep's storage object, which the inner study shares.
        seed: the sampler's seed (the cell's), so that a rerun proposes the same settings.
        train: ``train(tuned, callbacks, tags)`` trains one proposal with ``tuned`` settings,
            ``callbacks`` added to Lightning's and ``tags`` to its MLflow run.
        mark_selected: ``mark_selected(run_id)`` tags the winner's MLflow run so that tables
            use it alone.

    Returns:
        The inner study's best trial; its ``mlflow_run_id`` and ``test_auc`` user attributes
        name its run and the cell's result.

    Raises:
        LightningADError: no proposal finished with a val/loss, naming the first one's error.
    """
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        direction="minimize",
        load_if_exists=True,
    )

    def objective(trial: optuna.Trial) -> float:
        pruning = OptunaPruning(trial)
        tags = {"optuna.inner_study": study_name, "optuna.inner_trial": str(trial.number)}
        try:
            result = train(suggest(trial, search.params), [pruning], tags)
        except Exception as err:  # kept: the cell's error names it if no proposal succeeds
            trial.set_user_attr("error", describe(err))
            raise
        trial.set_user_attr("mlflow_run_id", result.run_id)
        trial.set_user_attr("test_auc", result.metrics["test/auc"])
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        if result.val_loss is None:
            unusable = RuntimeError("no val/loss was recorded; the cell cannot be tuned")
            trial.set_user_attr("error", describe(unusable))
            raise unusable
        return result.val_loss

    done = sum(
        t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in study.trials
    )
    if done < search.trials_per_cell:
        study.optimize(objective, n_trials=search.trials_per_cell - done, catch=(Exception,))
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise LightningADError(_no_usable_proposal(study_name, study.trials))
    best = study.best_trial
    mark_selected(best.user_attrs["mlflow_run_id"])
    return best


def _no_usable_proposal(study_name: str, trials: list[optuna.trial.FrozenTrial]) -> str:
    """Why a cell's inner study has nothing to choose from, naming the first proposal's error."""
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    first = str(failed[0].user_attrs.get("error", "")).strip() if failed else ""
    reason = f"; the first failed with {first.splitlines()[0]}" if first else ""
    return (
        f"inner study {study_name}: none of its {len(trials)} proposals finished with a val/loss "
        f"({len(failed)} failed, {len(pruned)} pruned){reason}"
    )
