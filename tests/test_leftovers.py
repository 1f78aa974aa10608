"""Tests for small defects a user could still hit."""

from __future__ import annotations

import io

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
