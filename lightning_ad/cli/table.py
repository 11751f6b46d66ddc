"""``lightning-ad table``: a sweep's comparison tables, printed or written, from MLflow."""

from __future__ import annotations

import argparse
import types
from pathlib import Path

from lightning_ad.cli.options import (
    Commands,
    data_location_options,
    shared,
    subcommand,
    sweep_file_option,
    sweep_targets,
    to_stderr,
    tracking_uri_option,
)
from lightning_ad.errors import LightningADError

TABLE_FORMATS = ("md", "html", "latex", "csv", "parquet")
"""``report.FORMATS``, spelled out here so that ``--help`` need not import pandas (a test keeps
the two the same)."""
TABLE_NAMES = ("median", "pixel", "aupro", "shift", "delta", "defects", "frozen")
"""``report.TABLES``, likewise."""


def add_table(commands: Commands) -> None:
    """Add ``table`` to ``commands``.

    Args:
        commands: the top-level subparsers.
    """
    table = subcommand(
        commands,
        "table",
        "print and write the comparison tables of a sweep, from MLflow",
        "  lightning-ad table --sweep default --category screw\n"
        "  lightning-ad table --sweep default --category screw --format csv --out medians.csv\n"
        "  lightning-ad table --sweep article --category screw --format latex --out tables/\n",
        _table,
        parents=[shared(sweep_file_option, data_location_options, tracking_uri_option)],
    )
    table.add_argument("--category", help="only this category")
    table.add_argument(
        "--fingerprint",
        help="the runs of an earlier settings fingerprint of the sweep (default: the one its "
        "file and data have now; the table lists the others)",
    )
    table.add_argument(
        "--format",
        default="md",
        choices=TABLE_FORMATS,
        help="md, html, latex: the display tables; csv, parquet: tidy data, one row per cell "
        "(default: md)",
    )
    table.add_argument(
        "--table",
        action="append",
        choices=TABLE_NAMES,
        help="only this table (repeatable): median AUC, pixel AUROC or AUPRO per cell, median "
        "AUC on a shifted test split, class3 - class2 (per scorer, or per defect type), or "
        "each trained cell - the frozen baseline (default: all; one table, median, for --out "
        "FILE and for csv on stdout)",
    )
    table.add_argument(
        "--score",
        metavar="SCORER",
        help="read the runs as scored by SCORER (lof, knn, prob, fused, patch, twinseg, "
        "patch-twinseg: any the runs logged), e.g. knn for the article's measure on the "
        "pooled embedding (default: each run's own, the sweep's score); "
        "reports/.../by_scorer/ holds the other scorers' tables",
    )
    table.add_argument(
        "--out",
        help="a FILE (one table) or a FOLDER (a file per table) instead of printing; "
        "reports/<sweep>/<category>/<fingerprint>/ always gets every table in every format",
    )


def _table(args: argparse.Namespace) -> None:
    from lightning_ad import report
    from lightning_ad.sweep.history import choose_fingerprint

    targets = sweep_targets(args)
    out = Path(args.out) if args.out else None
    # A folder: one that exists, a name ending in "/", or a new name without a suffix.
    to_folder = out is not None and (
        out.is_dir() or args.out.endswith("/") or not (out.suffix or out.exists())
    )
    _check_table_destination(args, out, to_folder, len(targets))
    if args.fingerprint and len(targets) > 1:
        raise LightningADError(
            "--fingerprint belongs to one category, but the sweep has "
            f"{len(targets)}; pass --category NAME too"
        )
    read = []
    for target in targets:
        fingerprint, current = choose_fingerprint(target, args.fingerprint, say=to_stderr)
        trials = report.fetch_trials(
            target.tracking_uri, target.experiment, target.spec, fingerprint
        )
        # Every category's runs read as --score says before anything is written or printed.
        shown = report.scored_by(trials, args.score) if args.score and len(trials) else trials
        read.append((target, current, trials, shown))
    for target, current, trials, shown in read:
        if current:  # reports/<sweep>/<category>/latest: the tables of today's settings
            report.write_report(trials, target.spec, target.settings, target.reports)
        trials = shown
        if out is None:
            _print_tables(report, trials, target.spec, args)
            continue
        folder = (out / target.category if len(targets) > 1 else out) if to_folder else None
        names = args.table or (
            report.tables_for(trials, report.tables_in(args.format)) if to_folder else ("median",)
        )
        for name in names:
            path = out
            if folder is not None:
                path = folder / f"{report.FILE_NAMES[name]}{report.suffix(args.format)}"
            path.parent.mkdir(parents=True, exist_ok=True)
            report.write_table(trials, target.spec, name, args.format, path)
            print(f"wrote {path}")


def _check_table_destination(
    args: argparse.Namespace, out: Path | None, to_folder: bool, n_categories: int
) -> None:
    """A file, or csv on stdout, holds one table of one category: never several CSVs in one."""
    if out is None and args.format == "parquet":
        raise LightningADError("parquet is binary: pass --out FILE (or --out FOLDER)")
    one_table = not to_folder and (out is not None or args.format == "csv")
    where = f"--out {out}" if out is not None else "csv on stdout"
    if one_table and args.table and len(args.table) > 1:
        raise LightningADError(
            f"{where} holds one table, got --table {' '.join(args.table)}; "
            "pass one --table, or --out FOLDER for a file per table"
        )
    if one_table and n_categories > 1:
        raise LightningADError(
            f"{where} holds one category's table, but the sweep has {n_categories} "
            "categories; pass --category NAME, or --out FOLDER"
        )


def _print_tables(report: types.ModuleType, trials, spec, args: argparse.Namespace) -> None:
    """Display formats print every table under its title; csv prints one tidy table, so that
    the output is one CSV a program can read."""
    if args.format == "csv":
        [name] = args.table or ("median",)
        print(report.tidy_table(trials, spec, name).to_csv(index=False), end="")
    else:
        print(report.summary_text(trials, spec, args.format, args.table or report.TABLES))
