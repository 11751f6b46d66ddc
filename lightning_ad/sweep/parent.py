"""The sweep's parent run in MLflow: one per (sweep, category, settings fingerprint), holding the
spec and its settings, the median AUC of every cell, a description with the tables (the run's
Overview in the UI), and the report.

After each trial the median of that trial's table cell is logged, from the values the Optuna
study already holds (reading the cell's runs back from MLflow cost a second per trial at 1,000
seeds: ``make bench`` B10); the description (every table, from every run) is rewritten
at most every ``DESCRIBE_EVERY_S`` seconds, or ten times as long as it took the last time,
while the sweep runs (so it costs at most a tenth of the sweep however many runs it reads), and
once more at its end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_ad import report, tracking
from lightning_ad.errors import redact
from lightning_ad.sweep.recovery import GridStatus
from lightning_ad.sweep.spec import SweepTarget
from lightning_ad.sweep.storage import DEFAULT_STORAGE

DESCRIBE_EVERY_S = 30.0


@dataclass
class SweepParent:
    """The parent run of ``target`` (picklable: each worker process gets its own copy)."""

    target: SweepTarget
    run_id: str
    _describe_after: float = field(default=0.0, repr=False)

    @classmethod
    def find_or_create(cls, target: SweepTarget) -> SweepParent:
        spec = target.spec
        run_id = tracking.parent_run(
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
        return cls(target, run_id)

    def trial_done(self, cell: dict, aucs: list[float]) -> None:
        """Log the median of ``cell``'s table cell from the test AUCs of its seeds in the grid
        (the study has them: no run is read back), and the tables when they are due."""
        key = report.median_metric(cell["backbone"], cell["head"], str(cell["classes"]))
        values = np.asarray(aucs, dtype=float)
        finite = values[np.isfinite(values)]  # as the tables count them
        if finite.size:
            median = (float(np.median(finite)), int(finite.size))
            tracking.log_metrics(self.target.tracking_uri, self.run_id, {key: median})
        if time.monotonic() >= self._describe_after:
            self.refresh()

    def refresh(self, write_reports: bool = False) -> list[Path]:
        """Every median and the description from all the sweep's runs (and, at the end, every
        table into ``reports/<sweep>/<category>/``, logged as the run's ``report/`` artifacts)."""
        target = self.target
        started = time.monotonic()
        trials = report.fetch_trials(
            target.tracking_uri, target.experiment, target.spec, target.fingerprint
        )
        self._log_medians(trials)
        client = tracking.client(target.tracking_uri)
        description = report.parent_description(trials, target.spec, target.settings)
        client.set_tag(self.run_id, tracking.NOTE_TAG, description)
        now = time.monotonic()
        self._describe_after = now + max(DESCRIBE_EVERY_S, 10 * (now - started))
        if not write_reports:
            return []
        files = report.write_report(trials, target.spec, target.reports)
        for path in files:
            client.log_artifact(self.run_id, str(path), artifact_path="report")
        return files

    def _log_medians(self, trials) -> None:
        """``median_auc/...`` of each cell in ``trials``, its step the cell's seed count."""
        tracking.log_metrics(self.target.tracking_uri, self.run_id, report.median_metrics(trials))

    def reopen(self) -> None:
        """RUNNING again: this command has cells to run (a resumed or extended sweep)."""
        tracking.reopen(self.target.tracking_uri, self.run_id)

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
