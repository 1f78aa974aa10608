"""The batch runner every image command shares: one progress bar, one status line per input, a
failed input reported while the rest go on, and (for pipelines split into stages) decoding and
encoding overlapped with the device work."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, NoReturn, Protocol, TypeVar

import typer
from rich.text import Text

from i2icli.batch import (
    OutputPathChecks,
    case_blind,
    case_clash,
    device_of,
    file_key,
    is_folder,
    mount_point,
)
from i2icli.cli.error_handling import EXIT_FAILED, EXIT_OK, out_of_memory
from i2icli.cli.piping import STANDARD_STREAM
from i2icli.cli.signals import Interrupted, Terminated
from i2icli.cli.stderr import (
    console,
    megabytes,
    plain,
    report_error,
    transient_progress,
    visible,
)
from i2icli.cli.stdout import json_document, stdout_write
from i2icli.errors import (
    DiskRefusesOutputsError,
    I2IError,
    InputError,
    ReadOnlyDiskError,
    first_line,
)
from i2icli.formats import HEIF_SUFFIXES


class BatchJob(Protocol):
    """What a command's unit of work must tell the batch runner."""

    @property
    def source(self) -> Path: ...

    @property
    def output(self) -> Path: ...

    @property
    def problem(self) -> str | None: ...


class ShownBefore(I2IError):
    """A failure the batch has already shown for an earlier job (one bad file in many pairs, say):
    recorded for every job it fails, printed once."""


J = TypeVar("J", bound=BatchJob)
# What finishing a job returns: (extra record fields, what the success line names, detail shown
# before the seconds).
Outcome = tuple[dict[str, Any], str, str]
Processor = Callable[[J], Outcome]


@dataclass(frozen=True)
class Stages(Generic[J]):
    """A job split so that its file I/O can overlap other jobs' compute.

    ``read(job)`` decodes the input and ``write(job, result)`` encodes and saves the output; with
    overlap they run on worker threads (image codecs release the GIL), so the next photo is
    decoded and the previous one encoded while ``compute(job, data)`` keeps the device busy on the
    calling thread. At most one job is read ahead and one written behind, so a folder run holds
    three images at a time, whatever its length.
    """

    read: Callable[[J], Any]
    compute: Callable[[J, Any], Any]
    write: Callable[[J, Any], Outcome]


def will_run(job: BatchJob, *, skip_existing: bool) -> bool:
    """Whether ``job`` is to run: it has no problem, and unless asked to skip it, no output yet."""
    return job.problem is None and not (skip_existing and _exists(job.output))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        # Below a folder that cannot be searched: not known to exist, so the job runs and its
        # write fails with a message naming the file, instead of the whole batch stopping here.
        return False


