"""A run's metrics.csv: the training losses, averaged over every ``log_every`` steps.

(The evaluation metrics, FID and LPIPS, are in :mod:`i2icli.training.metrics`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from i2icli.atomic_files import write_text
from i2icli.errors import I2IError

__all__ = ["MetricsLog"]


class MetricsLog:
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
            self._write_row(step, seconds)
            self.sums, self.counts = {}, {}
        elif last:
            self._write_row(step, seconds)

    def _foreign_header(self) -> I2IError:
        # Re-saved by a spreadsheet, say: rows appended under another header would be misread.
        return I2IError(f"{self.path}: its header is not this run's (step,seconds, then the losses)",
                        "move the file aside (a new one is started) or restore the original, then --resume again")

    def write_partial(self, step: int, seconds: float) -> None:
        """The row for steps since the last one, when a session stops between rows."""
        if self.columns is not None and self.counts and self.last_row_step != step:
            self._write_row(step, seconds)

    def _write_row(self, step: int, seconds: float) -> None:
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
