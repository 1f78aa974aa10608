"""Defects found reviewing the recent changes: each test names what a user saw."""

from __future__ import annotations

import os
import subprocess
import sys

_PROGRESS_AND_A_WARNING = """
import time
from rich.progress import BarColumn, TextColumn
from i2icli.cli.stderr import transient_progress, warn

with transient_progress(TextColumn("{task.description}"), BarColumn()) as progress:
    task = progress.add_task("restoring", total=3)
    for _ in range(3):
        time.sleep(0.05)
        progress.advance(task)
warn("a.png: done")
"""


def _stderr_on_a_pipe(script: str, **environment: str) -> str:
    env = {name: value for name, value in os.environ.items()
           if name not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TERM", "COLORTERM", "COLUMNS")}
    env.update(environment)
    done = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          env=env, check=True)
    return done.stderr.decode()


def test_force_color_on_a_pipe_keeps_colour_but_draws_no_progress_bar():
    """FORCE_COLOR=1 with stderr going to a CI log: the bar was drawn and redrawn into the log."""
    stderr = _stderr_on_a_pipe(_PROGRESS_AND_A_WARNING, FORCE_COLOR="1", TERM="xterm-256color")
    assert "restoring" not in stderr
    assert "\x1b[?25l" not in stderr  # the bar hides the cursor while it draws
    assert "\x1b[" in stderr  # the warning keeps its colour, as FORCE_COLOR asks
    assert stderr.endswith("a.png: done\n")