def one_writer_per_file(jobs: list[J], files_of: Callable[[J], Iterable[Path]], inputs: Iterable[Path] = (),
                        name_of: Callable[[J], str] = lambda job: str(job.source)) -> tuple[list[J], list[Path]]:
    """Fail (with ``dataclasses.replace(job, problem=...)``) a job that would write over one of
    ``inputs``, or over a file an earlier job writes (a.png and a.jpg both making a.png, say).
    ``name_of`` says which inputs a job is made from, for the message. Also return every file
    the batch will write."""
    import dataclasses

    # By file, not by name: on a case-insensitive disk (macOS, Windows) a.png's output A.png is a.png.
    protected = {file_key(path) for path in inputs}
    taken: dict[Path, Any] = {}
    taken_in_any_case: dict[str, Path] = {}  # by case_blind(path)
    output_path_problem = OutputPathChecks()
    checked = []
    for job in jobs:
        if job.problem is None:
            named = list(files_of(job))
            files = [_resolved(path) for path in named]
            over_input = next((path for path in files if file_key(path) in protected), None)
            clash = next((path for path in files if path in taken), None)
            case_only = next((path for path in files if case_blind(path) in taken_in_any_case), None)
            # Else found only when writing, after the work (and --dry-run passed it).
            folder = next((path for path in files if is_folder(path)), None)
            # As given, not resolved: the system measures the path it is handed.
            too_long = next((problem for path in named if (problem := output_path_problem(path))), None)
            if over_input is not None:
                job = dataclasses.replace(job, problem=f"{name_of(job)}: its output {over_input} would overwrite an "
                                                       "input of the batch; choose another output")
            elif clash is not None:
                job = dataclasses.replace(job, problem=f"{name_of(job)}: its output {clash} is also written for "
                                                       f"{name_of(taken[clash])}; give them different output names "
                                                       "(or rename one of the inputs)")
            elif case_only is not None:
                other = taken_in_any_case[case_blind(case_only)]
                why = case_clash(case_only, other, name_of(taken[other]))
                job = dataclasses.replace(job, problem=f"{name_of(job)}: {why}; give them different output names (or "
                                                       "rename one of the inputs)")
            elif folder is not None:
                job = dataclasses.replace(job, problem=f"{name_of(job)}: its output {folder} is a folder; move it "
                                                       "aside or choose another output")
            elif too_long is not None:
                job = dataclasses.replace(job, problem=f"{name_of(job)}: {too_long}")
            else:
                taken.update((path, job) for path in files)
                taken_in_any_case.update((case_blind(path), path) for path in files)
        checked.append(job)
    return checked, list(taken)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _refuse_heif_outputs_without_an_encoder(jobs: list[J]) -> None:
    """Stop the whole run, before its first job, where a HEIC output is to be written and libheif
    has no encoder: every such output would be computed only to fail at its write. (``restore``
    finds this while planning each photo; this holds it for every command.)"""
    heif_output = next((job.output for job in jobs
                        if job.problem is None and job.output.suffix.lower() in HEIF_SUFFIXES), None)
    if heif_output is not None:
        from i2icli.image_encoding import refuse_missing_heif_encoder

        refuse_missing_heif_encoder(heif_output)


def _refuse_names_too_long(jobs: list[J], inputs_of: Callable[[J], str]) -> list[J]:
    """Fail each job whose output no file system could hold (a name over 255 bytes, say), before
    its work rather than at its write: for the outputs no planner has checked."""
    import dataclasses

    output_path_problem = OutputPathChecks()
    checked = []
    for job in jobs:
        if job.problem is None and str(job.output) != STANDARD_STREAM and (problem := output_path_problem(job.output)):
            job = dataclasses.replace(job, problem=f"{inputs_of(job)}: {problem}")
        checked.append(job)
    return checked


def _one_stage(process: Processor[J]) -> Stages[J]:
    return Stages(read=lambda job: None, compute=lambda job, _: process(job), write=lambda job, outcome: outcome)


class _Inline:
    """An executor that runs each call as it is submitted: the runner without overlap."""

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except BaseException as error:  # delivered by .result(), as a thread pool would
            future.set_exception(error)
        return future


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


def _failure(job: BatchJob, error: BaseException) -> str:
    if isinstance(error, ShownBefore):
        return str(error)
    error = out_of_memory(error) or error  # this job was too big: named with the command's hint, the rest go on
    if isinstance(error, I2IError):
        # An input error names its file; any other (out of GPU memory, say) gets the job's.
        if not isinstance(error, InputError) and str(job.source) not in error.message:
            error = I2IError(f"{job.source}: {error.message}", error.hint)
        report_error(error)
        return str(error)
    # One bad file must not stop the batch: anything else is named by its first line.
    message = first_line(error) or type(error).__name__
    report_error(f"{job.source}: {message}")
    return f"{job.source}: {message}"


@dataclass
class _Written:
    """A job whose output is being written: reported once the write has finished."""

    job: BatchJob
    record: dict[str, Any]
    future: Future
    seconds: float  # read + compute


def _source_of(job: BatchJob) -> str:
    return str(job.source)


