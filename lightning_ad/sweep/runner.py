"""Running a sweep: one Optuna study per (sweep, category) over the grid, each trial an MLflow
child run of the sweep's parent run, with as many worker processes as asked for.

- Optuna's ``GridSampler`` walks the grid; the study lives in a storage the caller chooses
  (default: a journal file under ``mlruns/`` that local processes share safely; any Optuna
  storage URL, e.g. PostgreSQL, for many machines).
- Rerunning the same command resumes: finished cells are kept; failed, interrupted or orphaned
  (worker killed) cells are queued again (``recovery``).
- With an RDB storage (PostgreSQL) every running trial sends heartbeats: when a worker or machine
  dies, a live worker fails its trial after ``3 x heartbeat`` seconds and queues the cell again.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from lightning_ad import interrupts, tracking
from lightning_ad.errors import RedactSecrets
from lightning_ad.progress import SweepProgress
from lightning_ad.sweep.objective import CellObjective
from lightning_ad.sweep.parent import SweepParent
from lightning_ad.sweep.recovery import GridStatus, grid_status, next_step, recover
from lightning_ad.sweep.spec import SweepTarget
from lightning_ad.sweep.storage import load_study


@dataclass(frozen=True)
class SweepOutcome:
    """What ``run_sweep`` leaves: the report files and where the grid stands."""

    files: list[Path]
    status: GridStatus


def run_sweep(target: SweepTarget, workers: int = 1, show_progress: bool = True) -> SweepOutcome:
    """Run (or resume) the sweep of one category: the report files, and where the grid stands
    (failed cells are reported, not raised: the others still ran)."""
    quiet_libraries()
    _check_data(target)
    tracking.ensure_reachable(target.tracking_uri)
    study = load_study(target)
    parent = SweepParent.find_or_create(target)
    recover(study, target)
    if not grid_status(study, target.spec).finished:
        parent.reopen()
    try:
        _run_workers(parent, workers, show_progress)
    except KeyboardInterrupt:
        parent.close(grid_status(study, target.spec), interrupted=True)
        raise
    files = parent.refresh(write_reports=True)
    status = grid_status(study, target.spec)
    parent.close(status, interrupted=False)
    return SweepOutcome(files, status)


def _check_data(target: SweepTarget) -> None:
    """The category resolved and read once, before any study, run or worker: a typo or an
    unreadable folder is one clear error now, not a failure in every cell (and the built-in data
    is rendered here, not inside the first trial)."""
    from lightning_ad.data.mvtec import MVTecCategory
    from lightning_ad.data.resolve import resolve_category

    resolved = resolve_category(target.category, target.data_root, target.data_dir)
    MVTecCategory.load(resolved.root)


def work(parent: SweepParent, threads: int | None = None) -> None:
    """One worker: run grid cells until none is left (the body of each ``--workers`` process)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    target = parent.target
    study = load_study(target)
    objective = CellObjective(parent)
    n_cells = len(target.spec.cells())
    while (step := next_step(study, n_cells)) != "done":
        if step == "take":
            # catch: a failing trial (NaN loss, bad data) is recorded as FAIL; the sweep goes on.
            study.optimize(objective, n_trials=1, catch=(Exception,))
        else:  # another machine's trial is running: if that machine died, its cell comes back
            optuna.storages.fail_stale_trials(study)
            time.sleep(min(target.heartbeat, 10))


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


def _worker_process(parent: SweepParent, threads: int) -> None:
    quiet_libraries()
    # The parent reports the interruption; SIGTERM ends a trial here as Ctrl-C does.
    with contextlib.suppress(KeyboardInterrupt), interrupts.sigterm_as_interrupt():
        work(parent, threads)


def _run_workers(parent: SweepParent, workers: int, show_progress: bool) -> None:
    target = parent.target
    threads = max(1, (os.cpu_count() or 1) // workers)
    total = len(target.spec.runnable_cells())
    with SweepProgress(target.study_name, total, lambda: load_study(target), enabled=show_progress):
        if workers == 1:
            work(parent)
            return
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=_worker_process, args=(parent, threads)) for _ in range(workers)
        ]
        for process in processes:
            process.start()
        try:
            for process in processes:
                process.join()
        except KeyboardInterrupt:
            # Ctrl-C reaches the whole terminal's process group; SIGTERM only this process.
            if interrupts.received_sigterm():
                for process in processes:
                    process.terminate()
            for process in processes:
                process.join(timeout=60)
            raise
