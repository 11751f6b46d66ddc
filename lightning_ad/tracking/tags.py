"""The tags that tie MLflow runs to sweeps, cells and trials, and the UI's own tags we set."""

from __future__ import annotations

NOTE_TAG = "mlflow.note.content"
"""A run's description: the UI renders it as markdown on the run's Overview."""
MAX_TAG_LENGTH = 8000
"""MLflow's limit on a tag value (``mlflow.utils.validation.MAX_TAG_VAL_LENGTH``)."""
PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "lightning_ad.role"
"""``sweep`` on a sweep's parent run, ``trial`` on each trial's run."""
SWEEP_ROLE, TRIAL_ROLE = "sweep", "trial"
SWEEP_TAG = "lightning_ad.sweep"
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
SELECTED_TAG = "lightning_ad.selected"
"""``true`` on the run that stands for its cell (with a ``search`` block, the proposal with the
lowest val/loss; the others are ``false``)."""
FAILED_CELLS_TAG = "lightning_ad.failed_cells"
FINGERPRINT_TAG = "lightning_ad.fingerprint"
"""The settings fingerprint (``sweep.fingerprint``) on a sweep's parent run and trial runs."""
CELL_TAG = "lightning_ad.cell"
"""A trial run's cell identity: its grid values under its fingerprint."""
COMPLETE_TAG = "lightning_ad.complete"
"""``true`` once a trial's test metrics and artifacts are all logged; tables read no run
without it (a FINISHED status alone could come from a library ending the run early)."""
