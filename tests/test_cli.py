"""The command line: start-up cost, subcommand list, option wiring, batches and exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS
from i2icli.cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_does_not_import_torch():
    code = "import sys, i2icli.cli.app; assert 'torch' not in sys.modules and 'cv2' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.startswith("i2i ")


def test_lists_every_subcommand():
    result = run("--help")
    assert result.exit_code == 0
    for name in ("restore", "exemplar", "invert", "translate-lr", "paired", "weights", "train"):
        assert name in result.stdout


def test_usage_errors_exit_2(tmp_path):
    assert run("restore", str(EXAMPLES / "old_photo.jpg"), "--upscale", "0").exit_code == 2
    assert run("restore", str(EXAMPLES / "old_photo.jpg"), "--ext", "gif", "-o", str(tmp_path)).exit_code == 2
    assert run("restore", "--no-such-option").exit_code == 2


@pytest.mark.parametrize("args, expected", [
    (["restore", "x.jpg", "--upscale", "99"], ["'--upscale'", "(given: 99)", "see 'i2i restore -h'"]),
    (["restore", "x.jpg", "--tile", "1.5"], ["'--tile'", "(given: 1.5)"]),
    (["restore", "--json"], ["Missing argument 'INPUTS'", "see 'i2i restore -h'"]),
    (["restor"], ["No such command 'restor'", "'restore'", "see 'i2i -h'"]),
    (["--bogus"], ["No such option: --bogus", "see 'i2i -h'"]),
    (["weights", "bogus"], ["No such command 'bogus'", "see 'i2i weights -h'"]),
    (["train", "paired", "data", "--steps", "0"], ["'--steps'", "(given: 0)", "see 'i2i train paired -h'"]),
    (["exemplar", "a.json", "b.jpg", "--seed", str(2**63)], ["'--seed'", str(2**63), "largest seed"]),
    (["restore", "x.jpg", "--strength", "nan"], ["'--strength': nan is not a finite number"]),
    # (on a GPU an infinite budget failed with a traceback: no whole number of bytes)
    (["restore", "x.jpg", "--max-memory", "inf"], ["'--max-memory': inf is not a finite number"]),
    (["invert", "a.png", "b.png", "--perceptual-weight", "-inf"], ["'--perceptual-weight': -inf is not a finite number"]),
])
def test_usage_errors_are_one_line_naming_the_value_and_where_to_read(args, expected):
    """Typer's own rendering is a usage line, a hint and a framed panel that wraps mid-sentence."""
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in expected:
        assert needle in lines[0], lines[0]


def test_a_command_with_nothing_given_still_shows_its_help():
    result = run("restore")
    assert result.exit_code == 2 and "Usage: i2i restore" in result.output and "--upscale" in result.output


def test_missing_weights_is_one_clear_line(tiny_env, monkeypatch, tmp_path):
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for expected in ("GFPGANv1.4.pth", "i2i weights fetch", "I2I_WEIGHTS_DIR", "path"):
        assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "old_photo.jpg").exists()
    # With --json, a script reading stdout gets the same failure as a document.
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    report = json.loads(result.stdout)
    assert "GFPGANv1.4.pth" in report["error"] and "I2I_WEIGHTS_DIR" in report["hint"]


@pytest.mark.parametrize(("name", "args", "option"), [
    ("gfpgan-1.4", [], "--model"),
    ("realesrgan-x2plus", [], "--bg-model"),
    ("realesrgan-x4plus", ["--upscale", "4"], "--bg-model"),
    ("retinaface-resnet50", [], "--detector"),
    ("parsenet", [], "--parser"),
])
def test_a_checkpoint_that_cannot_be_had_names_the_option_that_takes_a_file(tiny_env, monkeypatch, tmp_path, name, args,
                                                                            option):
    folder = tmp_path / "weights"
    folder.mkdir()
    for other, file in tiny_env.files.items():
        if other != name:
            (folder / file.name).symlink_to(file)
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "out"), "--device", "cpu", *args)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert tiny_env.files[name].name in line and line.endswith(f"pass a checkpoint path with {option}")


def test_an_output_in_a_format_i2i_does_not_write_is_a_usage_error(tmp_path):
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "old.GIF"))
    assert result.exit_code == 2 and "cannot write .gif files" in result.stderr
    assert not (tmp_path / "old.GIF").exists()


class FakePipeline:
    """Stands in for RestorePipeline to check what the CLI asks of it."""

    loaded_with: dict = {}
    device = SimpleNamespace(type="cpu")

    @classmethod
    def load(cls, **kwargs):
        cls.loaded_with = kwargs
        return cls()

    def output_size(self, picture):
        return picture.width, picture.height

    def restore(self, picture):
        from i2icli.pipelines.restore import RestoreResult

        return RestoreResult(picture=picture, face_count=0, seconds={"detect": 0.0})


def test_option_wiring(monkeypatch, tmp_path):
    from i2icli.pipelines import restore as restore_module

    monkeypatch.setattr(restore_module, "RestorePipeline", FakePipeline)
    result = run(
        "restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path), "--upscale", "3.5", "--strength", "0.4",
        "--model", "gfpgan-1.3", "--bg-model", "none", "--detector", "d.pth", "--parser", "none",
        "--threshold", "0.5", "--only-center-face", "--min-face-size", "30", "--detect-size", "640",
        "--device", "cpu", "--fp32", "--tile", "128", "--ext", "png", "--suffix", "_r", "--face-batch", "3", "--max-memory", "7.5",
    )
    assert result.exit_code == 0, result.stderr
    kwargs = FakePipeline.loaded_with
    assert kwargs["model"] == "gfpgan-1.3" and kwargs["bg_model"] is None and kwargs["parser"] is None
    assert kwargs["detector"] == "d.pth" and kwargs["device"] == "cpu" and kwargs["precision"] == "fp32" and kwargs["tile"] == 128
    assert kwargs["max_memory"] == 7.5
    settings = kwargs["settings"]
    assert (settings.upscale, settings.strength, settings.threshold) == (3.5, 0.4, 0.5)
    assert settings.only_center_face and settings.min_face_size == 30 and settings.detect_max_side == 640
    assert not settings.aligned and settings.face_batch == 3
    assert (tmp_path / "old_photo_r.png").is_file()


def test_the_keywords_of_the_model_options_take_any_case(monkeypatch, tmp_path):
    """--bg-model NONE and --parser None worked, but --bg-model AUTO was looked up as a checkpoint name."""
    from i2icli.pipelines import restore as restore_module

    monkeypatch.setattr(restore_module, "RestorePipeline", FakePipeline)
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path), "--bg-model", "AUTO", "--parser", "None")
    assert result.exit_code == 0, result.stderr
    assert FakePipeline.loaded_with["bg_model"] == "auto" and FakePipeline.loaded_with["parser"] is None


def _write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), pixels)
    return path


