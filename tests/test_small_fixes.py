"""Small defects found in reviews, each met the way a user meets it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLES, CommandRunner

from i2icli.cli.app import app
from i2icli.errors import WeightsError

runner = CommandRunner()


def one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- a run's checkpoints folder


@pytest.mark.parametrize("command", ["paired", "translate-lr"])
def test_a_checkpoints_folder_without_latest_is_named_as_the_checkpoints_folder(tmp_path: Path, command: str):
    """`-c RUN/checkpoints` stands for its latest.pt; where that is missing, the message names
    latest.pt in this folder, not a checkpoints/latest.pt inside it."""
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    step = checkpoints / "step-0000010.pt"
    step.write_bytes(b"not read")
    image = EXAMPLES / "old_photo.jpg"
    inputs = [str(image)] if command == "paired" else [str(image), str(image)]
    result = runner.invoke(app, [command, *inputs, "-c", str(checkpoints), "-o", str(tmp_path / "out.png"),
                                 "--device", "cpu"])
    assert result.exit_code == 1
    assert one_line(result.stderr) == (f"error: {checkpoints}: no latest.pt in this checkpoints folder — pass a "
                                       f"checkpoint file such as {step}")
    # The run folder itself keeps its wording.
    from i2icli.pipelines.loading import training_checkpoint_file

    with pytest.raises(WeightsError, match=r"run: no checkpoints/latest.pt in this folder"):
        training_checkpoint_file(str(tmp_path / "run"))
