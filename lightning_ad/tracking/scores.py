"""Each trial's per-image test scores file, read in place from a local store or downloaded
from a tracking server, and the bundle of them a parent run keeps for readers."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_ad.tracking.store import client, gc_paused

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run

SCORES_ARTIFACT = "scores/test_scores.csv"
"""Every trial's per-image test scores (image, defect, label, one column per scorer): what a
paired test of two trials on the same images reads. Written once, by ``train``: a run's file
never changes, which the bundle relies on."""
SCORES_BUNDLE = "scores/trials_test_scores.v1.parquet"
"""On a parent run whose artifacts are on a tracking server: its trial runs' scores files as
logged, one row each (``run_id``, ``csv``: the file's text), logged by the rewrites of its
description when it holds new runs, so that a reader downloads one file for the runs it
holds, not one round trip per run (``docs/design-notes.md``). ``v1``: the format."""
SCORES_TEXT = "csv"
"""The ``attrs`` key of a scores DataFrame downloaded from a tracking server: its file's text,
what goes into a bundle."""
BUNDLED = "bundled"
"""The ``attrs`` key of a scores DataFrame taken from a bundle."""
SCORE_READERS = 8
"""Scores files read at once from a tracking server's artifact store: each read mostly waits on
its round trip. Local files are read one after the other: parsing holds the GIL, so threads
only slow it down (``docs/design-notes.md``)."""


def test_scores(uri: str, run_id: str) -> pd.DataFrame | None:
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
    (None: downloaded from the tracking server, its text kept for a bundle). Not cached: each
    reader (``table``, a description process) reads each run once, and a sweep's worker that
    kept every run's scores would grow with the sweep (``docs/design-notes.md``)."""
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