def test_transparency_a_jpeg_output_cannot_hold_is_named(tiny_env, landmarks_detector, tmp_path):
    """An RGBA photo restored into JPEG or BMP lost its alpha without a word: the transparent areas
    came out in whatever colours lay under them."""
    landmarks_detector([])
    pixels = np.full((24, 32, 4), 200, np.uint8)
    pixels[:, :8, 3] = 0
    _write(tmp_path / "in" / "cutout.png", pixels)
    _write(tmp_path / "in" / "opaque.png", np.full((24, 32, 4), 255, np.uint8))  # alpha, but nothing to lose
    for ext in ("jpg", "bmp"):
        result = run("restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ext", ext, "--device", "cpu",
                     "--bg-model", "none", "--parser", "none")
        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "cutout.png: has transparent areas" in warnings[0], result.stderr
        assert f"a {ext.upper()} file cannot hold" in warnings[0] and "--ext png" in warnings[0]
    result = run("restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ext", "png", "--device", "cpu",
                 "--bg-model", "none", "--parser", "none")
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_transparency_warning_for_a_named_output_file_gives_advice_that_works(tiny_env, landmarks_detector, tmp_path):
    """With -o out.jpg the warning said "use --ext png", which that command line then refused (exit 2)."""
    landmarks_detector([])
    pixels = np.full((24, 32, 4), 200, np.uint8)
    pixels[:, :8, 3] = 0
    source = _write(tmp_path / "cutout.png", pixels)
    common = ["--device", "cpu", "--bg-model", "none", "--parser", "none"]
    result = run("restore", str(source), "-o", str(tmp_path / "out.jpg"), *common)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "a JPG file cannot hold" in warnings[0], result.stderr
    assert "--ext" not in warnings[0] and "-o" in warnings[0] and ".png" in warnings[0]
    assert run("restore", str(source), "-o", str(tmp_path / "out.jpg"), "--ext", "png", *common).exit_code == 2
    followed = run("restore", str(source), "-o", str(tmp_path / "out.png"), *common)
    assert followed.exit_code == 0 and not any(line.startswith("warning:") for line in followed.stderr.splitlines())


def test_file_names_with_brackets_are_shown_as_they_are(tiny_env, landmarks_detector, tmp_path):
    """Status lines went through the console's markup: "IMG [edited].png" was shown as "IMG .png"."""
    landmarks_detector([])
    _photo(tmp_path / "in" / "IMG [edited].png")
    out = tmp_path / "out"
    for extra, shown in (([], "✓ "), (["--skip-existing"], "skipped ")):
        result = run("restore", str(tmp_path / "in"), "-o", str(out), "--device", "cpu", "--bg-model", "none",
                     "--parser", "none", *extra)
        assert result.exit_code == 0, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(shown) and line.count("IMG [edited].png") == 2, line


