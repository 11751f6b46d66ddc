"""``lightning-ad sweep``: run (or resume) a sweep, one category after another."""

from __future__ import annotations

import argparse
import os
import sys
import time

from lightning_ad.cli.options import (
    EXIT_INCOMPLETE,
    Commands,
    data_location_options,
    shared,
    subcommand,
    sweep_file_option,
    sweep_targets,
    tracking_uri_option,
)
from lightning_ad.errors import LightningADError


def add_sweep(commands: Commands) -> None:
    """Add ``sweep`` to ``commands``.

    Args:
        commands: the top-level subparsers.
    """
    sweep = subcommand(
        commands,
        "sweep",
        "run (or resume) a sweep: Optuna over the grid, every trial an MLflow run",
        "  lightning-ad sweep --sweep default --category screw\n"
        "  lightning-ad sweep --sweep sweeps/quick.yaml --workers 2\n"
        "  lightning-ad sweep --sweep article --storage postgresql+psycopg://me@db/optuna \\\n"
        "      --tracking-uri http://mlflow-host:5000\n",
        _sweep,
        parents=[shared(sweep_file_option, data_location_options, tracking_uri_option)],
    )
    sweep.add_argument("--category", help="run only this category of the grid")
    sweep.add_argument("--workers", type=int, default=1, help="local worker processes (default: 1)")
    sweep.add_argument(
        "--storage",
        default=os.environ.get("LIGHTNING_AD_STORAGE") or None,
        help="Optuna storage URL or journal file (default: $LIGHTNING_AD_STORAGE, else "
        "mlruns/optuna.journal); a URL with a password is best given through that variable",
    )
    sweep.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="SECONDS",
        help="RDB storages: a trial silent for 3 beats (its worker died) is failed and its cell "
        "queued again (default: 60)",
    )
    sweep.add_argument("--quiet", action="store_true", help="no live progress view")


def _sweep(args: argparse.Namespace) -> int:
    from lightning_ad.sweep.preflight import preflight

    if args.workers < 1:
        raise LightningADError(f"--workers must be at least 1, got {args.workers}")
    if args.heartbeat < 1:
        raise LightningADError(f"--heartbeat must be at least 1 second, got {args.heartbeat}")
    targets = sweep_targets(args)
    preflight(targets)  # every category, before the first one starts
    # After the preflight: a typo in a URL is told before training's imports (seconds).
    from lightning_ad.sweep.runner import run_sweep

    incomplete, failed = 0, 0
    for target in targets:
        started = time.perf_counter()
        outcome = run_sweep(target, workers=args.workers, show_progress=not args.quiet)
        minutes = (time.perf_counter() - started) / 60
        where = outcome.files[0].parent if outcome.files else "-"
        status = outcome.status
        print(
            f"{target.study_name}: {status.complete} of {status.cells} cells complete in "
            f"{minutes:.1f} min; tables in {where}"
        )
        for cell, error in status.failed.items():
            print(f"  failed: {' '.join(map(str, cell))}: {error}", file=sys.stderr)
        incomplete += status.cells - status.complete
        failed += len(status.failed)
    if incomplete:
        cells = "1 cell is" if incomplete == 1 else f"{incomplete} cells are"
        why = f" ({failed} failed: errors above)" if failed else ""
        print(
            f"lightning-ad: {cells} not complete{why}; fix the cause and run the same "
            "command again: only those cells are run",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0
