"""Where runs go: the tracking URI, the store's reachability, experiments, the client, and the
searches every query of runs goes through.

The default store is ``sqlite:///mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``,
relative to the current directory as MLflow's own defaults are (MLflow 3.13+ no longer accepts
the old file store). ``MLFLOW_TRACKING_URI`` overrides it; an explicit URI overrides both.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lightning_ad.errors import LightningADError, redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


class Clock(Protocol):
    """What tells the time and waits: the ``time`` module, or a test's stand-in."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "lightning_ad"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""MLflow 3's UI opens an experiment by its kind: tagged as model training, a sweep's experiment
(parent runs, metrics only) opens on its runs; untagged, in the GenAI view ("Evaluations")."""
RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""MLflow's client retries a failed request (connection refused, 5xx, 429) with backoff; these
make it about a minute (1 + 2 + ... + 32 s) instead of its default of about four, so that a
lasting outage stops a worker soon. A value the user exported wins."""
OUTAGE_PATIENCE_S = 60.0
"""How long a sweep worker waits for an unreachable tracking server before it stops."""


def use_retries() -> None:
    """Let MLflow's client ride out a short outage (``RETRIES``), in this process and the
    worker processes it starts."""
    for name, value in RETRIES.items():
        os.environ.setdefault(name, value)


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``explicit`` > ``$MLFLOW_TRACKING_URI`` > the default SQLite file under ./mlruns, made
    absolute: MLflow caches one store per URI string, so a relative one would keep pointing at
    the folder it was first opened from."""
    found = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if found:
        return found
    return f"sqlite:///{Path(DEFAULT_TRACKING_URI.removeprefix('sqlite:///')).resolve()}"


@contextlib.contextmanager
def using(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.pyfunc.load_model``, ``register_model``) pointed at
    ``uri`` for the block, and back where it was after it."""
    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite store, else the server decides."""
    db = _sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db is not None else None


def ensure_reachable(
    uri: str, patience_s: float = 0.0, timeout_s: float = 5.0, clock: Clock = time
) -> None:
    """Fail, with the URI in the message, when the tracking store cannot be used: at once, or
    after retrying with backoff for ``patience_s`` seconds (a server restarting).

    Args:
        uri: a tracking URI (a SQLite store is created if missing).
        patience_s: how long to keep asking a server that does not answer.
        timeout_s: each request's timeout.
        clock: what tells the time and waits between requests (``time``).

    Raises:
        LightningADError: the store cannot be created, or the server did not answer in time.
    """
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            _create_sqlite_store_once(uri, db)
        except OSError as err:
            raise LightningADError(f"cannot create the MLflow store {redact(uri)}: {err}") from err
        return
    if uri.startswith(("http://", "https://")):
        deadline, pause = clock.monotonic() + patience_s, 1.0
        while True:
            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
                return
            except (urllib.error.URLError, OSError) as err:
                if clock.monotonic() + pause > deadline:
                    waited = f" for {patience_s:.0f} s" if patience_s else ""
                    raise LightningADError(
                        f"cannot reach the MLflow tracking server at {redact(uri)}{waited} "
                        f"({err}); start it (make ui / mlflow server) or pass another "
                        "--tracking-uri"
                    ) from err
            clock.sleep(pause)
            pause = min(pause * 2, 10.0)


@functools.lru_cache(maxsize=64)
def _create_sqlite_store_once(uri: str, db: Path) -> None:
    """Create (migrate) a new SQLite store under a file lock: MLflow's schema migration is not
    safe when two processes create the same file at once (two sweeps started together; see
    ``docs/design-notes.md``). Once per process and store: a sweep worker asks before every
    cell (a failure raises, so it is not remembered)."""
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


def client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``uri`` (MLflow imported on first use)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def quoted(value: object) -> str:
    """A value inside an MLflow filter string. Sweep and category names are safe names
    (``config.check_name``) and grid values are registry names, so none holds a quote."""
    return f"'{value}'"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a bulk read builds objects: MLflow's ORM
    makes ~70 per run, and the collector's passes over a sweep's heap would otherwise take
    much of a large search (``docs/design-notes.md``). Nothing read there forms a cycle that
    must be freed before the read ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def search_pages(
    uri: str, experiment: str, query: str, order_by: list[str] | None = None
) -> Iterator[list[Run]]:
    """The runs of ``experiment`` matching ``query``, a page of up to 1,000 at a time (none if
    it is missing): a caller that keeps a few fields of each run never holds 10,000 runs with
    all their metrics, params and tags at once."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    token = None
    while found is not None:
        with gc_paused():
            page = mlflow_client.search_runs(
                [found.experiment_id], query, order_by=order_by, max_results=1000, page_token=token
            )
        yield list(page)
        token = page.token
        if not token:
            return


def search_all(uri: str, experiment: str, query: str, order_by: list[str] | None = None) -> list:
    """Every run of ``experiment`` matching ``query`` ([] if it is missing)."""
    return [run for page in search_pages(uri, experiment, query, order_by) for run in page]