def test_batch_goes_on_past_bad_files(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    folder = tmp_path / "in"
    good = folder / "good.jpg"
    good.parent.mkdir()
    good.write_bytes((EXAMPLES / "old_photo.jpg").read_bytes())
    _write(folder / "sub" / "nested.png", np.full((40, 60, 3), 120, np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    out = tmp_path / "out"

    result = run("restore", str(folder), str(tmp_path / "missing.jpg"), "-o", str(out), "--recursive", "--json", "--device", "cpu")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    status = {Path(r["input"]).name: r["status"] for r in summary["results"]}
    assert status == {"good.jpg": "ok", "nested.png": "ok", "broken.png": "failed", "missing.jpg": "failed"}
    assert summary["ok"] == 2 and summary["failed"] == 2
    good_record = next(r for r in summary["results"] if r["input"].endswith("good.jpg"))
    assert good_record["faces"] == 1
    assert set(good_record["stages"]) >= {"detect", "faces", "background", "paste"}
    assert cv2.imread(str(out / "good.jpg")).shape == (682, 682, 3)
    assert cv2.imread(str(out / "sub" / "nested.png")).shape == (80, 120, 3)
    assert "broken.png" in result.stderr and "missing.jpg" in result.stderr
    assert "Traceback" not in result.stderr

    # Second run: everything that succeeded is skipped, and what failed fails again.
    before = (out / "good.jpg").stat().st_mtime_ns
    again = run("restore", str(folder), "-o", str(out), "--recursive", "--skip-existing", "--json", "--device", "cpu")
    summary = json.loads(again.stdout)
    assert summary["skipped"] == 2 and summary["failed"] == 1 and summary["ok"] == 0
    assert again.exit_code == 1
    assert (out / "good.jpg").stat().st_mtime_ns == before


def test_ctrl_c_with_json_still_prints_what_was_done(tiny_env, landmarks_detector, tmp_path, monkeypatch):
    """A script reading --json from stdout gets a document after Ctrl-C too (exit 130): the photos
    restored before it, the one cut short, and those never started."""
    from i2icli.pipelines.restore import RestorePipeline

    landmarks_detector([])
    for name in ("a", "b", "c"):
        _photo(tmp_path / "in" / f"{name}.png")
    restore_one = RestorePipeline.restore

    def interrupted_at_b(self, picture):
        if picture.source is not None and picture.source.stem == "b":
            raise KeyboardInterrupt
        return restore_one(self, picture)

    monkeypatch.setattr(RestorePipeline, "restore", interrupted_at_b)
    result = run("restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "--device", "cpu")
    assert result.exit_code == 130
    summary = json.loads(result.stdout)
    assert [(Path(r["input"]).name, r["status"]) for r in summary["results"]] == [
        ("a.png", "ok"), ("b.png", "interrupted"), ("c.png", "not run")]
    assert summary["interrupted"] is True and summary["ok"] == 1
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png"]
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_outside_a_batch_with_json_prints_an_error_document(capsys):
    import typer

    from i2icli.cli.error_handling import handles_errors

    @handles_errors
    def command(as_json: bool = False):
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as exit_:
        command(as_json=True)
    assert exit_.value.exit_code == 130
    assert json.loads(capsys.readouterr().out) == {"error": "interrupted", "hint": None}


def test_an_output_too_large_for_its_format_is_refused_before_the_work(tiny_env, landmarks_detector, tmp_path,
                                                                       monkeypatch):
    """WebP holds at most 16383 pixels a side: 2100 px at --upscale 8 is 16800, known from the start."""
    from i2icli.pipelines.restore import RestorePipeline

    landmarks_detector([])
    monkeypatch.setattr(RestorePipeline, "restore", lambda self, picture: pytest.fail("restored it anyway"))
    wide = _photo(tmp_path / "wide.png", size=(10, 2100))
    result = run("restore", str(wide), "-o", str(tmp_path / "out.webp"), "--upscale", "8", "--device", "cpu")
    assert result.exit_code == 1
    assert "16800x80 is too large for WEBP (at most 16383 pixels a side) — write PNG or TIFF instead" in result.stderr
    assert not (tmp_path / "out.webp").exists()


def test_overlapped_io_gives_the_same_files_and_reports(tiny_env, landmarks_detector, tmp_path):
    """What a GPU run does (decode and encode on worker threads), run here on the CPU pipeline."""
    from i2icli.batch import plan_jobs
    from i2icli.cli.restore import restore_stages
    from i2icli.cli.runner import run_batch
    from i2icli.pipelines.restore import RestorePipeline, RestoreSettings

    landmarks_detector([OLD_PHOTO_LANDMARKS])
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "c.jpg"):
        (folder / name).write_bytes((EXAMPLES / "old_photo.jpg").read_bytes())
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _write(folder / "d.png", np.full((40, 60, 3), 120, np.uint8))
    # Without the face parser and the background network: the runner's overlap is what is tested.
    pipeline = RestorePipeline.load(device="cpu", precision="fp32", parser=None, bg_model=None,
                                    settings=RestoreSettings(keep_faces=True))
    stages = restore_stages(pipeline, max_pixels=10**8, save_faces=True)
    outcomes = {}
    for overlap in (False, True):
        out = tmp_path / f"out-{overlap}"
        jobs = plan_jobs([str(folder)], out, recursive=False)
        records = run_batch(jobs, stages, verb="restoring", skip_existing=False, overlap_io=overlap,
                            record_of=lambda job: {"input": job.source.name})
        outcomes[overlap] = [(r["input"], r["status"], r.get("faces")) for r in records]
        # (the stand-in detector reports the same face in every photo, the grey one too)
        assert outcomes[overlap] == [("a.jpg", "ok", 1), ("b.png", "failed", None), ("c.jpg", "ok", 1), ("d.png", "ok", 1)]
    for name in ("a.jpg", "c.jpg", "d.png", "cmp/a_00.png", "restored_faces/c_00.png"):
        assert (tmp_path / "out-True" / name).read_bytes() == (tmp_path / "out-False" / name).read_bytes(), name


def test_all_good_exits_0_and_never_overwrites_inputs(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([])
    source = _write(tmp_path / "photo.png", np.full((32, 32, 3), 90, np.uint8))
    original = source.read_bytes()
    result = run("restore", str(source), "-o", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 1 and "overwrite the input" in result.stderr
    assert source.read_bytes() == original
    result = run("restore", str(source), "-o", str(tmp_path), "--suffix", "_restored", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "photo_restored.png").is_file()
    assert source.read_bytes() == original


def test_glob_inputs_and_save_faces(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes((EXAMPLES / "old_photo.jpg").read_bytes())
    out = tmp_path / "out"
    result = run("restore", str(tmp_path / "*.jpg"), "-o", str(out), "--save-faces", "--ext", "png", "--device", "cpu",
                 "--json")
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)["results"]
    for stem, record in zip(("a", "b"), records):
        assert (out / f"{stem}.png").is_file()
        for folder in ("cropped_faces", "restored_faces"):
            assert cv2.imread(str(out / folder / f"{stem}_00.png")).shape == (512, 512, 3)
        assert cv2.imread(str(out / "cmp" / f"{stem}_00.png")).shape == (512, 1024, 3)
        # The record names every face file it wrote, by folder, in the order of the faces.
        assert record["faces"] == 1
        assert {folder: record[folder] for folder in ("cropped_faces", "restored_faces", "cmp")} == {
            folder: [str(out / folder / f"{stem}_00.png")] for folder in ("cropped_faces", "restored_faces", "cmp")}


def test_saved_faces_keep_the_photo_s_colour_profile(tiny_env, landmarks_detector, tmp_path):
    """The output kept the photo's ICC profile but its face files did not, so in a colour-managed
    viewer the crops and comparisons showed other colours than the photo they came from."""
    from PIL import Image, ImageCms

    landmarks_detector([OLD_PHOTO_LANDMARKS])
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.open(EXAMPLES / "old_photo.jpg").save(tmp_path / "wide_gamut.jpg", icc_profile=profile)
    out = tmp_path / "out"
    result = run("restore", str(tmp_path / "wide_gamut.jpg"), "-o", str(out), "--save-faces", "--device", "cpu",
                 "--bg-model", "none", "--parser", "none")
    assert result.exit_code == 0, result.stderr
    for name in ("wide_gamut.jpg", "cropped_faces/wide_gamut_00.png", "restored_faces/wide_gamut_00.png",
                 "cmp/wide_gamut_00.png"):
        with Image.open(out / name) as written:
            assert written.info.get("icc_profile") == profile, name


def test_fp16_on_cpu_is_refused(tiny_env, tmp_path):
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path), "--device", "cpu", "--fp16")
    assert result.exit_code == 1 and "CUDA" in result.stderr


def test_wrong_checkpoint_for_the_option(tiny_env, tmp_path):
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path), "--device", "cpu",
                 "--model", str(tiny_env.files["parsenet"]))
    assert result.exit_code == 1
    assert "parsing_parsenet.pth" in result.stderr and "GFPGAN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_face_model_of_another_size_is_refused_at_load(tiny_env, landmarks_detector, tmp_path):
    """A GFPGANv1Clean checkpoint made for 256 or 1024 px faces loaded, then failed every photo with
    "expected input of shape (b, 3, 256, 256), got (1, 3, 512, 512)"."""
    import torch

    from conftest import TINY_GFPGAN
    from i2icli.archs.gfpgan import GFPGANv1Clean

    landmarks_detector([OLD_PHOTO_LANDMARKS])
    torch.save({"params_ema": GFPGANv1Clean(**{**TINY_GFPGAN, "out_size": 256}).state_dict()}, tmp_path / "small.pth")
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "out"), "--device", "cpu",
                 "--model", str(tmp_path / "small.pth"), "--bg-model", "none", "--parser", "none")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'small.pth'}: a GFPGAN model for 256 px faces; i2i restores "
                                          "512 px ones — use gfpgan-1.4, gfpgan-1.3 or another 512 px GFPGANv1Clean checkpoint"]


def test_a_wrong_parser_checkpoint_names_the_keys_that_do_not_fit(tiny_env, tmp_path):
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path), "--device", "cpu",
                 "--parser", str(tiny_env.files["realesrgan-x2plus"]))
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "RealESRGAN_x2plus.pth: not a ParseNet checkpoint" in line
    assert "Missing key(s) in state_dict" in line or "Unexpected key(s) in state_dict" in line, line


def test_weights_list_fetch_verify(tiny_env, tmp_path, monkeypatch):
    listed = run("weights", "list", "--json")
    assert listed.exit_code == 0
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["gfpgan-1.4"]["local_path"] == str(tiny_env.files["gfpgan-1.4"])

    fetched = run("weights", "fetch", "gfpgan-1.4", "parsenet", "--to", str(tmp_path / "carry"))
    assert fetched.exit_code == 0, fetched.stderr
    assert (tmp_path / "carry" / "GFPGANv1.4.pth").read_bytes() == tiny_env.files["gfpgan-1.4"].read_bytes()

    assert run("weights", "verify").exit_code == 0

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "parsing_parsenet.pth").write_bytes(b"not the file")
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(damaged))
    verified = run("weights", "verify")
    assert verified.exit_code == 1 and "parsing_parsenet.pth" in verified.stderr
    assert run("weights", "fetch", "nonsense").exit_code == 1


def test_weights_verify_checks_every_copy_on_this_machine(tiny_env, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from conftest import fake_hub_cache

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    good = tiny_env.files["parsenet"]
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"another model")
    fake_hub_cache(tmp_path / "hub", "i2i-tests/tiny", {good.name: wrong})
    verified = run("weights", "verify")
    assert verified.exit_code == 1
    assert f"✓ parsenet: {good}" in verified.stdout + verified.stderr
    assert "models--i2i-tests--tiny" in verified.stderr and "does not match parsenet" in verified.stderr


