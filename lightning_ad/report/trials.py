"""A sweep's trials as one table, read back from the tracking server: a row per complete trial
run of one settings fingerprint, each with its per-image test scores."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from lightning_ad import tracking
from lightning_ad.errors import LightningADError
from lightning_ad.grid import GRID_KEYS, NO_HEAD
from lightning_ad.metrics import SHIFTED_PREFIX, shifted_metric
from lightning_ad.models.scoring import SCORERS, scorer_for

RUN_FACTS = ("dataset", "data_root", "git_commit", "score_used")
"""Run parameters that say where a cell's numbers came from; the tidy table carries them."""
MAIN_METRIC = "test/auc"
MAP_METRICS = {"pixel": "test/pixel_auc", "aupro": "test/aupro"}
SCORES = "scores"
"""The trials-table column holding each run's per-image test scores (see :func:`fetch_trials`)."""


class Sweep(Protocol):
    """What the report reads of a sweep (``sweep.spec.SweepSpec`` is one): its name, its grid
    (key -> values, in the tables' order), its fixed settings and its runnable cells' keys
    (grid values in ``GRID_KEYS`` order)."""

    @property
    def name(self) -> str: ...

    @property
    def grid(self) -> Mapping[str, Sequence]: ...

    @property
    def fixed(self) -> Mapping[str, object]: ...

    @property
    def runnable_keys(self) -> Collection[tuple]: ...


def fetch_trials(
    tracking_uri: str,
    experiment: str,
    spec: Sweep,
    fingerprint: str,
    category: str | None = None,
) -> pd.DataFrame:
    """The complete trial runs of ``spec``'s grid under a settings ``fingerprint``, one row per
    run (see :func:`trials_frame`), each with its per-image test scores in column ``scores``
    (None where the run has none): from the parent runs' bundles where they hold the run
    (:data:`tracking.SCORES_BUNDLE`), else read. Cells no longer in the grid are left out."""
    runs = tracking.finished_trial_runs(tracking_uri, experiment, spec.name, fingerprint, category)
    trials = in_grid(trials_frame(runs), spec)
    parents = tracking.sweep_parents(tracking_uri, experiment, spec.name, category, fingerprint)
    bundled = tracking.bundled_test_scores(tracking_uri, parents, set(trials["run_id"]))
    runs = list(zip(trials["run_id"], trials["artifact_uri"], strict=True))
    trials[SCORES] = tracking.runs_test_scores(tracking_uri, runs, bundled)
    return trials


