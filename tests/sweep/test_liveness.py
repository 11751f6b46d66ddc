"""A local trial's worker is alive exactly while its lock file is held, on any file system the
README names for the journal and the locks (NFS included)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from lightning_ad.sweep import liveness
from lightning_ad.sweep.liveness import WorkerLock, is_dead

LOCAL_FLOCK = fcntl.flock


def _nfs_flock(file, operation: int) -> None:
    """flock as NFS clients run it: a byte-range lock, which needs a writable descriptor."""
    writable = fcntl.fcntl(file.fileno(), fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    if operation & fcntl.LOCK_EX and not writable:
        raise OSError(errno.EBADF, "Bad file descriptor")
    LOCAL_FLOCK(file, operation)


def _trial_of(lock_name: str) -> SimpleNamespace:
    """What ``is_dead`` reads of a RUNNING trial: the lock its worker claimed it with."""
    return SimpleNamespace(user_attrs={liveness.LOCK_ATTR: lock_name}, datetime_start=None)


@pytest.mark.parametrize("flock", [LOCAL_FLOCK, _nfs_flock], ids=["local", "nfs"])
def test_a_held_lock_is_alive_and_a_released_one_is_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flock
) -> None:
    monkeypatch.setattr(liveness.fcntl, "flock", flock)
    with WorkerLock.held(tmp_path) as lock:
        assert not is_dead(tmp_path, _trial_of(lock.name))
        assert lock.path.read_text() == ""  # asking did not truncate or write the file
    assert is_dead(tmp_path, _trial_of(lock.name))  # its file removed at exit
    (tmp_path / "stale.lock").touch()  # a worker killed before it could remove its file
    assert is_dead(tmp_path, _trial_of("stale.lock"))
