"""A training loop any method can plug into, with checkpoints that resume exactly.

A method (networks, optimisers, losses) implements :class:`TrainableMethod`; :func:`train`
does the rest: batches, seeding, checkpoints, the metrics CSV, sample grids and Ctrl-C.

Exact resumption rests on one rule: nothing random comes from hidden state. Every random
choice is derived from ``(seed, step)``: which examples make up a batch and whether each is
flipped (:func:`batch_plan`), the generator handed to ``train_step``, and the global
torch/NumPy/``random`` generators, reseeded before each step. A checkpoint therefore only
needs the method's own state and the step number, and a run stopped at step k and resumed
produces bit for bit the state an uninterrupted run has at every later step (given the
same data, device and library versions, and a method whose ops are deterministic there).

Layout of a run folder::

    <out_dir>/checkpoints/step-0000100.pt   every checkpoint_every steps and at the end
    <out_dir>/checkpoints/latest.pt         the newest of them
    <out_dir>/metrics.csv                   step,seconds,<loss names>
    <out_dir>/samples/step-0000500.png      sample grids
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from i2icli.errors import I2IError, WeightsError
from i2icli.imageio import replace_atomically, write_image, write_text
from i2icli.pipelines.imagetensors import to_picture

from .data import ReadingNote, collate_images

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "TrainableMethod",
    "TrainingSettings",
    "TrainingResult",
    "PlannedBatchSampler",
    "batch_plan",
    "derived_seed",
    "move_to",
    "load_training_checkpoint",
    "method_state",
    "refuse_a_new_run_in",
    "train",
]

CHECKPOINT_FORMAT = "i2i-train"
CHECKPOINT_FORMAT_VERSION = 1
# Keys the loop owns at the top level of a checkpoint; the method's state_dict() fills the rest.
RESERVED_KEYS = frozenset({"format", "format_version", "method", "config", "step", "settings", "trainer"})

_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


class TrainableMethod(Protocol):
    """What a training method provides. The loop never looks inside its networks."""

    name: str  # e.g. "translate-lr"; stored in checkpoints and checked on resume

    def config(self) -> dict:
        """Primitives only (numbers, strings, lists, dicts): enough to rebuild the method."""
        ...

    def state_dict(self) -> dict:
        """Networks, optimisers, EMA copies: tensors, primitives, dicts and lists only, so that
        ``torch.load(weights_only=True)`` reads them back. Keys must avoid ``RESERVED_KEYS``."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (called after :meth:`to`)."""
        ...

    def train_step(self, batch: Any, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step on a batch already on the device; returns named losses.

        Draw randomness from ``generator`` (or the global generators, which the loop also
        reseeds per step), never from state carried across steps outside :meth:`state_dict`.
        ``generator`` is a CPU generator whatever the device: draw on the CPU and move the
        result, so that a seed gives the same noise on every device.
        """
        ...

    def sample_grid(self, batch: Any) -> torch.Tensor:
        """A [3, H, W] picture in [-1, 1] of the current (EMA) outputs on ``batch``.

        Runs under ``torch.no_grad()``; it must not change the method's state (e.g. batch-norm
        statistics), or a run's results would depend on when samples were drawn.
        """
        ...

    def to(self, device: torch.device) -> None:
        """Move networks (and any optimiser state) to ``device``."""
        ...


@dataclass
class TrainingSettings:
    """How long to train and what to write where. Only seed and batch size fix the results."""

    out_dir: Path
    steps: int
    batch_size: int
    seed: int = 0
    checkpoint_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 3
    num_workers: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def stored(self, dataset_size: int) -> dict[str, Any]:
        """The primitives a checkpoint records about its run."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "checkpoint_every": self.checkpoint_every,
            "sample_every": self.sample_every,
            "log_every": self.log_every,
            "keep_checkpoints": self.keep_checkpoints,
            "num_workers": self.num_workers,
            "device": str(self.device),
            "dataset_size": dataset_size,
        }


@dataclass
class TrainingResult:
    """Where a training session ended and what it left behind."""

    step: int  # the last completed step (== settings.steps unless the run was already past it)
    checkpoint: Path | None  # latest.pt, or None if no checkpoint exists
    metrics: Path
    samples: Path
    seconds: float  # wall time of this session
    steps_run: int  # steps trained in this session (0 when resuming a finished run)
    resumed_from: int | None  # the checkpoint's step, or None for a new run


# --------------------------------------------------------------------------- randomness


