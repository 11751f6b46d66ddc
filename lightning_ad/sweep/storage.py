"""Where a sweep's study lives: Optuna's journal file by default, any Optuna storage URL
(PostgreSQL for many machines) when the caller names one, opened once per process."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna

from lightning_ad.errors import LightningADError, redact

DEFAULT_STORAGE = "mlruns/optuna.journal"
RDB_POOL = {"pool_size": 2, "max_overflow": 2}
"""SQLAlchemy's pool of a process's one RDB storage: the main thread and the heartbeat thread
each hold a connection while they use it, and at most two are kept open between uses (the
progress view's thread may borrow a third for a moment). So a worker process holds at most 2
PostgreSQL connections at rest and 4 at once (``RDB_CONNECTIONS``): 40 workers use 80 of
PostgreSQL's default ``max_connections`` of 100 at rest."""
RDB_CONNECTIONS = RDB_POOL["pool_size"] + RDB_POOL["max_overflow"]
_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


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
    """Remove what a write cut short by a full disk or a power loss left in the journal.

    Optuna writes every log line whole, ending in a newline. Its reader skips a torn last line,
    but the next append glues its own first line onto the torn one, and from that line on the
    journal cannot be read at all. No reader ever applied a torn record, so dropping it agrees
    with what every worker saw: under the journal's own lock, a torn last line is cut off and a
    glued line keeps only the whole record that follows the torn bytes, with a warning and a copy
    of the file as it was.

    Raises:
        LightningADError: a line that is not a record and holds none (not a torn write), named
            by its number, with what to do.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock.acquire()
    try:
        *lines, tail = path.read_bytes().split(b"\n")
        repaired = [_whole_record(path, number, line) for number, line in enumerate(lines, 1)]
        changed = [
            n for n, (old, new) in enumerate(zip(lines, repaired, strict=True), 1) if old != new
        ]
        if not tail and not changed:
            return
        copy = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, copy)
        staging = path.with_name(path.name + ".repairing")
        staging.write_bytes(b"".join(line + b"\n" for line in repaired))
        os.replace(staging, path)
    finally:
        lock.release()
    where = [f"line {n}" for n in changed] + (["the last line"] if tail else [])
    warnings.warn(
        f"{path}: a write interrupted by a full disk or a power loss left a torn record "
        f"({', '.join(where)}); it has been removed: at worst the trial it recorded runs "
        f"again. Copy: {copy}",
        stacklevel=2,
    )


def _whole_record(path: Path, number: int, line: bytes) -> bytes:
    """``line`` if it is one JSON record, else the whole record glued after torn bytes."""
    if _is_record(line):
        return line
    start = line.find(b"{", 1)
    while start != -1:
        if _is_record(line[start:]):
            return line[start:]
        start = line.find(b"{", start + 1)
    raise LightningADError(
        f"{path}, line {number}: not an Optuna journal record, and not a torn write either "
        f"(was the file edited?). Keep a copy, delete that line (sed -i '{number}d' {path}) "
        "and rerun: at worst the trials it recorded run again."
    )


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _rdb_storage(url: str, heartbeat: int | None, on_stale) -> optuna.storages.RDBStorage:
    """Workers started together on a new database race to create Optuna's tables; the losers
    see "already exists" (IntegrityError / ProgrammingError) and simply try again."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def connect() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=RDB_POOL,
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


def shared_storage(
    url: str | None,
    heartbeat: int = 60,
    on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """``open_storage(url, ...)``, opened once per process and URL: the planner, the worker, the
    progress view, every category of a command and the cells' inner search studies share it,
    so on PostgreSQL a process holds one engine and one pool (``RDB_POOL``). Each call sets the
    stale-trial callback of the study being loaded (its heartbeat: ``_agree_on_heartbeat``)."""
    key = _storage_key(url)
    if key not in _STORAGES:
        _STORAGES[key] = open_storage(key if local_store(url) else url, heartbeat, on_stale)
    storage = _STORAGES[key]
    if isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval:
        storage.heartbeat_stale_trial_callback = on_stale
    return storage


def close_storages() -> None:
    """Forget the process's shared storages, closing their connections."""
    for storage in _STORAGES.values():
        if isinstance(storage, optuna.storages.RDBStorage):
            storage.engine.dispose()
    _STORAGES.clear()


def _storage_key(url: str | None) -> str:
    """A local store by its absolute path (a later ``chdir`` must not move it), else the URL."""
    store = local_store(url)
    if store is None:
        return str(url)
    path = str(store.resolve())
    return path if url is None or not url.startswith("sqlite:///") else f"sqlite:///{path}"


def rdb_backend(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage with heartbeats (Optuna wraps it in a cache), or None."""
    backend = getattr(study._storage, "_backend", study._storage)
    if isinstance(backend, optuna.storages.RDBStorage) and backend.heartbeat_interval:
        return backend
    return None


def trials_with_heartbeat(backend: optuna.storages.RDBStorage, trial_ids: list[int]) -> set[int]:
    """Which of ``trial_ids`` have sent a heartbeat. Optuna's stale-trial check skips trials
    that never did (a worker that died between taking a trial and its first beat), so the
    caller must find those itself; Optuna has no public reader of the heartbeat table."""
    from optuna.storages._rdb import models
    from sqlalchemy.orm import Session

    beat = models.TrialHeartbeatModel.trial_id
    with Session(backend.engine) as session:
        return {row[0] for row in session.query(beat).filter(beat.in_(trial_ids))}
