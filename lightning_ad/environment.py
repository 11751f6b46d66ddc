"""MLflow's environment defaults, set by every entry point (the CLI, the benchmarks, the tests)
before MLflow is imported, and inherited by worker processes. A value the user exported stays.

- ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``: MLflow's download bars are no news to a user
  of lightning-ad (one per trial in a sweep's log, and in ``predict``'s).
- ``MLFLOW_DISABLE_TELEMETRY=true``: MLflow's usage telemetry is nothing a sweep needs, and its
  thread sets and unsets an environment variable while request threads read ``os.environ``
  (``docs/design-notes.md``).
"""

from __future__ import annotations

import os

MLFLOW_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def apply_mlflow_defaults() -> None:
    """Set each of :data:`MLFLOW_DEFAULTS` that the environment does not set already."""
    for name, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)
