"""Comparison tables from MLflow: median AUC per cell (image, pixel, AUPRO), class3 - class2
overall and per defect type, and each trained cell - the frozen baseline, each an interval over
training runs and the shared test images.

Everything is read back from the tracking server (runs, and each trial's per-image test scores
artifact), never from local state, so a table can be made from any server that holds the sweep's
runs. Each table exists twice: *tidy* (one row per cell, pair or defect, numeric columns at full
precision; CSV and Parquet, for programs) and *display* (the article's wide layout, rounded;
Markdown, HTML, LaTeX, for people).

- ``trials``: the trial runs of one settings fingerprint as a table, with their scores.
- ``formats``: the file formats; a display table rendered as Markdown, HTML or LaTeX.
- ``verdicts``: class3 - class2 per pair and scorer, per defect type; sentences, metrics;
  trained - frozen per cell and scorer.
- ``tables``: the median and verdict tables, tidy and display; the parent run's medians.
- ``files``: a report's folder: every table, the plots, ``settings.json``, ``latest``.
- ``page``: the report as one HTML page.

A sweep is read through :class:`Sweep` (what ``SweepSpec`` offers), so that this package
imports nothing of ``lightning_ad.sweep``. The names below are its interface: ``report.X``.
"""

from lightning_ad.report.files import (
    FILE_NAMES,
    replace_whole,
    suffix,
    tables_in,
    write_report,
    write_table,
)
from lightning_ad.report.formats import FORMATS
from lightning_ad.report.page import write_page
from lightning_ad.report.tables import (
    TABLES,
    display_table,
    main_table,
    median_metric,
    median_metrics,
    summary_text,
    tables_for,
    tidy_table,
)
from lightning_ad.report.trials import (
    MAIN_METRIC,
    SCORES,
    fetch_trials,
    scored_by,
    scorers_logged,
    trials_frame,
)
from lightning_ad.report.verdicts import (
    Verdicts,
    defect_verdicts,
    frozen_verdicts,
    paired_verdicts,
    verdict_metrics,
)

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "MAIN_METRIC",
    "SCORES",
    "TABLES",
    "Verdicts",
    "defect_verdicts",
    "display_table",
    "fetch_trials",
    "frozen_verdicts",
    "main_table",
    "median_metric",
    "median_metrics",
    "paired_verdicts",
    "replace_whole",
    "scored_by",
    "scorers_logged",
    "suffix",
    "summary_text",
    "tables_for",
    "tables_in",
    "tidy_table",
    "trials_frame",
    "verdict_metrics",
    "write_page",
    "write_report",
    "write_table",
]
