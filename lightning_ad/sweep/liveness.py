"""Is a local trial's worker alive? Asked of the operating system, not of a hostname and a PID.

Every worker process on the local stores (a journal file, a SQLite file) holds an exclusive
``flock`` on a file of its own in ``<store>.workers/`` for as long as it lives, and writes that
file's name on each trial it takes. The kernel drops the lock when the process dies, however it
dies (SIGKILL, OOM killer, a container stopped), so a trial whose worker's lock is free is dead
for sure, whatever the hostname of the container that reruns the sweep or the PID it got.
PostgreSQL storages span machines, where a file lock proves nothing: there Optuna's heartbeats
tell (``storage``). The locks hold on local file systems and on NFSv4 (and v3 with lockd), whose
servers drop a dead client's locks after their lease; not on SMB/CIFS mounts without POSIX
locks, or object-store mounts (s3fs, gcsfuse), which have none.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import optuna

LOCK_ATTR = "worker_lock"
"""A trial's user attribute: the name of its worker's lock file."""
UNCLAIMED_GRACE_S = 60.0
"""A RUNNING trial without ``LOCK_ATTR``: its worker died between taking the trial and writing
the attribute (a few milliseconds), or is inside that window now. After this long, it died."""


class WorkerLock:
    """The lock a worker process holds while it lives (``with WorkerLock.held(folder)``)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.name = f"{uuid.uuid4().hex}.lock"
        self.path = folder / self.name
        self._file = self.path.open("w")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @classmethod
    @contextlib.contextmanager
    def held(cls, folder: Path | None) -> Iterator[WorkerLock | None]:
        """Hold a new lock in ``folder`` (None: a storage without local locks) until exit."""
        if folder is None:
            yield None
            return
        lock = cls(folder)
        try:
            yield lock
        finally:
            lock.path.unlink(missing_ok=True)
            lock._file.close()

    def claim(self, trial: optuna.Trial) -> None:
        """Mark ``trial`` as this worker's."""
        trial.set_user_attr(LOCK_ATTR, self.name)


def is_dead(
    folder: Path,
    trial: optuna.trial.FrozenTrial,
    flock: Callable[[IO[str], int], None] = fcntl.flock,
) -> bool:
    """Whether RUNNING ``trial`` of a local store has no living worker.

    Args:
        folder: the store's lock folder (``storage.worker_locks``).
        trial: a RUNNING trial; its ``LOCK_ATTR`` names its worker's lock file. Without one,
            it is dead once it started more than ``UNCLAIMED_GRACE_S`` ago.
        flock: how a lock is asked for (``fcntl.flock``). The file system decides what it
            demands of the descriptor (NFS: a writable one), so a test can stand in for one.

    Returns:
        True when no process holds the trial's lock (its file is free or gone).
    """
    name = trial.user_attrs.get(LOCK_ATTR)
    if name is None:
        started = trial.datetime_start or datetime.datetime.now()
        return (datetime.datetime.now() - started).total_seconds() > UNCLAIMED_GRACE_S
    return not _is_held(folder / str(name), flock)


def _is_held(path: Path, flock: Callable[[IO[str], int], None]) -> bool:
    try:
        # Read-write: on NFS flock is emulated with byte-range locks, and an exclusive one on a
        # read-only descriptor is EBADF. "r+" neither creates nor truncates the worker's file;
        # one we may not write (another user's) is asked read-only, as local disks allow.
        with _opened(path) as file:
            flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes
    except FileNotFoundError:
        return False  # the worker ended and removed it
    except BlockingIOError:
        return True
    return False


def _opened(path: Path) -> IO[str]:
    try:
        return path.open("r+")
    except PermissionError:
        return path.open("r")
