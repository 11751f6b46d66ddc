"""The sweep's parent run in MLflow: one per (sweep, category, settings fingerprint), holding the
spec and its settings, the median AUC of every cell, a description with the tables (the run's
Overview in the UI), and the report.

After each trial the median of that trial's table cell is logged, from the values the Optuna
study already holds: no run is read back from MLflow. The description (every table, from every
run) is rewritten while the sweep runs by a process of its own, one per sweep command and one
at a time, ``SweepTarget.describe_every_s`` after the last one ended or ten times as long as it
took, and once more at the sweep's end. A worker neither waits for it nor holds what it
reads: reading every run is slow on a large sweep and grows the memory of the process that
does it. On a
tracking server each rewrite also logs the bundle of the trials' scores files, which readers
download instead of one file per run. ``docs/design-notes.md`` has the measurements.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_ad import interrupts, report, tracking
from lightning_ad.errors import redact
from lightning_ad.sweep.examples import example_maps
from lightning_ad.sweep.fingerprint import Settings
from lightning_ad.sweep.recovery import GridStatus
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from lightning_ad.sweep.storage import DEFAULT_STORAGE

DESCRIBER_NAME = "describe"
"""The description process's name (``multiprocessing.active_children``)."""
_SPAWN = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Describer:
    """A process rewriting a parent run's description (:meth:`SweepParent.refresh`). It
    ignores Ctrl-C and ends with the process that started it, which ends it otherwise."""

    process: BaseProcess
    ended: ctypes.c_double  # shared: the monotonic clock (system-wide) when it ended, or -1
    started: float

    @classmethod
    def start(cls, target: SweepTarget, run_id: str) -> Describer:
        ended = _SPAWN.RawValue("d", -1.0)
        process = _SPAWN.Process(
            target=_describe,
            args=(target, run_id, os.getpid(), ended),
            name=DESCRIBER_NAME,
            daemon=True,
        )
        started = time.monotonic()
        with interrupts.children_ignore_ctrl_c():
            process.start()
        return cls(process, ended, started)

    def next_due(self, every_s: float) -> float:
        """When the next one may start: ``every_s`` after this one ended, or ten times as long
        as it took from its start (its imports included)."""
        ended = self.ended.value if self.ended.value >= 0 else time.monotonic()  # it crashed
        return ended + max(every_s, 10 * (ended - self.started))