def run_batch(jobs: list[J], process: Processor[J] | Stages[J], *, verb: str, skip_existing: bool,
              record_of: Callable[[J], dict[str, Any]], overlap_io: bool = False,
              inputs_of: Callable[[J], str] = _source_of) -> list[dict]:
    """Run every job under one progress bar and report each in order; a failed job is reported
    and the rest go on. With ``overlap_io`` (for :class:`Stages`), reads and writes run on two
    worker threads; an interrupted run still finishes the write in flight, so no output is lost.
    ``inputs_of`` names what a job is made from in the line of a skipped job (both images of a
    pair: a source alone would repeat once per target)."""
    stages = process if isinstance(process, Stages) else _one_stage(process)
    _refuse_heif_outputs_without_an_encoder(jobs)
    return _BatchRun(_refuse_names_too_long(jobs, inputs_of), stages, verb=verb, skip_existing=skip_existing,
                     record_of=record_of, overlap_io=overlap_io, inputs_of=inputs_of).run()


@dataclass
class _StoppedDisk:
    """A disk that takes no more outputs, full or mounted read-only (kept by its device): the
    output that could not be written there, and how many jobs it stopped."""

    output: Path
    read_only: bool
    not_run: int = 0

    @property
    def state(self) -> str:
        return "read-only" if self.read_only else "full"


