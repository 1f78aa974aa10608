"""Training runs meeting what a user's machine and data can do to them: full disks, file systems
without locks, data folders that changed between sessions."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from conftest import CommandRunner
from test_training_loop import ToyAutoencoder, settings, write_images, write_training_checkpoint

from i2icli.cli.app import app
from i2icli.errors import I2IError
from i2icli.training import checkpoints, metrics_log
from i2icli.training.checkpoints import load_training_checkpoint
from i2icli.training.data import ImageFolderDataset
from i2icli.training.loop import train

SIZE = 12
TINY_TRANSLATE_LR = ["--hr-size", "16", "--lr-size", "4", "--max-channels", "8", "--base-channels", "4",
                     "--disc-channels", "4", "--disc-max-channels", "8", "--batch-size", "2", "--workers", "0",
                     "--device", "cpu"]


@pytest.fixture
def dataset(tmp_path: Path) -> ImageFolderDataset:
    return ImageFolderDataset(write_images(tmp_path / "data"), SIZE)


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # as the kernel reports it: no file named


def test_a_checkpoint_that_cannot_be_written_is_named_with_the_step_the_run_can_go_on_from(tmp_path: Path,
                                                                                          dataset: ImageFolderDataset,
                                                                                          monkeypatch):
    out = tmp_path / "run"
    real_save = checkpoints.torch.save
    saves = []

    def full_at_the_second_save(payload, file):
        saves.append(payload["step"])
        if len(saves) == 2:
            disk_full()
        real_save(payload, file)

    monkeypatch.setattr(checkpoints.torch, "save", full_at_the_second_save)
    with pytest.raises(I2IError) as raised:
        train(ToyAutoencoder(), dataset, settings(out, 6, checkpoint_every=2))
    error = raised.value
    assert error.message == (f"{out / 'checkpoints' / 'step-0000004.pt'}: cannot write the checkpoint of step 4: "
                             "No space left on device")
    assert error.hint == ("free some space on that disk or make the folder writable, then continue from step 2 with "
                          f"--resume ({out / 'checkpoints' / 'latest.pt'})")
    assert load_training_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 2
    # Before any checkpoint, there is nothing to continue from.
    saves.clear()
    saves.append(0)
    with pytest.raises(I2IError, match="then start the run again"):
        train(ToyAutoencoder(), dataset, settings(tmp_path / "early", 6, checkpoint_every=2))
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert train(ToyAutoencoder(), dataset, settings(out, 6, checkpoint_every=2), resume=True).step == 6


def test_a_metrics_row_that_cannot_be_written_names_the_file(tmp_path: Path, dataset: ImageFolderDataset,
                                                              monkeypatch):
    out = tmp_path / "run"
    real_open = open

    def full_when_appending(path, mode="r", *args, **kwargs):
        if mode == "a":
            disk_full()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(metrics_log, "open", full_when_appending, raising=False)
    with pytest.raises(I2IError) as raised:
        train(ToyAutoencoder(), dataset, settings(out, 3))
    assert raised.value.message == f"{out / 'metrics.csv'}: cannot add the row of step 1: No space left on device"
    assert "continue with --resume" in raised.value.hint


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS])
def test_a_file_system_without_locks_is_no_other_run(tmp_path: Path, dataset: ImageFolderDataset, monkeypatch, code):
    # Lustre mounted without flock, NFS without its lock service: every run was refused as if
    # another one held the folder.
    fcntl = pytest.importorskip("fcntl")

    def no_locks_here(fd, operation):
        raise OSError(code, "locks not supported")

    monkeypatch.setattr(fcntl, "flock", no_locks_here)
    assert train(ToyAutoencoder(), dataset, settings(tmp_path / "run", 2)).step == 2


def _one_step_holding_out_two(runner: CommandRunner, data_dir: Path, out: Path, *, count: int) -> tuple[list[Path], list[str]]:
    """A translate-lr run of one step on ``count`` images, two held out: the images, and the held-out
    ones as the run records them (relative to ``data_dir``)."""
    files = write_images(data_dir, count=count)
    first = runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(out), *TINY_TRANSLATE_LR,
                                "--steps", "1", "--held-out", "2"])
    assert first.exit_code == 0, first.output
    return files, load_training_checkpoint(out / "checkpoints" / "latest.pt")["config"]["data"]["held_out_files"]


def test_resuming_on_a_folder_of_held_out_images_alone_is_one_line(tmp_path: Path):
    data_dir, out = tmp_path / "data", tmp_path / "run"
    runner = CommandRunner()
    files, held = _one_step_holding_out_two(runner, data_dir, out, count=3)
    for path in files:
        if path.relative_to(data_dir).as_posix() not in held:
            path.unlink()  # the one training image
    resumed = runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(out), "--resume", "--steps", "2",
                                  "--device", "cpu"])
    assert resumed.exit_code == 1
    assert resumed.stderr.strip().splitlines()[-1] == (
        f"error: {data_dir}: holds only the run's 2 held-out images, none to train on — pass the data folder the run "
        "was trained on")
    assert "Traceback" not in resumed.output


def test_a_new_translate_lr_run_is_not_kept_among_the_photos_of_the_data_folder(tmp_path: Path):
    # A run folder inside the data is left out of the search: photos already in it were left out
    # of training with it, without a word (here 3 of the 6).
    data_dir = tmp_path / "data"
    write_images(data_dir)
    photos = data_dir / "part0"
    runner = CommandRunner()
    refused = runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(photos), *TINY_TRANSLATE_LR,
                                  "--steps", "1", "--held-out", "1"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: --out {photos}: holds 3 images of the data folder (e.g. {photos / 'img0.png'}), which would be left "
        "out of training with the run folder; choose a new folder for the run"]
    assert sorted(path.name for path in photos.iterdir()) == ["img0.png", "img2.png", "img4.png"]
    # A new folder there is fine, and so is one whose earlier run left only its sample grids.
    run = data_dir / "run"
    trained = runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(run), *TINY_TRANSLATE_LR,
                                  "--steps", "1", "--held-out", "1"])
    assert trained.exit_code == 0, trained.output
    assert "training on 5 images, 1 held out" in trained.output
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    again = runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(run), *TINY_TRANSLATE_LR,
                                "--steps", "1", "--held-out", "1"])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("command, options", [
    ("translate-lr", [*TINY_TRANSLATE_LR, "--hr-size", str(2**20), "--lr-size", "8"]),
    ("paired", ["--label-nc", "4", "--size", str(2**40), "--device", "cpu"]),
])
def test_a_training_size_larger_than_an_image_may_be_is_a_usage_error(tmp_path: Path, command, options):
    # cv2 cannot resize to a side beyond 2^31: the held-out batch ended in a traceback.
    write_images(tmp_path / "data")
    result = CommandRunner().invoke(app, ["train", command, str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                                          "--steps", "1", *options])
    assert result.exit_code == 2
    option = "--hr-size" if command == "translate-lr" else "--size"
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {option} ") and line.endswith(
        "is over the 200,000,000 pixels i2i takes in an image; give a smaller size")


def test_a_batch_larger_than_a_tensor_can_hold_is_one_line(tmp_path: Path):
    # Its flips are drawn as one tensor of the batch's size: torch failed in a traceback.
    data_dir = tmp_path / "data"
    write_images(data_dir)
    result = CommandRunner().invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(tmp_path / "run"),
                                          *TINY_TRANSLATE_LR, "--steps", "1", "--held-out", "1",
                                          "--batch-size", str(2**64)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: batch size {2**64} is more than a tensor can hold ({2**63 - 1}) — use a smaller --batch-size")


@pytest.mark.parametrize("command", ["translate-lr", "paired"])
def test_a_run_folder_given_to_eval_checkpoint_is_named_as_a_folder(tmp_path: Path, command):
    # `i2i translate-lr -c` and `i2i paired -c` take a run folder, so one is given here too; it was
    # called "no such checkpoint file".
    run = tmp_path / "other-run"
    latest = write_training_checkpoint(run / "checkpoints" / "latest.pt", command)
    result = CommandRunner().invoke(app, ["train", command, str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                                          "--eval", "--eval-checkpoint", str(run), "--fid-model", "none",
                                          "--lpips-backbone", "none", "--device", "cpu"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --eval-checkpoint {run}: is a folder, not a checkpoint file — pass {latest}"]


def test_what_reading_a_training_file_logs_is_said_once_not_every_epoch(tmp_path: Path, caplog):
    import numpy as np
    from PIL import Image

    files = write_images(tmp_path / "data")
    pages = [Image.fromarray(np.full((16, 16, 3), value, np.uint8)) for value in (10, 200)]
    tiff = tmp_path / "data" / "pages.tif"
    pages[0].save(tiff, save_all=True, append_images=pages[1:])
    warnings: list[str] = []
    # 7 files, 3 a step: the TIFF is read in each of the 3+ epochs.
    train(ToyAutoencoder(), ImageFolderDataset([*files, tiff], SIZE), settings(tmp_path / "run", 8),
          on_warning=warnings.append)
    said = [*warnings, *(record.getMessage() for record in caplog.records)]
    assert said == [f"{tiff}: holds 2 frames or pages; only the first is used"]


def test_a_resumed_run_whose_held_out_images_are_all_unreadable_is_told_which_to_fix_or_remove(tmp_path: Path):
    """The hint said only "check the training folder"; it names the files, and removing them lets
    the run go on (its sample grids then show training images)."""
    data_dir, out = tmp_path / "data", tmp_path / "run"
    runner = CommandRunner()
    files, held = _one_step_holding_out_two(runner, data_dir, out, count=4)
    broken = [path for path in files if path.relative_to(data_dir).as_posix() in held]
    for path in broken:
        path.write_bytes(b"not an image")
    resume = ["train", "translate-lr", str(data_dir), "--out", str(out), "--resume", "--steps", "2", "--device", "cpu",
              "--workers", "0"]
    refused = runner.invoke(app, resume)
    assert refused.exit_code == 1
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: none of the 2 held-out examples can be read")
    assert f"fix or remove {broken[0]} and the other unreadable held-out file; a resumed run holds out" in line
    for path in broken:
        path.unlink()
    resumed = runner.invoke(app, resume)
    assert resumed.exit_code == 0, resumed.output
    assert "training on 2 images, 0 held out" in resumed.output


def test_more_workers_than_cpus_are_capped_with_one_warning(tmp_path: Path, monkeypatch):
    """--workers above the CPU count started that many processes, and PyTorch warned of it twice."""
    data_dir, out = tmp_path / "data", tmp_path / "run"
    write_images(data_dir, count=3)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    options = [*TINY_TRANSLATE_LR[:-4], "--device", "cpu", "--workers", "2"]
    trained = CommandRunner().invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(out), *options,
                                           "--steps", "1", "--held-out", "1"])
    assert trained.exit_code == 0, trained.output
    assert "worker processes in total" not in trained.output  # PyTorch's own warning, no longer given
    assert trained.stderr.count("--workers 2 is more than the 1 CPU this process may use: using 1") == 1
    # The count asked for is kept, so that a resume on a machine with more CPUs uses them.
    assert load_training_checkpoint(out / "checkpoints" / "latest.pt")["settings"]["num_workers"] == 2