@dataclass
class SweepParent:
    """The parent run of ``target`` (picklable: each worker process gets its own copy, without
    this one's description process).

    Args:
        target: the sweep's category and where it runs (its ``describe_every_s``).
        run_id: the parent run.
        describing: whether this process rewrites the description while the sweep runs (with
            several worker processes, their parent does it for them); the first time
            ``target.describe_every_s`` after this object is made.
        start_describer: starts a description process (:meth:`Describer.start`).
    """

    target: SweepTarget
    run_id: str
    describing: bool = True
    start_describer: Callable[[SweepTarget, str], Describer] = field(
        default=Describer.start, repr=False
    )
    _describe_after: float = field(default=0.0, init=False, repr=False)
    _describer: Describer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._describe_after = time.monotonic() + self.target.describe_every_s

    def __getstate__(self) -> dict[str, object]:
        # The running description process stays with this process; a copy in a worker process
        # (made with describing=False: runner._run_workers) starts the default kind, if any.
        return {**self.__dict__, "_describer": None, "start_describer": Describer.start}

    @classmethod
    def find_or_create(cls, target: SweepTarget, **options: Any) -> SweepParent:
        """The parent run of ``target``'s study, made if missing (``options``: the fields
        after ``run_id``)."""
        spec = target.spec
        run_id = parent_run(
            target.tracking_uri,
            target.experiment,
            target.study_name,
            tags={
                tracking.SWEEP_TAG: spec.name,
                "category": target.category,
                tracking.FINGERPRINT_TAG: target.fingerprint,
            },
            params={
                "sweep": spec.name,
                "category": target.category,
                "fingerprint": target.fingerprint,
                "optuna_storage": redact(target.storage or DEFAULT_STORAGE),
            },
            spec={
                "name": spec.name,
                "grid": {k: list(v) for k, v in spec.grid.items()},
                "fixed": spec.fixed,
            },
            settings=target.settings.values,
        )
        return cls(target, run_id, **options)

    def trial_done(self, cell: dict, aucs: list[float]) -> None:
        """Log the median of ``cell``'s table cell from the test AUCs of its seeds in the grid
        (the study has them: no run is read back), and the tables when they are due."""
        key = report.median_metric(cell["backbone"], cell["head"], str(cell["classes"]))
        values = np.asarray(aucs, dtype=float)
        finite = values[np.isfinite(values)]  # as the tables count them
        if finite.size:
            median = (float(np.median(finite)), int(finite.size))
            log_metrics(self.target.tracking_uri, self.run_id, {key: median})
        self.describe_when_due()

    def describe_when_due(self) -> None:
        """Start a description process (:meth:`refresh`) when this process is ``describing``,
        one is due and none runs."""
        if not self.describing:
            return
        describer = self._describer
        if describer is not None:
            if describer.process.is_alive():
                return
            describer.process.join()
            self._describer = None
            self._describe_after = describer.next_due(self.target.describe_every_s)
        if time.monotonic() >= self._describe_after:
            self._describer = self.start_describer(self.target, self.run_id)

    def stop_describing(self) -> None:
        """End a description process still running: what comes next (the final tables, or the
        run's end) supersedes it."""
        if self._describer is not None:
            self._describer.process.terminate()
            self._describer.process.join()
            self._describer = None

    def refresh(self, write_reports: bool = False) -> list[Path]:
        """Every median and the description from all the sweep's runs, and on a tracking
        server the bundle of their scores files (``tracking.SCORES_BUNDLE``); at the end, every
        table into ``reports/<sweep>/<category>/<fingerprint>/``, logged as the run's
        ``report/`` artifacts."""
        target = self.target
        trials = report.fetch_trials(
            target.tracking_uri, target.experiment, target.spec, target.fingerprint
        )
        verdicts = report.Verdicts(trials)  # every table, plot and metric below shares them
        self._log_medians(trials, verdicts)
        client = tracking.client(target.tracking_uri)
        description = parent_description(trials, target.spec, target.settings, verdicts)
        client.set_tag(self.run_id, tracking.NOTE_TAG, description)
        self._log_scores_bundle(trials)
        if not write_reports:
            return []
        files = report.write_report(trials, target.spec, target.settings, target.reports, verdicts)
        self._log_report(files)
        try:  # the page and its maps are for reading: a failure there is a warning
            category_dir = Path(target.settings.values["data"]["root"])
            maps = example_maps(trials, category_dir, target.tracking_uri, target.reports)
            page = report.write_page(trials, target.spec, target.reports, maps, verdicts)
        except Exception as err:
            warnings.warn(f"no report page: {redact(str(err))}", stacklevel=1)
            return files
        pictures = [image for images in maps.values() for image in images]
        self._log_report([page, *pictures])
        return [*files, page, *pictures]

    def _log_report(self, files: list[Path]) -> None:
        """``files`` of ``reports/...`` as the run's ``report/`` artifacts, folders kept."""
        client = tracking.client(self.target.tracking_uri)
        for path in files:
            where = path.parent.relative_to(self.target.reports).as_posix()
            folder = "report" if where == "." else f"report/{where}"
            client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def _log_scores_bundle(self, trials) -> None:
        """The bundle of ``trials``' scores files downloaded from a tracking server; only a
        speed-up for readers, so a failure (a proxy refusing a large upload) is a warning."""
        scores = zip(trials["run_id"], trials[report.SCORES], strict=True)
        try:
            tracking.log_scores_bundle(self.target.tracking_uri, self.run_id, scores)
        except Exception as err:  # the tables stand without it
            warnings.warn(f"could not log the scores bundle: {redact(str(err))}", stacklevel=1)

    def _log_medians(self, trials, verdicts: report.Verdicts) -> None:
        """The medians of each cell in ``trials`` and the verdict of each pair, their step the
        seed count (``report.median_metrics``, ``report.verdict_metrics``)."""
        metrics = report.median_metrics(trials) | report.verdict_metrics(trials, verdicts)
        log_metrics(self.target.tracking_uri, self.run_id, metrics)

    def reopen(self) -> None:
        """RUNNING again: this command has cells to run (a resumed or extended sweep)."""
        reopen(self.target.tracking_uri, self.run_id)

    def close(self, status: GridStatus, interrupted: bool) -> None:
        """End the run once nothing is left to run: FINISHED, or FAILED with the number of
        failed cells as a tag; KILLED when interrupted with no other worker running. While
        another worker's trial runs it stays RUNNING: the last worker to see the grid finished
        closes it."""
        client = tracking.client(self.target.tracking_uri)
        client.set_tag(self.run_id, tracking.FAILED_CELLS_TAG, str(len(status.failed)))
        if interrupted:
            if not status.running:
                client.set_terminated(self.run_id, "KILLED")
        elif status.finished:
            client.set_terminated(self.run_id, "FAILED" if status.failed else "FINISHED")