def test_dry_run_lists_the_plan_and_opens_nothing(tiny_env, tmp_path):
    album = tmp_path / "album"
    for name in ("a.jpg", "b.jpg"):
        _photo(album / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_r.jpg").write_bytes(b"an earlier result")
    (tmp_path / "not-a-model.pth").write_bytes(b"no checkpoint")
    before = sorted(tmp_path.rglob("*"))
    args = ["restore", str(album), str(tmp_path / "missing.jpg"), "-o", str(out), "--suffix", "_r", "--skip-existing",
            "--model", str(tmp_path / "not-a-model.pth"), "--dry-run"]  # never loaded
    listed = run(*args)
    assert listed.exit_code == 1  # the missing input
    assert listed.stdout.splitlines() == [f"skipped {album / 'a.jpg'} ({out / 'a_r.jpg'} exists)",
                                          f"{album / 'b.jpg'} → {out / 'b_r.jpg'}"]
    assert "missing.jpg" in listed.stderr and "not a readable checkpoint" not in listed.stderr
    document = json.loads(run(*args, "--json").stdout)
    assert (document["dry_run"], document["would_run"], document["skipped"], document["failed"]) == (True, 1, 1, 1)
    assert {Path(r["input"]).name: r["status"] for r in document["results"]} == {
        "a.jpg": "skipped", "b.jpg": "would run", "missing.jpg": "failed"}
    assert sorted(tmp_path.rglob("*")) == before


def test_an_output_name_taken_by_a_folder_fails_before_the_work(tiny_env, tmp_path):
    """It was found only when the restored photo was written, after the work; --dry-run said it would run."""
    album = tmp_path / "album"
    for name in ("a.jpg", "b.jpg"):
        _photo(album / name)
    out = tmp_path / "out"
    (out / "a.jpg").mkdir(parents=True)
    result = run("restore", str(album), "-o", str(out), "--dry-run")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{album / 'b.jpg'} → {out / 'b.jpg'}"]
    errors = [line for line in result.stderr.splitlines() if not line.startswith("checkpoint ")]  # where each is
    assert errors == [f"error: {album / 'a.jpg'}: its output {out / 'a.jpg'} is a folder; move it "
                      "aside, or use another --output or a --suffix"]


def test_results_keep_the_order_the_inputs_were_given_in(tmp_path):
    first, last = _photo(tmp_path / "b.jpg"), _photo(tmp_path / "a.jpg")
    given = [str(first), str(tmp_path / "missing.jpg"), str(tmp_path / "empty"), str(last)]
    (tmp_path / "empty").mkdir()
    document = json.loads(run("restore", *given, "-o", str(tmp_path / "out"), "--dry-run", "--json").stdout)
    assert [r["input"] for r in document["results"]] == given


def test_a_file_name_that_is_not_utf8_is_written_to_a_strict_stdout_as_its_bytes(monkeypatch):
    import io

    from i2icli.cli.stdout import stdout_write

    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", errors="strict"))
    stdout_write(os.fsdecode(b"old/caf\xe9.jpg"))  # a Latin-1 name, as Python holds it
    assert raw.getvalue() == b"old/caf\xe9.jpg\n"


def test_an_output_name_ending_in_a_slash_is_a_folder(tiny_env, tmp_path):
    photo = _photo(tmp_path / "a.jpg")
    listed = run("restore", str(photo), "-o", f"{tmp_path / 'new.png'}/", "--dry-run")
    assert listed.exit_code == 0, listed.stderr
    assert listed.stdout.strip() == f"{photo} → {tmp_path / 'new.png' / 'a.jpg'}"


def test_weights_verify_reports_on_stdout_and_as_json(tiny_env, tmp_path, monkeypatch):
    verified = run("weights", "verify", "parsenet", "gfpgan-1.4")
    assert verified.exit_code == 0, verified.stderr
    assert f"✓ parsenet: {tiny_env.files['parsenet']}" in verified.stdout
    assert "gfpgan-1.3" not in verified.stdout  # only the names asked for
    assert verified.stdout.strip().splitlines()[-1] == "2 present, 0 failed verification"
    document = json.loads(run("weights", "verify", "parsenet", "--json").stdout)
    assert document == {"present": 1, "failed": 0, "files": [{
        "name": "parsenet", "path": str(tiny_env.files["parsenet"]), "status": "ok",
        "sha256": hashlib.sha256(tiny_env.files["parsenet"].read_bytes()).hexdigest()}]}

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "parsing_parsenet.pth").write_bytes(b"not the file")
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(damaged))
    verified = run("weights", "verify", "parsenet", "--json")
    assert verified.exit_code == 1
    document = json.loads(verified.stdout)
    assert (document["present"], document["failed"]) == (1, 1)
    [entry] = document["files"]
    assert entry["path"] == str(damaged / "parsing_parsenet.pth") and entry["status"] == "failed"
    assert "parsing_parsenet.pth" in verified.stderr  # the failure is also said where errors go

    unknown = run("weights", "verify", "nonsense")
    assert unknown.exit_code == 1 and len(unknown.stderr.strip().splitlines()) == 1


def test_weights_list_flags_a_copy_of_the_wrong_size(tiny_env, tmp_path, monkeypatch):
    entries = {e["name"]: e for e in json.loads(run("weights", "list", "--json").stdout)}
    assert entries["parsenet"]["local_size_matches"] is True
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "parsing_parsenet.pth").write_bytes(tiny_env.files["parsenet"].read_bytes()[:100])
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(truncated))
    entries = {e["name"]: e for e in json.loads(run("weights", "list", "--json").stdout)}
    assert entries["parsenet"]["local_path"] == str(truncated / "parsing_parsenet.pth")
    assert entries["parsenet"]["local_size_matches"] is False
    assert entries["gfpgan-1.4"]["local_size_matches"] is None  # not on this machine any more
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    [row] = [line for line in run("weights", "list").stdout.splitlines() if "parsenet" in line]
    assert "damaged, see `i2i weights verify`" in row


# --------------------------------------------------------------------------- planning a batch safely


def _photo(path: Path, value: int = 90, size: tuple[int, int] = (32, 32)) -> Path:
    return _write(path, np.full((*size, 3), value, np.uint8))