class _BatchRun(Generic[J]):
    """One call of :func:`run_batch`: each job read, computed and written in turn, with at most one
    read ahead and one write behind, and one record (and one console line) a job, in order."""

    def __init__(self, jobs: list[J], stages: Stages[J], *, verb: str, skip_existing: bool,
                 record_of: Callable[[J], dict[str, Any]], overlap_io: bool, inputs_of: Callable[[J], str]):
        self.jobs, self.stages, self.verb, self.record_of, self.overlap_io = jobs, stages, verb, record_of, overlap_io
        self.inputs_of = inputs_of
        # Outputs are distinct (the planners refuse collisions), so what to skip is known up front.
        runnable = [i for i, job in enumerate(jobs) if will_run(job, skip_existing=skip_existing)]
        self.to_run = set(runnable)
        self.read_next = dict(zip(runnable, runnable[1:]))  # the job to read ahead while one computes
        self.reads_ahead: dict[int, Future] = {}
        self.records: list[dict] = []
        self.in_flight: _Written | None = None
        # Each disk found full or read-only, by device, in the order found: a batch writing to
        # several may fill more than one.
        self.stopped_disks: dict[int, _StoppedDisk] = {}

    def run(self) -> list[dict]:
        try:
            with ExitStack() as stack:
                self._start(stack)
                for index, job in enumerate(self.jobs):
                    record = self.record_of(job)
                    self.records.append(record)
                    if index in self.to_run and (disk := self._stopped_disk_of(job)) is not None:
                        self._finish_write()
                        self.reads_ahead.pop(index, None)  # its picture is not held for nothing
                        self._stop_for_disk(job, record, disk)
                    elif index in self.to_run:
                        self._process(index, job, record)
                    else:  # reported after the job before it
                        self._finish_write()
                        self._report_not_run(job, record)
                self._finish_write()
                self._report_stopped_disks()
        except KeyboardInterrupt as stop:
            raise Interrupted(self._interrupted_summary(), terminated=isinstance(stop, Terminated)) from None
        return self.records

    def _start(self, stack: ExitStack) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        self.progress = stack.enter_context(transient_progress(*columns))
        # Entered after the progress bar, so left first: an interrupted run waits for its last write.
        if self.overlap_io:
            self.reader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="i2i-read"))
            self.writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="i2i-write"))
        else:
            self.reader = self.writer = _Inline()
        self.task = self.progress.add_task(self.verb, total=len(self.jobs))

    def _failed(self, job: J, record: dict[str, Any], error: Exception) -> None:
        record.update(status="failed", error=_failure(job, error))
        if isinstance(error, DiskRefusesOutputsError):
            # A disk that cannot be told stops nothing: other outputs whose disk cannot be told
            # either may well be on another.
            device = device_of(error.path)
            if device is not None and device not in self.stopped_disks:
                self.stopped_disks[device] = _StoppedDisk(error.path, read_only=isinstance(error, ReadOnlyDiskError))

    def _stopped_disk_of(self, job: J) -> _StoppedDisk | None:
        """The disk an earlier output found full or read-only, if ``job`` would write there: its
        work would be lost."""
        if not self.stopped_disks or str(job.output) == STANDARD_STREAM:
            return None
        device = device_of(job.output)
        return None if device is None else self.stopped_disks.get(device)

    def _stop_for_disk(self, job: J, record: dict[str, Any], disk: _StoppedDisk) -> None:
        """Fail ``job`` without its work, and without a line of its own: one line says it for all."""
        record.update(status="failed", error=f"{self.inputs_of(job)}: not run: the disk of its output {job.output} "
                                             f"is {disk.state} ({disk.output} could not be written)")
        disk.not_run += 1
        self.progress.advance(self.task)

    def _report_stopped_disks(self) -> None:
        for disk in self.stopped_disks.values():
            if disk.not_run:
                self._report_stopped_disk(disk)

    @staticmethod
    def _report_stopped_disk(disk: _StoppedDisk) -> None:
        not_run = f"{disk.not_run} more input{'s were' if disk.not_run > 1 else ' was'} not run"
        if disk.read_only:
            report_error(I2IError(f"{mount_point(disk.output)}: the disk mounted here is read-only, so {not_run}",
                                  "check the disk and mount it read-write again, or choose another output folder; "
                                  "then run the same command again with --skip-existing"))
        else:
            report_error(I2IError(f"{disk.output.parent}: the disk is full, so {not_run}",
                                  "free some space on it, then run the same command again with --skip-existing"))

    def _report_not_run(self, job: J, record: dict[str, Any]) -> None:
        if job.problem is not None:
            record.update(status="failed", error=job.problem)
            report_error(job.problem)
        else:
            record.update(status="skipped")
            # The output named: one source may have many (a row of pairs, say).
            console.print(f"[dim]skipped[/] {plain(self.inputs_of(job))} [dim]({plain(job.output)} exists)[/]")
        self.progress.advance(self.task)

    def _process(self, index: int, job: J, record: dict[str, Any]) -> None:
        self.progress.update(self.task, description=f"{self.verb} {plain(job.source.name)}")
        read = self._read(index)
        try:
            data, read_seconds = read.result()
            try:
                result, compute_seconds = _timed(self.stages.compute, job, data)
            finally:
                del data  # not held while the write before is waited for
        except Exception as error:
            self._finish_write()
            self._failed(job, record, error)
            self.progress.advance(self.task)
            return
        self._finish_write()  # the job before, reported before this one
        write = self.writer.submit(_timed, self.stages.write, job, result)
        self.in_flight = _Written(job, record, write, read_seconds + compute_seconds)
        del result
        if not self.overlap_io:  # one job at a time, each reported as soon as it is written
            self._finish_write()

    def _read(self, index: int) -> Future:
        """This job's read, started now unless it was read ahead; and, with overlap, the next
        job's read started, to decode the next photo while this one computes."""
        read = self.reads_ahead.pop(index, None) or self.reader.submit(_timed, self.stages.read, self.jobs[index])
        if self.overlap_io and index in self.read_next:
            following = self.read_next[index]
            self.reads_ahead[following] = self.reader.submit(_timed, self.stages.read, self.jobs[following])
        return read

    def _finish_write(self) -> None:
        """Wait for the write in flight, if any, and report its job."""
        written = self.in_flight
        if written is None:
            return
        try:
            (extra, headline, detail), write_seconds = written.future.result()
        except Exception as error:
            self._failed(written.job, written.record, error)
        else:
            seconds = written.seconds + write_seconds
            written.record.update(status="ok", seconds=round(seconds, 3), **extra)
            # File names are text, not markup: "IMG [edited].jpg" must not lose its "[edited]".
            console.print(f"[green]✓[/] {plain(headline)} [dim]({plain(detail)}{seconds:.1f} s)[/]")
        self.in_flight = None  # only now: an interrupt while waiting above leaves it to be reported
        self.progress.advance(self.task)

    def _interrupted_summary(self) -> dict[str, Any]:
        written = self.in_flight
        # Its write ended on the way out (the writer thread is waited for): a file made in full,
        # unless the interrupt struck that write itself (run inline, without overlap).
        if (written is not None and written.future.done() and "status" not in written.record
                and not isinstance(written.future.exception(), KeyboardInterrupt)):
            self._finish_write()
        for record in self.records:
            record.setdefault("status", "interrupted")
        self.records += [{**self.record_of(job), "status": "not run"} for job in self.jobs[len(self.records):]]
        return batch_summary(self.records)


