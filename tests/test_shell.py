"""i2i in shell scripts and cron jobs: a reader that stops early, SIGTERM, a dumb terminal and an
ASCII-only standard output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rich.console import Console

from i2icli.cli import signals, stderr
from i2icli.cli.stdout import stdout_write


def _run_python(code: str, *args: str, stdout: int | None = subprocess.PIPE, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_a_reader_that_stops_early_ends_the_command_quietly():
    # `i2i weights list --json | head -c 10`: the rest of the document has nowhere to go, and
    # that is no error to report in the log.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _run_python("from i2icli.cli.app import main; import sys; sys.argv[0] = 'i2i'; main()",
                             "weights", "list", "--json", stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""


# A batch of three images in a folder, run under handles_errors as every command is: the second
# image's write sends SIGTERM to the process after its temporary file is made.
_TERMINATED_BATCH = """
    import os, signal, sys
    from dataclasses import dataclass
    from pathlib import Path

    import numpy as np
    import typer

    from i2icli.cli.error_handling import handles_errors
    from i2icli.cli.options import JsonOption
    from i2icli.cli.runner import Stages, batch_failures, run_batch
    from i2icli.atomic_files import replace_atomically

    folder = Path(os.environ["BATCH_FOLDER"])

    @dataclass(frozen=True)
    class Job:
        source: Path
        output: Path
        problem: str | None = None

    def write(job, _):
        def fill(temp):
            temp.write_bytes(b"half")
            if job.output.name == "1.png":
                os.kill(os.getpid(), signal.SIGTERM)
            temp.write_bytes(b"whole")
        replace_atomically(job.output, fill)
        return {}, str(job.output), ""

    app = typer.Typer()

    @app.command()
    @handles_errors
    def batch(as_json: JsonOption = False) -> None:
        jobs = [Job(Path(f"in{i}"), folder / f"{i}.png") for i in range(3)]
        records = run_batch(jobs, Stages(lambda job: None, lambda job, _: None, write), verb="writing",
                            skip_existing=True, record_of=lambda job: {"output": str(job.output)})
        raise typer.Exit(1 if batch_failures(records, as_json=as_json) else 0)

    app()
"""


def test_sigterm_mid_batch_leaves_no_partial_file_and_says_so_in_one_line(tmp_path: Path):
    result = _run_python(_TERMINATED_BATCH, "--json", BATCH_FOLDER=str(tmp_path))
    assert result.returncode == 143, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "terminated"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["0.png"]  # no temporary file left
    summary = json.loads(result.stdout)
    assert summary["interrupted"] is True
    assert [record["status"] for record in summary["results"]] == ["ok", "interrupted", "not run"]


def test_a_dumb_terminal_gets_no_progress_bar(monkeypatch):
    # TERM=dumb (an editor's shell, some CI logs) cannot redraw a line: the bar would leave an
    # empty line among the command's messages.
    captured = io.StringIO()
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(stderr, "console", Console(file=captured, force_terminal=True))
    monkeypatch.setattr(stderr, "_STDERR_IS_A_TERMINAL", True)
    with stderr.transient_progress() as progress:
        task = progress.add_task("restoring", total=1)
        stderr.warn("a.png: one line")
        progress.advance(task)
    assert captured.getvalue() == "warning: a.png: one line\n"


def test_an_ascii_only_standard_output_gets_escapes_not_a_crash(monkeypatch):
    # PYTHONIOENCODING=ascii: a dry run's arrow and a file name's accent are written as escapes;
    # a name's undecodable byte (held as a surrogate) is still written as that byte.
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer, encoding="ascii"))
    stdout_write("café.png → out/\udce9.png")
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


def test_a_line_being_written_when_ctrl_c_comes_is_written_once(monkeypatch):
    import signal

    import pytest

    class SignalsAfterWrite(io.StringIO):
        signalled = False

        def write(self, text: str) -> int:
            written = super().write(text)
            if not self.signalled:  # as a script that sends the signal on reading the first line
                self.signalled = True
                os.kill(os.getpid(), signal.SIGINT)
            return written

    captured = SignalsAfterWrite()
    monkeypatch.setattr(stderr, "console", stderr._Console(file=captured, soft_wrap=True))
    with pytest.raises(KeyboardInterrupt), signals.signals_as_interrupts():
        stderr.warn("first")
    stderr.console.print("interrupted")
    assert captured.getvalue() == "warning: first\ninterrupted\n"