def test_no_output_may_replace_another_input(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([])
    first, second = _photo(tmp_path / "a" / "photo.png", 10), _photo(tmp_path / "b" / "photo.png", 200)
    kept = first.read_bytes()
    result = run("restore", str(first), str(second), "-o", str(tmp_path / "a"), "--device", "cpu")
    assert result.exit_code == 1 and first.read_bytes() == kept
    assert "is another input" in result.stderr and "would be overwritten" in result.stderr

    # A re-run in place over a folder: the earlier result found there is not restored again (no
    # x_r_r.png), it is replaced, or kept with --skip-existing. Named on the command line, a file
    # is an input and never replaced.
    folder = tmp_path / "again"
    _photo(folder / "x.png", 10)
    earlier = _photo(folder / "x_r.png", 50, (16, 20))
    kept = earlier.read_bytes()
    common = ("-o", str(folder), "--suffix", "_r", "--device", "cpu", "--json")
    result = run("restore", str(folder / "*.png"), *common, "--skip-existing")
    assert result.exit_code == 0 and earlier.read_bytes() == kept
    assert "1 file(s) left out as earlier results" in result.stderr and "x_r.png" in result.stderr
    assert [(Path(r["input"]).name, r["status"]) for r in json.loads(result.stdout)["results"]] == [("x.png", "skipped")]
    result = run("restore", str(folder), *common)
    assert result.exit_code == 0 and read_image_size(earlier) == (64, 64)  # x.png's new result, 2x of 32
    assert sorted(path.name for path in folder.iterdir()) == ["x.png", "x_r.png"]
    earlier = _photo(folder / "x_r.png", 50, (16, 20))
    kept = earlier.read_bytes()
    result = run("restore", str(folder / "x.png"), str(earlier), *common)
    assert result.exit_code == 1 and earlier.read_bytes() == kept
    assert "is another input" in result.stderr


def test_a_suffix_cannot_leave_the_output_folder(tmp_path):
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "out"), "--suffix", "/../../escaped")
    assert result.exit_code == 2 and "Invalid value for '--suffix'" in result.stderr
    assert not any(tmp_path.rglob("*escaped*"))


def test_planning_counts_what_it_leaves_out_and_knows_one_file_by_any_path(tmp_path, monkeypatch, caplog):
    from i2icli.batch import plan_jobs

    _photo(tmp_path / "in" / "a.png")
    _photo(tmp_path / "in" / "sub" / "b.png")
    _photo(tmp_path / "in" / "results" / "old.png")
    with caplog.at_level("WARNING", logger="i2icli"):
        plan_jobs([str(tmp_path / "in")], tmp_path / "out", recursive=False)
        plan_jobs([str(tmp_path / "in")], tmp_path / "in" / "results", recursive=True)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [f"{tmp_path / 'in'}: 2 image(s) in sub-folders left out; add -r to include them",
                        f"{tmp_path / 'in'}: 1 image(s) inside the output folder {tmp_path / 'in' / 'results'} left out "
                        "(taken for earlier results)"]

    # The output reaches the input by another path (here a hard link; a bind mount or a
    # case-insensitive file system do the same): refused like the input's own path.
    (tmp_path / "view").mkdir()
    os.link(tmp_path / "in" / "a.png", tmp_path / "view" / "a.png")
    [job] = plan_jobs([str(tmp_path / "in" / "a.png")], tmp_path / "view", recursive=False)
    assert "the output would overwrite the input" in job.problem

    # A quoted glob that starts with ~ is expanded like a path.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert [j.source.name for j in plan_jobs(["~/in/*.png"], tmp_path / "out", recursive=False)] == ["a.png"]

    # -o with a trailing slash names a folder, whatever its name looks like.
    from i2icli.cli.paths import names_image_file

    assert names_image_file("new.png") and not names_image_file("new.png/")

    # A symbolic link that leads back to itself is named as that, not as a permissions problem.
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    [job] = plan_jobs([str(tmp_path / "loop.png")], tmp_path / "out", recursive=False)
    assert "leads back to itself" in job.problem


def test_a_rerun_in_place_leaves_out_the_face_files_of_its_outputs(tmp_path, caplog):
    """--save-faces writes cmp/, cropped_faces/ and restored_faces/ beside each output: a re-run
    into the same folder with -r restored them as photos, and without -r counted them as photos
    that -r would include."""
    from i2icli.batch import plan_jobs

    _photo(tmp_path / "in" / "a.png")
    _photo(tmp_path / "in" / "sub" / "b.png")
    _photo(tmp_path / "in" / "cmp" / "holiday.png")  # a photo of the user's own in a folder of that name
    for folder in ("cmp", "cropped_faces", "restored_faces"):
        _photo(tmp_path / "in" / folder / "a_r_00.png")
        _photo(tmp_path / "in" / "sub" / folder / "b_r_00.png")
    jobs = plan_jobs([str(tmp_path / "in")], tmp_path / "in", recursive=True, suffix="_r")
    assert sorted(str(job.source.relative_to(tmp_path / "in")) for job in jobs) == ["a.png", "cmp/holiday.png", "sub/b.png"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="i2icli"):
        plan_jobs([str(tmp_path / "in")], tmp_path / "in", recursive=False, suffix="_r")
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path / 'in'}: 2 image(s) in sub-folders left out; add -r to include them"]


def test_a_glob_takes_the_images_it_matches_as_a_folder_does(tmp_path, caplog):
    """'album/*' made a failed job, and exit 1, of every sidecar (.xmp) and Thumbs.db beside the
    photos, which the same folder given as a folder leaves alone."""
    from i2icli.batch import plan_jobs

    _photo(tmp_path / "album" / "a.jpg")
    (tmp_path / "album" / "a.xmp").write_text("<x:xmpmeta/>")
    (tmp_path / "album" / "Thumbs.db").write_bytes(b"\0")
    with caplog.at_level("WARNING", logger="i2icli"):
        jobs = plan_jobs([str(tmp_path / "album" / "*")], tmp_path / "out", recursive=False)
    assert [(job.source.name, job.problem) for job in jobs] == [("a.jpg", None)]
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path / 'album' / '*'}: 2 matching file(s) that are not images left out (e.g. Thumbs.db)"]
    # A pattern that matches files but no image says so, once.
    [job] = plan_jobs([str(tmp_path / "album" / "*.xmp")], tmp_path / "out", recursive=False)
    assert job.output is None and "no image matches this pattern, only other files (e.g. a.xmp)" in job.problem


def test_planning_the_batch(tmp_path, monkeypatch):
    from i2icli.batch import plan_jobs

    _photo(tmp_path / "in" / "a.png")
    _photo(tmp_path / "in" / "sub" / "b.png")
    _photo(tmp_path / "nested" / "deep" / "c.png")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"

    # The same file twice (a folder and a glob) is one job.
    jobs = plan_jobs([str(tmp_path / "in"), str(tmp_path / "in" / "*.png")], out, recursive=False)
    assert [(j.source.name, j.problem) for j in jobs] == [("a.png", None)]
    # An output folder that is the input folder, or holds it, hides no input.
    assert [j.source.name for j in plan_jobs([str(tmp_path / "in")], tmp_path / "in", recursive=False, suffix="_r")] == ["a.png"]
    assert [j.source.name for j in plan_jobs([str(tmp_path / "in")], tmp_path, recursive=True)] == ["a.png", "b.png"]
    # ...while one inside it keeps its earlier results out of a recursive run.
    _photo(tmp_path / "in" / "results" / "a.png")
    assert [j.source.name for j in plan_jobs([str(tmp_path / "in")], tmp_path / "in" / "results", recursive=True)] == ["a.png", "b.png"]

    # Empty folders, and folders whose images are all in sub-folders, say which and what to do.
    empty, nested, missing = plan_jobs([str(tmp_path / "empty"), str(tmp_path / "nested"), str(tmp_path / "nope.png")],
                                       out, recursive=False)
    assert empty.output is None and empty.problem == f"{tmp_path / 'empty'}: no images in this folder"
    assert "only in its sub-folders; add -r" in nested.problem
    assert missing.output is None and "no such file or folder" in missing.problem

    # A path that cannot even be looked at is that input's failure, not the batch's.
    stat = Path.stat

    def denied(self, *args, **kwargs):
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", denied)
    locked, good = plan_jobs([str(tmp_path / "locked.png"), str(tmp_path / "in" / "a.png")], out, recursive=False)
    assert locked.problem == f"{tmp_path / 'locked.png'}: cannot be read (permission denied); check its permissions"
    assert good.problem is None


