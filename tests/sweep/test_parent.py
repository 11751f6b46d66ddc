"""The sweep's parent run: its description is rewritten mid-sweep by a process of its own."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal

import pytest

from lightning_ad import tracking
from lightning_ad.sweep import parent as parent_module
from lightning_ad.sweep.parent import DESCRIBER_NAME, SweepParent
from lightning_ad.sweep.runner import run_sweep
from lightning_ad.sweep.spec import SweepTarget
from tests.fakes import NoOpTrials

CELL = {"backbone": "resnet18", "head": "arcface", "classes": "class2", "seed": 0}


def describers() -> list[multiprocessing.process.BaseProcess]:
    """This process's description processes still running."""
    return [child for child in multiprocessing.active_children() if child.name == DESCRIBER_NAME]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every description process started, each due as soon as the last one ended."""
    monkeypatch.setattr(parent_module, "DESCRIBE_EVERY_S", 0.0)
    starts, start = [], parent_module._Describer.start

    def counted(*args):
        starts.append(start(*args))
        return starts[-1]

    monkeypatch.setattr(parent_module._Describer, "start", counted)
    return starts


@pytest.fixture
def due_parent(target: SweepTarget, started: list) -> SweepParent:
    """The quick sweep's parent run, a description due after every trial."""
    return SweepParent.find_or_create(target)


def test_a_description_process_ignores_ctrl_c_and_writes_the_overview(
    due_parent: SweepParent,
) -> None:
    due_parent.trial_done(CELL, [0.75])
    [describer] = describers()
    os.kill(describer.pid, signal.SIGINT)  # as Ctrl-C reaches the terminal's process group
    describer.join(timeout=120)
    assert describer.exitcode == 0
    run = tracking.client(due_parent.target.tracking_uri).get_run(due_parent.run_id)
    overview = run.data.tags[tracking.NOTE_TAG]
    assert overview.startswith("### Verdict") and "**quick**: 0 finished trials." in overview


def test_one_description_process_runs_at_a_time_and_stays_with_its_process(
    due_parent: SweepParent, started: list
) -> None:
    due_parent.trial_done(CELL, [0.75])
    due_parent.trial_done(CELL, [0.75, 0.8])  # running, or ended and not due for 10x its time
    assert len(started) == 1
    pickle.dumps(due_parent)  # what a worker process gets: the run, not the process
    due_parent.stop_describing()
    assert not describers()


def test_a_sweep_ends_its_description_process(target: SweepTarget, started: list) -> None:
    assert run_sweep(target, show_progress=False, train=NoOpTrials()).status.all_complete
    assert started and not describers()
