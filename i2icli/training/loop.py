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

The run's files are handled beside this module: :mod:`~i2icli.training.checkpoints` (the
checkpoint files, and which of them may resume a run), :mod:`~i2icli.training.metrics_log`
(metrics.csv), :mod:`~i2icli.training.run_folder` (what the folder must hold, and its lock) and
:mod:`~i2icli.training.interrupts` (Ctrl-C).

Layout of a run folder::

    <out_dir>/checkpoints/step-0000100.pt   every checkpoint_every steps and at the end
    <out_dir>/checkpoints/latest.pt         the newest of them
    <out_dir>/metrics.csv                   step,seconds,<loss names>
    <out_dir>/samples/step-0000500.png      sample grids
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from i2icli.errors import I2IError
from i2icli.imageio import write_image
from i2icli.pipelines.imagetensors import to_picture

from .checkpoints import (
    CheckpointFolder,
    check_resumable,
    check_same_run,
    checkpoint_payload,
    load_training_checkpoint,
    method_state,
    refuse_reserved_keys,
    trainer_state,
)
from .data import ReadingNote, collate_images
from .interrupts import finish_step_on_interrupt, ignore_interrupts_in_worker
from .metrics_log import MetricsLog
from .run_folder import (
    only_run_in,
    refuse_a_new_run_in,
    refuse_entries_of_the_wrong_kind,
)

__all__ = [
    "TrainableMethod",
    "TrainingSettings",
    "TrainingResult",
    "PlannedBatchSampler",
    "batch_plan",
    "derived_seed",
    "move_to",
    "train",
    "usable_cpus",
]


class TrainableMethod(Protocol):
    """What a training method provides. The loop never looks inside its networks."""

    name: str  # e.g. "translate-lr"; stored in checkpoints and checked on resume

    def config(self) -> dict:
        """Primitives only (numbers, strings, lists, dicts): enough to rebuild the method."""
        ...

    def state_dict(self) -> dict:
        """Networks, optimisers, EMA copies: tensors, primitives, dicts and lists only, so that
        ``torch.load(weights_only=True)`` reads them back. Keys must avoid
        :data:`~i2icli.training.checkpoints.RESERVED_KEYS`."""
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


# --------------------------------------------------------------------------- samples


def _write_sample(grid: torch.Tensor, path: Path) -> None:
    if grid.ndim != 3 or grid.shape[0] != 3:
        raise ValueError(f"sample_grid must return a [3, H, W] tensor, got {tuple(grid.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, to_picture(torch.nan_to_num(grid.detach().float(), nan=-1.0)))


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
    with only_run_in(Path(settings.out_dir)):
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
        run.metrics.resume(run.start, trainer_state(checkpoint).get("metrics_window"))
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
        self.checkpoints = CheckpointFolder(self.out_dir / "checkpoints", settings.keep_checkpoints)
        self.metrics = MetricsLog(self.out_dir / "metrics.csv", settings.log_every)
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
        refuse_entries_of_the_wrong_kind(self.out_dir)
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
        check_resumable(checkpoint, path, self.method.name, self.method.config(), self.stored_settings)
        if resume is not True and latest.exists() and path.resolve() != latest.resolve():
            check_same_run(self.checkpoints, checkpoint, path, self.warn)
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
        self.seconds_before = float(trainer_state(checkpoint).get("seconds", 0.0))

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
            worker_init_fn=ignore_interrupts_in_worker if settings.num_workers else None,
            # DataLoader draws its workers' base seed from this, not from the global generator.
            generator=_cpu_generator(derived_seed(settings.seed, "loader", first_step)),
        )

    # ----------------------------------------------------------------------- training

    def take_steps(self, loader: DataLoader, held_out: Any | None,
                   on_progress: Callable[[int, int, dict[str, float]], None] | None) -> None:
        """Train to ``settings.steps``; on Ctrl-C, stop after the step in progress, save, re-raise."""
        self.session_start = time.perf_counter()
        total = self.settings.steps
        with finish_step_on_interrupt() as interrupt:
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
        state = self.method.state_dict()
        refuse_reserved_keys(state)
        self._refuse_non_finite_state(step, state)
        payload = checkpoint_payload(
            state,
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
