"""MLflow: where runs go, checked before anything is written.

The default store is ``sqlite:///mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``,
relative to the current directory as MLflow's own defaults are (MLflow 3.13+ no longer accepts
the old file store). ``MLFLOW_TRACKING_URI`` overrides it; an explicit URI overrides both.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lightning_ad.errors import LightningADError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "lightning_ad"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""MLflow 3's UI opens an experiment by its kind: untagged, a sweep's experiment (parent runs,
metrics only) was shown in the GenAI view ("Evaluations"); tagged, it opens on its runs."""
NOTE_TAG = "mlflow.note.content"
"""A run's description: the UI renders it as markdown on the run's Overview."""
MAX_TAG_LENGTH = 8000
"""MLflow's limit on a tag value (``mlflow.utils.validation.MAX_TAG_VAL_LENGTH``)."""


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``explicit`` > ``$MLFLOW_TRACKING_URI`` > the default SQLite file under ./mlruns, made
    absolute: MLflow caches one store per URI string, so a relative one would keep pointing at
    the folder it was first opened from."""
    found = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if found:
        return found
    return f"sqlite:///{Path(DEFAULT_TRACKING_URI.removeprefix('sqlite:///')).resolve()}"


def mlflow_command(*args: str) -> list[str]:
    """``mlflow ARGS`` run by this interpreter (``python -m mlflow``): make and other callers run
    us without the venv's ``bin/`` on PATH, where a bare ``mlflow`` is not found."""
    if importlib.util.find_spec("mlflow") is None:
        raise LightningADError(
            f"mlflow is not installed for {sys.executable}; run make install "
            "(or pip install mlflow)"
        )
    return [sys.executable, "-m", "mlflow", *args]


def mlflow_server_env() -> dict[str, str]:
    """The environment for ``mlflow ui`` / ``mlflow server``: MLflow's job runner (huey worker
    processes for GenAI features: judges, trace rollups) is off unless the user turned it on.
    A sweep needs none of it, and on Ctrl-C each of its processes printed a traceback."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def mask_password(url: str) -> str:
    """A URL safe to print and log: ``scheme://user:secret@host`` -> ``scheme://user:***@host``,
    and a ``password=`` query value (libpq's other way to pass one) -> ``password=***``."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    in_query = any(key.lower() == "password" for key, _ in query)
    if parts.password is None and not in_query:
        return url  # untouched: urlunsplit would drop the empty host of sqlite:////abs/path
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    if in_query:
        masked = [(k, "***" if k.lower() == "password" else v) for k, v in query]
        parts = parts._replace(query=urllib.parse.urlencode(masked, safe="*"))
    return urllib.parse.urlunsplit(parts)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite store, else the server decides."""
    db = _sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db is not None else None


def ensure_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with the URI in the message, when the tracking store cannot be used."""
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            _create_sqlite_store_once(uri, db)
        except OSError as err:
            raise LightningADError(
                f"cannot create the MLflow store {mask_password(uri)}: {err}"
            ) from err
        return
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
        except (urllib.error.URLError, OSError) as err:
            raise LightningADError(
                f"cannot reach the MLflow tracking server at {mask_password(uri)} ({err}); "
                "start it (make ui / mlflow server) or pass another --tracking-uri"
            ) from err


def _create_sqlite_store_once(uri: str, db: Path) -> None:
    """Create (migrate) a new SQLite store under a file lock: MLflow's schema migration is not
    safe when two processes create the same file at once (two ``make sweep`` started together
    failed with alembic's "expected to match one row")."""
    import fcntl

    from mlflow import MlflowClient

    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment ``name``, created once (safely when several workers race), tagged
    as model training so that the UI opens it on its runs."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_location(uri),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
            )
        except MlflowException:
            experiment = client.get_experiment_by_name(name)  # another worker created it first
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older lightning_ad
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment.experiment_id
