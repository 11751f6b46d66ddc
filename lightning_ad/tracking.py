"""MLflow, and only here: where runs go, the tags that tie runs to sweeps, the queries that
read them back, the sweep's parent run and the status of a trial's run.

The default store is ``sqlite:///mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``,
relative to the current directory as MLflow's own defaults are (MLflow 3.13+ no longer accepts
the old file store). ``MLFLOW_TRACKING_URI`` overrides it; an explicit URI overrides both.
MLflow itself is imported inside the functions that use it: the command line starts without it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import io
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_ad.errors import LightningADError, redact

if TYPE_CHECKING:
    from mlflow.entities import Run

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


def mlflow_command(*args: str) -> list[str]:
    """``mlflow ARGS`` run by this interpreter (``python -m mlflow``): make and other callers run
    us without the venv's ``bin/`` on PATH, where a bare ``mlflow`` is not found."""
    if importlib.util.find_spec("mlflow") is None:
        raise LightningADError(
            f"mlflow is not installed for {sys.executable}; run make install "
            "(or pip install mlflow)"
        )
    return [sys.executable, "-m", "mlflow", *args]


SERVER_WARNINGS_IGNORED = ("starlette.middleware.wsgi is deprecated",)
"""Starts of third-party warnings the MLflow server prints once per worker process, which ask
nothing of a lightning_ad user (MLflow's own code uses the deprecated module)."""


