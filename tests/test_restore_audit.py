"""`i2i restore` from the command line: odd inputs and option combinations, and the messages they get."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES
from test_cli import _photo, run


def test_a_clash_of_two_inputs_is_not_told_to_use_a_suffix(tiny_env, landmarks_detector, tmp_path):
    """a.jpg and a.png both become a.png with --ext png. The message said "use --suffix", but a
    suffix goes on both names alike: following it failed the same way."""
    landmarks_detector([])
    folder = tmp_path / "in"
    _photo(folder / "a.jpg", 10)
    _photo(folder / "a.png", 200)
    common = ["-o", str(tmp_path / "out"), "--ext", "png", "--device", "cpu", "--bg-model", "none", "--parser", "none"]
    result = run("restore", str(folder), *common)
    assert result.exit_code == 1
    [clash] = [line for line in result.stderr.splitlines() if "already written by" in line]
    assert "a.png" in clash and "--suffix" not in clash and "separate runs" in clash
    assert run("restore", str(folder), *common, "--suffix", "_r").exit_code == 1  # what the old advice led to


def test_the_suffix_message_shows_a_backslash_as_one(tmp_path):
    result = run("restore", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--suffix", "a/b")
    assert result.exit_code == 2 and "(/ or \\)" in result.stderr and "\\\\" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option, wrong", [("--model", "realesrgan-x2plus"), ("--detector", "parsenet")])
def test_a_checkpoint_of_another_network_says_what_to_pass(tiny_env, tmp_path, option, wrong):
    """A face model or detector file of another network was named, with nothing said about what to
    do; the other model options' messages say what to pass instead."""
    result = run("restore", str(EXAMPLES / "old_photo.jpg"), "-o", str(tmp_path / "out"), "--device", "cpu",
                 option, str(tiny_env.files[wrong]))
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {tiny_env.files[wrong]}: ") and " — pass a " in line, line
    assert "Traceback" not in result.stderr


def test_a_link_to_a_missing_photo_in_a_folder_fails_rather_than_vanishing(tiny_env, landmarks_detector, tmp_path):
    """A folder's symbolic link to a photo that is not there (a drive not mounted) was left out
    without a word, and the run exited 0 as if the folder had been restored in full."""
    landmarks_detector([])
    folder = tmp_path / "in"
    _photo(folder / "here.png")
    (folder / "away.jpg").symlink_to(tmp_path / "unmounted" / "away.jpg")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").symlink_to("gone.png")
    common = ["-o", str(tmp_path / "out"), "--device", "cpu", "--bg-model", "none", "--parser", "none", "-r"]
    for extra in ([], ["--dry-run"]):
        result = run("restore", str(folder), *common, *extra, "--json")
        assert result.exit_code == 1, result.stderr
        status = {Path(record["input"]).name: record["status"] for record in json.loads(result.stdout)["results"]}
        assert status == {"away.jpg": "failed", "deep.png": "failed", "here.png": "ok" if not extra else "would run"}
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 2 and all("symbolic link to" in line and "does not exist" in line for line in errors)
        assert "Traceback" not in result.stderr
    assert (tmp_path / "out" / "here.png").is_file()
    # A pattern that matches only such a link: no "no files match this pattern", but the link.
    result = run("restore", str(folder / "*.jpg"), *common)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "away.jpg: a symbolic link to" in line and "does not exist" in line, line


def test_ext_auto_takes_any_case(tiny_env, landmarks_detector, tmp_path):
    """--ext AUTO passed the check (which reads any case) but named the output photo.auto."""
    landmarks_detector([])
    source = _photo(tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    preview = run("restore", str(source), "-o", str(out), "--ext", "AUTO", "--dry-run")
    assert preview.exit_code == 0 and preview.stdout.strip().endswith(str(out / "photo.png")), preview.stdout
    result = run("restore", str(source), "-o", str(out), "--ext", "Auto", "--device", "cpu", "--bg-model", "none",
                 "--parser", "none")
    assert result.exit_code == 0, result.stderr
    assert [path.name for path in out.iterdir()] == ["photo.png"]


def test_a_named_output_file_in_the_input_folder_can_be_made_again(tiny_env, landmarks_detector, tmp_path):
    """`i2i restore album -o album/best.png`, run a second time, found its own best.png in the
    folder and refused: "-o names one output file, but the inputs hold 2 images"."""
    landmarks_detector([])
    folder = tmp_path / "album"
    _photo(folder / "scan.png")
    output = folder / "best.png"
    common = ["-o", str(output), "--device", "cpu", "--bg-model", "none", "--parser", "none"]
    assert run("restore", str(folder), *common).exit_code == 0
    first = output.read_bytes()
    again = run("restore", str(folder), *common, "--skip-existing")
    assert again.exit_code == 0, again.stderr
    assert "best.png: left out" in again.stderr and "skipped" in again.stderr and output.read_bytes() == first
    assert run("restore", str(folder), *common).exit_code == 0
    # Named on the command line it is an input, whose output would replace it.
    named = run("restore", str(output), *common)
    assert named.exit_code == 1 and "would overwrite the input" in named.stderr


def test_an_input_of_an_unsupported_type_fails_the_dry_run_as_it_fails_the_run(tiny_env, tmp_path, monkeypatch):
    """scan.dat is refused when read; --dry-run said "would run", and the run loaded every model first."""
    from i2icli.pipelines.restore import RestorePipeline

    scan = tmp_path / "scan.dat"
    scan.write_bytes((EXAMPLES / "old_photo.jpg").read_bytes())
    monkeypatch.setattr(RestorePipeline, "load", lambda *args, **kwargs: pytest.fail("no job would run"))
    for extra in (["--dry-run"], []):
        refused = run("restore", str(scan), "-o", str(tmp_path / "out"), "--device", "cpu", *extra)
        assert refused.exit_code == 1
        assert f"{scan}: unsupported file type ('.dat') (i2i reads .png, .jpg" in refused.stderr
        assert not (tmp_path / "out").exists()
