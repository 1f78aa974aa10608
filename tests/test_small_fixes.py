"""Small defects found in reviews, each met the way a user meets it."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, CommandRunner
from test_paired import TINY_ARGS, write_pairs
from test_training_audit import TINY_TRANSLATE_LR
from test_training_loop import SIZE, ToyAutoencoder, settings, write_images

from i2icli import weights
from i2icli.cli.app import app
from i2icli.errors import I2IError, InputImageError, WeightsError
from i2icli.imageio import read_image
from i2icli.training.data import ImageFolderDataset
from i2icli.training.loop import train

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


# --------------------------------------------------------------------------- the std map's summary


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory) -> dict[str, Path]:
    """A one-step `i2i train paired` run: enough for a checkpoint `i2i paired` loads."""
    root = tmp_path_factory.mktemp("paired-run")
    data_dir = write_pairs(root / "data", 4)
    out = root / "run"
    result = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), *TINY_ARGS, "--steps", "1",
                                 "--batch-size", "2", "--held-out", "1", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return {"data": data_dir, "run": out, "label": data_dir / "labels" / "000.png"}


def test_the_std_map_summary_gives_its_maximum_and_mean_to_the_same_precision(tmp_path: Path, paired_run):
    result = runner.invoke(app, ["paired", str(paired_run["label"]), "-c", str(paired_run["run"]), "-o",
                                 str(tmp_path / "out.png"), "--samples", "2", "--std-map", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = re.search(r"std up to (\S+) levels \(mean (\S+)\)", one_line(result.stderr))
    assert summary is not None, result.stderr
    assert [len(value.split(".")[1]) for value in summary.groups()] == [2, 2]


# --------------------------------------------------------------------------- over the pixel limit in training


def write_header_over_the_limit(path: Path) -> Path:
    """A PNG whose header claims 40000x40000 pixels: refused from the header, before any decoding."""
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(header)) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 2**28) + b"IDAT")
    return path


def test_an_image_over_the_pixel_limit_is_skipped_in_training_with_a_hint_training_can_follow(tmp_path: Path):
    """Training has no --max-pixels: its skip message says to shrink or move the file, while
    reading the same file for an inference command still names --max-pixels."""
    data_dir = tmp_path / "data"
    write_images(data_dir, count=3)
    huge = write_header_over_the_limit(data_dir / "huge.png")
    with pytest.raises(InputImageError, match=r"raise the limit with --max-pixels 1600000000"):
        read_image(huge)
    dataset = ImageFolderDataset(sorted(data_dir.rglob("*.png")), SIZE)
    skipped = dataset[(dataset.files.index(huge), False)]["skipped"]
    message = next(message for message in skipped if str(huge) in message)
    assert "over the limit of 200,000,000" in message
    assert "shrink it below the limit, or move it out of the training folder" in message
    assert "--max-pixels" not in message

    result = runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(tmp_path / "run"),
                                 *TINY_TRANSLATE_LR, "--steps", "2", "--held-out", "0"])
    assert result.exit_code == 0, result.output
    warning = one_line(result.stderr)
    assert f"{huge}: image is 40000x40000" in warning
    assert "shrink it below the limit, or move it out of the training folder); skipped" in warning
    assert "--max-pixels" not in warning


# --------------------------------------------------------------------------- a manual-download checkpoint


def test_a_manual_download_checkpoint_with_no_tensors_points_to_its_own_page(tmp_path: Path):
    """The CoCosNet files are downloaded by hand: `i2i weights fetch` cannot get them again."""
    manual = weights.entry_named("cocosnet2-deepfashionhd")
    assert manual is not None and manual.manual
    empty = tmp_path / "latest_net_Corr.pth"
    torch.save({"config": {"nef": 32}}, empty)
    with pytest.raises(WeightsError) as caught:
        weights.load_state_dict(empty)
    assert "no tensors found" in caught.value.message
    assert caught.value.hint.startswith(f"download cocosnet2-deepfashionhd again from {manual.url}")
    assert "weights fetch" not in caught.value.hint
    # A model i2i fetches is named, so the command can be run as given.
    fetched = next(entry for entry in weights.registry() if not entry.manual and entry.hub_repo)
    other = tmp_path / fetched.file
    torch.save({}, other)
    with pytest.raises(WeightsError) as caught:
        weights.load_state_dict(other)
    assert caught.value.hint.startswith(f"re-download it (`i2i weights fetch {fetched.name}`)")


# --------------------------------------------------------------------------- --ema-decay


@pytest.mark.parametrize("command", ["translate-lr", "paired"])
@pytest.mark.parametrize("decay", ["1", "1.5", "-0.1"])
def test_an_ema_decay_outside_zero_to_one_is_refused_in_one_line(tmp_path: Path, command: str, decay: str):
    """At 1 the averaged generator, which inference uses, would never leave its start."""
    result = runner.invoke(app, ["train", command, str(tmp_path), "--out", str(tmp_path / "run"),
                                 "--ema-decay", decay])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for '--ema-decay': ")
    assert "must be at least 0 and below 1" in lines[0]
    assert not (tmp_path / "run").exists()


def test_an_ema_decay_of_zero_is_no_averaging_and_is_taken():
    from i2icli.cli.train_common import _ema_decay

    assert _ema_decay(0.0) == 0.0 and _ema_decay(0.999) == 0.999


# --------------------------------------------------------------------------- a batch larger than the data


def test_a_batch_larger_than_the_training_set_is_warned_of_once(tmp_path: Path):
    data_dir = tmp_path / "data"
    write_images(data_dir, count=3)
    options = list(TINY_TRANSLATE_LR)
    options[options.index("--batch-size") + 1] = "4"
    result = runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(tmp_path / "run"), *options,
                                 "--steps", "2", "--held-out", "0"])
    assert result.exit_code == 0, result.output
    warning = "--batch-size 4 is more than the 3 images to train on: each batch repeats images"
    assert one_line(result.stderr).count(warning) == 1


# --------------------------------------------------------------------------- weights broken by the last update


class UpdateBreaksTheWeights(ToyAutoencoder):
    """From step ``breaks_at`` on, the update leaves NaN weights while the losses, measured
    before it, are still finite (as after one overflowing gradient)."""

    breaks_at = 4

    def train_step(self, batch, generator):
        losses = super().train_step(batch, generator)
        if self.steps_seen >= self.breaks_at:
            with torch.no_grad():
                self.net[0].weight.fill_(float("nan"))
        return losses


def test_weights_made_non_finite_by_a_step_are_not_saved_as_the_latest_checkpoint(tmp_path: Path):
    out = tmp_path / "run"
    dataset = ImageFolderDataset(write_images(tmp_path / "data"), SIZE)
    with pytest.raises(I2IError) as caught:
        train(UpdateBreaksTheWeights(), dataset, settings(out, 8, checkpoint_every=2))
    message = str(caught.value)
    assert message.startswith("step 4: its update left weights that are not finite (first in Net.0.weight); "
                              "training stopped and the last checkpoint, step 2, is kept")
    assert "lower learning rates" in message and "\n" not in message
    kept = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert kept["step"] == 2 and all(torch.isfinite(value).all() for value in kept["Net"].values())
    assert not (out / "checkpoints" / "step-0000004.pt").exists()


def test_an_infinite_optimiser_moment_alone_does_not_stop_the_run(tmp_path: Path):
    """One huge gradient can make Adam's second moment infinite while every weight stays finite."""

    class InfiniteMoment(ToyAutoencoder):
        def train_step(self, batch, generator):
            losses = super().train_step(batch, generator)
            for state in self.opt.state.values():
                state["exp_avg_sq"].view(-1)[0] = float("inf")
            return losses

    dataset = ImageFolderDataset(write_images(tmp_path / "data"), SIZE)
    assert train(InfiniteMoment(), dataset, settings(tmp_path / "run", 2, checkpoint_every=1)).step == 2


