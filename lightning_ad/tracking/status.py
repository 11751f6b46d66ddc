"""How a trial's run ends: FINISHED and complete, KILLED or FAILED, and the runs of trials
whose worker died marked FAILED instead of left RUNNING."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lightning_ad.tracking.store import client, quoted, search_all
from lightning_ad.tracking.tags import COMPLETE_TAG, STUDY_TAG, TRIAL_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient


@contextlib.contextmanager
def run_status(mlflow_client: MlflowClient, run_id: str) -> Iterator[None]:
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


def fail_orphan_runs(uri: str, experiment: str, study: str, trial_number: int) -> None:
    """Mark the run of a trial whose worker died FAILED instead of leaving it RUNNING."""
    query = (
        f"tags.`{STUDY_TAG}` = {quoted(study)} and tags.`{TRIAL_TAG}` = '{trial_number}' "
        "and attributes.status = 'RUNNING'"
    )
    mlflow_client = client(uri)
    for run in search_all(uri, experiment, query):
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
