"""The live view of a sweep (rich): trials done / total, running cells, elapsed, ETA, best AUC.

It reads the Optuna study every few seconds, so it shows the same whether one worker runs in
this process or many run elsewhere.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lightning_ad.grid import FROZEN_LABEL, NO_HEAD
from lightning_ad.sweep.recovery import SURPLUS_ATTR, cell_key, trial_cell
from lightning_ad.sweep.spec import SweepSpec

POLL_SECONDS = 2.0


class SweepProgress:
    """``with SweepProgress(title, spec, open_study): ...`` shows the sweep while the block runs.

    ``open_study`` opens the study on a connection of its own, so the view reads while workers
    write; the cells counted are ``spec``'s runnable ones (a study may hold others: a grid that
    shrank, another command's grid).
    """

    def __init__(
        self,
        title: str,
        spec: SweepSpec,
        open_study: Callable[[], optuna.Study],
        enabled: bool = True,
    ) -> None:
        self.cells = spec.runnable_keys
        self.total, self.open_study, self.enabled = len(self.cells), open_study, enabled
        self.progress = Progress(
            TextColumn(f"[bold]{title}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        )
        self.task = self.progress.add_task("trials", total=self.total, note="")
        self.details = Table.grid(padding=(0, 2))

    def __enter__(self) -> SweepProgress:
        if self.enabled:
            self._study = self.open_study()
            self.live = Live(
                Group(self.progress, self.details), refresh_per_second=2, transient=False
            )
            self.live.__enter__()
            self.refresh()
            self._stop = poll_in_background(POLL_SECONDS, self.refresh)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self.refresh()
            self.live.__exit__(*exc)

    def refresh(self) -> None:
        status = sweep_status(self._study, self.cells)
        finished = {_cell(t) for t in status["complete"]}
        done = len(finished)
        failed = len({_cell(t) for t in status["failed"]} - finished)
        self.progress.update(
            self.task,
            completed=min(done, self.total),
            note=f"[red]failed {failed}" if failed else "",
        )
        table = Table.grid(padding=(0, 2))
        for trial in status["running"]:
            table.add_row("[cyan]running", _describe(trial_cell(trial) or {}))
        best: dict[str, float] = defaultdict(lambda: float("-inf"))
        for trial in status["complete"]:
            cell = trial_cell(trial) or {}
            head = cell.get("head")
            label = FROZEN_LABEL if head == NO_HEAD else cell.get("classes", "?")
            best[label] = max(best[label], trial.value)
        if best:
            table.add_row(
                "[green]best AUC", "  ".join(f"{k}: {v:.3f}" for k, v in sorted(best.items()))
            )
        self.details = table
        if self.enabled:
            self.live.update(Group(self.progress, self.details))


def sweep_status(study: optuna.Study, cells: set[tuple]) -> dict[str, list[FrozenTrial]]:
    """The trials of ``cells`` by what they mean for the sweep (surplus ones mean nothing)."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if SURPLUS_ATTR not in t.user_attrs and cell_key(trial_cell(t)) in cells
    ]
    return {
        "complete": [t for t in trials if t.state == TrialState.COMPLETE],
        "failed": [t for t in trials if t.state == TrialState.FAIL],
        "running": [t for t in trials if t.state == TrialState.RUNNING],
    }


def poll_in_background(interval_s: float, callback: Callable[[], None]) -> threading.Event:
    """Call ``callback`` every ``interval_s`` in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            callback()

    threading.Thread(target=loop, daemon=True).start()
    return stop


def _cell(trial: FrozenTrial) -> tuple | None:
    return cell_key(trial_cell(trial))


def _describe(params: dict) -> str:
    return (
        " ".join(str(params.get(k, "?")) for k in ("category", "backbone", "head", "classes"))
        + f" seed {params.get('seed', '?')}"
    )
