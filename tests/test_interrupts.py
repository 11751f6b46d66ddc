"""Ctrl-C and SIGTERM end a command the same way; only the exit status tells them apart. Helpers
started while children ignore Ctrl-C keep ignoring it. The signals are real ones, sent to this
process (or read off a child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from lightning_ad import interrupts

IGNORES_CTRL_C = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
"""A child that prints whether it ignores Ctrl-C: Python installs its own handler unless the
signal was ignored when it started."""


def _signalled(signum: int) -> None:
    """Send ``signum`` to this process; its handler runs in the main thread, inside the sleep."""
    os.kill(os.getpid(), signum)
    time.sleep(5)
    pytest.fail(f"signal {signum} raised nothing")


@pytest.fixture(autouse=True)
def handlers() -> Iterator[None]:
    """SIGINT's and SIGTERM's handlers as they were, and no SIGTERM remembered, whatever a test
    leaves."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    with interrupts.sigterm_as_interrupt():  # entering forgets the last SIGTERM
        pass
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_sigterm_is_an_interrupt_with_exit_status_143() -> None:
    with pytest.raises(KeyboardInterrupt), interrupts.sigterm_as_interrupt():
        _signalled(signal.SIGTERM)
    assert interrupts.received_sigterm() and interrupts.exit_status() == 143


def test_ctrl_c_is_an_interrupt_with_exit_status_130() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's: KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), interrupts.sigterm_as_interrupt():
        _signalled(signal.SIGINT)
    assert not interrupts.received_sigterm() and interrupts.exit_status() == 130


def test_each_command_starts_without_the_last_ones_sigterm() -> None:
    with pytest.raises(KeyboardInterrupt), interrupts.sigterm_as_interrupt():
        _signalled(signal.SIGTERM)
    with interrupts.sigterm_as_interrupt():
        assert not interrupts.received_sigterm() and interrupts.exit_status() == 130


def test_the_previous_sigterm_handler_comes_back() -> None:
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    with interrupts.sigterm_as_interrupt():
        pass
    os.kill(os.getpid(), signal.SIGTERM)  # the earlier handler again: no interrupt
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == [signal.SIGTERM]


def test_children_started_inside_ignore_ctrl_c_and_this_process_does_not() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    child = [sys.executable, "-c", IGNORES_CTRL_C]
    with interrupts.children_ignore_ctrl_c():
        inside = subprocess.run(child, capture_output=True, text=True, check=True)
    outside = subprocess.run(child, capture_output=True, text=True, check=True)
    assert (inside.stdout.strip(), outside.stdout.strip()) == ("True", "False")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_children_ignore_ctrl_c_does_nothing() -> None:
    """Where no handler can be set (a worker thread), it neither fails nor changes any."""
    seen, errors = [], []

    def inside_a_thread() -> None:
        try:
            with interrupts.children_ignore_ctrl_c():
                seen.append(signal.getsignal(signal.SIGINT))
        except Exception as err:  # pragma: no cover - the failure this test would show
            errors.append(err)

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=inside_a_thread)
    thread.start()
    thread.join()
    assert errors == [] and seen == [before] and signal.getsignal(signal.SIGINT) is before