def test_failed_inputs_report_no_output_in_json(tiny_env, tmp_path):
    result = run("restore", str(tmp_path / "nothere.jpg"), "-o", str(tmp_path / "out"), "--json", "--device", "cpu")
    record = json.loads(result.stdout)["results"][0]
    assert result.exit_code == 1 and record["status"] == "failed" and record["output"] is None


def test_output_folder_problems_are_found_before_any_work(tmp_path, monkeypatch):
    from i2icli.pipelines import restore as restore_pipeline

    def never(**kwargs):
        raise AssertionError("models were loaded")

    monkeypatch.setattr(restore_pipeline.RestorePipeline, "load", never)
    (tmp_path / "afile").write_text("x")
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "afile"))
    assert result.exit_code == 1 and "afile: is a file, not a folder" in result.stderr
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "afile" / "below"))
    assert result.exit_code == 1 and "is a file, so this folder cannot be made" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [
    ["exemplar", "pose.json", "{photo}", "--exemplar-pose", "pose.json", "--checkpoint", "{missing}"],
    ["invert", "{photo}", "{photo}", "--generator", "{missing}"],
    ["translate-lr", "{photo}", "{photo}", "-c", "{missing}"],
    ["paired", "{photo}", "-c", "{missing}"],
])
@pytest.mark.parametrize("output", ["below", "below/out.png"])
def test_every_command_checks_its_output_folder_first(tmp_path, command, output):
    (tmp_path / "afile").write_text("x")
    values = {"photo": str(EXAMPLES / "old_photo.jpg"), "missing": str(tmp_path / "missing")}
    args = [part.format(**values) for part in command]
    result = run(*args, "-o", str(tmp_path / "afile" / output), "--device", "cpu")
    # Refused for the folder before any checkpoint is looked for (the one given does not exist).
    assert result.exit_code == 1 and "is a file, so this folder cannot be made" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_output_can_name_the_file_for_one_input(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([])
    source = _photo(tmp_path / "photo.png")
    result = run("restore", str(source), "-o", str(tmp_path / "new" / "restored.webp"), "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert read_image_size(tmp_path / "new" / "restored.webp") == (64, 64)
    two = run("restore", str(source), str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "x.png"))
    assert two.exit_code == 2 and "give -o a folder" in two.stderr
    assert run("restore", str(source), "-o", str(tmp_path / "x.png"), "--suffix", "_r").exit_code == 2
    same = run("restore", str(source), "-o", str(source), "--device", "cpu")
    assert same.exit_code == 1 and "overwrite the input" in same.stderr


def read_image_size(path: Path) -> tuple[int, int]:
    from i2icli.imageio import read_image

    picture = read_image(path)
    return picture.width, picture.height


def test_face_files_of_photos_that_share_a_stem_stay_apart(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "old.jpg").write_bytes((EXAMPLES / "old_photo.jpg").read_bytes())
    _photo(folder / "old.png", 200, (341, 341))
    result = run("restore", str(folder), "-o", str(tmp_path / "out"), "--save-faces", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    for name in ("old.jpg", "old.png"):
        crop = cv2.imread(str(tmp_path / "out" / "cropped_faces" / f"{name}_00.png"))
        assert crop.shape == (512, 512, 3)
    crops = [cv2.imread(str(tmp_path / "out" / "cropped_faces" / f"{name}_00.png")) for name in ("old.jpg", "old.png")]
    assert not np.array_equal(*crops)  # each photo's own face


def test_device_names(tmp_path):
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path), "--device", "nonsense")
    assert result.exit_code == 2 and "use auto, cpu, cuda, cuda:N or mps" in result.stderr
    from i2icli.cli.options import _device_name

    assert _device_name(" CPU ") == "cpu" and _device_name("cuda:1") == "cuda:1"


def test_a_registry_name_for_the_wrong_option_is_refused_before_any_download(tiny_env, tmp_path, monkeypatch):
    from i2icli import weights

    fetched, fetch = [], weights.fetch
    monkeypatch.setattr(weights, "fetch", lambda checkpoint, **kw: fetched.append(checkpoint.name) or fetch(checkpoint, **kw))
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path), "--device", "cpu", "--bg-model", "parsenet",
                 "--parser", "none")
    assert result.exit_code == 1 and "parsenet" not in fetched
    assert "parsenet is a ParseNet checkpoint, not a Real-ESRGAN one" in result.stderr
    assert "realesrgan-x2plus or realesrgan-x4plus or realesr-general-x4v3" in result.stderr


def test_weights_list_goes_to_stdout_and_fetch_into_a_file_is_one_line(tiny_env, tmp_path):
    listed = run("weights", "list")
    assert listed.exit_code == 0 and "gfpgan-1.4" in listed.stdout
    (tmp_path / "carry").write_text("a file, not a folder")
    fetched = run("weights", "fetch", "gfpgan-1.4", "--to", str(tmp_path / "carry"))
    assert fetched.exit_code == 1 and "cannot be used as the destination folder" in fetched.stderr
    assert len(fetched.stderr.strip().splitlines()) == 1


def test_unforeseen_file_system_errors_are_one_line(tmp_path, capsys):
    import pytest
    import typer

    from i2icli.cli.error_handling import handles_errors

    @handles_errors
    def command():
        raise OSError(28, "No space left on device", str(tmp_path / "out.png"))

    with pytest.raises(typer.Exit) as exit_:
        command()
    assert exit_.value.exit_code == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'out.png'}: No space left on device"


def test_a_device_out_of_memory_is_one_line_with_the_commands_own_hint(capsys):
    """Where a command has no smaller batch to retry with, running out of device memory still
    ends in one line, which names what the command can do with less; other RuntimeErrors are
    bugs and keep their traceback."""
    import pytest
    import torch
    import typer

    from i2icli.cli.error_handling import handles_errors
    from i2icli.pipelines.memory_hints import MemoryHint

    @handles_errors(memory_hint=MemoryHint("use fewer --codes", ram="use a smaller --size"))
    def command(error: Exception, as_json: bool = False):
        raise error

    with pytest.raises(typer.Exit) as exit_:
        command(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"), as_json=True)
    assert exit_.value.exit_code == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: the device ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB) — use fewer --codes"
    assert json.loads(captured.out)["hint"] == "use fewer --codes"
    with pytest.raises(typer.Exit):
        command(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"))
    assert "ran out of memory" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="shape mismatch"):
        command(RuntimeError("shape mismatch"))
    # The computer's own memory: the command's hint for that, not another command's options.
    with pytest.raises(typer.Exit):
        command(MemoryError())
    assert capsys.readouterr().err.strip() == "error: the computer ran out of memory — use a smaller --size"


