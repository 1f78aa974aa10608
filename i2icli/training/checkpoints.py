"""Training checkpoints: their file format, a run's checkpoints/ folder, and which checkpoint may resume a run.

A checkpoint is one dict that ``torch.load(weights_only=True)`` reads back: the method's own
``state_dict()`` at the top level, beside the keys the loop keeps there (:data:`RESERVED_KEYS`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from i2icli.atomic_files import replace_atomically
from i2icli.errors import I2IError, WeightsError

from .checkpoint_files import CheckpointFiles, refuse_a_missing_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "RESERVED_KEYS",
    "CheckpointFolder",
    "check_resumable",
    "check_same_run",
    "checkpoint_payload",
    "load_training_checkpoint",
    "method_state",
    "refuse_reserved_keys",
    "trainer_state",
    "training_checkpoint_method",
]

CHECKPOINT_FORMAT = "i2i-train"
CHECKPOINT_FORMAT_VERSION = 1
# Keys the loop owns at the top level of a checkpoint; the method's state_dict() fills the rest.
RESERVED_KEYS = frozenset({"format", "format_version", "method", "config", "step", "settings", "trainer"})


# --------------------------------------------------------------------------- the file


def refuse_reserved_keys(state: dict) -> None:
    """A method's ``state_dict()`` must leave the loop's keys free: they would overwrite its entries."""
    clash = RESERVED_KEYS & set(state)
    if clash:
        raise ValueError(f"method state_dict uses keys reserved for the loop: {sorted(clash)}")


def checkpoint_payload(state: dict, *, method: str, config: dict, step: int, settings: dict[str, Any],
                       trainer: dict[str, Any]) -> dict:
    """What a checkpoint file holds: a method's ``state`` (checked by :func:`refuse_reserved_keys`)
    with the loop's own keys beside it."""
    return {
        **state,
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "method": method,
        "config": config,
        "step": step,
        "settings": settings,
        "trainer": trainer,
    }


def load_training_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`~i2icli.training.loop.train` (safely:
    ``weights_only=True``) onto the CPU."""
    return _read_training_checkpoint(Path(path), tensors_left_on_disk=False)


def training_checkpoint_method(path: Path) -> str | None:
    """The training command that wrote the checkpoint at ``path``, read without its tensors (they
    stay on disk, memory-mapped): a command can refuse another's checkpoint, and check the rest of
    its command line, before it spends the seconds a large checkpoint takes to load."""
    return _read_training_checkpoint(Path(path), tensors_left_on_disk=True).get("method")


def _read_training_checkpoint(path: Path, *, tensors_left_on_disk: bool) -> dict:
    hint = "resume from another file in the run's checkpoints/ folder, or start a new run with another --out"
    refuse_a_missing_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=tensors_left_on_disk)
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


def trainer_state(checkpoint: dict | None) -> dict:
    """What the loop itself keeps in a checkpoint (training seconds, the metrics window); {} for none."""
    return (checkpoint or {}).get("trainer") or {}


# --------------------------------------------------------------------------- the folder


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


class CheckpointFolder(CheckpointFiles):
    """step-NNNNNNN.pt files plus latest.pt, written atomically, pruned to the newest ``keep``."""

    def __init__(self, folder: Path, keep: int):
        super().__init__(folder)
        self.keep = keep

    def save(self, payload: dict, step: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.step_file(step)
        replace_atomically(target, functools.partial(_save_torch, payload))
        replace_atomically(self.latest, _link_or_copy(target))
        self._prune(step)

    def _prune(self, step: int) -> None:
        # Files past `step` belong to a branch abandoned by resuming from an older
        # checkpoint; they are left alone until training reaches and replaces them.
        kept = sorted(s for s in self.step_files() if s <= step)
        for old in kept[: max(0, len(kept) - self.keep)]:
            with contextlib.suppress(FileNotFoundError):
                self.step_file(old).unlink()

    def newest_readable(self) -> dict | None:
        """The newest readable checkpoint here: latest.pt, or when that is damaged (the very case
        in which a user resumes from an older file) the newest readable step file."""
        steps = self.step_files()
        for path in [self.latest, *(steps[step] for step in sorted(steps, reverse=True))]:
            try:
                return load_training_checkpoint(path)
            except WeightsError:
                continue
        return None


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


def check_resumable(checkpoint: dict, path: Path, method: str, config: dict, settings: dict[str, Any]) -> None:
    """Refuse ``checkpoint`` (read from ``path``) unless it is of ``method`` with ``config``, and
    was trained with the batch size and seed of ``settings`` (as a checkpoint stores them)."""
    hint = "resume with the settings the run was started with, or start a new run with another --out"
    if checkpoint.get("method") != method:
        raise I2IError(
            f"{path}: the checkpoint is from method '{checkpoint.get('method')}', not '{method}'", hint
        )
    difference = _config_difference(_plain(checkpoint.get("config")), _plain(config))
    if difference:
        raise I2IError(f"{path}: {difference}", hint)
    stored = checkpoint.get("settings") or {}
    for name in ("batch_size", "seed"):
        if stored.get(name) != settings[name]:
            raise I2IError(
                f"{path}: the run used {name.replace('_', ' ')} {stored.get(name)}, "
                f"this run asks for {settings[name]}",
                hint,
            )


def check_same_run(folder: CheckpointFolder, checkpoint: dict, path: Path, warn: Callable[[str], None]) -> None:
    """Resuming from ``path`` into a folder that holds a run: only that same run (method, config,
    seed), or its metrics and checkpoints would be mixed with another run's."""
    latest = folder.latest
    current = folder.newest_readable()
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
