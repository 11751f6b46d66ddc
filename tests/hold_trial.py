"""``lightning-ad`` in which one training trial holds still until the process is signalled.

Usage: ``python tests/hold_trial.py MARKER N [RELEASE] -- <lightning-ad arguments>``. The ``N``-th
trial that trains (1-based, counted in this process) writes ``MARKER`` when its first epoch starts
and then waits: for a signal, or until the file ``RELEASE`` exists, when given (then it trains
on). A test that sends a signal "in the middle of a trial" waits for ``MARKER`` first: the
signal then always lands inside a running trial, however fast the machine, instead of racing it.
Nothing else changes: the trial runs inside the real Trainer, sweep and CLI. Only trials of
this process hold: not those of ``--workers N`` processes.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

from lightning_ad import cli
from lightning_ad.grid import NO_HEAD
from lightning_ad.sweep import runner
from lightning_ad.train import TrialResult, run_trial

HOLD_SECONDS = 600
"""A bound, so that a test that never sends its signal fails instead of hanging CI."""


class HoldTraining(pl.Callback):
    def __init__(self, marker: Path, release: Path | None) -> None:
        self.marker, self.release = marker, release

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Written whole, then renamed: a test that kills us as soon as the file exists must
        # never read it half-written.
        partial = self.marker.with_name(self.marker.name + ".partial")
        partial.write_text(str(trainer.logger.run_id))
        partial.rename(self.marker)
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:  # the signal ends this wait
            if self.release is not None and self.release.exists():
                return
            time.sleep(0.1)
        raise RuntimeError(f"hold_trial: no signal came within {HOLD_SECONDS} s")


class HoldNthTraining:
    """A trial runner: ``train.run_trial``, whose ``n``-th training trial (1-based) in the
    process that made it holds in its first epoch (``HoldTraining``). A ``--workers`` process
    gets a pickled copy, whose trials never hold."""

    def __init__(self, marker: Path, n: int, release: Path | None = None) -> None:
        self.marker, self.n, self.release = marker, n, release
        self.started, self.pid = 0, os.getpid()

    def __call__(self, config, *args, callbacks=None, **kwargs) -> TrialResult:
        if config.head != NO_HEAD and os.getpid() == self.pid:
            self.started += 1
            if self.started == self.n:
                callbacks = [*(callbacks or []), HoldTraining(self.marker, self.release)]
        return run_trial(config, *args, callbacks=callbacks, **kwargs)


def hold_nth_training_trial(marker: Path, n: int, release: Path | None = None) -> None:
    """Make the ``n``-th training trial of this process hold (see the module docstring)."""
    # The command line takes no trial runner; it looks ``run_sweep`` up in ``runner`` when the
    # sweep command runs, so this one, with the holding runner bound, is the one it calls.
    hold = HoldNthTraining(marker, n, release)
    runner.run_sweep = functools.partial(runner.run_sweep, train=hold)


if __name__ == "__main__":
    marker, n, *rest = sys.argv[1:]
    separator = rest.index("--")
    release = Path(rest[0]) if separator == 1 else None
    hold_nth_training_trial(Path(marker), int(n), release)
    arguments = rest[separator + 1 :]
    sys.exit(cli.main(arguments))
