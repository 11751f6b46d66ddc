"""The study of one sweep target: its trials are the grid's cells, queued by ``recovery``;
its storage is the process's one storage of the target's URL (``storage``)."""

from __future__ import annotations

import warnings

import optuna

from lightning_ad.sweep.recovery import RequeueStaleTrial
from lightning_ad.sweep.spec import SweepTarget
from lightning_ad.sweep.storage import rdb_backend, shared_storage

HEARTBEAT_ATTR = "heartbeat_s"
"""A study's user attribute on RDB storages: the seconds between its trials' heartbeats."""


def load_study(target: SweepTarget) -> optuna.Study:
    """The study of ``target``. Its trials sample nothing: every cell is queued with
    ``enqueue_trial`` (``recovery.plan``), so the grid can grow without retraining anything
    (Optuna's GridSampler ignores the trials of another grid and would run every cell again).

    The study lives in the process's one storage object of its URL (``shared_storage``). On an
    RDB storage the heartbeat interval is the study's (``HEARTBEAT_ATTR``), so that workers
    started with other ``--heartbeat`` values never fail each other's live trials.

    Args:
        target: the sweep's category, its storage URL and heartbeat.

    Returns:
        The study, created if missing.

    Raises:
        LightningADError: a storage that cannot be opened (named, its password redacted).
    """
    storage = shared_storage(target.storage, target.heartbeat, RequeueStaleTrial(target))
    study = optuna.create_study(
        study_name=target.study_name, storage=storage, direction="maximize", load_if_exists=True
    )
    _agree_on_heartbeat(study, target.heartbeat)
    return study


def _agree_on_heartbeat(study: optuna.Study, requested: int) -> None:
    backend = rdb_backend(study)
    if backend is None:
        return
    agreed = study.user_attrs.get(HEARTBEAT_ATTR)
    if agreed is None:  # the first worker of the study sets it
        study.set_user_attr(HEARTBEAT_ATTR, requested)
        agreed = requested
    if agreed != requested:
        warnings.warn(
            f"--heartbeat {requested} ignored: this study's trials beat every {agreed} s "
            "(the first worker's setting), and a worker with a shorter wait would fail the "
            "live trials of the others",
            stacklevel=2,
        )
    backend.heartbeat_interval, backend.grace_period = agreed, 3 * agreed
