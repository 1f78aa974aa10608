"""Tests for small defects a user could still hit."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_invert import files, networks  # noqa: F401  (fixtures used below)

from i2icli.errors import I2IError, InputImageError
from i2icli.imageio import read_image

# --------------------------------------------------------------------------- a JPEG's end marker


def jpeg_bytes(*, progressive: bool = False) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("kept_of_end_marker", [0, 1], ids=["no-end-marker", "half-end-marker"])
def test_a_jpeg_lacking_only_its_end_marker_is_read_as_if_it_had_it(
    tmp_path, capfd, caplog, progressive, kept_of_end_marker
):
    whole = jpeg_bytes(progressive=progressive)
    assert whole.endswith(b"\xff\xd9")
    (tmp_path / "whole.jpg").write_bytes(whole)
    (tmp_path / "download.jpg").write_bytes(whole[: len(whole) - 2 + kept_of_end_marker])
    with caplog.at_level("WARNING"):
        picture = read_image(tmp_path / "download.jpg")
    assert np.array_equal(picture.rgb, read_image(tmp_path / "whole.jpg").rgb)
    assert not caplog.records
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("kept", [0.5, 0.9, -5], ids=["half", "most", "all-but-its-last-bytes"])
def test_a_jpeg_cut_inside_its_picture_data_is_still_refused(tmp_path, capfd, progressive, kept):
    whole = jpeg_bytes(progressive=progressive)
    path = tmp_path / "download.jpg"
    path.write_bytes(whole[:kept] if kept < 0 else whole[: int(len(whole) * kept)])
    with pytest.raises(InputImageError, match="download.jpg: .*truncated"):
        read_image(path)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("padding", [b"\x00\x00\x00\x00\x00", b"\xa5" * 12])
def test_a_few_stray_bytes_before_a_jpegs_end_marker_go_unwarned(tmp_path, capfd, caplog, padding):
    whole = jpeg_bytes()
    (tmp_path / "whole.jpg").write_bytes(whole)
    (tmp_path / "padded.jpg").write_bytes(whole[:-2] + padding + whole[-2:])
    with caplog.at_level("WARNING"):
        picture = read_image(tmp_path / "padded.jpg")
    assert np.array_equal(picture.rgb, read_image(tmp_path / "whole.jpg").rgb)
    assert not caplog.records
    assert capfd.readouterr().err == ""


# --------------------------------------------------------------------------- train --eval: the data folder first


@pytest.mark.parametrize("command", ["translate-lr", "paired"])
def test_eval_names_a_missing_data_folder_before_it_loads_the_checkpoint(tmp_path, monkeypatch, command):
    from conftest import CommandRunner
    from test_training_loop import write_training_checkpoint

    from i2icli.cli.app import app
    from i2icli.training import checkpoints

    write_training_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", command)
    loaded = []
    load = checkpoints.load_training_checkpoint
    monkeypatch.setattr(checkpoints, "load_training_checkpoint", lambda path: loaded.append(path) or load(path))
    missing = tmp_path / "missing"
    result = CommandRunner().invoke(app, ["train", command, str(missing), "--out", str(tmp_path / "run"), "--eval",
                                          "--device", "cpu", "--fid-model", "none", "--lpips-backbone", "none"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {missing}: no such folder")
    assert loaded == []
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- RestoreSettings.upscale: the command's bounds


@pytest.mark.parametrize("upscale", [0.5, 8.5, 16])
def test_a_restore_factor_the_command_refuses_is_refused_by_the_settings_too(tmp_path, upscale):
    from conftest import CommandRunner

    from i2icli import RestoreSettings
    from i2icli.cli.app import app

    with pytest.raises(ValueError, match=f"upscale must be a number from 1 to 8; got {upscale}"):
        RestoreSettings(upscale=upscale)
    result = CommandRunner().invoke(app, ["restore", str(tmp_path / "photo.jpg"), "--upscale", str(upscale)])
    assert result.exit_code == 2 and "--upscale" in result.output


@pytest.mark.parametrize("upscale", [1, 1.5, 8])
def test_a_restore_factor_the_command_takes_is_taken_by_the_settings(upscale):
    from i2icli import RestoreSettings

    assert RestoreSettings(upscale=upscale).upscale == upscale


# --------------------------------------------------------------------------- the computer running out of memory

CPU_ALLOCATOR_FAILURES = {
    "linux": RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                          "tried to allocate 99999999999 bytes. Error code 12 (Cannot allocate memory)"),
    "windows": RuntimeError("[enforce fail at ..\\c10\\core\\impl\\alloc_cpu.cpp:72] data. DefaultCPUAllocator: not "
                            "enough memory: you tried to allocate 99999999999 bytes."),
    "python": MemoryError(),
}


@pytest.mark.parametrize("failure", CPU_ALLOCATOR_FAILURES.values(), ids=CPU_ALLOCATOR_FAILURES.keys())
def test_every_pipeline_reports_the_computer_running_out_of_memory_as_a_device_error(
        tiny_env, tmp_path, monkeypatch, networks, failure):  # noqa: F811
    from test_api_robustness import _pipelines_that_run_out

    from i2icli import DeviceError
    from i2icli.pipelines import memory_hints

    hints = {"restore": memory_hints.RESTORE, "exemplar": memory_hints.EXEMPLAR, "invert": memory_hints.INVERT,
             "translate-lr": memory_hints.TRANSLATE_LR, "paired": memory_hints.PAIRED}
    for name, call in _pipelines_that_run_out(tmp_path, monkeypatch, networks, error=failure).items():
        with pytest.raises(DeviceError) as caught:
            call()
        error = caught.value
        assert (error.message, error.hint) == ("the computer ran out of memory", hints[name].ram), name
        assert error.__cause__ is None and error.__context__ is None, name


def test_restore_says_the_computer_ran_out_of_memory_as_its_pipeline_does(tiny_env, landmarks_detector, tmp_path,
                                                                          monkeypatch):
    from conftest import CommandRunner

    from i2icli import RestorePipeline, RestoreSettings
    from i2icli.archs.gfpgan import GFPGANv1Clean
    from i2icli.cli.app import app
    from i2icli.imageio import Picture

    def out_of_ram(*args, **kwargs):
        raise CPU_ALLOCATOR_FAILURES["linux"]

    monkeypatch.setattr(GFPGANv1Clean, "forward", out_of_ram)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "face.png")
    from_the_command = CommandRunner().invoke(app, ["restore", str(tmp_path / "face.png"), "--aligned", "--device", "cpu",
                                                    "-o", str(tmp_path / "out.png")])
    pipeline = RestorePipeline.load(device="cpu", settings=RestoreSettings(aligned=True))
    with pytest.raises(I2IError) as from_the_pipeline:
        pipeline.restore(Picture(pixels))
    assert from_the_command.exit_code == 1
    said = from_the_pipeline.value
    assert said.message == "the computer ran out of memory"
    assert from_the_command.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'face.png'}: {said.message} — {said.hint}"


# --------------------------------------------------------------------------- a disk made read-only mid-batch


def test_a_disk_made_read_only_stops_the_batch_there(tiny_env, landmarks_detector, tmp_path, monkeypatch):
    """A disk remounted read-only (as Linux does one it finds errors on) failed every later photo
    at its write, after its work, each with a line of its own. Now it stops that disk's jobs as a
    full disk does, with one line naming where it is mounted."""
    import errno
    import os

    from test_batch_filesystems import TINY_RESTORE, _errors
    from test_cli import _photo, run

    from i2icli import atomic_files
    from i2icli.pipelines.restore import RestorePipeline

    landmarks_detector([])
    folder = tmp_path / "in"
    for name in "abcd":
        _photo(folder / f"{name}.png")
    card = tmp_path / "card"
    out = card / "restored"
    restored, written = [], []
    real_restore, real_atomic_write = RestorePipeline.restore, atomic_files._atomic_write

    def counted(self, picture, *args, **kwargs):
        restored.append(picture.source.name)
        return real_restore(self, picture, *args, **kwargs)

    def remounted_read_only_after_one(target, data):
        if written:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        written.append(target)
        real_atomic_write(target, data)

    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == card or real_ismount(path))
    monkeypatch.setattr(RestorePipeline, "restore", counted)
    monkeypatch.setattr(atomic_files, "_atomic_write", remounted_read_only_after_one)
    result = run("restore", str(folder), "-o", str(out), *TINY_RESTORE, "--json")
    assert result.exit_code == 1
    assert restored == ["a.png", "b.png"]  # not c.png and d.png
    records = json.loads(result.stdout)["results"]
    assert [record["status"] for record in records] == ["ok", "failed", "failed", "failed"]
    assert records[2]["error"] == (f"{folder / 'c.png'}: not run: the disk of its output {out / 'c.png'} is read-only "
                                   f"({out / 'b.png'} could not be written)")
    assert _errors(result.stderr) == [
        f"error: {folder / 'b.png'}: {out / 'b.png'}: cannot write: Read-only file system — the disk is read-only: "
        "choose another output folder",
        f"error: {card}: the disk mounted here is read-only, so 2 more inputs were not run — check the disk and mount "
        "it read-write again, or choose another output folder; then run the same command again with --skip-existing"]


def test_a_read_only_disk_stops_only_the_outputs_on_that_disk(tmp_path, monkeypatch):
    from test_batch_filesystems import run_on_disks

    from i2icli.errors import ReadOnlyDiskError

    done, statuses = run_on_disks(monkeypatch, tmp_path, [("a", "full"), ("b", "other"), ("c", "full"), ("d", "other")],
                                  lambda path: path.parent.name, ReadOnlyDiskError)
    assert done == ["a.png", "b.png", "d.png"]
    assert statuses == ["failed", "ok", "failed", "ok"]
