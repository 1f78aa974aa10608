"""Ctrl-C during training: the step in progress finishes and is saved, rather than lost or half-taken."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["InterruptRequest", "finish_step_on_interrupt", "ignore_interrupts_in_worker"]

# A second SIGINT this soon after the first is the same Ctrl-C: the terminal sends it to the
# whole process group, and a launcher in that group (`uv run`, say) forwards it once more.
_SAME_CTRL_C_SECONDS = 1.0


@dataclass
class InterruptRequest:
    """Whether a Ctrl-C came (and when), for the loop to stop after the step in progress."""

    requested: bool = False
    at: float = 0.0
    saving: bool = False  # set while the final checkpoint is written: nothing may cut that short


@contextlib.contextmanager
def finish_step_on_interrupt() -> Iterator[InterruptRequest]:
    """The first Ctrl-C lets the current step finish (so the saved state is exactly a step's);
    a second one, a moment later, interrupts at once, but never the saving of the checkpoint."""
    request = InterruptRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be set from the main thread
        return

    def handle(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if request.requested:
            if request.saving or now - request.at < _SAME_CTRL_C_SECONDS:
                return
            raise KeyboardInterrupt
        request.requested, request.at = True, now

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield request
    finally:
        # None means a handler installed outside Python; Python's own is the closest we can restore.
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def ignore_interrupts_in_worker(_worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the whole process group; workers must keep serving
    # batches while the main process finishes its step and saves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