# What a run would load: each checkpoint's source, with the option that names it (for the hint of
# an error). Asked only when some job would run.
CheckpointsOf = Callable[[], list[tuple[str, Any]]]


def exit_with_preview(jobs: list[J], *, skip_existing: bool, as_json: bool, record_of: Callable[[J], dict[str, Any]],
                      inputs_of: Callable[[J], str] = _source_of, checkpoints: CheckpointsOf | None = None,
                      loads_without_jobs: bool = False) -> NoReturn:
    """--dry-run: say each job's fate as far as the plan tells it ("would run", "skipped", or
    "failed" for a problem found while planning, such as an output that would replace an input),
    on stdout or as the --json document, then where each checkpoint the run would load comes
    from (``checkpoints``: asked only if a job would run, unless ``loads_without_jobs``), and
    end the command (exit 1 if any job failed or any checkpoint cannot be had). Nothing is
    opened, so a file that turns out unreadable still fails the real run."""
    records = []
    for job in _refuse_names_too_long(jobs, inputs_of):
        record = record_of(job)
        records.append(record)
        if job.problem is not None:
            record.update(status="failed", error=job.problem)
            report_error(job.problem)
            continue
        runs = will_run(job, skip_existing=skip_existing)
        record.update(status="would run" if runs else "skipped")
        if not as_json:
            inputs = inputs_of(job)
            stdout_write(visible(f"{inputs} → {job.output}" if runs else f"skipped {inputs} ({job.output} exists)"))
    loads = _count(records, "would run") or loads_without_jobs
    needed = checkpoints() if checkpoints is not None and loads else []
    for option, source in needed:
        _report_checkpoint(option, source, as_json=as_json)
    if as_json:
        counts = {"would_run": _count(records, "would run"), "skipped": _count(records, "skipped"),
                  "failed": _count(records, "failed")}
        document = {"dry_run": True, **counts, "results": records}
        if checkpoints is not None:
            document["checkpoints"] = [{"option": option, **source.as_record()} for option, source in needed]
        stdout_write(json_document(document))
    unobtainable = any(source.status == "missing" for _, source in needed)
    raise typer.Exit(EXIT_FAILED if _count(records, "failed") or unobtainable else EXIT_OK)


def _report_checkpoint(option: str, source: Any, *, as_json: bool) -> None:
    """One line on stderr. Not on stdout: there a dry run writes one line per job, which scripts
    read as such; --json carries the checkpoints for programs."""
    if source.status == "missing":
        report_error(source.error.naming_option(option))
        return
    if as_json:  # the document says it; stderr keeps to what needs doing
        return
    where = (f"here ({source.path})" if source.status == "here"
             else f"would download {source.file} ({megabytes(source.size)}) from {source.origin}")
    console.print(Text.assemble(("checkpoint", "dim"), " ", visible(f"{source.name}: {where}")), soft_wrap=True)


def _count(records: list[dict], status: str) -> int:
    return sum(record["status"] == status for record in records)


def batch_summary(records: list[dict]) -> dict[str, Any]:
    """The --json document of a batch. After Ctrl-C it also has ``"interrupted": true``, and the
    jobs cut short or never started are there with the status "interrupted" or "not run"."""
    summary: dict[str, Any] = {"ok": _count(records, "ok"), "skipped": _count(records, "skipped"),
                               "failed": _count(records, "failed")}
    if any(record["status"] in ("interrupted", "not run") for record in records):
        summary["interrupted"] = True
    return {**summary, "results": records}


def batch_failures(records: list[dict], *, as_json: bool) -> int:
    """Print the --json summary if asked; return how many jobs failed."""
    if as_json:
        stdout_write(json_document(batch_summary(records)))
    return _count(records, "failed")
