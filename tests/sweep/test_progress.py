"""The live view of a sweep, read from a study in memory: what it counts (cells done of the
grid's, failed ones not done since), what it lists (running cells, the best AUC per class set)
and what it leaves out (surplus trials, other grids' cells)."""

from __future__ import annotations

import io
import threading
import time

import optuna
import pytest
from rich.console import Console

from lightning_ad.sweep.progress import SweepProgress, poll_in_background, sweep_status
from lightning_ad.sweep.recovery import CELL_ATTR, SURPLUS_ATTR, trial_cell
from lightning_ad.sweep.spec import SweepSpec
from tests.helpers import QUICK_FINISHED, SWEEPS

SPEC = SweepSpec.load(SWEEPS / "quick.yaml").with_category("screw")
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


def _cell(head: str, classes: str, seed: int) -> dict:
    [cell] = [
        c
        for c in SPEC.runnable_cells()
        if (c["head"], c["classes"], c["seed"]) == (head, classes, seed)
    ]
    return cell


def _finished(study: optuna.Study, cell: dict, state=COMPLETE, value=None, **attrs) -> None:
    study.add_trial(
        optuna.trial.create_trial(state=state, value=value, user_attrs={CELL_ATTR: cell, **attrs})
    )


def _running(study: optuna.Study, cell: dict) -> None:
    study.enqueue_trial(cell)
    study.ask()


def _rendered(view: SweepProgress) -> str:
    """The view as a terminal shows it, each line's runs of spaces (column padding) as one."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(view.progress)
    console.print(view.details)
    return "\n".join(" ".join(line.split()) for line in console.file.getvalue().splitlines())


@pytest.fixture
def study() -> optuna.Study:
    """Two cells complete, one failed, one running, and trials the view must ignore."""
    study = optuna.create_study(direction="maximize")
    _finished(study, _cell("arcface", "class3", 0), value=0.8)
    _finished(study, _cell("none", "class2", 0), value=0.7)
    _finished(study, _cell("arcface", "class2", 0), state=FAIL)
    _running(study, _cell("arcface", "class2", 1))
    _finished(study, _cell("arcface", "class3", 1), value=0.99, **{SURPLUS_ATTR: "taken"})
    _finished(study, {**_cell("arcface", "class3", 0), "seed": 99}, value=0.95)  # another grid
    study.add_trial(optuna.trial.create_trial(value=0.5))  # not a cell at all
    study.enqueue_trial(_cell("adacos", "class3", 0))  # queued: neither done nor running
    return study


def test_the_status_groups_the_grids_trials_and_ignores_the_rest(study: optuna.Study) -> None:
    status = sweep_status(study, SPEC.runnable_keys)
    assert {group: [trial_cell(t) for t in trials] for group, trials in status.items()} == {
        "complete": [_cell("arcface", "class3", 0), _cell("none", "class2", 0)],
        "failed": [_cell("arcface", "class2", 0)],
        "running": [_cell("arcface", "class2", 1)],
    }


def test_the_view_counts_done_cells_and_shows_running_ones_and_the_best_auc(
    study: optuna.Study, capsys: pytest.CaptureFixture
) -> None:
    with SweepProgress("quick-screw", SPEC, lambda: study) as view:
        pass
    shown = _rendered(view)
    assert f"2/{QUICK_FINISHED}" in shown and "failed 1" in shown
    assert "running screw mobilenet_v2 arcface class2 seed 1" in shown.splitlines()
    assert "best AUC class3: 0.800 frozen: 0.700" in shown.splitlines()  # not 0.99 or 0.95
    assert f"2/{QUICK_FINISHED}" in capsys.readouterr().out  # what the terminal was left with


def test_a_failed_cell_that_completed_since_counts_as_done_not_failed() -> None:
    study = optuna.create_study(direction="maximize")
    cell = _cell("arcface", "class2", 0)
    _finished(study, cell, state=FAIL)
    _finished(study, cell, value=0.6)
    with SweepProgress("quick-screw", SPEC, lambda: study) as view:
        pass
    shown = _rendered(view)
    assert f"1/{QUICK_FINISHED}" in shown and "failed" not in shown and "running" not in shown
    assert "best AUC class2: 0.600" in shown.splitlines()


def test_each_refresh_reads_the_study_again(study: optuna.Study) -> None:
    """Other processes write the study while the view shows it."""
    with SweepProgress("quick-screw", SPEC, lambda: study) as view:
        assert f"2/{QUICK_FINISHED}" in _rendered(view)
        _finished(study, _cell("arcface", "class2", 0), value=0.9)  # the failed cell, rerun
        view.refresh()
        shown = _rendered(view)
    assert f"3/{QUICK_FINISHED}" in shown and "failed" not in shown
    assert "class2: 0.900" in shown


def test_a_disabled_view_opens_no_study_and_prints_nothing(
    capsys: pytest.CaptureFixture,
) -> None:
    def never() -> optuna.Study:
        raise AssertionError("the study was opened")

    with SweepProgress("quick-screw", SPEC, never, enabled=False):
        pass
    assert capsys.readouterr().out == ""


def test_polling_calls_back_until_stopped() -> None:
    calls, third = [], threading.Event()

    def callback() -> None:
        calls.append(time.monotonic())
        if len(calls) == 3:
            third.set()

    stop = poll_in_background(0.01, callback)
    assert third.wait(timeout=5)
    stop.set()
    time.sleep(0.05)  # a call already under way ends
    stopped_at = len(calls)
    time.sleep(0.1)
    assert len(calls) == stopped_at
