"""Ctrl-C and SIGTERM (``docker stop``, a batch scheduler's preemption) end a command the same
way: the running trial's MLflow run KILLED, its Optuna trial FAIL (the next run retries it), the
sweep's parent run KILLED. Only the exit status tells them apart: 130 and 143, as a shell
reports a process ended by SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGINT_STATUS = 130
SIGTERM_STATUS = 143
_received_sigterm = False


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While open, SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does; the
    previous handler comes back on exit."""
    global _received_sigterm
    _received_sigterm = False
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    global _received_sigterm
    _received_sigterm = True
    raise KeyboardInterrupt


def received_sigterm() -> bool:
    """Whether the interruption being handled came from SIGTERM (not Ctrl-C)."""
    return _received_sigterm


def exit_status() -> int:
    return SIGTERM_STATUS if _received_sigterm else SIGINT_STATUS


@contextlib.contextmanager
def children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started while open ignore Ctrl-C for life (an ignored signal stays ignored
    across exec), for a helper that its parent stops itself: Ctrl-C reaches the terminal's
    whole process group. Outside the main thread, where no handler can be set, it does
    nothing, as where a handler set outside Python could not be put back. A Ctrl-C in the few
    milliseconds a start takes is lost; press it again."""
    outside_python = signal.getsignal(signal.SIGINT) is None
    if outside_python or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
