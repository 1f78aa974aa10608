"""i2i in shell scripts and cron jobs: a reader that stops early, SIGTERM, a dumb terminal and an
ASCII-only standard output."""

from __future__ import annotations

from pathlib import Path


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