def parent_run(
    uri: str,
    experiment: str,
    study: str,
    tags: Mapping[str, str],
    params: Mapping[str, str],
    spec: Mapping,
    settings: Mapping,
) -> str:
    """The sweep's parent run for ``study``: found by its tags, or created with ``tags``,
    ``params``, ``spec`` (its ``sweep.yaml`` artifact) and ``settings`` (``settings.json``, what
    its fingerprint stands for). Two sweeps started at the same moment may both create one;
    both then keep the older and the loser deletes its own."""
    experiment_id = tracking.ensure_experiment(experiment, uri)
    query = (
        f"tags.`{tracking.ROLE_TAG}` = '{tracking.SWEEP_ROLE}' "
        f"and tags.`{tracking.STUDY_TAG}` = {tracking.quoted(study)}"
    )

    def oldest() -> str | None:
        runs = tracking.search_all(uri, experiment, query)
        runs.sort(key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0].info.run_id if runs else None

    found = oldest()
    if found:
        return found
    mlflow_client = tracking.client(uri)
    run = mlflow_client.create_run(
        experiment_id,
        run_name=study,
        tags={tracking.ROLE_TAG: tracking.SWEEP_ROLE, tracking.STUDY_TAG: study, **tags},
    )
    for key, value in params.items():
        mlflow_client.log_param(run.info.run_id, key, value)
    mlflow_client.log_dict(run.info.run_id, dict(spec), "sweep.yaml")
    mlflow_client.log_dict(run.info.run_id, dict(settings), tracking.SETTINGS_ARTIFACT)
    winner = oldest()
    if winner != run.info.run_id:
        mlflow_client.delete_run(run.info.run_id)
    return winner


def reopen(uri: str, run_id: str) -> None:
    """Set a run back to RUNNING (a sweep resumed or extended after it was closed)."""
    mlflow_client = tracking.client(uri)
    if mlflow_client.get_run(run_id).info.status != "RUNNING":
        mlflow_client.update_run(run_id, status="RUNNING")


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, tuple[float, int]]) -> None:
    """Metrics ``key -> (value, step)`` in one request (``log_batch``)."""
    if not metrics:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, step) for key, (value, step) in metrics.items()]
    tracking.client(uri).log_batch(run_id, metrics=batch)


def parent_description(
    trials: pd.DataFrame,
    spec: SweepSpec,
    settings: Settings,
    verdicts: report.Verdicts | None = None,
) -> str:
    """The parent run's description (markdown on its Overview in the UI), the answer first:
    the class3 - class2 verdicts, the median table and the intervals per scorer, then how many
    trials and which settings. ``verdicts``: those of ``trials``, when the caller has them."""
    tables = report.summary_text(trials, spec, "md", ("median", "delta"), verdicts)
    for title in ("Verdict:", "Median test AUC", "class3 - class2 per scorer"):
        tables = tables.replace(title, f"### {title}", 1)
    text = (
        f"{tables}\n\n**{spec.name}**: {len(trials)} finished trials. Tables, plots and the "
        "HTML report: the `report/` artifacts (written when the sweep ends).\n\n"
        f"Settings {settings.describe()} (all of them: `settings.json`).\n"
    )
    return text[: tracking.MAX_TAG_LENGTH]


def _describe(target: SweepTarget, run_id: str, parent_pid: int, ended) -> None:
    """The body of a description process."""
    _end_with_parent(parent_pid)
    try:
        SweepParent(target, run_id, describing=False).refresh()
    except Exception as err:  # the next one, or the sweep's end, writes it
        warnings.warn(
            f"could not rewrite the sweep's description: {redact(str(err))}", stacklevel=1
        )
    finally:
        ended.value = time.monotonic()


def _end_with_parent(parent_pid: int) -> None:
    """Have the kernel end this process when its parent ends (Linux ``PR_SET_PDEATHSIG``): if
    the process that started it were killed (out of memory), it would write a description
    older than the one of the sweep's end."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: its parent's exit ends it
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # it ended before the request
        sys.exit(0)