def derived_seed(seed: int, purpose: str, *numbers: int) -> int:
    """A 63-bit seed for one purpose at one point (e.g. ``("flip", step)``), independent of all others."""
    text = ":".join([str(seed), purpose, *map(str, numbers)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def _cpu_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    order = torch.randperm(n, generator=_cpu_generator(derived_seed(seed, "epoch", epoch))).numpy()
    order.flags.writeable = False  # shared through the cache
    return order


def batch_plan(step: int, batch_size: int, n: int, seed: int) -> list[tuple[int, bool]]:
    """The ``(index, flip)`` items of step ``step`` (1-based), a pure function of its arguments.

    The sample order is the concatenation of one random permutation of ``range(n)`` per
    epoch, and step ``s`` takes its slice ``[(s-1)*batch_size, s*batch_size)``: every example
    is seen once per epoch, and a batch may run on from one epoch's end into the next.
    Flips are drawn per step.
    """
    if step < 1 or batch_size < 1 or n < 1:
        raise ValueError(f"batch_plan needs step, batch_size and n >= 1, got {step}, {batch_size}, {n}")
    flips = torch.rand(batch_size, generator=_cpu_generator(derived_seed(seed, "flip", step))) < 0.5
    first = (step - 1) * batch_size
    plan = []
    for offset in range(batch_size):
        epoch, position = divmod(first + offset, n)
        plan.append((int(_epoch_order(n, seed, epoch)[position]), bool(flips[offset])))
    return plan


class PlannedBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Yields :func:`batch_plan` for steps ``first_step`` .. ``last_step``, for a DataLoader's batch_sampler."""

    def __init__(self, n: int, batch_size: int, seed: int, first_step: int, last_step: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.first_step, self.last_step = first_step, last_step

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for step in range(self.first_step, self.last_step + 1):
            yield batch_plan(step, self.batch_size, self.n, self.seed)

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step + 1)


def _seed_global_generators(seed: int) -> None:
    torch.manual_seed(seed)  # all devices
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _ignore_interrupts_in_worker(_worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the whole process group; workers must keep serving
    # batches while the main process finishes its step and saves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------- batches


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (inside tuples, lists and dicts) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        # Asynchronous only to CUDA, which has read a pageable source by the time the call returns
        # and keeps a pinned one alive until the copy is done. An asynchronous copy to MPS reads
        # its source later, after the loop has let the CPU batch go: it silently gets other data.
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, list):
        return [move_to(value, device) for value in batch]
    if isinstance(batch, tuple):
        moved = [move_to(value, device) for value in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)
    return batch


def _from_worker(error: I2IError) -> I2IError:
    """A DataLoader worker's error is raised again in this process with the worker's whole
    traceback as its message; the error's own line (the last) is what the user needs."""
    if not error.message.startswith("Caught "):
        return error
    last = error.message.strip().splitlines()[-1].split(": ", 1)[-1]
    # The line is the worker's error as text, "message (hint)": the hint is taken back out, or
    # it would be shown twice.
    return I2IError(*_message_and_hint(last))


def _message_and_hint(line: str) -> tuple[str, str | None]:
    """``str(I2IError)`` taken apart again: the hint is the parenthesised group the line ends with."""
    if not line.endswith(")"):
        return line, None
    depth = 0
    for position in range(len(line) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(line[position], 0)
        if depth == 0:
            if position > 1 and line[position - 1] == " ":
                return line[: position - 1], line[position + 1 : -1]
            return line, None
    return line, None


# --------------------------------------------------------------------------- checkpoints


def _save_torch(payload: dict, temp: Path) -> None:
    with open(temp, "xb") as file:
        torch.save(payload, file)
        file.flush()
        os.fsync(file.fileno())


def _link_or_copy(source: Path) -> Callable[[Path], None]:
    def write(temp: Path) -> None:
        try:
            os.link(source, temp)  # no second copy of a large file
        except OSError:
            shutil.copyfile(source, temp)
            with open(temp, "rb+") as file:
                os.fsync(file.fileno())

    return write


def load_training_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`train` (safely: ``weights_only=True``) onto the CPU."""
    path = Path(path)
    hint = "resume from another file in the run's checkpoints/ folder, or start a new run with another --out"
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file", "check the path; a run keeps its checkpoints in <out>/checkpoints/")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types, with messages about its internals, for damaged or foreign files
        raise WeightsError(f"{path}: not a readable training checkpoint (damaged, cut short, or not a PyTorch file)",
                           hint) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: not an i2i training checkpoint", hint)
    version = checkpoint.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise WeightsError(
            f"{path}: training checkpoint format version {version}, this i2i reads version {CHECKPOINT_FORMAT_VERSION}",
            "use the i2i version that wrote it",
        )
    return checkpoint


def method_state(checkpoint: dict) -> dict:
    """The part of a checkpoint that came from the method's ``state_dict()``."""
    return {key: value for key, value in checkpoint.items() if key not in RESERVED_KEYS}


class _CheckpointFolder:
    """step-NNNNNNN.pt files plus latest.pt, written atomically, pruned to the newest few."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep
        self.latest = folder / "latest.pt"

    def step_files(self) -> dict[int, Path]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for path in self.folder.iterdir():
            match = _STEP_FILE.match(path.name)
            if match:
                found[int(match.group(1))] = path
        return found

    def holds_a_run(self) -> bool:
        return self.latest.exists() or bool(self.step_files())

    def step_file(self, step: int) -> Path:
        return self.folder / f"step-{step:07d}.pt"

    def save(self, payload: dict, step: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.step_file(step)
        replace_atomically(target, functools.partial(_save_torch, payload))
        replace_atomically(self.latest, _link_or_copy(target))
        self._prune(step)
        return target

    def _prune(self, step: int) -> None:
        # Files past `step` belong to a branch abandoned by resuming from an older
        # checkpoint; they are left alone until training reaches and replaces them.
        kept = sorted(s for s in self.step_files() if s <= step)
        for old in kept[: max(0, len(kept) - self.keep)]:
            with contextlib.suppress(FileNotFoundError):
                self.step_file(old).unlink()


# --------------------------------------------------------------------------- metrics


class _MetricsLog:
    """metrics.csv: a row every ``log_every`` steps (and at the end) of losses averaged since the last row.

    The running window is saved in checkpoints, so a row cut short by the end of a session
    is replaced, after resuming, by the row an uninterrupted run would have written.
    """

    def __init__(self, path: Path, log_every: int):
        self.path, self.log_every = path, log_every
        self.columns: list[str] | None = None
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last_row_step = 0

    def window(self) -> dict[str, Any]:
        return {"log_every": self.log_every, "sums": dict(self.sums), "counts": dict(self.counts)}

    def resume(self, step: int, window: dict[str, Any] | None) -> None:
        """Drop rows after ``step`` (and a partial row at ``step`` whose window the checkpoint holds)."""
        restore = (
            window is not None
            and window.get("log_every") == self.log_every
            and step % self.log_every != 0
            and bool(window.get("counts"))
        )
        if restore:
            self.sums = {key: float(value) for key, value in window["sums"].items()}
            self.counts = {key: int(value) for key, value in window["counts"].items()}
        if not self.path.exists():
            return
        # A crash can leave a torn last line, even half a character: decode leniently, drop it below.
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        if not lines:
            return
        header, kept = lines[0], [lines[0]]
        if header.split(",")[:2] != ["step", "seconds"] or len(header.split(",")) < 3:
            raise self._foreign_header()
        for line in lines[1:]:
            first = line.split(",", 1)[0]
            if not first.isdigit():
                continue  # a line torn by a crash
            row_step = int(first)
            if row_step < step or (row_step == step and not restore):
                kept.append(line)
                self.last_row_step = row_step
        self.columns = header.split(",")[2:]
        write_text(self.path, "\n".join(kept) + "\n")

    def add(self, step: int, seconds: float, losses: dict[str, float], last: bool) -> None:
        if self.columns is None:
            self.columns = sorted(losses)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, ",".join(["step", "seconds", *self.columns]) + "\n")
        if set(losses) - set(self.columns):
            raise self._foreign_header()
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1
        if step % self.log_every == 0:
            self.write_row(step, seconds)
            self.sums, self.counts = {}, {}
        elif last:
            self.write_row(step, seconds)

    def _foreign_header(self) -> I2IError:
        # Re-saved by a spreadsheet, say: rows appended under another header would be misread.
        return I2IError(f"{self.path}: its header is not this run's (step,seconds, then the losses)",
                        "move the file aside (a new one is started) or restore the original, then --resume again")

    def write_partial(self, step: int, seconds: float) -> None:
        """The row for steps since the last one, when a session stops between rows."""
        if self.columns is not None and self.counts and self.last_row_step != step:
            self.write_row(step, seconds)

    def write_row(self, step: int, seconds: float) -> None:
        assert self.columns is not None
        cells = [str(step), f"{seconds:.3f}"]
        for name in self.columns:
            count = self.counts.get(name, 0)
            cells.append(format(self.sums[name] / count, ".6g") if count else "")
        try:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(",".join(cells) + "\n")
        except OSError as error:  # a full disk names no file
            raise I2IError(f"{self.path}: cannot add the row of step {step}: {error.strerror or error}",
                           "free some space on that disk or make the file writable, then continue with --resume "
                           "(from the run's last checkpoint)") from None
        self.last_row_step = step


# --------------------------------------------------------------------------- samples


def _write_sample(grid: torch.Tensor, path: Path) -> None:
    if grid.ndim != 3 or grid.shape[0] != 3:
        raise ValueError(f"sample_grid must return a [3, H, W] tensor, got {tuple(grid.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, to_picture(torch.nan_to_num(grid.detach().float(), nan=-1.0)))


# --------------------------------------------------------------------------- interrupts


# A second SIGINT this soon after the first is the same Ctrl-C: the terminal sends it to the
# whole process group, and a launcher in that group (`uv run`, say) forwards it once more.
_SAME_CTRL_C_SECONDS = 1.0


@dataclass
class _InterruptRequest:
    requested: bool = False
    at: float = 0.0
    saving: bool = False  # set while the final checkpoint is written: nothing may cut that short


@contextlib.contextmanager
def _finish_step_on_interrupt() -> Iterator[_InterruptRequest]:
    """The first Ctrl-C lets the current step finish (so the saved state is exactly a step's);
    a second one, a moment later, interrupts at once, but never the saving of the checkpoint."""
    request = _InterruptRequest()
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


# --------------------------------------------------------------------------- resuming


def _plain(value: Any) -> Any:
    """Tuples as lists, so a config compares equal to its round trip through a checkpoint."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _config_difference(stored: Any, wanted: Any, where: str = "",
                       sides: tuple[str, str] = ("the checkpoint", "this run")) -> str | None:
    """The first config field that differs, in words; ``sides`` name where ``stored`` and
    ``wanted`` come from ("the checkpoint has 8, this run has 4")."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted), key=str):
            name = f"{where}.{key}" if where else str(key)
            if key not in stored:
                return f"config field '{name}' is not in {sides[0]}"
            if key not in wanted:
                return f"config field '{name}' is in {sides[0]} but not in {sides[1]}"
            found = _config_difference(stored[key], wanted[key], name, sides)
            if found:
                return found
        return None
    if stored != wanted:
        return f"config field '{where or 'config'}' differs: {sides[0]} has {stored!r}, {sides[1]} has {wanted!r}"
    return None


def _check_resumable(checkpoint: dict, path: Path, method: TrainableMethod, settings: TrainingSettings) -> None:
    hint = "resume with the settings the run was started with, or start a new run with another --out"
    if checkpoint.get("method") != method.name:
        raise I2IError(
            f"{path}: the checkpoint is from method '{checkpoint.get('method')}', not '{method.name}'", hint
        )
    difference = _config_difference(_plain(checkpoint.get("config")), _plain(method.config()))
    if difference:
        raise I2IError(f"{path}: {difference}", hint)
    stored = checkpoint.get("settings") or {}
    for name in ("batch_size", "seed"):
        if stored.get(name) != getattr(settings, name):
            raise I2IError(
                f"{path}: the run used {name.replace('_', ' ')} {stored.get(name)}, "
                f"this run asks for {getattr(settings, name)}",
                hint,
            )


def _check_same_run(folder: _CheckpointFolder, checkpoint: dict, path: Path, warn: Callable[[str], None]) -> None:
    """Resuming from ``path`` into a folder that holds a run: only that same run (method, config,
    seed), or its metrics and checkpoints would be mixed with another run's."""
    latest = folder.latest
    current = _run_of(folder)
    if current is None:
        warn(f"{latest} cannot be read, nor any other checkpoint in {folder.folder}; the first checkpoint saved "
             "replaces it")
        return
    difference = _config_difference(_plain(current.get("config")), _plain(checkpoint.get("config")),
                                    sides=("the run there", "the checkpoint"))
    seeds = [(c.get("settings") or {}).get("seed") for c in (current, checkpoint)]
    if current.get("method") != checkpoint.get("method"):
        difference = f"method '{current.get('method')}' there, '{checkpoint.get('method')}' here"
    elif not difference and seeds[0] != seeds[1]:
        difference = f"seed {seeds[0]} there, {seeds[1]} here"
    if difference:
        raise I2IError(f"{latest.parent.parent} holds another run than {path} ({difference})",
                       "resume from that checkpoint into a new --out")


def _run_of(folder: _CheckpointFolder) -> dict | None:
    """The newest readable checkpoint of the run in ``folder``: latest.pt, or when that is damaged
    (the very case in which a user resumes from an older file) its newest readable step file."""
    steps = folder.step_files()
    for path in [folder.latest, *(steps[step] for step in sorted(steps, reverse=True))]:
        try:
            return load_training_checkpoint(path)
        except WeightsError:
            continue
    return None


def refuse_a_new_run_in(out_dir: Path) -> None:
    """Refuse to start a new run in ``out_dir`` when it holds one: the new run's checkpoints would
    replace the old run's."""
    if _CheckpointFolder(Path(out_dir) / "checkpoints", keep=1).holds_a_run():
        raise I2IError(f"{out_dir} already holds a training run; pass --resume to continue it or choose another --out")


def _refuse_entries_of_the_wrong_kind(out_dir: Path) -> None:
    """checkpoints/ and samples/ must be folders, metrics.csv a file: found out at the first save,
    the mistake would cost every step trained until then."""
    for name, folder, holding in (("checkpoints", True, "checkpoints"), ("samples", True, "sample grids"),
                                  ("metrics.csv", False, "losses")):
        path = out_dir / name
        if os.path.lexists(path) and path.is_dir() != folder:
            kind = "is not a folder" if folder else "is a folder, not a file"
            raise I2IError(f"{path}: {kind}, and the run keeps its {holding} there",
                           "move it aside, or choose another --out")


def _trainer_state(checkpoint: dict | None) -> dict:
    """What the loop itself keeps in a checkpoint (training seconds, the metrics window); {} for none."""
    return (checkpoint or {}).get("trainer") or {}


# --------------------------------------------------------------------------- the loop


def usable_cpus() -> int:
    """The CPUs this process may run on. Data-loading workers beyond them only compete for the
    same CPUs (and PyTorch warns of them, twice); the run keeps the count asked for, so that a
    resume on a larger machine uses more."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every system
        return os.cpu_count() or 1


# A tensor's sizes are 64-bit integers: a batch's flips are drawn as one tensor of the batch's size.
_LARGEST_TENSOR_SIZE = 2**63 - 1


def _validate(settings: TrainingSettings) -> None:
    for name in ("steps", "batch_size", "checkpoint_every", "sample_every", "log_every", "keep_checkpoints"):
        if getattr(settings, name) < 1:
            raise I2IError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(settings, name)}")
    if settings.num_workers < 0:
        raise I2IError(f"num workers must be 0 or more, got {settings.num_workers}")
    if settings.batch_size > _LARGEST_TENSOR_SIZE:
        raise I2IError(f"batch size {settings.batch_size} is more than a tensor can hold ({_LARGEST_TENSOR_SIZE})",
                       "use a smaller --batch-size")


@contextlib.contextmanager
def _only_run_in(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for this run: a second run into the same folder would interleave its
    metrics and checkpoints with this one's. (Advisory lock; where there is none, no check.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = os.open(out_dir, os.O_RDONLY)  # the folder itself is locked: no lock file is left behind
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise I2IError(f"{out_dir}: another training run is using this folder",
                               "wait for it to finish, or choose another --out") from None
            # A file system without locks (Lustre mounted without flock, NFS without its lock
            # service) says ENOSYS or ENOLCK: that is no other run, and runs there go unchecked.
        yield
    finally:
        os.close(folder)  # releases the lock


def train(method: TrainableMethod, dataset: Dataset, settings: TrainingSettings, **options: Any) -> TrainingResult:
    """Train ``method`` on ``dataset`` for steps 1 .. ``settings.steps``, or resume a run and continue.

    ``dataset`` is indexed by ``(index, flip)`` (see :mod:`i2icli.training.data`);
    ``collate_fn`` turns a list of its items into ``(batch, skipped messages)``; the batch,
    moved to the device, is what ``method.train_step`` receives. ``held_out_batch`` (same
    shape as a batch, on any device) is what sample grids show; without it none are written.
    ``resume`` is False for a new run (refused if ``out_dir`` already holds one), True for
    ``out_dir/checkpoints/latest.pt``, or a checkpoint path.

    ``on_progress(step, total_steps, losses)`` is called after every step; ``on_warning``
    gets one line per unreadable training file (once per file) and per other notice.
    On KeyboardInterrupt the last completed step is saved and the interrupt re-raised; one that
    arrives inside ``train_step`` (a second Ctrl-C) saves nothing new, since the state is then
    no step's. Only one run at a time may use ``out_dir``.
    """
    with _only_run_in(Path(settings.out_dir)):
        return _train(method, dataset, settings, **options)


def _train(
    method: TrainableMethod,
    dataset: Dataset,
    settings: TrainingSettings,
    *,
    collate_fn: Callable[[list[Any]], tuple[Any, list[str]]] = collate_images,
    held_out_batch: Any | None = None,
    resume: bool | Path = False,
    on_progress: Callable[[int, int, dict[str, float]], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> TrainingResult:
    _validate(settings)
    run = _TrainingRun(method, dataset, settings, warn=on_warning or (lambda message: None))
    checkpoint = run.open(resume)
    run.load(checkpoint)
    if run.start >= settings.steps:
        run.warn(f"the run already reached step {run.start} of {settings.steps}; nothing to train "
                 "(raise the step count to continue)")
        return run.result()
    if checkpoint is not None:
        run.metrics.resume(run.start, _trainer_state(checkpoint).get("metrics_window"))
    loader = run.loader(collate_fn)
    held_out = move_to(held_out_batch, run.device) if held_out_batch is not None else None
    run.take_steps(loader, held_out, on_progress)
    return run.result()


# --resume would not help a diverged run: it keeps its rates and diverges again at the same step.
_DIVERGED_HINT = ("start a new run with another --out and lower learning rates (--g-lr, --d-lr) or loss weights; a "
                  "resumed run keeps its own and would diverge again")


def _first_non_finite(state: Any, name: str = "") -> str | None:
    """The name of the first network tensor in ``state`` (nested dicts and lists, as a method's
    ``state_dict()`` holds them) with a NaN or infinite value, or None when all are finite.

    Optimiser states are left out: one huge gradient can make an entry of Adam's second moment
    infinite, which only stops that weight from moving, and the run may well go on."""
    tensors: list[tuple[str, torch.Tensor]] = []

    def gather(value: Any, where: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex():
                tensors.append((where, value))
        elif isinstance(value, dict) and {"state", "param_groups"} <= value.keys():
            return  # an optimiser's state_dict()
        elif isinstance(value, dict):
            for key, inner in value.items():
                gather(inner, f"{where}.{key}" if where else str(key))
        elif isinstance(value, (list, tuple)):
            for index, inner in enumerate(value):
                gather(inner, f"{where}.{index}" if where else str(index))

    gather(state, name)
    if not tensors:
        return None
    # One answer read back per device for all its tensors, rather than one wait per tensor.
    on_device: dict[torch.device, list[int]] = {}
    for index, (_, tensor) in enumerate(tensors):
        on_device.setdefault(tensor.device, []).append(index)
    finite = torch.ones(len(tensors), dtype=torch.bool)
    for indices in on_device.values():
        finite[indices] = torch.stack([torch.isfinite(tensors[index][1]).all() for index in indices]).cpu()
    if bool(finite.all()):
        return None
    return tensors[int((~finite).nonzero()[0])][0]


class _TrainingRun:
    """One session of a run: open (or resume) its folder, load the method, take the steps, save.

    Three step numbers say where the session is: ``start``, the step it began after (the
    checkpoint's, or 0); ``completed``, the last step whose ``train_step`` returned; and
    ``saved``, the last step written as a checkpoint (``start`` until one is written).
    """

    def __init__(self, method: TrainableMethod, dataset: Dataset, settings: TrainingSettings,
                 warn: Callable[[str], None]):
        self.started = time.perf_counter()
        self.method, self.dataset, self.settings, self.warn = method, dataset, settings, warn
        self.out_dir = Path(settings.out_dir)
        self.device = torch.device(settings.device)
        self.checkpoints = _CheckpointFolder(self.out_dir / "checkpoints", settings.keep_checkpoints)
        self.metrics = _MetricsLog(self.out_dir / "metrics.csv", settings.log_every)
        self.samples_dir = self.out_dir / "samples"
        self.dataset_size: int = len(dataset)  # type: ignore[arg-type]
        if self.dataset_size < 1:
            raise I2IError("there are no training examples")
        self.stored_settings = settings.stored(self.dataset_size)
        self.resumed_from: int | None = None  # the checkpoint's step, for a resumed run
        self.start = self.completed = self.saved = 0
        self.mid_step: int | None = None  # the step being taken, while train_step runs
        self.seconds_before = 0.0  # training time of the sessions before this one
        self.session_start = self.started  # reset when the first step is about to be taken
        self.skipped_warned: set[str] = set()  # unreadable-file messages already passed on

    # ----------------------------------------------------------------------- opening

    def open(self, resume: bool | Path) -> dict | None:
        """Check that this session may use the run folder, warning where it differs from what an
        uninterrupted run would do; the checkpoint to resume from, or None for a new run."""
        _refuse_entries_of_the_wrong_kind(self.out_dir)
        if resume:
            return self._checkpoint_to_resume(resume)
        refuse_a_new_run_in(self.out_dir)
        if self.metrics.path.exists():
            # A run stopped before its first checkpoint: nothing to resume, and its log would only mislead.
            self.warn(f"{self.out_dir} holds the log of a run that saved no checkpoint; starting over")
        return None

    def _checkpoint_to_resume(self, resume: bool | Path) -> dict:
        latest = self.checkpoints.latest
        path = latest if resume is True else Path(resume)
        if resume is True and not path.exists():
            raise I2IError(
                f"{self.out_dir}: no training run to resume (no checkpoints/latest.pt)",
                "start a new run without --resume, or pass the checkpoint file to resume from",
            )
        checkpoint = load_training_checkpoint(path)
        _check_resumable(checkpoint, path, self.method, self.settings)
        if resume is not True and latest.exists() and path.resolve() != latest.resolve():
            _check_same_run(self.checkpoints, checkpoint, path, self.warn)
        self.resumed_from = int(checkpoint["step"])
        stored_size = (checkpoint.get("settings") or {}).get("dataset_size")
        if stored_size is not None and stored_size != self.dataset_size:
            self.warn(
                f"the run was trained on {stored_size} examples and now has {self.dataset_size}: "
                "the batches from here on differ from those of an uninterrupted run"
            )
        later = [step for step in self.checkpoints.step_files() if step > self.resumed_from]
        if later:
            self.warn(
                f"resuming from step {self.resumed_from} although {self.checkpoints.folder} holds checkpoints up to "
                f"step {max(later)}; those are replaced as training reaches them"
            )
        return checkpoint

    def load(self, checkpoint: dict | None) -> None:
        """Put the method on the device, in the checkpoint's state when resuming."""
        self.method.to(self.device)
        if checkpoint is not None:
            self.method.load_state_dict(method_state(checkpoint))
        self.start = self.completed = self.saved = self.resumed_from or 0
        self.seconds_before = float(_trainer_state(checkpoint).get("seconds", 0.0))

    def loader(self, collate_fn: Callable[[list[Any]], tuple[Any, list[str]]]) -> DataLoader:
        """The batches of steps ``start + 1`` .. ``settings.steps``, each planned from (seed, step)."""
        first_step, settings = self.start + 1, self.settings
        return DataLoader(
            self.dataset,
            batch_sampler=PlannedBatchSampler(self.dataset_size, settings.batch_size, settings.seed, first_step,
                                              settings.steps),
            collate_fn=collate_fn,
            num_workers=min(settings.num_workers, usable_cpus()),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_ignore_interrupts_in_worker if settings.num_workers else None,
            # DataLoader draws its workers' base seed from this, not from the global generator.
            generator=_cpu_generator(derived_seed(settings.seed, "loader", first_step)),
        )

    # ----------------------------------------------------------------------- training

    def take_steps(self, loader: DataLoader, held_out: Any | None,
                   on_progress: Callable[[int, int, dict[str, float]], None] | None) -> None:
        """Train to ``settings.steps``; on Ctrl-C, stop after the step in progress, save, re-raise."""
        self.session_start = time.perf_counter()
        total = self.settings.steps
        with _finish_step_on_interrupt() as interrupt:
            batches = iter(loader)
            try:
                for step in range(self.start + 1, total + 1):
                    batch = self._next_batch(batches)
                    losses = self._take_step(step, batch)
                    last = step == total
                    self.metrics.add(step, self._training_seconds(), losses, last)
                    if on_progress is not None:
                        on_progress(step, total, losses)
                    if held_out is not None and (step % self.settings.sample_every == 0 or last):
                        self._write_sample_grid(step, held_out)
                    if step % self.settings.checkpoint_every == 0 or last:
                        self.save(step)
                    if interrupt.requested and not last:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                interrupt.saving = True
                self._stop_on_interrupt()
                raise
            finally:
                del batches  # shuts DataLoader workers down now, not at garbage collection

    def _next_batch(self, batches: Iterator[tuple[Any, list[str]]]) -> Any:
        """The next batch, on the device, after one warning per unreadable file it skipped."""
        try:
            batch, skipped = next(batches)
        except I2IError as error:
            raise _from_worker(error) from None
        for message in skipped:
            if message not in self.skipped_warned:
                self.skipped_warned.add(message)
                self.warn(message if isinstance(message, ReadingNote) else
                          f"{message}; skipped, training goes on with the next image")
        return move_to(batch, self.device)

    def _take_step(self, step: int, batch: Any) -> dict[str, float]:
        """Step ``step`` of the method on ``batch``, every random draw seeded from (seed, step); its losses."""
        seed = self.settings.seed
        _seed_global_generators(derived_seed(seed, "global", step))
        # On the CPU whatever the device: torch refuses a CUDA generator to draw CPU noise.
        generator = _cpu_generator(derived_seed(seed, "step", step))
        self.mid_step = step  # the weights and optimisers are neither step-1's nor step's until it returns
        raw_losses = self.method.train_step(batch, generator)
        self.completed, self.mid_step = step, None  # every update is queued: saving waits for them
        losses = {name: float(value) for name, value in raw_losses.items()}
        self._stop_if_diverged(step, losses)
        return losses

    def _stop_if_diverged(self, step: int, losses: dict[str, float]) -> None:
        diverged = [f"{name} {value}" for name, value in losses.items() if not math.isfinite(value)]
        if not diverged:
            return
        # The weights are NaN/inf from here on: nothing is saved over the last good checkpoint.
        raise I2IError(f"step {step}: the losses are not finite ({', '.join(diverged)}); training stopped and "
                       f"{self._kept_checkpoint()}", _DIVERGED_HINT)

    def _refuse_non_finite_state(self, step: int, state: dict) -> None:
        """A step's losses are measured before its update, so finite losses do not make the weights
        after it finite: those are checked once more here, rather than saved as the run's latest."""
        broken = _first_non_finite(state)
        if broken is None:
            return
        raise I2IError(f"step {step}: its update left weights that are not finite (first in {broken}); training "
                       f"stopped and {self._kept_checkpoint()}", _DIVERGED_HINT)

    def _kept_checkpoint(self) -> str:
        if self.saved:
            return f"the last checkpoint, step {self.saved}, is kept ({self.checkpoints.latest})"
        return "no checkpoint was saved"

    def _write_sample_grid(self, step: int, held_out: Any) -> None:
        with torch.no_grad():
            grid = self.method.sample_grid(held_out)
        _write_sample(grid, self.samples_dir / f"step-{step:07d}.png")

    def _training_seconds(self) -> float:
        """Training time of the whole run so far, this session included."""
        return self.seconds_before + time.perf_counter() - self.session_start

    # ----------------------------------------------------------------------- saving and stopping

    def save(self, step: int) -> None:
        """Write the method's current state as the checkpoint of step ``step``; refused when its
        networks hold values that are not finite."""
        payload = self.method.state_dict()
        clash = RESERVED_KEYS & set(payload)
        if clash:
            raise ValueError(f"method state_dict uses keys reserved for the loop: {sorted(clash)}")
        self._refuse_non_finite_state(step, payload)
        payload.update(
            format=CHECKPOINT_FORMAT,
            format_version=CHECKPOINT_FORMAT_VERSION,
            method=self.method.name,
            config=self.method.config(),
            step=step,
            settings=self.stored_settings,
            trainer={"seconds": self._training_seconds(), "metrics_window": self.metrics.window()},
        )
        try:
            self.checkpoints.save(payload, step)
        except OSError as error:
            # A full disk gives an error that names no file (or the hidden temp file): name the
            # checkpoint, and say from where the run can go on.
            if self.saved:
                kept = f"then continue from step {self.saved} with --resume ({self.checkpoints.latest})"
            else:
                kept = "then start the run again (no checkpoint was saved)"
            raise I2IError(f"{self.checkpoints.step_file(step)}: cannot write the checkpoint of step {step}: "
                           f"{error.strerror or error}", f"free some space on that disk or make the folder writable, {kept}"
                           ) from None
        self.saved = step

    def _stop_on_interrupt(self) -> None:
        """Close the metrics row and save the last completed step, unless a step was cut short."""
        self.metrics.write_partial(self.completed, self._training_seconds())
        if self.mid_step is not None:
            # A second Ctrl-C cut a step short: saving that state as step `completed` would
            # make --resume continue from weights no uninterrupted run ever had.
            if self.saved:
                self.warn(f"interrupted during step {self.mid_step}, which is not saved; the run continues from step "
                          f"{self.saved} with --resume ({self.checkpoints.latest})")
            else:
                self.warn(f"interrupted during step {self.mid_step}, before any checkpoint was saved")
            return
        if self.completed > self.saved:
            self.save(self.completed)
        if self.completed > self.start:
            self.warn(f"interrupted after step {self.completed}; saved {self.checkpoints.latest} (continue with --resume)")

    def result(self) -> TrainingResult:
        return TrainingResult(
            step=self.completed,
            checkpoint=self.checkpoints.latest if self.checkpoints.latest.exists() else None,
            metrics=self.metrics.path,
            samples=self.samples_dir,
            seconds=time.perf_counter() - self.started,
            steps_run=self.completed - self.start,
            resumed_from=self.resumed_from,
        )