def mlflow_server_env() -> dict[str, str]:
    """The environment for ``mlflow ui`` / ``mlflow server``: MLflow's job runner (huey worker
    processes for GenAI features: judges, trace rollups) is off unless the user turned it on;
    a sweep needs none of it, and on Ctrl-C each of its processes printed a traceback. And the
    warnings of :data:`SERVER_WARNINGS_IGNORED` stay out of the terminal."""
    ignored = ",".join(f"ignore:{start}" for start in SERVER_WARNINGS_IGNORED)
    previous = os.environ.get("PYTHONWARNINGS")
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **os.environ,
        "PYTHONWARNINGS": f"{previous},{ignored}" if previous else ignored,
    }


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite store, else the server decides."""
    db = _sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db is not None else None


def ensure_reachable(uri: str, patience_s: float = 0.0, timeout_s: float = 5.0) -> None:
    """Fail, with the URI in the message, when the tracking store cannot be used: at once, or
    after retrying with backoff for ``patience_s`` seconds (a server restarting)."""
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            _create_sqlite_store_once(uri, db)
        except OSError as err:
            raise LightningADError(f"cannot create the MLflow store {redact(uri)}: {err}") from err
        return
    if uri.startswith(("http://", "https://")):
        deadline, pause = time.monotonic() + patience_s, 1.0
        while True:
            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
                return
            except (urllib.error.URLError, OSError) as err:
                if time.monotonic() + pause > deadline:
                    waited = f" for {patience_s:.0f} s" if patience_s else ""
                    raise LightningADError(
                        f"cannot reach the MLflow tracking server at {redact(uri)}{waited} "
                        f"({err}); start it (make ui / mlflow server) or pass another "
                        "--tracking-uri"
                    ) from err
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


@functools.lru_cache(maxsize=64)
def _create_sqlite_store_once(uri: str, db: Path) -> None:
    """Create (migrate) a new SQLite store under a file lock: MLflow's schema migration is not
    safe when two processes create the same file at once (two ``make sweep`` started together
    failed with alembic's "expected to match one row"). Once per process and store: a sweep
    worker asks before every cell (a failure raises, so it is not remembered)."""
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


def client(uri: str):
    """An ``MlflowClient`` for ``uri`` (MLflow imported on first use)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _quoted(value: object) -> str:
    """A value inside an MLflow filter string. Sweep and category names are safe names
    (``config.check_name``) and grid values are registry names, so none holds a quote."""
    return f"'{value}'"


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


def finished_trial_runs(
    uri: str,
    experiment: str,
    sweep: str,
    fingerprint: str,
    category: str | None = None,
) -> Iterator[Run]:
    """The complete trial runs of a sweep's settings ``fingerprint`` that stand for their
    cell, oldest first, read a page at a time; only one category's when given."""
    query = (
        f"tags.`{SWEEP_TAG}` = {_quoted(sweep)} and tags.`{ROLE_TAG}` = '{TRIAL_ROLE}' "
        f"and tags.`{FINGERPRINT_TAG}` = {_quoted(fingerprint)} "
        f"and tags.`{COMPLETE_TAG}` = 'true' and attributes.status = 'FINISHED'"
    )
    if category:
        query += f" and params.category = {_quoted(category)}"
    for page in search_pages(uri, experiment, query, order_by=["attributes.end_time ASC"]):
        yield from (run for run in page if run.data.tags.get(SELECTED_TAG) != "false")


SETTINGS_ARTIFACT = "settings.json"
"""A parent run's settings: what its fingerprint stands for."""
SCORES_ARTIFACT = "scores/test_scores.csv"
"""Every trial's per-image test scores (image, defect, label, one column per scorer): what a
paired test of two trials on the same images reads. Written once, by ``train``: a run's file
never changes, which the bundle relies on."""
SCORES_BUNDLE = "scores/trials_test_scores.v1.parquet"
"""On a parent run whose artifacts are on a tracking server: its trial runs' scores files as
logged, one row each (``run_id``, ``csv``: the file's text), logged by the rewrites of its
description when it holds new runs, so that a reader downloads one file for the runs it
holds, not one per run (over HTTP: 17 s for 1,000 runs, each file on its own, eight at a
time). ``v1``: the format."""
SCORES_TEXT = "csv"
"""The ``attrs`` key of a scores DataFrame downloaded from a tracking server: its file's text,
what goes into a bundle."""
BUNDLED = "bundled"
"""The ``attrs`` key of a scores DataFrame taken from a bundle."""
SCORE_READERS = 8
"""Scores files read at once from a tracking server's artifact store: each read mostly waits on
its round trip. Local files are read one after the other (parsing holds the GIL: 8 threads
were 1.5x slower than one on 2,000 files)."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a bulk read builds objects: MLflow's ORM
    makes ~70 per run, and the collector's passes over a sweep's heap were over half of a
    10,000-run search (one page of 1,000 runs: 2.0 s with it, 0.8 s without). Nothing read
    there forms a cycle that must be freed before the read ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_scores(uri: str, run_id: str):
    """A run's per-image test scores as a DataFrame, or None when it has none (older runs) or
    it cannot be read now."""
    from mlflow.exceptions import MlflowException

    try:
        return runs_test_scores(uri, [(run_id, client(uri).get_run(run_id).info.artifact_uri)])[0]
    except (MlflowException, OSError):  # the run itself cannot be read
        return None


def runs_test_scores(
    uri: str, runs: Sequence[tuple[str, str]], bundled: Mapping[str, object] | None = None
) -> list:
    """:func:`test_scores` of many runs, each (run id, artifact root) as a search returns them
    (no run is looked up again): from ``bundled`` (run id -> scores, see
    :func:`bundled_test_scores`) where it holds the run, else read; from a tracking server,
    side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.exceptions import MlflowException

    no_download_progress()  # here, before the threads: see there
    bundled = bundled or {}

    def read(run: tuple[str, str], local: str | None):
        run_id, artifact_uri = run
        if run_id in bundled:
            return bundled[run_id]
        try:
            return _read_test_scores(uri, artifact_uri, local)
        except (MlflowException, OSError, ValueError):  # ValueError: a file pandas cannot parse
            return None

    local = [local_artifacts(artifact_uri) for _, artifact_uri in runs]
    if all(local):
        with gc_paused():
            return [read(*run) for run in zip(runs, local, strict=True)]
    with ThreadPoolExecutor(SCORE_READERS) as pool:
        return list(pool.map(read, runs, local))


def no_download_progress() -> None:
    """No progress bar for each scores file downloaded: a table reads thousands, whose bars
    would drown its output. Call it outside threads: setting the environment while another
    thread reads it (a DNS lookup) is not safe."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)


def local_artifacts(artifact_uri: str) -> str | None:
    """The folder of an artifact root on this machine's disk, or None (a tracking server's)."""
    from mlflow.utils.file_utils import get_local_path_or_none

    return get_local_path_or_none(artifact_uri)


def bundled_test_scores(uri: str, parents: Iterable[Run], wanted: Collection[str]) -> dict:
    """Trial run id -> scores of the ``wanted`` runs, from the :data:`SCORES_BUNDLE` of each of
    the ``parents`` whose artifacts are on a tracking server (nothing from one without a bundle
    yet, or whose bundle cannot be read now, whole); each DataFrame's ``attrs`` hold its file's
    text."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    no_download_progress()
    bundled = {}
    for parent in parents:
        if local_artifacts(parent.info.artifact_uri):  # never bundled: read in place instead
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="lightning_ad-bundle-") as tmp:
                path = download_artifacts(
                    artifact_uri=f"{parent.info.artifact_uri}/{SCORES_BUNDLE}",
                    dst_path=tmp,
                    tracking_uri=uri,
                )
                bundle = pd.read_parquet(path)
            with gc_paused():
                parsed = {
                    run_id: _parse_scores(text)
                    for run_id, text in zip(bundle["run_id"], bundle["csv"], strict=True)
                    if run_id in wanted
                }
        except (MlflowException, OSError, ValueError, KeyError):  # none, torn, or not ours
            continue
        for frame in parsed.values():
            frame.attrs[BUNDLED] = True
        bundled |= parsed
    return bundled


