"""Sweeps: an Optuna study per (sweep, category) over the grid, every trial an MLflow child run.

- Optuna's ``GridSampler`` walks the grid; the study lives in a storage the caller chooses
  (default: a journal file under ``mlruns/`` that local processes share safely; any Optuna
  storage URL, e.g. PostgreSQL, for many machines).
- MLflow: one experiment per sweep spec; one parent run per (sweep, category) holding the spec,
  the tables and ``median_auc/<backbone>/<head>/<classes>``, updated as trials finish; one child
  run per trial.
- Rerunning the same command resumes: finished cells are kept; failed, interrupted or orphaned
  (worker killed) cells are queued again.
- With an RDB storage (PostgreSQL) every running trial sends heartbeats: when a worker or machine
  dies, a live worker fails its trial after ``3 x heartbeat`` seconds and queues the cell again.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lightning_ad import report, tracking
from lightning_ad.config import GRID_KEYS, SearchSpec, SweepSpec
from lightning_ad.errors import LightningADError, describe
from lightning_ad.progress import SweepProgress
from lightning_ad.search import tune_cell
from lightning_ad.train import run_trial

DEFAULT_STORAGE = "mlruns/optuna.journal"
SWEEP_ROLE = "sweep"
INTERRUPTED = "interrupted"
"""A trial's user attribute: Ctrl-C stopped it; its cell is queued again, not reported failed."""
FAILED_CELLS_TAG = "lightning_ad.failed_cells"
HOST = socket.gethostname()


@dataclass(frozen=True)
class SweepTarget:
    """Where a sweep runs and writes: everything a worker process needs, picklable."""

    spec: SweepSpec
    category: str
    storage: str | None = None
    tracking_uri: str = field(default_factory=tracking.resolve_tracking_uri)
    data_root: str | None = None
    data_dir: str = "data"
    reports_dir: str = "reports"
    heartbeat: int = 60
    """Seconds between a running trial's heartbeats (RDB storages); silent for 3x -> stale."""

    @property
    def study_name(self) -> str:
        return f"{self.spec.name}-{self.category}"

    @property
    def experiment(self) -> str:
        return f"lightning_ad-{self.spec.name}"


def open_storage(
    url: str | None,
    heartbeat: int = 60,
    on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """``None`` -> the journal file under ./mlruns; a path ending in .journal/.log -> a journal
    file there; anything else -> Optuna's RDB storage (sqlite:///..., postgresql+psycopg://...)
    whose trials beat every ``heartbeat`` seconds; ``on_stale`` is called once per trial found
    silent for three beats (the storage's row lock makes it exactly once across machines)."""
    if url is None or url.endswith((".journal", ".log")):
        path = Path(url or DEFAULT_STORAGE)
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path))
        )
        return optuna.storages.JournalStorage(backend)
    try:
        return _rdb_storage(url, heartbeat, on_stale)
    except Exception as err:  # SQLAlchemy raises many kinds; all mean "cannot use this URL"
        raise LightningADError(
            f"cannot open the Optuna storage {tracking.mask_password(url)}: {err}"
        ) from err


