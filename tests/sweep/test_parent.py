"""The sweep's parent run: its description is rewritten mid-sweep by a process of its own."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from lightning_ad import tracking
from lightning_ad.sweep import parent as parent_module
from lightning_ad.sweep.parent import SweepParent
from lightning_ad.sweep.recovery import GridStatus
from lightning_ad.sweep.spec import SweepTarget

CELL = {"backbone": "resnet18", "head": "arcface", "classes": "class2", "seed": 0}


def describers() -> list[multiprocessing.process.BaseProcess]:
    return [child for child in multiprocessing.active_children() if child.name == "describe"]


@pytest.fixture
def due_parent(target: SweepTarget, monkeypatch: pytest.MonkeyPatch) -> SweepParent:
    """The quick sweep's parent run, its description due after every trial."""
    monkeypatch.setattr(parent_module, "DESCRIBE_EVERY_S", 0.0)
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
    assert "screw" in run.data.tags[tracking.NOTE_TAG]
    assert run.data.metrics == {"median_auc/resnet18/arcface/class2": 0.75}
    assert not describers()


def test_the_sweep_end_stops_a_description_process_still_running(
    due_parent: SweepParent,
) -> None:
    due_parent.trial_done(CELL, [0.75])
    assert describers()
    due_parent.close(GridStatus(cells=1, complete=1, running=0, failed={}), interrupted=False)
    assert not describers()
