"""The files of a run's checkpoints/ folder, named and listed without PyTorch: a training command
refuses to start a new run over an old one before it imports PyTorch, which takes seconds."""

from __future__ import annotations

import re
from pathlib import Path

from i2icli.errors import WeightsError

__all__ = ["CheckpointFiles", "refuse_a_missing_checkpoint"]

_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


class CheckpointFiles:
    """A run's checkpoints/ folder as files: step-NNNNNNN.pt plus latest.pt (see
    :class:`~i2icli.training.checkpoints.CheckpointFolder`, which writes and reads them)."""

    def __init__(self, folder: Path):
        self.folder = folder
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


def refuse_a_missing_checkpoint(path: Path) -> None:
    """The error loading ``path`` ends with when there is no such file: said before PyTorch is
    imported where a command can."""
    if not Path(path).is_file():
        raise WeightsError(f"{path}: no such checkpoint file", "check the path; a run keeps its checkpoints in <out>/checkpoints/")