def log_scores_bundle(uri: str, run_id: str, scores: Iterable[tuple[str, object]]) -> None:
    """Log the downloaded ones of ``scores`` ((trial run id, its scores as read here, or None):
    those holding their file's text) as ``run_id``'s :data:`SCORES_BUNDLE`, unless each of them
    came from a bundle. Scores read from local disk carry no text: they are never bundled."""
    import pandas as pd

    frames = [(trial, frame) for trial, frame in scores if frame is not None]
    downloaded = [(trial, frame) for trial, frame in frames if SCORES_TEXT in frame.attrs]
    if all(frame.attrs.get(BUNDLED) for _, frame in downloaded):
        return
    rows = [(trial, frame.attrs[SCORES_TEXT]) for trial, frame in downloaded]
    with tempfile.TemporaryDirectory(prefix="lightning_ad-bundle-") as tmp:
        path = Path(tmp) / Path(SCORES_BUNDLE).name
        pd.DataFrame(rows, columns=["run_id", "csv"]).to_parquet(path, index=False)
        client(uri).log_artifact(run_id, str(path), artifact_path=str(Path(SCORES_BUNDLE).parent))


def _read_test_scores(uri: str, artifact_uri: str, local: str | None):
    """A run's scores file, read in place from the ``local`` folder of its artifact root
    (None: downloaded from the tracking server, its text kept for a bundle). Not cached: a
    sweep's worker that kept every run's scores grew by 60 MB more over 3,000 trials (B10);
    each reader (``table``, a description process) reads each run once."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts

    if local is not None:
        return pd.read_csv(Path(local) / SCORES_ARTIFACT)
    with tempfile.TemporaryDirectory(prefix="lightning_ad-scores-") as tmp:
        path = download_artifacts(
            artifact_uri=f"{artifact_uri}/{SCORES_ARTIFACT}", dst_path=tmp, tracking_uri=uri
        )
        return _parse_scores(Path(path).read_text(encoding="utf-8"))


def _parse_scores(text: str):
    """A scores file's DataFrame, its text kept in ``attrs`` (:data:`SCORES_TEXT`)."""
    import pandas as pd

    frame = pd.read_csv(io.StringIO(text))
    frame.attrs[SCORES_TEXT] = text
    return frame


