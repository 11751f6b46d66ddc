"""Where a sweep's study lives: Optuna's journal file by default, any Optuna storage URL
(PostgreSQL for many machines) when the caller names one; and the study over the grid."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna

from lightning_ad.errors import LightningADError, redact
from lightning_ad.sweep.spec import SweepTarget

DEFAULT_STORAGE = "mlruns/optuna.journal"


def open_storage(
    url: str | None,
    heartbeat: int = 60,
    on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """``None`` -> the journal file under ./mlruns; a path ending in .journal/.log -> a journal
    file there; anything else -> Optuna's RDB storage (sqlite:///..., postgresql+psycopg://...)
    whose trials beat every ``heartbeat`` seconds; ``on_stale`` is called once per trial found
    silent for three beats (the storage's row lock makes it exactly once across machines)."""
    if url is None or url.endswith((".journal", ".log")):
        path = Path(url or DEFAULT_STORAGE)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = optuna.storages.journal.JournalFileOpenLock(str(path))
        repair_journal(path, lock)
        backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock)
        return optuna.storages.JournalStorage(backend)
    if local_store(url) is not None:  # SQLite: the workers' file locks tell who is alive
        heartbeat, on_stale = None, None
    try:
        return _rdb_storage(url, heartbeat, on_stale)
    except Exception as err:  # SQLAlchemy raises many kinds; all mean "cannot use this URL"
        raise LightningADError(f"cannot open the Optuna storage {redact(url)}: {err}") from err


def repair_journal(path: Path, lock: optuna.storages.journal.BaseJournalFileLock) -> None:
    """Cut off a last line that a full disk or a power loss left half-written.

    Optuna writes every log line whole, ending in a newline. Its reader skips a torn last line,
    but only until the next append glues a new line onto it: from then on the journal cannot be
    read at all. So, under the journal's own lock, a last line without its newline is cut off,
    with a warning and a copy of the file as it was.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock.acquire()
    try:
        with path.open("rb+") as journal:
            journal.seek(-1, os.SEEK_END)
            if journal.read(1) == b"\n":
                return
            journal.seek(0)
            whole = journal.read().rfind(b"\n") + 1
            copy = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.copy2(path, copy)
            journal.truncate(whole)
    finally:
        lock.release()
    warnings.warn(
        f"{path}: its last line was cut short (a write interrupted by a full disk or a power "
        f"loss) and has been removed: at worst the trial it recorded runs again. Copy: {copy}",
        stacklevel=2,
    )


def _rdb_storage(url: str, heartbeat: int | None, on_stale) -> optuna.storages.RDBStorage:
    """Workers started together on a new database race to create Optuna's tables; the losers
    see "already exists" (IntegrityError / ProgrammingError) and simply try again."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def connect() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat if heartbeat else None,
                heartbeat_stale_trial_callback=on_stale,
            )

    for attempt in range(4):
        try:
            return connect()
        except (IntegrityError, ProgrammingError):
            time.sleep(1 + attempt)
    return connect()


def local_store(url: str | None) -> Path | None:
    """The file of a storage on this machine (a journal, a SQLite database), or None."""
    if url is None or url.endswith((".journal", ".log")):
        return Path(url or DEFAULT_STORAGE)
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def worker_locks(url: str | None) -> Path | None:
    """Where the workers of a local storage keep their locks (``liveness``), or None."""
    store = local_store(url)
    return store.with_name(store.name + ".workers") if store is not None else None


def load_study(target: SweepTarget) -> optuna.Study:
    """The study of ``target``. Its trials sample nothing: every cell is queued with
    ``enqueue_trial`` (``recovery.plan``), so the grid can grow without retraining anything
    (Optuna's GridSampler ignores the trials of another grid and would run every cell again)."""
    from lightning_ad.sweep.recovery import RequeueStaleTrial  # recovery builds on this module

    return optuna.create_study(
        study_name=target.study_name,
        storage=open_storage(target.storage, target.heartbeat, RequeueStaleTrial(target)),
        direction="maximize",
        load_if_exists=True,
    )
