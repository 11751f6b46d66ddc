"""MLflow, and only here: where runs go, the tags that tie runs to sweeps, the queries that
read them back, each trial's scores files and the status of a trial's run.

- ``store``: the tracking URI, the store's reachability, experiments, the client, searches.
- ``tags``: the tags on parent and trial runs.
- ``runs``: a sweep's complete trial runs, its parent runs and their settings.
- ``scores``: each trial's per-image test scores file and a parent run's bundle of them.
- ``status``: how a trial's run ends; the runs of dead workers' trials.

MLflow itself is imported inside the functions that use it: the command line starts without
it. The names below are this package's interface: ``tracking.X``.
"""

from lightning_ad.tracking.runs import (
    SETTINGS_ARTIFACT,
    finished_trial_runs,
    parent_links,
    parent_settings,
    sweep_parents,
)
from lightning_ad.tracking.scores import (
    BUNDLED,
    SCORES_ARTIFACT,
    SCORES_BUNDLE,
    SCORES_TEXT,
    bundled_test_scores,
    log_scores_bundle,
    no_download_progress,
    runs_test_scores,
    test_scores,
)
from lightning_ad.tracking.status import fail_orphan_runs, run_status
from lightning_ad.tracking.store import (
    DEFAULT_EXPERIMENT,
    EXPERIMENT_KIND_TAG,
    OUTAGE_PATIENCE_S,
    client,
    ensure_experiment,
    ensure_reachable,
    quoted,
    resolve_tracking_uri,
    search_all,
    use_retries,
    using,
)
from lightning_ad.tracking.tags import (
    CELL_TAG,
    COMPLETE_TAG,
    FAILED_CELLS_TAG,
    FINGERPRINT_TAG,
    MAX_TAG_LENGTH,
    NOTE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SELECTED_TAG,
    STUDY_TAG,
    SWEEP_ROLE,
    SWEEP_TAG,
    TRIAL_ROLE,
    TRIAL_TAG,
)

__all__ = [
    "BUNDLED",
    "CELL_TAG",
    "COMPLETE_TAG",
    "DEFAULT_EXPERIMENT",
    "EXPERIMENT_KIND_TAG",
    "FAILED_CELLS_TAG",
    "FINGERPRINT_TAG",
    "MAX_TAG_LENGTH",
    "NOTE_TAG",
    "OUTAGE_PATIENCE_S",
    "PARENT_TAG",
    "ROLE_TAG",
    "SCORES_ARTIFACT",
    "SCORES_BUNDLE",
    "SCORES_TEXT",
    "SELECTED_TAG",
    "SETTINGS_ARTIFACT",
    "STUDY_TAG",
    "SWEEP_ROLE",
    "SWEEP_TAG",
    "TRIAL_ROLE",
    "TRIAL_TAG",
    "bundled_test_scores",
    "client",
    "ensure_experiment",
    "ensure_reachable",
    "fail_orphan_runs",
    "finished_trial_runs",
    "log_scores_bundle",
    "no_download_progress",
    "parent_links",
    "parent_settings",
    "quoted",
    "resolve_tracking_uri",
    "run_status",
    "runs_test_scores",
    "search_all",
    "sweep_parents",
    "test_scores",
    "use_retries",
    "using",
]
