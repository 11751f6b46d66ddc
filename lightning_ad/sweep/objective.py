"""The Optuna objective: one queued grid cell -> one ``run_trial`` (or, with a ``search`` block, an
inner study of several) -> the test AUC that Optuna records for the cell."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from lightning_ad import tracking
from lightning_ad.errors import describe, redact
from lightning_ad.grid import GRID_KEYS
from lightning_ad.sweep.liveness import WorkerLock
from lightning_ad.sweep.parent import SweepParent
from lightning_ad.sweep.recovery import (
    CELL_ATTR,
    INTERRUPTED,
    SURPLUS_ATTR,
    TrialIndex,
    cell_key,
    queued_cell,
    worker_id,
)
from lightning_ad.sweep.search import tune_cell
from lightning_ad.sweep.spec import SearchSpec
from lightning_ad.train import TrialResult, run_trial

TrialRunner = Callable[..., TrialResult]
"""What trains one cell: ``train.run_trial``'s signature, ``(config, tracking_uri, experiment,
*, tags, callbacks, progress_bar) -> TrialResult``, its MLflow run left FINISHED or FAILED."""


class CellObjective:
    """``study.optimize(CellObjective(parent, index, lock))``: the queued cell a trial takes,
    trained, tested and logged as a child run of the sweep's parent run.

    Args:
        parent: the sweep's parent run; told of every finished cell.
        index: the worker's view of the study's trials.
        lock: the worker's lock (``liveness``); None on storages whose trials send heartbeats
            instead.
        train: what trains and tests one trial config (``train.run_trial``; a stand-in that
            trains nothing measures or tests the machinery around it).
    """

    def __init__(
        self,
        parent: SweepParent,
        index: TrialIndex,
        lock: WorkerLock | None = None,
        train: TrialRunner = run_trial,
    ) -> None:
        self.parent, self.target, self.index, self.lock = parent, parent.target, index, lock
        self.train = train

    def __call__(self, trial: optuna.Trial) -> float:
        if self.lock is not None:  # first: from now on, this trial is alive while we are
            self.lock.claim(trial)
        trial.set_user_attr("worker", worker_id())
        spec, settings = self.target.spec, self.target.settings
        cell = queued_cell(trial)
        reason = self.index.surplus_reason(trial, cell)
        if reason:
            trial.set_user_attr(SURPLUS_ATTR, reason)
            if cell is not None and cell_key(cell) not in spec.runnable_keys:
                trial.study.enqueue_trial(cell)  # another command's cell: back in its queue
            raise optuna.TrialPruned(reason)
        trial.set_user_attr(CELL_ATTR, cell)
        tags = {
            tracking.PARENT_TAG: self.parent.run_id,
            tracking.ROLE_TAG: tracking.TRIAL_ROLE,
            tracking.SWEEP_TAG: spec.name,
            tracking.STUDY_TAG: self.target.study_name,
            tracking.TRIAL_TAG: str(trial.number),
            tracking.FINGERPRINT_TAG: settings.fingerprint,
            tracking.CELL_TAG: settings.cell_id(cell),
        }
        search = spec.search_for(cell)
        try:
            if search is None:
                result = self._train(cell, {}, [], {**tags, tracking.SELECTED_TAG: "true"})
                run_id, auc = result.run_id, result.metrics["test/auc"]
                trial.set_user_attr("seconds", round(result.seconds, 1))
            else:
                best = self._tune(trial.study, cell, search, tags)
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
            seeds = self.index.seeds_of(cell)
            self.parent.trial_done(cell, [*seeds.values(), auc])
        except Exception as err:  # the next trial, or the sweep's end, logs it again
            warnings.warn(
                f"could not log the cell's median to the sweep's parent run: {redact(str(err))}",
                stacklevel=1,
            )
        return auc

    def _train(self, cell: dict, tuned: dict, callbacks: list, tags: dict[str, str]) -> TrialResult:
        target = self.target
        config = target.spec.trial_config(cell, target.data_root, target.data_dir, tuned)
        return self.train(
            config,
            target.tracking_uri,
            target.experiment,
            tags=tags,
            callbacks=callbacks,
            progress_bar=False,
        )

    def _tune(
        self, study: optuna.Study, cell: dict, search: SearchSpec, tags: dict[str, str]
    ) -> optuna.trial.FrozenTrial:
        """The ``search`` block: an inner study per cell on val/loss; its best run is selected.
        The inner study lives in the sweep's storage object: one engine per process."""
        key = "-".join(str(cell[k]) for k in GRID_KEYS if k != "category")
        client = tracking.client(self.target.tracking_uri)
        unselected = {**tags, tracking.SELECTED_TAG: "false"}
        return tune_cell(
            search,
            f"{self.target.study_name}/{key}",
            study._storage,
            seed=int(cell["seed"]),
            train=lambda tuned, callbacks, extra: self._train(
                cell, tuned, callbacks, {**unselected, **extra}
            ),
            mark_selected=lambda run_id: client.set_tag(run_id, tracking.SELECTED_TAG, "true"),
        )
