"""The sweep's parent run in MLflow: one per (sweep, category), holding the spec, the median AUC
of every cell, a description with the tables (the run's Overview in the UI), and the report.

After each trial only that trial's cell is read back and its median logged, so the cost per
trial does not grow with the sweep; the description (every table) is rewritten at most every
``DESCRIBE_EVERY_S`` seconds while the sweep runs, and once more at its end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lightning_ad import report, tracking
from lightning_ad.config import GRID_KEYS
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
    _described_at: float = field(default=0.0, repr=False)

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

    def trial_done(self, cell: dict) -> None:
        """Log the median of ``cell`` (read back alone), and the tables when they are due."""
        target = self.target
        same_cell = {key: cell[key] for key in GRID_KEYS if key != "seed"}
        runs = tracking.finished_trial_runs(
            target.tracking_uri,
            target.experiment,
            target.spec.name,
            target.fingerprint,
            cell=same_cell,
        )
        self._log_medians(report.in_grid(report.trials_frame(runs), target.spec))
        if time.monotonic() - self._described_at >= DESCRIBE_EVERY_S:
            self.refresh()

    def refresh(self, write_reports: bool = False) -> list[Path]:
        """Every median and the description from all the sweep's runs (and, at the end, every
        table into ``reports/<sweep>/<category>/``, logged as the run's ``report/`` artifacts)."""
        target = self.target
        trials = report.fetch_trials(
            target.tracking_uri, target.experiment, target.spec, target.fingerprint
        )
        self._log_medians(trials)
        client = tracking.client(target.tracking_uri)
        description = report.parent_description(trials, target.spec, target.settings)
        client.set_tag(self.run_id, tracking.NOTE_TAG, description)
        self._described_at = time.monotonic()
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
