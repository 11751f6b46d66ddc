"""Running a sweep: one Optuna study per (sweep, category, settings fingerprint) whose trials
are the grid's cells, each an MLflow child run of the sweep's parent run, with as many worker
processes as asked for.

- ``preflight`` checks the data, weights, tracking URI and storage before anything is written.
- Cells without a finished trial are queued, the next ones whenever the queue runs dry
  (``recovery.plan``); workers take queued cells until none is left and wait for the ones
  running elsewhere. The study lives in a storage the caller chooses (default: a journal file
  under ``mlruns/`` that local processes share safely; any Optuna storage URL, e.g.
  PostgreSQL, for many machines).
- Rerunning the same command resumes: finished cells are kept; failed, interrupted or orphaned
  (worker killed) cells are queued again. A local worker holds a file lock while it lives, so a
  dead one is found for sure (``liveness``); on PostgreSQL every running trial sends heartbeats
  and a live worker fails a silent one after ``3 x heartbeat`` seconds and queues its cell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from lightning_ad import interrupts, tracking
from lightning_ad.errors import LightningADError, RedactSecrets, redact
from lightning_ad.sweep.liveness import WorkerLock
from lightning_ad.sweep.objective import CellObjective, TrialRunner
from lightning_ad.sweep.parent import SweepParent
from lightning_ad.sweep.preflight import preflight
from lightning_ad.sweep.progress import SweepProgress
from lightning_ad.sweep.recovery import GridStatus, TrialIndex, grid_status, plan, trial_count
from lightning_ad.sweep.spec import SweepTarget
from lightning_ad.sweep.storage import worker_locks
from lightning_ad.sweep.study import load_study
from lightning_ad.train import run_trial

WORKER_STOPPED = 3
"""A worker process's exit status after a one-line error (its parent then stops too)."""
LOCAL_POLL_S = 2.0
"""How often a worker with nothing to take looks again, on the local stores."""


@dataclass(frozen=True)
class SweepOutcome:
    """What ``run_sweep`` leaves: the report files and where the grid stands."""

    files: list[Path]
    status: GridStatus


def run_sweep(
    target: SweepTarget,
    workers: int = 1,
    show_progress: bool = True,
    train: TrialRunner = run_trial,
) -> SweepOutcome:
    """Run (or resume) the sweep of one category: the report files, and where the grid stands
    (failed cells are reported, not raised: the others still ran). It starts processes by
    spawning (workers, the description's): a script calling it needs the usual
    ``if __name__ == "__main__":`` guard.

    Args:
        target: the sweep, its category and where it runs and writes.
        workers: worker processes; 1 runs the trials in this process.
        show_progress: show the live view (``progress``) while the workers run.
        train: what trains and tests one trial (``train.run_trial``); with ``workers`` > 1 it
            is pickled into each worker process.

    Returns:
        The report files and where the grid stands.

    Raises:
        LightningADError: the preflight failed, a service stayed unreachable, or workers
            stopped early (finished cells are kept).
        KeyboardInterrupt: Ctrl-C or SIGTERM; the parent run is closed as KILLED first.
    """
    quiet_libraries()
    tracking.use_retries()
    preflight([target])
    tracking.ensure_reachable(target.tracking_uri)
    study = load_study(target)
    parent = SweepParent.find_or_create(target)
    first_trial = trial_count(study)  # failures before it are retried once by this command
    plan(study, target, retry_failed_before=first_trial)
    if not grid_status(study, target.spec).finished:
        parent.reopen()
    try:
        _run_workers(parent, first_trial, workers, show_progress, train)
    except KeyboardInterrupt:
        parent.stop_describing()  # first: it ignores Ctrl-C and would write after the close
        parent.close(grid_status(study, target.spec), interrupted=True)
        raise
    finally:
        parent.stop_describing()
    # The workers may have stopped because the tracking server went away: one line, then.
    tracking.ensure_reachable(target.tracking_uri, tracking.OUTAGE_PATIENCE_S)
    files = parent.refresh(write_reports=True)
    status = grid_status(study, target.spec)
    parent.close(status, interrupted=False)
    return SweepOutcome(files, status)