def test_logged_and_python_warnings_are_one_line_warnings(tmp_path, capsys):
    """A multi-page TIFF is read with a logged warning: through the CLI it is shown like every
    other warning, not by Python's bare fallback handler; Python warnings lose their file:line."""
    import logging
    import warnings

    import numpy as np
    from PIL import Image

    from i2icli.cli.stderr import route_messages_to_console
    from i2icli.imageio import read_image

    pages = [Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(3)]
    tiff = tmp_path / "multi.tif"
    pages[0].save(tiff, save_all=True, append_images=pages[1:])
    saved = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            route_messages_to_console()
            route_messages_to_console()  # idempotent: one handler, one line per message
            assert sum(type(h).__name__ == "_ConsoleLogHandler" for h in logging.getLogger("i2icli").handlers) == 1
            capsys.readouterr()
            read_image(tiff)
            warnings.warn("first line\nsecond line", RuntimeWarning)
            shown = capsys.readouterr().err
    finally:
        warnings.showwarning = saved
    assert shown.splitlines() == [f"warning: {tiff}: holds 3 frames or pages; only the first is used", "warning: first line"]


def test_a_quoted_home_folder_is_expanded_for_every_path_option(tmp_path, monkeypatch):
    """The shell leaves "~/x" alone when it is quoted (and scripts often quote): every path
    option sees the expanded path, so a file test or a read never meets the literal "~"."""
    from i2icli.cli.error_handling import handles_errors

    monkeypatch.setenv("HOME", str(tmp_path))
    seen = {}

    @handles_errors
    def command(label: Path, styles: list[Path], name: str = "~", out: Path | None = None):
        seen.update(label=label, styles=styles, name=name, out=out)

    command(Path("~/label.png"), [Path("~/a.png"), Path("b.png")], out=Path("~/out"))
    assert seen == {"label": tmp_path / "label.png", "styles": [tmp_path / "a.png", Path("b.png")], "name": "~",
                    "out": tmp_path / "out"}


@pytest.mark.parametrize(("args", "option"), [
    (["invert", "a.png", "b.png", "--seed", "99999999999999999999999"], "--seed"),
    (["exemplar", "a.png", "b.png", "--exemplar-pose", "p.json", "--seed", "-1"], "--seed"),
    (["paired", "a.png", "-c", "run", "--seed", str(2**63 - 1), "--samples", "2"], "--seed"),
    (["train", "paired", "data", "--label-nc", "4", "--out", "run", "--seed", str(2**64)], "--seed"),
    (["train", "paired", "data", "--label-nc", "4", "--out", "run", "--g-lr", "nan"], "--g-lr"),
    (["train", "paired", "data", "--label-nc", "4", "--out", "run", "--d-lr", "-1"], "--d-lr"),
    (["train", "translate-lr", "data", "--out", "run", "--r1-gamma", "inf"], "--r1-gamma"),
    (["train", "paired", "data", "--label-nc", "4", "--out", "run", "--l1-weight", "nan"], "--l1-weight"),
    (["restore", "a.png", "--min-face-size", "inf"], "--min-face-size"),
])
def test_seeds_rates_and_weights_out_of_range_are_usage_errors(args, option, tmp_path, monkeypatch):
    """Seeds reach torch as 64-bit integers, and a NaN or infinite rate only shows up as NaN
    weights much later: all are refused before anything runs. Each command has what it requires,
    so the refusal is the value's and no other's."""
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.stderr or f"{option} " in result.stderr, result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [[], ["restore"], ["exemplar"], ["invert"], ["translate-lr"], ["paired"],
                                     ["weights"], ["weights", "fetch"], ["train"], ["train", "translate-lr"],
                                     ["train", "paired"]])
def test_help_shows_value_names_not_python_types(command):
    """`--json <bool>` reads as if it took a value (`--json true` is refused), and `<str>` or
    `<list[str]>` say less than `NAME|PATH` or an argument's own name."""
    shown = run(*command, "--help").output
    assert "--help" in shown
    for python_type in ("<bool>", "<str>", "<path>", "<int", "<float", "<list["):
        assert python_type not in shown, (python_type, shown)


def test_options_name_what_they_take_in_help():
    import re

    shown = " ".join(run("restore", "--help").output.split())
    for option, value in (("--model", "NAME|PATH"), ("--bg-model", "NAME|PATH|none"), ("--output", "DIR|FILE"),
                          ("--tile", "PX"), ("--max-memory", "GB"), ("--device", "DEVICE"), ("--upscale", "X"),
                          ("--face-batch", "N"), ("--suffix", "TEXT")):
        assert re.search(re.escape(option) + r"[ │\-a-z]*? " + re.escape(value) + " ", shown), (option, value)


def test_seed_help_gives_the_lower_bound_only():
    """The upper bound (2^63 - 1) is checked by a callback: nineteen digits in the help say nothing."""
    for command in (["invert"], ["exemplar"], ["paired"], ["train", "paired"]):
        shown = run(*command, "--help", "--seed", "0").output
        assert "x>=0" in shown and str(2**63 - 1) not in shown


def test_command_descriptions_flow_as_paragraphs():
    """A docstring's line breaks would show as ragged lines in a terminal of another width."""
    from typer.main import get_command

    def commands(group):
        for command in group.commands.values():
            yield command
            if hasattr(command, "commands"):
                yield from commands(command)

    described = [command for command in commands(get_command(app)) if command.help]
    assert len(described) >= 10
    for command in described:
        assert "\n" not in command.help.replace("\n\n", ""), command.name


def _small_photo(path: Path) -> Path:
    rng = np.random.default_rng(5)
    return _write(path, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))


def test_an_image_piped_in_and_out_is_restored_as_from_files(tiny_env, landmarks_detector, tmp_path, monkeypatch):
    """- reads the image from standard input, -o - writes it to standard output, in the input's
    format unless --ext names another; the bytes are those a file would hold."""
    landmarks_detector([])
    monkeypatch.chdir(tmp_path)  # where a file or folder named "-" would have appeared
    photo = _small_photo(tmp_path / "photo.png")
    options = ["--device", "cpu", "--fp32", "--bg-model", "none"]
    assert run("restore", str(photo), "-o", str(tmp_path / "from_file.png"), *options).exit_code == 0
    expected = (tmp_path / "from_file.png").read_bytes()

    both = runner.invoke(app, ["restore", "-", "-o", "-", *options], input=photo.read_bytes(), catch_exceptions=False)
    assert both.exit_code == 0, both.stderr
    assert both.stdout_bytes == expected
    assert "- → standard output" in both.stderr

    into_file = runner.invoke(app, ["restore", "-", "-o", str(tmp_path / "piped_in.png"), *options], input=photo.read_bytes(),
                              catch_exceptions=False)
    assert into_file.exit_code == 0, into_file.stderr
    assert into_file.stdout_bytes == b"" and (tmp_path / "piped_in.png").read_bytes() == expected

    as_jpeg = run("restore", str(photo), "-o", "-", "--ext", "jpg", *options)
    assert as_jpeg.exit_code == 0 and as_jpeg.stdout_bytes[:3] == b"\xff\xd8\xff", as_jpeg.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from_file.png", "photo.png", "piped_in.png"]