def fail_orphan_runs(uri: str, experiment: str, study: str, trial_number: int) -> None:
    """Mark the run of a trial whose worker died FAILED instead of leaving it RUNNING."""
    query = (
        f"tags.`{STUDY_TAG}` = {_quoted(study)} and tags.`{TRIAL_TAG}` = '{trial_number}' "
        "and attributes.status = 'RUNNING'"
    )
    mlflow_client = client(uri)
    for run in search_all(uri, experiment, query):
        mlflow_client.set_terminated(run.info.run_id, "FAILED")


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
    its fingerprint stands for). Two sweeps started at the same moment
    may both create one; both then keep the older and the loser deletes its own."""
    experiment_id = ensure_experiment(experiment, uri)
    query = f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}' and tags.`{STUDY_TAG}` = {_quoted(study)}"

    def oldest() -> str | None:
        runs = search_all(uri, experiment, query)
        runs.sort(key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0].info.run_id if runs else None

    found = oldest()
    if found:
        return found
    mlflow_client = client(uri)
    run = mlflow_client.create_run(
        experiment_id, run_name=study, tags={ROLE_TAG: SWEEP_ROLE, STUDY_TAG: study, **tags}
    )
    for key, value in params.items():
        mlflow_client.log_param(run.info.run_id, key, value)
    mlflow_client.log_dict(run.info.run_id, dict(spec), "sweep.yaml")
    mlflow_client.log_dict(run.info.run_id, dict(settings), SETTINGS_ARTIFACT)
    winner = oldest()
    if winner != run.info.run_id:
        mlflow_client.delete_run(run.info.run_id)
    return winner


def sweep_parents(
    uri: str,
    experiment: str,
    sweep: str,
    category: str | None = None,
    fingerprint: str | None = None,
) -> list:
    """The parent runs of one sweep (one category's, one settings fingerprint's, when given),
    one per category and fingerprint, newest first."""
    query = f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}' and tags.`{SWEEP_TAG}` = {_quoted(sweep)}"
    if category:
        query += f" and tags.category = {_quoted(category)}"
    if fingerprint:
        query += f" and tags.`{FINGERPRINT_TAG}` = {_quoted(fingerprint)}"
    return search_all(uri, experiment, query, order_by=["attributes.start_time DESC"])


def parent_links(uri: str, base_url: str) -> list[str]:
    """A line per sweep parent run in the store, newest first: the sweep, its category, status
    and fingerprint, and the link that opens the run in the MLflow UI at ``base_url`` (in its
    model-training view: MLflow 3.17 starts in its GenAI view)."""
    mlflow_client = client(uri)
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        return []
    runs = mlflow_client.search_runs(
        experiments,
        f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}'",
        order_by=["attributes.start_time DESC"],
    )
    return [
        f"{run.data.tags.get(SWEEP_TAG, '?')} / {run.data.tags.get('category', '?')} "
        f"({run.info.status.lower()}, fingerprint {run.data.tags.get(FINGERPRINT_TAG, '?')}): "
        f"{base_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning"
        for run in runs
    ]


def parent_settings(uri: str, run_id: str) -> dict:
    """What a parent run's fingerprint stands for (its ``settings.json``)."""
    import json

    with tempfile.TemporaryDirectory(prefix="lightning_ad-settings-") as tmp:
        path = client(uri).download_artifacts(run_id, SETTINGS_ARTIFACT, tmp)
        return json.loads(Path(path).read_text())


def reopen(uri: str, run_id: str) -> None:
    """Set a run back to RUNNING (a sweep resumed or extended after it was closed)."""
    mlflow_client = client(uri)
    if mlflow_client.get_run(run_id).info.status != "RUNNING":
        mlflow_client.update_run(run_id, status="RUNNING")


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, tuple[float, int]]) -> None:
    """Metrics ``key -> (value, step)`` in one request (``log_batch``)."""
    if not metrics:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, step) for key, (value, step) in metrics.items()]
    client(uri).log_batch(run_id, metrics=batch)


@contextlib.contextmanager
def run_status(mlflow_client, run_id: str) -> Iterator[None]:
    """The status a trial's run ends with: FINISHED and ``COMPLETE_TAG`` when the block
    completes (so after its metrics and artifacts), KILLED on Ctrl-C, FAILED on anything else."""
    try:
        yield
        mlflow_client.set_tag(run_id, COMPLETE_TAG, "true")
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        mlflow_client.set_terminated(run_id, status)
        raise
    mlflow_client.set_terminated(run_id, "FINISHED")