# --------------------------------------------------------------------------- an empty -o


def test_an_empty_output_is_refused_by_every_command(tmp_path: Path, monkeypatch):
    """`-o "$OUT"` with OUT unset would put the results in the current folder."""
    monkeypatch.chdir(tmp_path)
    photo = EXAMPLES / "old_photo.jpg"
    commands = [
        ["restore", str(photo), "-o", ""],
        ["restore", str(photo), "--output=", "--dry-run"],
        ["paired", str(photo), "-c", str(tmp_path / "run"), "-o", ""],
        ["exemplar", str(photo), str(photo), "--exemplar-pose", str(photo), "-o", "", "--json"],
        ["translate-lr", str(photo), str(photo), "-c", str(tmp_path / "run"), "-o", ""],
        ["invert", str(photo), str(photo), "-o", ""],
    ]
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip() == ("error: -o is empty; name an output file or folder (-o results), or - for "
                                         "standard output"), args
        assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- a learning rate past 32-bit floats


@pytest.mark.parametrize("command", ["translate-lr", "paired"])
@pytest.mark.parametrize("option", ["--g-lr", "--d-lr"])
def test_a_learning_rate_larger_than_a_32_bit_float_is_refused_in_one_line(tmp_path: Path, command: str, option: str):
    """Adam takes its rate as a 32-bit float: torch failed with a traceback at the first step."""
    result = runner.invoke(app, ["train", command, str(tmp_path), "--out", str(tmp_path / "run"), option, "1e39"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: Invalid value for '{option}': 1e+39 is over 3.403e+38, the largest rate the networks' "
                     f"32-bit numbers hold — see 'i2i train {command} -h'"]