def test_piped_input_that_is_no_image_is_one_line(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([])
    for content, expected in ((b"", "-: is empty (0 bytes)"), (b"hello", "-: is not an image file")):
        result = runner.invoke(app, ["restore", "-", "-o", str(tmp_path / "out.png"), "--device", "cpu"], input=content,
                               catch_exceptions=False)
        assert result.exit_code == 1
        assert expected in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()
    photo = _small_photo(tmp_path / "photo.png").read_bytes()
    result = runner.invoke(app, ["restore", "-", "-o", "-", "--max-pixels", "100"], input=photo, catch_exceptions=False)
    assert result.exit_code == 1 and result.stdout_bytes == b""
    assert "-: image is 48x40 = 1,920 pixels, over the limit of 100" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["-", "x.png", "-o", "-"], "must be the only input"),
    (["-"], "needs an output file name"),
    (["-", "-o", "folder/"], "needs an output file name"),
    (["-", "-o", "out.png", "--ext", "jpg"], "names the output file"),
    (["x.png", "-o", "-", "--json"], "--json and -o - would both write to standard output"),
    (["x.png", "-o", "-", "--save-faces"], "--save-faces writes files beside the output"),
    (["x.png", "-o", "-", "--suffix", "_r"], "--suffix is for output folders"),
])
def test_what_cannot_go_through_the_standard_streams_is_a_usage_error(args, expected):
    result = runner.invoke(app, ["restore", *args], input=b"", catch_exceptions=False)
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert expected in line


def test_a_folder_to_standard_output_is_a_usage_error(tmp_path):
    for name in ("a.png", "b.png"):
        _small_photo(tmp_path / "in" / name)
    result = run("restore", str(tmp_path / "in"), "-o", "-")
    assert result.exit_code == 2 and "the inputs hold 2 images" in result.stderr


def test_the_standard_streams_refuse_a_terminal_and_a_closed_pipe(monkeypatch):
    import io

    import typer

    from i2icli.cli.piping import read_standard_input, refuse_terminal_output
    from i2icli.cli.stdout import write_standard_output
    from i2icli.errors import I2IError

    class Terminal(io.BytesIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(typer.Exit) as refused:
        read_standard_input(100)
    assert refused.value.exit_code == 2
    monkeypatch.setattr(sys, "stdout", Terminal())
    with pytest.raises(typer.Exit):
        refuse_terminal_output()

    class ClosedPipe(io.RawIOBase):
        buffer = property(lambda self: self)

        def write(self, data):
            raise BrokenPipeError

        def fileno(self):
            raise io.UnsupportedOperation

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    with pytest.raises(I2IError, match="standard output was closed"):
        write_standard_output(b"image")


@pytest.mark.parametrize("args, expected", [
    (["exemplar", "-", "-", "--exemplar-pose", "look.json"], "INPUT and EXEMPLAR are both -"),
    (["exemplar", "a.png", "look.jpg", "--input-pose", "-", "--exemplar-pose", "look.json"],
     "--input-pose -: a pose file is not read from standard input"),
    (["exemplar", "--pairs", "-"], "--pairs -: a CSV list of pairs is not read from standard input"),
    (["invert", "-", "-"], "SOURCE and EXEMPLAR are both -"),
    (["invert", "a.png", "-"], "an image read from standard input needs an output file name"),
    (["paired", "-", "-c", "run.pt", "--style", "-", "-o", "out.png"], "LABEL and --style are both -"),
    (["translate-lr", "-", "-", "-c", "run.pt"], "SOURCE and TARGET are both -"),
])
def test_what_the_other_commands_cannot_read_from_standard_input_is_named(args, expected, tmp_path, monkeypatch):
    """Standard input holds one image, and no pose file or CSV list: refused before it is read."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, input=b"")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert expected in line
    assert list(tmp_path.iterdir()) == []


def test_options_that_aligned_leaves_unused_are_named(tiny_env, tmp_path):
    """--aligned runs the face network alone: --upscale 4 gave a 512 px face without a word."""
    photo = str(_small_photo(tmp_path / "face.png"))
    typed = run("restore", photo, "--aligned", "-s", "4", "--bg-model", "none", "--dry-run")
    assert typed.exit_code == 0
    assert "warning: --upscale, --bg-model: not used with --aligned" in " ".join(typed.stderr.split())
    assert "not used" not in run("restore", photo, "--aligned", "--dry-run").stderr
    assert "not used" not in run("restore", photo, "-s", "4", "--dry-run").stderr


def test_control_characters_in_file_names_are_shown_as_escapes(tiny_env, tmp_path):
    """A newline in a name split a --dry-run line that scripts read one per file, and an escape
    sequence reached the terminal, which obeyed it."""
    folder = tmp_path / "in"
    _small_photo(folder / "two\nlines.png")
    _small_photo(folder / "red\x1b[31m.png")
    preview = run("restore", str(folder), "-o", str(tmp_path / "out"), "--dry-run")
    assert preview.exit_code == 0
    assert preview.stdout.splitlines() == [
        f"{folder}/red\\x1b[31m.png → {tmp_path}/out/red\\x1b[31m.png",
        f"{folder}/two\\nlines.png → {tmp_path}/out/two\\nlines.png",
    ]
    missing = run("restore", str(tmp_path / "gone\x1b]0;title\x07.png"))
    assert missing.exit_code == 1 and "\x1b" not in missing.stderr and "\x07" not in missing.stderr
    assert "gone\\x1b]0;title\\x07.png" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_a_folder_of_one_image_to_standard_output_keeps_the_images_format(tiny_env, landmarks_detector, tmp_path):
    """The format came from INPUT's own suffix: a folder (or a pattern) has none, so a JPEG came out as PNG."""
    landmarks_detector([])
    _write(tmp_path / "in" / "only.jpg", np.full((32, 40, 3), 90, np.uint8))
    result = run("restore", str(tmp_path / "in"), "-o", "-", "--device", "cpu", "--bg-model", "none")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes[:3] == b"\xff\xd8\xff"


def test_weights_output_shows_a_folder_name_in_brackets_as_it_is(tiny_env, tmp_path, monkeypatch):
    """A weights folder named "models [v2]" lost its "[v2]" in `list` and `verify`: rich took it for markup."""
    folder = tmp_path / "models [v2]"
    folder.mkdir()
    (folder / "parsing_parsenet.pth").write_bytes(tiny_env.files["parsenet"].read_bytes())
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("COLUMNS", "400")  # the table keeps the path on one line
    verified = run("weights", "verify", "parsenet")
    assert verified.exit_code == 0 and f"✓ parsenet: {folder / 'parsing_parsenet.pth'}" in verified.stdout
    assert str(folder / "parsing_parsenet.pth") in run("weights", "list").stdout


def test_a_message_ending_in_a_backslash_shows_it_once(capsys):
    from i2icli.cli.stderr import report_error, warn
    from i2icli.errors import I2IError

    report_error(I2IError("cannot write D:\\photos\\", "free some space on D:\\"))
    report_error("no images in C:\\scans\\")
    warn("left out E:\\old\\")
    warn("a [bold]name[/bold] is not markup")
    assert capsys.readouterr().err.splitlines() == [
        "error: cannot write D:\\photos\\ — free some space on D:\\",
        "error: no images in C:\\scans\\",
        "warning: left out E:\\old\\",
        "warning: a [bold]name[/bold] is not markup",
    ]
