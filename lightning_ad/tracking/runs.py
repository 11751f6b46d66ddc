"""The queries that read a sweep's runs back: its complete trial runs, its parent runs, and
what a parent run's fingerprint stands for."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_ad.tracking.store import client, quoted, search_all, search_pages
from lightning_ad.tracking.tags import (
    COMPLETE_TAG,
    FINGERPRINT_TAG,
    ROLE_TAG,
    SELECTED_TAG,
    SWEEP_ROLE,
    SWEEP_TAG,
    TRIAL_ROLE,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

SETTINGS_ARTIFACT = "settings.json"
"""A parent run's settings: what its fingerprint stands for."""


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
        f"tags.`{SWEEP_TAG}` = {quoted(sweep)} and tags.`{ROLE_TAG}` = '{TRIAL_ROLE}' "
        f"and tags.`{FINGERPRINT_TAG}` = {quoted(fingerprint)} "
        f"and tags.`{COMPLETE_TAG}` = 'true' and attributes.status = 'FINISHED'"
    )
    if category:
        query += f" and params.category = {quoted(category)}"
    for page in search_pages(uri, experiment, query, order_by=["attributes.end_time ASC"]):
        yield from (run for run in page if run.data.tags.get(SELECTED_TAG) != "false")


def sweep_parents(
    uri: str,
    experiment: str,
    sweep: str,
    category: str | None = None,
    fingerprint: str | None = None,
) -> list:
    """The parent runs of one sweep (one category's, one settings fingerprint's, when given),
    one per category and fingerprint, newest first."""
    query = f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}' and tags.`{SWEEP_TAG}` = {quoted(sweep)}"
    if category:
        query += f" and tags.category = {quoted(category)}"
    if fingerprint:
        query += f" and tags.`{FINGERPRINT_TAG}` = {quoted(fingerprint)}"
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
    with tempfile.TemporaryDirectory(prefix="lightning_ad-settings-") as tmp:
        path = client(uri).download_artifacts(run_id, SETTINGS_ARTIFACT, tmp)
        return json.loads(Path(path).read_text())