def _rdb_storage(url: str, heartbeat: int, on_stale) -> optuna.storages.RDBStorage:
    """Workers started together on a new database race to create Optuna's tables; the losers
    see "already exists" (IntegrityError / ProgrammingError) and simply try again."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def connect() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat,
                heartbeat_stale_trial_callback=on_stale,
            )

    for attempt in range(4):
        try:
            return connect()
        except (IntegrityError, ProgrammingError):
            time.sleep(1 + attempt)
    return connect()


def load_study(target: SweepTarget) -> optuna.Study:
    grid = {key: list(target.spec.grid[key]) for key in GRID_KEYS}
    return optuna.create_study(
        study_name=target.study_name,
        storage=open_storage(target.storage, target.heartbeat, RequeueStaleTrial(target)),
        sampler=optuna.samplers.GridSampler(grid, seed=0),
        direction="maximize",
        load_if_exists=True,
    )


# ---- recovery: nothing finished is lost, nothing unfinished is left behind -------------------


def _worker_id() -> str:
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
            _fail_orphan_runs(target, trial.number)
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
            params = _cell_params(study, trial)
            key = _cell_key(params)
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


def _cell_key(params: dict | None) -> tuple | None:
    return tuple(params[k] for k in GRID_KEYS) if params else None


def _cell_params(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict | None:
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
        _fail_orphan_runs(self.target, trial.number)
        params = _cell_params(study, trial)
        if params:
            study.enqueue_trial(params)


def _fail_orphan_runs(target: SweepTarget, trial_number: int) -> None:
    """Mark the MLflow run of a trial whose worker died as FAILED instead of leaving it RUNNING."""
    import mlflow

    client = mlflow.MlflowClient(target.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    if experiment is None:
        return
    query = (
        f"tags.`optuna.study` = '{target.study_name}' and tags.`optuna.trial` = '{trial_number}' "
        "and attributes.status = 'RUNNING'"
    )
    for run in client.search_runs([experiment.experiment_id], query):
        client.set_terminated(run.info.run_id, "FAILED")


def _next_step(study: optuna.Study, n_cells: int) -> str:
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


# ---- where the grid stands ------------------------------------------------------------------


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
    runnable = {_cell_key(c) for c in spec.runnable_cells()}
    cells = CellStates.of(study)
    failed = {k: e for k, e in cells.errors.items() if k in runnable}
    return GridStatus(
        len(runnable), len(runnable & cells.finished), len(runnable & cells.pending), failed
    )


@dataclass(frozen=True)
class SweepOutcome:
    """What ``run_sweep`` leaves: the report files and where the grid stands."""

    files: list[Path]
    status: GridStatus


# ---- the parent run --------------------------------------------------------------------------


def parent_run(target: SweepTarget) -> str:
    """The (sweep, category) parent run: found by its tags, created once. Two sweeps started at
    the same moment may both create one; both then keep the older and the loser deletes its own."""
    import mlflow

    experiment_id = tracking.ensure_experiment(target.experiment, target.tracking_uri)
    client = mlflow.MlflowClient(target.tracking_uri)
    found = _parent_runs(client, experiment_id, target)
    if found:
        return found[0].info.run_id
    created = _create_parent_run(client, experiment_id, target)
    oldest = _parent_runs(client, experiment_id, target)[0].info.run_id
    if oldest != created:
        client.delete_run(created)
    return oldest


def _parent_runs(client, experiment_id: str, target: SweepTarget) -> list:
    query = (
        f"tags.`lightning_ad.role` = '{SWEEP_ROLE}' and tags.`optuna.study` = '{target.study_name}'"
    )
    runs = client.search_runs([experiment_id], query)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def _create_parent_run(client, experiment_id: str, target: SweepTarget) -> str:
    run = client.create_run(
        experiment_id,
        run_name=target.study_name,
        tags={
            "lightning_ad.role": SWEEP_ROLE,
            "lightning_ad.sweep": target.spec.name,
            "optuna.study": target.study_name,
            "category": target.category,
        },
    )
    client.log_param(run.info.run_id, "sweep", target.spec.name)
    client.log_param(run.info.run_id, "category", target.category)
    client.log_param(
        run.info.run_id, "optuna_storage", tracking.mask_password(target.storage or DEFAULT_STORAGE)
    )
    client.log_dict(
        run.info.run_id,
        {
            "name": target.spec.name,
            "grid": {k: list(v) for k, v in target.spec.grid.items()},
            "fixed": target.spec.fixed,
        },
        "sweep.yaml",
    )
    return run.info.run_id


def open_parent(target: SweepTarget, parent_id: str) -> None:
    """Mark the parent RUNNING while this command has cells to run (a resumed or extended
    sweep reopens a closed parent)."""
    import mlflow

    client = mlflow.MlflowClient(target.tracking_uri)
    if client.get_run(parent_id).info.status != "RUNNING":
        client.update_run(parent_id, status="RUNNING")


def close_parent(
    target: SweepTarget, parent_id: str, status: GridStatus, interrupted: bool
) -> None:
    """End the parent once nothing is left to run: FINISHED, or FAILED with the number of failed
    cells as a tag; KILLED when interrupted with no other worker running. While another worker's
    trial runs the parent stays RUNNING: the last worker to see the grid finished closes it."""
    import mlflow

    client = mlflow.MlflowClient(target.tracking_uri)
    client.set_tag(parent_id, FAILED_CELLS_TAG, str(len(status.failed)))
    if interrupted:
        if not status.running:
            client.set_terminated(parent_id, "KILLED")
    elif status.finished:
        client.set_terminated(parent_id, "FAILED" if status.failed else "FINISHED")


def refresh_parent(target: SweepTarget, parent_id: str, write_reports: bool = False) -> list[Path]:
    """Log the current median of every cell to the parent run (and the tables, at the end)."""
    import mlflow

    client = mlflow.MlflowClient(target.tracking_uri)
    trials = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec.name, target.category
    )
    now = int(time.time() * 1000)
    metrics = [
        mlflow.entities.Metric(k, v, now, len(trials))
        for k, v in report.median_metrics(trials).items()
    ]
    if metrics:
        client.log_batch(parent_id, metrics=metrics)
    client.set_tag(parent_id, tracking.NOTE_TAG, report.parent_description(trials, target.spec))
    if not write_reports:
        return []
    out_dir = Path(target.reports_dir) / target.spec.name / target.category
    files = report.write_report(trials, target.spec, out_dir)
    for path in files:
        client.log_artifact(parent_id, str(path), artifact_path="report")
    return files


# ---- the objective and the worker loop -------------------------------------------------------


class CellObjective:
    """One grid cell -> one ``run_trial`` -> its test AUC (the value Optuna records)."""

    def __init__(self, target: SweepTarget, parent_id: str) -> None:
        self.target, self.parent_id = target, parent_id

    def __call__(self, trial: optuna.Trial) -> float:
        cell = {
            key: trial.suggest_categorical(key, list(self.target.spec.grid[key]))
            for key in GRID_KEYS
        }
        trial.set_user_attr("worker", _worker_id())
        reason = self.target.spec.skip_reason(cell)
        if reason:
            trial.set_user_attr("skipped", reason)
            raise optuna.TrialPruned(reason)
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "lightning_ad.role": report.TRIAL_ROLE,
            "lightning_ad.sweep": self.target.spec.name,
            "optuna.study": self.target.study_name,
            "optuna.trial": str(trial.number),
        }
        search = self.target.spec.search_for(cell)
        try:
            if search is None:
                result = self._train(cell, {}, [], {**tags, report.SELECTED_TAG: "true"})
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
            refresh_parent(self.target, self.parent_id)
        except Exception as err:  # the next trial, or the sweep's end, refreshes it again
            warnings.warn(f"could not refresh the sweep's parent run: {err}", stacklevel=1)
        return auc

    def _train(self, cell: dict, tuned: dict, callbacks: list, tags: dict[str, str]):
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
        import mlflow

        key = "-".join(str(cell[k]) for k in GRID_KEYS if k != "category")
        client = mlflow.MlflowClient(self.target.tracking_uri)
        unselected = {**tags, report.SELECTED_TAG: "false"}
        return tune_cell(
            search,
            f"{self.target.study_name}/{key}",
            open_storage(self.target.storage),
            seed=int(cell["seed"]),
            train=lambda tuned, callbacks, extra: self._train(
                cell, tuned, callbacks, {**unselected, **extra}
            ),
            mark_selected=lambda run_id: client.set_tag(run_id, report.SELECTED_TAG, "true"),
        )


def work(target: SweepTarget, parent_id: str, threads: int | None = None) -> None:
    """One worker: run grid cells until none is left (the body of each ``--workers`` process)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    study = load_study(target)
    objective = CellObjective(target, parent_id)
    n_cells = len(target.spec.cells())
    while (step := _next_step(study, n_cells)) != "done":
        if step == "take":
            # catch: a failing trial (NaN loss, bad data) is recorded as FAIL; the sweep goes on.
            study.optimize(objective, n_trials=1, catch=(Exception,))
        else:  # another machine's trial is running: if that machine died, its cell comes back
            optuna.storages.fail_stale_trials(study)
            time.sleep(min(target.heartbeat, 10))


