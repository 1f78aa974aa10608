"""What i2i shows on stderr: the console, its warning and error lines, and progress bars."""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from i2icli.cli.signals import interrupts
from i2icli.errors import I2IError, first_line


# Diagnostics go to stderr so that stdout stays clean for --json and shell pipelines. Whether it
# is a terminal is decided once, at start: while an image decodes, stderr is briefly a file that
# collects the C libraries' lines (see codec_libraries), and a progress bar redrawn then would lose its place.
class _Console(Console):
    """Rich's console, which Ctrl-C and SIGTERM do not stop mid-write. Rich clears what it has
    buffered only after writing it: an interrupt raised in between (a script that signals as soon
    as it reads a line) left the line there, and the "interrupted" line printed it again. The
    commands' handlers (see ``signals.signals_as_interrupts``) wait until the write is over."""

    def _check_buffer(self) -> None:
        if threading.current_thread() is not threading.main_thread():  # interrupts are raised in the main thread
            super()._check_buffer()
            return
        interrupts.writing = True
        try:
            super()._check_buffer()
        finally:
            interrupts.writing = False
            pending, interrupts.pending = interrupts.pending, None
            if pending is not None:
                raise pending


console = _Console(stderr=True, highlight=False, soft_wrap=True,
                   force_terminal=Console(stderr=True).is_terminal)


def _stderr_is_a_terminal() -> bool:
    # Asked of stderr itself, not of rich: rich takes FORCE_COLOR (set in CI to keep a log's
    # colours) for a terminal, and a progress bar redrawn into a log leaves every frame there.
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


_STDERR_IS_A_TERMINAL = _stderr_is_a_terminal()


def redraws_lines() -> bool:
    """Whether stderr is a terminal that can redraw a line, where a progress bar or a spinner can
    live: a file or a log would keep every frame, and a dumb terminal (TERM=dumb: an editor's
    shell) cannot go back over one."""
    return _STDERR_IS_A_TERMINAL and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def transient_progress(*columns: Any) -> Any:
    """A progress bar that disappears when done. Off where lines cannot be redrawn: there it could
    not be erased, and would leave an empty line in front of the command's messages."""
    from rich.progress import Progress

    return Progress(*columns, console=console, transient=True, disable=not redraws_lines())


def spinner(text: str) -> AbstractContextManager[Any]:
    """A spinner with ``text`` while a step without steps of its own runs; nothing where lines
    cannot be redrawn."""
    return console.status(text) if redraws_lines() else nullcontext()


# Control characters as escapes: a file name may hold a newline, which would split a line that
# scripts read one per file, or an escape sequence, which the terminal would obey.
_CONTROL_CHARACTERS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL_CHARACTERS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def visible(text: str) -> str:
    """``text`` on one line, its control characters written as escapes (\\n, \\x1b)."""
    return text.translate(_CONTROL_CHARACTERS)


def megabytes(size: int | None) -> str:
    """A checkpoint's size as listings show it ("332.5 MB"), or "?" where the registry has none."""
    return f"{size / 2**20:.1f} MB" if size else "?"


def report_error(error: I2IError | str) -> None:
    """Print one line: the error, then what to do about it if known."""
    # Built as Text, not markup: escaped markup doubles a backslash that ends a message (C:\photos\).
    line = Text.assemble(("error:", "bold red"), " ", visible(str(error.message if isinstance(error, I2IError) else error)))
    if isinstance(error, I2IError) and error.hint:
        line.append(f" — {visible(error.hint)}", style="dim")
    console.print(line, soft_wrap=True)


def plain(value: Any) -> str:
    """``value`` as text in a console line: a file named "IMG [edited].jpg" is not markup, and one
    holding control characters shows them as escapes."""
    return escape(visible(str(value)))


def warn(text: str) -> None:
    """One warning line; ``text`` is shown as it is (it may hold file names)."""
    console.print(Text.assemble(("warning:", "yellow"), " ", visible(text)))


class _ConsoleLogHandler(logging.Handler):
    """The package's logged warnings (a tile shrunk to fit, extra TIFF pages ignored), shown as
    the CLI's own warnings rather than through Python's bare fallback handler."""

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # One line like every other message: the source file and line Python adds mean nothing to a user.
    warn(first_line(message) or category.__name__)


def route_messages_to_console() -> None:
    """Send logged warnings and Python warnings through the one console (stderr). Idempotent."""
    logger = logging.getLogger("i2icli")
    if not any(isinstance(handler, _ConsoleLogHandler) for handler in logger.handlers):
        # Propagation stays on: with no handler above, Python's fallback printer is not used.
        logger.addHandler(_ConsoleLogHandler(logging.WARNING))
    warnings.showwarning = _show_warning


@contextmanager
def download_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A callback ``(label, done, total)`` that draws one download bar per label on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with transient_progress(*columns) as progress:
        tasks: dict[str, Any] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(f"downloading {label}", total=total)
            progress.update(tasks[label], completed=done, total=total)

        yield update
