"""A local trial's worker is alive exactly while its lock file is held, on any file system the
README names for the journal and the locks (NFS included)."""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
from pathlib import Path

import optuna
import pytest

from lightning_ad.sweep.liveness import LOCK_ATTR, UNCLAIMED_GRACE_S, WorkerLock, is_dead

LOCAL_FLOCK = fcntl.flock


def _nfs_flock(file, operation: int) -> None:
    """flock as NFS clients run it: a byte-range lock, which needs a writable descriptor."""
    writable = fcntl.fcntl(file.fileno(), fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    if operation & fcntl.LOCK_EX and not writable:
        raise OSError(errno.EBADF, "Bad file descriptor")
    LOCAL_FLOCK(file, operation)


def _running(lock_name: str | None = None, started_s_ago: float = 0.0) -> optuna.trial.FrozenTrial:
    """A RUNNING trial, claimed with ``lock_name`` (None: its worker never wrote one), that
    started ``started_s_ago`` seconds ago."""
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        user_attrs={} if lock_name is None else {LOCK_ATTR: lock_name},
    )
    trial.datetime_start = datetime.datetime.now() - datetime.timedelta(seconds=started_s_ago)
    return trial


@pytest.mark.parametrize("flock", [LOCAL_FLOCK, _nfs_flock], ids=["local", "nfs"])
def test_a_held_lock_is_alive_and_a_released_one_is_dead(tmp_path: Path, flock) -> None:
    with WorkerLock.held(tmp_path) as lock:
        assert not is_dead(tmp_path, _running(lock.name), flock=flock)
        assert not is_dead(tmp_path, _running(lock.name), flock=flock)  # asking let it go
        assert lock.path.read_text() == ""  # asking did not truncate or write the file
    assert is_dead(tmp_path, _running(lock.name), flock=flock)  # its file removed at exit
    (tmp_path / "stale.lock").touch()  # a worker killed before it could remove its file
    assert is_dead(tmp_path, _running("stale.lock"), flock=flock)


def test_a_lock_file_this_process_may_not_write_is_asked_read_only(tmp_path: Path) -> None:
    """Another user's worker: its file opens read-only, which a local flock accepts."""
    with WorkerLock.held(tmp_path) as lock:
        lock.path.chmod(0o444)
        assert not is_dead(tmp_path, _running(lock.name))
    (tmp_path / "theirs.lock").touch(mode=0o444)
    assert is_dead(tmp_path, _running("theirs.lock"))


def test_the_lock_ends_with_its_block_even_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), WorkerLock.held(tmp_path) as lock:
        raise RuntimeError("the worker failed")
    assert not lock.path.exists() and is_dead(tmp_path, _running(lock.name))


def test_no_folder_holds_no_lock() -> None:
    """RDB storages: the trials' heartbeats tell who is alive."""
    with WorkerLock.held(None) as lock:
        assert lock is None


def test_a_lock_claims_the_trials_of_its_worker(tmp_path: Path) -> None:
    study = optuna.create_study()
    with WorkerLock.held(tmp_path) as lock:
        lock.claim(study.ask())
        [trial] = study.get_trials()
        assert trial.user_attrs[LOCK_ATTR] == lock.name
        assert not is_dead(tmp_path, trial)
    assert is_dead(tmp_path, trial)


@pytest.mark.parametrize(
    ("started_s_ago", "dead"),
    [(0.0, False), (UNCLAIMED_GRACE_S - 5, False), (UNCLAIMED_GRACE_S + 5, True)],
    ids=["just taken", "inside the grace", "past the grace"],
)
def test_an_unclaimed_trial_is_dead_once_the_grace_has_passed(
    tmp_path: Path, started_s_ago: float, dead: bool
) -> None:
    """Its worker died between taking it and writing its lock's name (or is doing so now)."""
    assert is_dead(tmp_path, _running(None, started_s_ago)) is dead
