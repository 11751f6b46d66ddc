"""The Optuna objective: one grid cell -> one ``run_trial`` (or, with a ``search`` block, an
inner study of several) -> the test AUC that Optuna records for the cell."""

from __future__ import annotations

import warnings

import optuna

from lightning_ad import tracking
from lightning_ad.config import GRID_KEYS
from lightning_ad.errors import describe
from lightning_ad.sweep.parent import SweepParent
from lightning_ad.sweep.recovery import INTERRUPTED, worker_id
from lightning_ad.sweep.search import tune_cell
from lightning_ad.sweep.spec import SearchSpec
from lightning_ad.sweep.storage import open_storage
from lightning_ad.train import TrialResult, run_trial


class CellObjective:
    """``study.optimize(CellObjective(parent))``: the cell Optuna's GridSampler picks, trained,
    tested and logged as a child run of the sweep's parent run."""

    def __init__(self, parent: SweepParent) -> None:
        self.parent, self.target = parent, parent.target

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.target.spec
        cell = {key: trial.suggest_categorical(key, list(spec.grid[key])) for key in GRID_KEYS}
        trial.set_user_attr("worker", worker_id())
        reason = spec.skip_reason(cell)
        if reason:
            trial.set_user_attr("skipped", reason)
            raise optuna.TrialPruned(reason)
        tags = {
            tracking.PARENT_TAG: self.parent.run_id,
            tracking.ROLE_TAG: tracking.TRIAL_ROLE,
            tracking.SWEEP_TAG: spec.name,
            tracking.STUDY_TAG: self.target.study_name,
            tracking.TRIAL_TAG: str(trial.number),
        }
        search = spec.search_for(cell)
        try:
            if search is None:
                result = self._train(cell, {}, [], {**tags, tracking.SELECTED_TAG: "true"})
                run_id, auc = result.run_id, result.metrics["test/auc"]
                trial.set_user_attr("seconds", round(result.seconds, 1))
            else:
                best = self._tune(cell, search, tags)
                run_id, auc = best.user_attrs["mlflow_run_id"], best.user_attrs["test_auc"]
                trial.set_user_attr("tuned", best.params)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED, True)
            raise
        except Exception as err:
            trial.set_user_attr("error", describe(err))
            raise
        trial.set_user_attr("mlflow_run_id", run_id)
        try:  # the trial is done and logged; a tracking hiccup here must not retrain it
            self.parent.trial_done(cell)
        except Exception as err:  # the next trial, or the sweep's end, refreshes it again
            warnings.warn(f"could not refresh the sweep's parent run: {err}", stacklevel=1)
        return auc

    def _train(self, cell: dict, tuned: dict, callbacks: list, tags: dict[str, str]) -> TrialResult:
        target = self.target
        config = target.spec.trial_config(cell, target.data_root, target.data_dir, tuned)
        return run_trial(
            config,
            target.tracking_uri,
            target.experiment,
            tags=tags,
            callbacks=callbacks,
            progress_bar=False,
        )

    def _tune(
        self, cell: dict, search: SearchSpec, tags: dict[str, str]
    ) -> optuna.trial.FrozenTrial:
        """The ``search`` block: an inner study per cell on val/loss; its best run is selected."""
        key = "-".join(str(cell[k]) for k in GRID_KEYS if k != "category")
        client = tracking.client(self.target.tracking_uri)
        unselected = {**tags, tracking.SELECTED_TAG: "false"}
        return tune_cell(
            search,
            f"{self.target.study_name}/{key}",
            open_storage(self.target.storage),
            seed=int(cell["seed"]),
            train=lambda tuned, callbacks, extra: self._train(
                cell, tuned, callbacks, {**unselected, **extra}
            ),
            mark_selected=lambda run_id: client.set_tag(run_id, tracking.SELECTED_TAG, "true"),
        )
