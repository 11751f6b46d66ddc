"""The sweep's parent run: its description is rewritten mid-sweep by a process of its own."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import signal

import pytest

from lightning_ad import tracking
from lightning_ad.sweep.parent import DESCRIBER_NAME, Describer, SweepParent
from lightning_ad.sweep.runner import run_sweep
from lightning_ad.sweep.spec import SweepTarget
from tests.fakes import NoOpTrials

CELL = {"backbone": "resnet18", "head": "arcface", "classes": "class2", "seed": 0}


def describers() -> list[multiprocessing.process.BaseProcess]:
    """This process's description processes still running."""
    return [child for child in multiprocessing.active_children() if child.name == DESCRIBER_NAME]


class CountedStarts:
    """A describer factory that starts the real one and keeps each it started (picklable, as a
    parent run must be)."""

    def __init__(self) -> None:
        self.started: list[Describer] = []

    def __call__(self, target: SweepTarget, run_id: str) -> Describer:
        self.started.append(Describer.start(target, run_id))
        return self.started[-1]


@pytest.fixture
def due(target: SweepTarget) -> SweepTarget:
    """The quick sweep, its description due as soon as the last one ended."""
    return dataclasses.replace(target, describe_every_s=0.0)


@pytest.fixture
def starts() -> CountedStarts:
    return CountedStarts()


@pytest.fixture
def due_parent(due: SweepTarget, starts: CountedStarts) -> SweepParent:
    """The quick sweep's parent run, a description due after every trial."""
    return SweepParent.find_or_create(due, start_describer=starts)


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
    due_parent: SweepParent, starts: CountedStarts
) -> None:
    due_parent.trial_done(CELL, [0.75])
    due_parent.trial_done(CELL, [0.75, 0.8])  # running, or ended and not due for 10x its time
    assert len(starts.started) == 1
    pickle.dumps(due_parent)  # what a worker process gets: the run, not the process
    due_parent.stop_describing()
    assert not describers()


def test_a_sweep_ends_its_description_process(due: SweepTarget) -> None:
    """A description is due after the first trial; a spawned process takes seconds to import
    what it needs, so the next trial, milliseconds later, finds it running."""
    noop, seen = NoOpTrials(), []

    def watching(config, *args, **kwargs):
        seen.extend(process.pid for process in describers())
        return noop(config, *args, **kwargs)

    assert run_sweep(due, show_progress=False, train=watching).status.all_complete
    assert seen and not describers()
