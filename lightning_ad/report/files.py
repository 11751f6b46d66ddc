"""A report on disk: every table in every format (and each other scorer's in ``by_scorer/``),
the two plots and ``settings.json`` in ``reports/<sweep>/<category>/<fingerprint>/``, each file
written whole or not at all, and ``latest`` pointing at the folder written last."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import pandas as pd

from lightning_ad import plots
from lightning_ad.grid import NO_HEAD
from lightning_ad.report.formats import DATA_FORMATS, DISPLAY_FORMATS, FORMATS, render
from lightning_ad.report.tables import TABLES, display_table, tables_for, tidy_table
from lightning_ad.report.trials import (
    MAIN_METRIC,
    MAP_METRICS,
    Sweep,
    own_map_tables,
    scored_by,
    scorers_logged,
)
from lightning_ad.report.verdicts import Verdicts

FILE_NAMES = {
    "median": "median_auc",
    "pixel": "median_pixel_auc",
    "aupro": "median_aupro",
    "shift": "median_auc_shifted",
    "delta": "class3_vs_class2",
    "defects": "class3_vs_class2_by_defect",
    "frozen": "trained_vs_frozen",
}
SCORER_FOLDER = "by_scorer"
"""``<fingerprint>/by_scorer/<scorer>/``: the tables as another scorer reads the same runs
(:func:`~lightning_ad.report.trials.scored_by`); the folder's own are the runs' own scorer's."""
SCORER_TABLES = ("median", "defects")
"""What changes with the scorer: the class3 - class2 and trained - frozen tables already have
a row per scorer; the pixel AUROC and AUPRO tables change only for a scorer with maps of its
own (``patch``, ``twinseg``, ``patch-twinseg``)."""
SETTINGS_FILE = "settings.json"
LATEST = "latest"
"""``reports/<sweep>/<category>/latest``: a link to the fingerprint folder written last."""


class Settings(Protocol):
    """What a report writes of a sweep's settings (``sweep.fingerprint.Settings`` is one)."""

    def to_json(self) -> str: ...


def write_table(
    trials: pd.DataFrame,
    spec: Sweep,
    name: str,
    fmt: str,
    path: Path,
    verdicts: Verdicts | None = None,
) -> Path:
    """One table in one format: tidy data for csv and parquet, the display table otherwise,
    written whole or not at all (``replace_whole``). ``verdicts``: those of ``trials``, when
    the caller has them."""
    if fmt in DATA_FORMATS:
        table = tidy_table(trials, spec, name, verdicts)
        if fmt == "csv":
            return replace_whole(path, lambda staging: table.to_csv(staging, index=False))
        return replace_whole(path, lambda staging: table.to_parquet(staging, index=False))
    table, bold = display_table(trials, spec, name, fmt, verdicts)
    text = render(table, fmt, bold_best=bold)
    return replace_whole(path, lambda staging: staging.write_text(text))


def replace_whole(path: Path, write: Callable[[Path], object]) -> Path:
    """``write`` a file beside ``path`` and rename it to ``path``: a reader, or a crash in the
    middle, sees the old file or the new one, never half a table. The staging name keeps the
    suffix, which pandas and matplotlib read the format from."""
    staging = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def tables_in(fmt: str) -> tuple[str, ...]:
    """The tables a folder of ``fmt`` files holds: all of them for people; for programs, the
    tidy median table already holds every cell's median pixel AUROC and AUPRO."""
    tidy = ("shift", *MAP_METRICS)  # columns of the tidy median table
    return TABLES if fmt in DISPLAY_FORMATS else tuple(t for t in TABLES if t not in tidy)


def suffix(fmt: str) -> str:
    return ".tex" if fmt == "latex" else f".{fmt}"


def write_report(
    trials: pd.DataFrame,
    spec: Sweep,
    settings: Settings,
    out_dir: Path,
    verdicts: Verdicts | None = None,
) -> list[Path]:
    """Every table in every format, the two plots and ``settings.json`` (the settings whose
    fingerprint names the folder) into ``out_dir``, the tables of each other scorer the runs
    logged into ``out_dir/by_scorer/<scorer>/``, then points ``latest`` beside it there.

    Args:
        trials: the runs of one fingerprint (``fetch_trials``).
        spec: their sweep.
        settings: their settings.
        out_dir: ``reports/<sweep>/<category>/<fingerprint>`` (``SweepTarget.reports``).
        verdicts: those of ``trials``, when the caller has them.

    Returns:
        The files written.
    """
    verdicts = verdicts or Verdicts(trials)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _write_tables(trials, spec, tables_for(trials), out_dir, verdicts)
    for scorer in _other_scorers(trials):
        folder = out_dir / SCORER_FOLDER / scorer
        tables = tables_for(trials, (*SCORER_TABLES, *own_map_tables(trials, scorer), "shift"))
        written += _write_tables(scored_by(trials, scorer), spec, tables, folder)
    drawn = plots.sweep_plots(trials, MAIN_METRIC, verdicts.pairs)
    written += [replace_whole(out_dir / name, draw) for name, draw in drawn.items()]
    text = settings.to_json()
    written.append(replace_whole(out_dir / SETTINGS_FILE, lambda path: path.write_text(text)))
    _point_latest(out_dir)
    return written


def _write_tables(
    trials: pd.DataFrame,
    spec: Sweep,
    names: Iterable[str],
    folder: Path,
    verdicts: Verdicts | None = None,
) -> list[Path]:
    """The tables ``names`` in every format they come in, into ``folder`` (made if missing)."""
    verdicts = verdicts or Verdicts(trials)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_table(trials, spec, name, fmt, folder / f"{FILE_NAMES[name]}{suffix(fmt)}", verdicts)
        for fmt in FORMATS
        for name in names
        if name in tables_in(fmt)
    ]


def _other_scorers(trials: pd.DataFrame) -> list[str]:
    """The scorers the runs logged, but the one every trained run reports as its own (if they
    agree; the frozen baseline's may be a fallback)."""
    trained = trials[trials["head"] != NO_HEAD] if "head" in trials else trials
    own = set(trained["score_used"].dropna()) if "score_used" in trials else set()
    return [s for s in scorers_logged(trials) if own != {s}]


def _point_latest(out_dir: Path) -> None:
    """``latest`` beside ``out_dir``, a relative link to it, swapped in whole (a reader never
    finds it missing)."""
    replace_whole(
        out_dir.with_name(LATEST),
        lambda staging: staging.symlink_to(out_dir.name, target_is_directory=True),
    )
