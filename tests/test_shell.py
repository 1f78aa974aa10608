"""i2i in shell scripts and cron jobs: a reader that stops early, SIGTERM, a dumb terminal and an
ASCII-only standard output."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

from i2icli.cli import common


def test_a_dumb_terminal_gets_no_progress_bar(monkeypatch):
    # TERM=dumb (an editor's shell, some CI logs) cannot redraw a line: the bar would leave an
    # empty line among the command's messages.
    captured = io.StringIO()
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(common, "console", Console(file=captured, force_terminal=True))
    with common.transient_progress() as progress:
        task = progress.add_task("restoring", total=1)
        common.warn("a.png: one line")
        progress.advance(task)
    assert captured.getvalue() == "warning: a.png: one line\n"


def test_an_ascii_only_standard_output_gets_escapes_not_a_crash(monkeypatch):
    # PYTHONIOENCODING=ascii: a dry run's arrow and a file name's accent are written as escapes;
    # a name's undecodable byte (held as a surrogate) is still written as that byte.
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer, encoding="ascii"))
    common.stdout_write("café.png → out/\udce9.png")
    assert buffer.getvalue() == b"caf\\xe9.png \\u2192 out/\xe9.png\n"


def test_ctrl_c_during_a_write_keeps_the_batch_summary(tmp_path: Path):
    # On a CPU each output is written inline: Ctrl-C in that write must still give the --json
    # summary, with that file "interrupted", rather than only {"error": "interrupted"}.
    from dataclasses import dataclass

    import pytest

    from i2icli.cli.runner import Interrupted, Stages, run_batch

    @dataclass(frozen=True)
    class Job:
        source: Path
        output: Path
        problem: str | None = None

    def write(job, _):
        if job.output.name == "1.png":
            raise KeyboardInterrupt
        return {}, str(job.output), ""

    jobs = [Job(Path(f"in{i}"), tmp_path / f"{i}.png") for i in range(3)]
    with pytest.raises(Interrupted) as interrupted:
        run_batch(jobs, Stages(lambda job: None, lambda job, _: None, write), verb="writing", skip_existing=False,
                  record_of=lambda job: {"output": str(job.output)})
    assert [record["status"] for record in interrupted.value.summary["results"]] == ["ok", "interrupted", "not run"]
