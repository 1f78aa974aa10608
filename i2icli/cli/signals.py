"""Ctrl-C and SIGTERM raised as interrupts that end a command cleanly, though never mid-line on the console."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator


class _Interrupts:
    """Whether the console is writing, and the interrupt that came meanwhile, raised after it."""

    writing = False
    pending: BaseException | None = None


interrupts = _Interrupts()


def _raise_unless_writing(interrupt: BaseException) -> None:
    if interrupts.writing:
        interrupts.pending = interrupts.pending or interrupt
        return
    raise interrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a cron job's or a service's stop), raised where Ctrl-C would be, so that it
    ends the run the same clean way: no temporary file left behind, the --json summary printed."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM in a batch, carrying the batch's --json summary up to that moment."""

    def __init__(self, summary: dict[str, Any], *, terminated: bool = False) -> None:
        super().__init__()
        self.summary = summary
        self.terminated = terminated


EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM


def _interrupt(signum: int, frame: Any) -> None:
    _raise_unless_writing(KeyboardInterrupt())


def _terminate(signum: int, frame: Any) -> None:
    # A second SIGTERM must not cut short the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _raise_unless_writing(Terminated())


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Ctrl-C, and SIGTERM, which would otherwise end Python at once (an output being written left
    as a temporary file), raised as interrupts, though not while the console writes a line."""
    if threading.current_thread() is not threading.main_thread():  # handlers are set from there only
        yield
        return
    previous = {number: signal.signal(number, handler)
                for number, handler in ((signal.SIGINT, _interrupt), (signal.SIGTERM, _terminate))}
    try:
        yield
    finally:
        for number, handler in previous.items():
            # None means a handler installed outside Python: the default is the closest to it.
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
