"""The shared batch runner: reports in order, goes on past failures, and overlaps file I/O with compute."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from i2icli.cli.runner import Stages, run_batch
from i2icli.errors import DeviceError, I2IError
from i2icli.pipelines.memory_hints import MemoryHint

WAIT = 10.0  # seconds; only reached when the overlap is broken


@dataclass(frozen=True)
class FakeJob:
    source: Path
    output: Path
    problem: str | None = None


def _jobs(tmp_path: Path, names: list[str]) -> list[FakeJob]:
    jobs = []
    for name in names:
        problem = f"{name}: no such file" if name.startswith("missing") else None
        jobs.append(FakeJob(tmp_path / f"{name}.png", tmp_path / "out" / f"{name}.png", problem))
    return jobs


def _stages(log: list[str]) -> Stages:
    def read(job: FakeJob) -> str:
        log.append(f"read {job.source.stem}")
        if "unreadable" in job.source.stem:
            raise I2IError(f"{job.source}: not an image")
        return job.source.stem

    def compute(job: FakeJob, data: str) -> str:
        log.append(f"compute {data}")
        if "crash" in data:
            raise RuntimeError("network exploded\nsecond line")
        if "huge" in data:
            raise DeviceError("out of CUDA memory", "use --device cpu")
        return data.upper()

    def write(job: FakeJob, result: str) -> tuple[dict, str, str]:
        log.append(f"write {result}")
        if "UNWRITABLE" in result:
            raise OSError("disk full")
        job.output.parent.mkdir(exist_ok=True)
        job.output.write_text(result)
        return {"value": result}, f"{job.source.name} done", ""

    return Stages(read, compute, write)


def _record(job: FakeJob) -> dict:
    return {"input": job.source.name}


@pytest.mark.parametrize("overlap", [False, True])
def test_every_outcome_is_reported_in_order(tmp_path, capsys, overlap):
    names = ["a", "unreadable", "b", "missing", "crash", "unwritable", "skip", "huge", "c"]
    jobs = _jobs(tmp_path, names)
    jobs[6].output.parent.mkdir()
    jobs[6].output.write_text("from an earlier run")
    log: list[str] = []

    records = run_batch(jobs, _stages(log), verb="testing", skip_existing=True, record_of=_record, overlap_io=overlap)

    assert [r["input"] for r in records] == [f"{n}.png" for n in names]
    assert [r["status"] for r in records] == ["ok", "failed", "ok", "failed", "failed", "failed", "skipped", "failed", "ok"]
    assert [r.get("value") for r in records] == ["A", None, "B", None, None, None, None, None, "C"]
    assert records[1]["error"].endswith("unreadable.png: not an image")
    assert records[4]["error"] == f"{jobs[4].source}: network exploded"
    assert records[5]["error"] == f"{jobs[5].source}: disk full"
    assert records[7]["error"] == f"{jobs[7].source}: out of CUDA memory (use --device cpu)"  # names the photo
    assert all(r["seconds"] >= 0 for r in records if r["status"] == "ok")
    assert jobs[6].output.read_text() == "from an earlier run"  # skipped, not recomputed
    assert "read skip" not in log and "read missing" not in log

    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    reported = ["a.png done", "unreadable.png", "b.png done", "missing", "crash.png", "unwritable.png", "skipped", "huge.png", "c.png done"]
    assert len(lines) == len(reported)
    for line, expected in zip(lines, reported):
        assert expected in line


def test_without_overlap_each_job_is_read_computed_and_written_in_turn(tmp_path):
    log: list[str] = []
    run_batch(_jobs(tmp_path, ["a", "b"]), _stages(log), verb="testing", skip_existing=False, record_of=_record)
    assert log == ["read a", "compute a", "write A", "read b", "compute b", "write B"]


def test_the_next_read_and_the_previous_write_overlap_compute(tmp_path):
    """Compute of the middle job only finishes once the next job has been read and the previous
    one written, which can only happen on other threads while it runs."""
    read_c, wrote_a = threading.Event(), threading.Event()
    in_flight, most_in_flight = [0], [0]
    lock = threading.Lock()

    def read(job: FakeJob) -> str:
        with lock:
            in_flight[0] += 1
            most_in_flight[0] = max(most_in_flight[0], in_flight[0])
        if job.source.stem == "c":
            read_c.set()
        return job.source.stem

    def compute(job: FakeJob, data: str) -> str:
        if data == "b":
            assert read_c.wait(WAIT), "the next photo was not decoded during compute"
            assert wrote_a.wait(WAIT), "the previous photo was not encoded during compute"
        return data

    def write(job: FakeJob, result: str) -> tuple[dict, str, str]:
        with lock:
            in_flight[0] -= 1
        if result == "a":
            wrote_a.set()
        return {}, result, ""

    jobs = _jobs(tmp_path, ["a", "b", "c", "d", "e"])
    records = run_batch(jobs, Stages(read, compute, write), verb="testing", skip_existing=False,
                        record_of=_record, overlap_io=True)
    assert [r["status"] for r in records] == ["ok"] * 5
    # One read ahead, one computing, one written behind: never more images held than that.
    assert most_in_flight[0] <= 3


def test_an_interrupted_run_finishes_the_write_in_flight(tmp_path):
    def compute(job: FakeJob, data: str) -> str:
        if data == "b":
            raise KeyboardInterrupt
        return data

    def write(job: FakeJob, result: str) -> tuple[dict, str, str]:
        threading.Event().wait(0.2)  # still writing when the interrupt arrives
        job.output.parent.mkdir(exist_ok=True)
        job.output.write_text(result)
        return {}, result, ""

    jobs = _jobs(tmp_path, ["missing", "a", "b", "c"])
    with pytest.raises(KeyboardInterrupt) as interrupt:
        run_batch(jobs, Stages(lambda job: job.source.stem, compute, write), verb="testing", skip_existing=False,
                  record_of=_record, overlap_io=True)
    assert jobs[1].output.read_text() == "a"
    assert not jobs[3].output.exists()
    # What --json prints after Ctrl-C: every job, the one written in flight as done.
    summary = interrupt.value.summary
    assert [(Path(r["input"]).stem, r["status"]) for r in summary["results"]] == [
        ("missing", "failed"), ("a", "ok"), ("b", "interrupted"), ("c", "not run")]
    assert (summary["ok"], summary["failed"], summary["interrupted"]) == (1, 1, True)


def test_a_batch_that_ran_to_the_end_is_not_marked_interrupted(tmp_path):
    from i2icli.cli.runner import batch_summary

    records = run_batch(_jobs(tmp_path, ["a", "missing"]), lambda job: ({}, job.source.name, ""), verb="testing",
                        skip_existing=False, record_of=_record)
    assert "interrupted" not in batch_summary(records)


def test_a_plain_processor_still_runs(tmp_path):
    def process(job: FakeJob) -> tuple[dict, str, str]:
        if job.source.stem == "crash":
            raise ValueError("bad")
        return {"n": 1}, job.source.name, ""

    records = run_batch(_jobs(tmp_path, ["a", "crash", "b"]), process, verb="testing", skip_existing=False,
                        record_of=_record)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[0]["n"] == 1


def test_a_job_that_runs_out_of_memory_is_named_with_the_commands_hint_and_the_rest_go_on(tmp_path, capsys):
    import torch

    from i2icli.cli.error_handling import handles_errors

    failures = {"big": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
                "huge": RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                                     "memory: you tried to allocate 99999999999 bytes.")}

    def process(job: FakeJob) -> tuple[dict, str, str]:
        if job.source.stem in failures:
            raise failures[job.source.stem]
        return {}, job.source.name, ""

    @handles_errors(memory_hint=MemoryHint("use a smaller --size", ram="use fewer --samples"))
    def command() -> list[dict]:
        return run_batch(_jobs(tmp_path, ["big", "a", "huge"]), process, verb="testing", skip_existing=False,
                         record_of=_record)

    records = command()
    assert [r["status"] for r in records] == ["failed", "ok", "failed"]
    assert records[0]["error"] == f"{tmp_path / 'big.png'}: the device ran out of memory (CUDA out of memory. Tried to allocate 9.00 GiB) (use a smaller --size)"
    assert records[2]["error"] == f"{tmp_path / 'huge.png'}: the computer ran out of memory (use fewer --samples)"
    assert "— use a smaller --size" in capsys.readouterr().err


def test_an_output_that_is_a_folder_fails_its_job_before_the_work(tmp_path):
    """paired, exemplar and translate-lr found it only when writing, after the work; --dry-run
    listed the job as one that would run."""
    from i2icli.cli.runner import one_writer_per_file

    jobs = _jobs(tmp_path, ["a", "b"])
    jobs[0].output.mkdir(parents=True)
    checked, written = one_writer_per_file(jobs, lambda job: [job.output])
    assert checked[0].problem == f"{jobs[0].source}: its output {jobs[0].output} is a folder; move it aside or choose another output"
    assert checked[1].problem is None and written == [jobs[1].output]


def test_an_output_that_is_an_input_by_another_name_is_refused(tmp_path):
    """On a case-insensitive disk (macOS, Windows) the output A.png of input a.png is a.png itself;
    a hard link is the same situation on any disk: two names, one file."""
    from i2icli.cli.paths import refuse_overwrite
    from i2icli.cli.runner import one_writer_per_file
    from i2icli.errors import InputError

    photo = tmp_path / "a.png"
    photo.write_bytes(b"the input")
    other_name = tmp_path / "A-linked.png"
    other_name.hardlink_to(photo)
    jobs = [FakeJob(photo, other_name)]
    checked, _ = one_writer_per_file(jobs, lambda job: [job.output], [photo])
    assert checked[0].problem == f"{photo}: its output {other_name} would overwrite an input of the batch; choose another output"
    with pytest.raises(InputError, match="would overwrite an input"):
        refuse_overwrite(other_name, [photo])
    refuse_overwrite(tmp_path / "new.png", [photo])  # a name no file has yet is no input
