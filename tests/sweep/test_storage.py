"""Optuna storages: the journal by default, any URL on request, one clear error when not."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import optuna
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from lightning_ad.errors import LightningADError
from lightning_ad.sweep.spec import SweepTarget
from lightning_ad.sweep.storage import RDB_POOL, open_storage
from lightning_ad.sweep.study import load_study


def test_unreachable_storage_is_one_clear_error() -> None:
    with pytest.raises(
        LightningADError,
        match=r"cannot open the Optuna storage postgresql\+psycopg://me:\*\*\*@127.0.0.1:9/x",
    ):
        open_storage("postgresql+psycopg://me:secret@127.0.0.1:9/x")


def test_a_torn_last_journal_line_is_cut_off_and_the_study_stays_readable(tmp_path) -> None:
    """A write cut short by a full disk or a power loss: without the repair, the next append
    glues onto the torn line and the journal can no longer be read."""
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code":4,"worker_id":"w","trial_id":')  # no newline

    with pytest.warns(UserWarning, match=r"torn record \(the last line\)"):
        storage = open_storage(str(path))
    assert path.read_bytes() == whole
    [copy] = tmp_path.glob("optuna.journal.torn-*")
    assert copy.read_bytes().endswith(b'"trial_id":')
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    reread = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert [t.state.name for t in reread.trials] == ["COMPLETE"] * 3


def test_an_intact_journal_is_left_as_it_is(tmp_path) -> None:
    path = tmp_path / "optuna.journal"
    optuna.create_study(study_name="s", storage=open_storage(str(path))).optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=1
    )
    before = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_storage(str(path))
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_a_torn_line_glued_to_a_later_append_is_repaired_where_it_is(tmp_path) -> None:
    """A torn write that another worker appended after (before anyone repaired it): the glued
    line holds the torn bytes and then a whole record; Optuna cannot read past it."""
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    lines = path.read_bytes().splitlines(keepends=True)
    head, rest = b"".join(lines[:-2]), b"".join(lines[-2:])  # more appends after the glued one
    path.write_bytes(head + b'{"op_code":4,"worker_id":"w","trial_id":' + rest)
    with pytest.raises(ValueError):  # what a worker sees without the repair
        optuna.load_study(
            study_name="s",
            storage=optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(path))
            ),
        )

    with pytest.warns(UserWarning, match=rf"torn record \(line {len(lines) - 1}\)"):
        storage = open_storage(str(path))
    assert path.read_bytes() == head + rest
    reread = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in reread.trials] == ["COMPLETE"] * 2


def test_a_line_that_is_no_record_is_refused_with_its_number(tmp_path) -> None:
    path = tmp_path / "optuna.journal"
    optuna.create_study(study_name="s", storage=open_storage(str(path)))
    path.write_bytes(path.read_bytes() + b"edited by hand\n")
    lines = len(path.read_bytes().splitlines())
    with pytest.raises(LightningADError, match=rf"line {lines}: not an Optuna journal record.*sed"):
        open_storage(str(path))


def test_a_process_opens_one_storage_per_url(target: SweepTarget) -> None:
    """The planner, the worker, the progress view and every category share one storage (on
    PostgreSQL: one engine, one pool of ``RDB_CONNECTIONS``)."""
    database = Path(f"{target.reports_dir}-optuna.db")
    rdb = dataclasses.replace(target, storage=f"sqlite:///{database}")
    grid = dataclasses.replace(rdb, category="grid")  # another study in the same storage
    engines = set()

    def connected(connection) -> None:  # every connection any engine of this database makes
        if Path(connection.engine.url.database).resolve() == database.resolve():
            engines.add(connection.engine)

    event.listen(Engine, "engine_connect", connected)
    try:
        first, second = load_study(rdb), load_study(grid)
        first.enqueue_trial({"seed": 0})  # a write through each
        second.enqueue_trial({"seed": 1})
        assert len(load_study(rdb).get_trials()) == len(second.get_trials()) == 1
    finally:
        event.remove(Engine, "engine_connect", connected)
    assert first.study_name != second.study_name
    [engine] = engines  # one engine served both studies and the second load
    assert engine.pool.size() == RDB_POOL["pool_size"]