def trials_frame(runs: Iterable) -> pd.DataFrame:
    """Trial runs as a table: the grid keys (``seed`` as int), where each came from, every
    ``test/*`` and ``test_<shift>/*`` metric, the run id and artifact root; the latest run
    wins for a repeated cell. ``runs`` is read once, so it may be a page-by-page search."""
    rows = []
    for run in runs:
        row = {key: run.data.params.get(key) for key in (*GRID_KEYS, *RUN_FACTS)}
        row |= {k: v for k, v in run.data.metrics.items() if is_test_metric(k)}
        rows.append(row | {"run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri})
    if not rows:
        return pd.DataFrame(columns=[*GRID_KEYS, MAIN_METRIC, "run_id", "artifact_uri"])
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype(int)
    return table.drop_duplicates(subset=list(GRID_KEYS), keep="last").reset_index(drop=True)


def is_test_metric(key: str) -> bool:
    """A metric of the test split (``test/...``) or of a shifted one (``test_<shift>/...``)."""
    return key.startswith("test/") or _is_shifted(key)


def shifted_metrics(trials: pd.DataFrame, metric: str = MAIN_METRIC) -> dict[str, str]:
    """Shift name -> the column holding ``metric`` on that shifted test split, for the shifts
    some of ``trials`` were scored on (``lighting`` -> ``test_lighting/auc``)."""
    shifts = {c.split("/")[0].removeprefix(SHIFTED_PREFIX) for c in trials if _is_shifted(c)}
    named = {shift: shifted_metric(metric, shift) for shift in sorted(shifts)}
    return {shift: column for shift, column in named.items() if column in trials}


def _is_shifted(key: str) -> bool:
    return key.startswith(SHIFTED_PREFIX) and "/" in key


def scorers_logged(trials: pd.DataFrame) -> list[str]:
    """The scorers whose image AUROC (``test/auc_<scorer>``) some of ``trials`` logged."""
    prefix = f"{MAIN_METRIC}_"
    names = (c.removeprefix(prefix) for c in trials if c.startswith(prefix))
    return sorted(name for name in names if "/" not in name)


def scored_by(trials: pd.DataFrame, scorer: str) -> pd.DataFrame:
    """``trials`` read as if ``scorer`` were every run's own: its image AUROC, overall and per
    defect type, as ``test/auc`` (NaN where a run did not log it), and as the ``score_used``
    the verdicts by defect type read. ``MAP_METRICS`` become those of the maps ``scorer``
    serves (:func:`served_maps`). The frozen baseline's runs are read with
    :func:`frozen_reader`'s scorer, as its trials scored themselves in ``scorer``'s place.

    Args:
        trials: the runs of one fingerprint (:func:`fetch_trials`).
        scorer: a scorer the runs logged (``test/auc_<scorer>``).

    Returns:
        A copy of ``trials`` for the tables and verdicts to read.

    Raises:
        LightningADError: no run logged ``scorer``; the error lists those that did.
    """
    logged = scorers_logged(trials)
    if scorer not in logged:
        raise LightningADError(
            f"--score {scorer}: no run of this table logged it; the runs logged "
            f"{', '.join(logged) or 'no scorer'}"
        )
    frozen = trials["head"] == NO_HEAD if "head" in trials else pd.Series(False, trials.index)
    reader = frozen_reader(scorer)
    if reader == scorer or not frozen.any():
        return _read_as_scorer(trials, scorer)
    read = [_read_as_scorer(trials, scorer)[~frozen], _read_as_scorer(trials, reader)[frozen]]
    return pd.concat(read).loc[trials.index]


def frozen_reader(scorer: str) -> str:
    """What the frozen baseline is read with in ``scorer``'s place: ``scorer``, or its fallback
    when it needs a trained head (:func:`lightning_ad.models.scoring.scorer_for`: PatchCore
    for a scorer with maps, kNN otherwise); a name no longer among the scorers stays itself."""
    return scorer_for(scorer, trained=False) if scorer in SCORERS else scorer


def _read_as_scorer(trials: pd.DataFrame, scorer: str) -> pd.DataFrame:
    """``trials`` with ``scorer``'s metrics under the plain names (see :func:`scored_by`)."""
    out = trials
    maps = served_maps(trials, scorer)
    sources = {MAIN_METRIC: scorer} | {metric: maps for metric in MAP_METRICS.values()}
    for metric, source in sources.items():
        out = _read_as(out, trials, metric, f"{metric}_{source}")
        for shift in shifted_metrics(trials):  # the same metrics on each shifted split
            moved = shifted_metric(metric, shift)
            out = _read_as(out, trials, moved, f"{moved}_{source}")
    return out.assign(score_used=scorer)


def served_maps(trials: pd.DataFrame, scorer: str) -> str:
    """Whose anomaly maps a detector scored by ``scorer`` serves: its own where the runs
    logged maps of it (``test/pixel_auc_twinseg``), else PatchCore's, the map every trial has."""
    return scorer if own_map_tables(trials, scorer) else "patch"


def own_map_tables(trials: pd.DataFrame, scorer: str) -> tuple[str, ...]:
    """The map tables (``MAP_METRICS`` keys) that ``scorer`` logged of maps of its own."""
    return tuple(name for name, metric in MAP_METRICS.items() if f"{metric}_{scorer}" in trials)


def _read_as(out: pd.DataFrame, trials: pd.DataFrame, metric: str, own: str) -> pd.DataFrame:
    """``out`` with ``metric`` and its per-defect columns replaced by those of ``own``; as it
    is where no run logged ``own``."""
    if own not in trials:
        return out
    out = out.drop(columns=[c for c in out if c == metric or c.startswith(f"{metric}/")])
    for column in [c for c in trials if c == own or c.startswith(f"{own}/")]:
        out[metric + column.removeprefix(own)] = trials[column]
    return out


def in_grid(trials: pd.DataFrame, spec: Sweep) -> pd.DataFrame:
    """The rows whose cell is one of ``spec``'s runnable cells."""
    cells = {tuple(str(v) for v in key) for key in spec.runnable_keys}
    keep = [tuple(str(v) for v in row) in cells for row in trials[list(GRID_KEYS)].to_numpy()]
    return trials.loc[np.array(keep, dtype=bool)].reset_index(drop=True)
