"""What the training commands share: option panels, --held-out parsing, the progress bar and the
closing summary."""

from __future__ import annotations

import json
from typing import Any

from i2icli.cli.common import console, stdout_write, usage_error

MODEL_PANEL = "Model"
LOSS_PANEL = "Losses and optimiser"
RUN_PANEL = "Run"
EVAL_PANEL = "Evaluation"


def held_out_amount(text: str) -> float | int:
    """--held-out 0.05 is a fraction of the images, --held-out 20 a count."""
    try:
        value = float(text)
    except ValueError:
        raise usage_error(f"--held-out {text}: give a fraction below 1 (0.05) or a count (20)") from None
    if value < 0 or (value >= 1 and not value.is_integer()):
        raise usage_error(f"--held-out {text}: give a fraction below 1 (0.05) or a count (20)")
    return int(value) if value >= 1 else value


def report_run(result: Any, as_json: bool) -> None:
    """The line a finished (or interrupted) run ends with, and its --json summary."""
    console.print(f"[green]✓[/] step {result.step} → {result.checkpoint} [dim]({result.steps_run} steps in "
                  f"{result.seconds:.1f} s; samples in {result.samples}, metrics in {result.metrics})[/]")
    if as_json:
        stdout_write(json.dumps({"step": result.step, "checkpoint": str(result.checkpoint), "metrics": str(result.metrics),
                                 "samples": str(result.samples), "steps_run": result.steps_run}, indent=2))


class training_progress:
    """A Rich bar over the steps whose text shows the latest losses."""

    def __init__(self, shown: tuple[str, ...]) -> None:
        self.shown = shown

    def __enter__(self):  # type: ignore[no-untyped-def]
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console)
        self.started = False

        def on_progress(step: int, total: int, losses: dict[str, float]) -> None:
            if not self.started:  # drawn from the first step on: a refused run prints only its error
                self.progress.__enter__()
                self.task = self.progress.add_task("training", total=total, completed=step - 1, losses="")
                self.started = True
            text = "  ".join(f"{name} {losses[name]:.3f}" for name in self.shown if name in losses)
            self.progress.update(self.task, completed=step, total=total, losses=text)

        return on_progress

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.__exit__(*exc)  # type: ignore[arg-type]