def quiet_libraries() -> None:
    """Inside a sweep the progress view speaks; Lightning's and Optuna's chatter would bury it."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")


def _worker_process(target: SweepTarget, parent_id: str, threads: int) -> None:
    quiet_libraries()
    with contextlib.suppress(KeyboardInterrupt):  # the parent reports the interruption
        work(target, parent_id, threads)


def run_sweep(target: SweepTarget, workers: int = 1, show_progress: bool = True) -> SweepOutcome:
    """Run (or resume) the sweep of one category: the report files, and where the grid stands
    (failed cells are reported, not raised: the others still ran)."""
    quiet_libraries()
    tracking.ensure_reachable(target.tracking_uri)
    study = load_study(target)
    parent_id = parent_run(target)
    recover(study, target)
    if not grid_status(study, target.spec).finished:
        open_parent(target, parent_id)
    try:
        _run_workers(target, parent_id, workers, show_progress)
    except KeyboardInterrupt:
        close_parent(target, parent_id, grid_status(study, target.spec), interrupted=True)
        raise
    files = refresh_parent(target, parent_id, write_reports=True)
    status = grid_status(study, target.spec)
    close_parent(target, parent_id, status, interrupted=False)
    return SweepOutcome(files, status)


def _run_workers(target: SweepTarget, parent_id: str, workers: int, show_progress: bool) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    total = len(target.spec.runnable_cells())
    with SweepProgress(target.study_name, total, lambda: load_study(target), enabled=show_progress):
        if workers == 1:
            work(target, parent_id)
            return
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=_worker_process, args=(target, parent_id, threads))
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        try:
            for process in processes:
                process.join()
        except KeyboardInterrupt:
            for process in processes:
                process.join(timeout=60)
            raise