def work(
    parent: SweepParent,
    first_trial: int,
    threads: int | None = None,
    train: TrialRunner = run_trial,
) -> None:
    """One worker: take queued cells, queue the next ones when none is left, then wait for the
    ones running elsewhere (the body of each ``--workers`` process).

    Args:
        parent: the sweep's parent run.
        first_trial: this command's first trial number: cells that failed in trials numbered
            from it on are not retried.
        threads: torch's CPU threads in this process (None: torch's default).
        train: what trains and tests one trial (``train.run_trial``).

    Raises:
        LightningADError: the tracking server stayed unreachable for
            ``tracking.OUTAGE_PATIENCE_S`` (one line; no cell is lost).
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    target = parent.target
    study = load_study(target)
    locks = worker_locks(target.storage)
    poll = LOCAL_POLL_S if locks is not None else min(target.heartbeat, 10)
    with WorkerLock.held(locks) as lock:
        index = TrialIndex(study, target.spec)
        objective = CellObjective(parent, index, lock, train)
        while True:
            step = index.next_step()
            if step == "take":
                tracking.ensure_reachable(target.tracking_uri, tracking.OUTAGE_PATIENCE_S)
                # catch: a failing trial (NaN loss, bad data) is recorded as FAIL; the sweep
                # goes on.
                study.optimize(objective, n_trials=1, catch=(Exception,))
            elif plan(study, target, retry_failed_before=first_trial):
                continue  # cells wait: queued now (the next ones, a dead worker's) or by another
            elif step == "wait":  # running elsewhere: if that worker dies, its cell is queued
                time.sleep(poll)
            else:
                return


def quiet_libraries() -> None:
    """Inside a sweep the progress view speaks; Lightning's and Optuna's chatter would bury it.
    What Optuna still says (a failed trial and its traceback) is redacted of passwords."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
    warnings.filterwarnings("ignore", module="pytorch_lightning")


def _worker_process(
    parent: SweepParent, first_trial: int, threads: int, train: TrialRunner
) -> None:
    quiet_libraries()
    # The parent reports the interruption; SIGTERM ends a trial here as Ctrl-C does.
    with contextlib.suppress(KeyboardInterrupt), interrupts.sigterm_as_interrupt():
        try:
            work(parent, first_trial, threads, train)
        except LightningADError as err:  # e.g. the tracking server stayed away: one line
            print(f"lightning-ad: worker stopped: {redact(str(err))}", file=sys.stderr)
            sys.exit(WORKER_STOPPED)


def _run_workers(
    parent: SweepParent, first_trial: int, workers: int, show_progress: bool, train: TrialRunner
) -> None:
    target = parent.target
    threads = max(1, (os.cpu_count() or 1) // workers)
    with SweepProgress(
        target.study_name, target.spec, lambda: load_study(target), enabled=show_progress
    ):
        if workers == 1:
            work(parent, first_trial, train=train)
            return
        context = multiprocessing.get_context("spawn")
        # One description for all: this process writes it while its workers run trials.
        worker_parent = dataclasses.replace(parent, describing=False)
        processes = [
            context.Process(
                target=_worker_process, args=(worker_parent, first_trial, threads, train)
            )
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        try:
            for process in processes:
                while process.is_alive():
                    parent.describe_when_due()
                    process.join(LOCAL_POLL_S)
            stopped = sum(process.exitcode == WORKER_STOPPED for process in processes)
            if stopped:
                raise LightningADError(
                    f"{stopped} of {workers} workers stopped early (why: above); finished cells "
                    "are kept, run the same command again"
                )
        except KeyboardInterrupt:
            # Ctrl-C reaches the whole terminal's process group; SIGTERM only this process.
            if interrupts.received_sigterm():
                for process in processes:
                    process.terminate()
            for process in processes:
                process.join(timeout=60)
            raise
