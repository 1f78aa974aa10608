"""Small defects a careful user could still hit: an output named like a text file, a download
failing in a way the hub library does not name, escape codes where no terminal reads them."""

from __future__ import annotations

import pytest
from test_cli import EXAMPLES, run
from test_standard_input import lr_run, piped  # noqa: F401  (lr_run: a fixture)

PHOTO = str(EXAMPLES / "old_photo.jpg")


@pytest.mark.parametrize("name", ["result.txt", "notes.JSON", "faces.csv"])
def test_an_output_named_like_a_file_that_is_no_image_is_refused(tmp_path, name):
    """`-o result.txt` was taken as a folder to make, and the results went into result.txt/."""
    result = run("restore", PHOTO, "-o", str(tmp_path / name), "--dry-run")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: -o {tmp_path / name}: an output file must be a .png, .jpg")
    assert "end it with a / to make a folder" in line
    assert not (tmp_path / name).exists()


def test_folder_names_with_dots_are_still_folders(tiny_env, tmp_path):
    for name in ("results.v2", "2024.06", "result.txt/"):
        result = run("restore", PHOTO, "-o", f"{tmp_path}/{name}", "--dry-run")  # as typed: Path drops a slash
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip().endswith(str(tmp_path / name.rstrip("/") / "old_photo.jpg"))


def test_an_existing_folder_keeps_its_name_whatever_it_ends_in(tiny_env, tmp_path):
    (tmp_path / "scans.txt").mkdir()
    result = run("restore", PHOTO, "-o", str(tmp_path / "scans.txt"), "--dry-run")
    assert result.exit_code == 0, result.stderr


class _TransferBackEndError(Exception):
    """An error type neither requests nor huggingface_hub defines, as hf_xet's may be."""


def test_a_hub_download_failing_with_an_unknown_error_is_one_line(tiny_env, monkeypatch):
    """hf_xet and hf_transfer raise errors of their own, which reached the user as a traceback."""
    import huggingface_hub

    from i2icli import weights

    def failing_download(*args, **kwargs):
        raise _TransferBackEndError("xet: connection reset while reconstructing the file\nmore detail")

    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "_reachable", lambda url: "example.invalid" not in url)  # the Hub only
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    result = run("weights", "fetch", "parsenet")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line == ("error: checkpoint parsing_parsenet.pth (parsenet) could not be downloaded from the Hub "
                    "(i2i-tests/tiny): _TransferBackEndError: xet: connection reset while reconstructing the file — "
                    "try again; if it keeps failing, download parsing_parsenet.pth yourself and put it in "
                    "$I2I_WEIGHTS_DIR")


def test_a_hub_download_failing_with_an_unknown_error_falls_back_to_the_release(tiny_env, monkeypatch, tmp_path):
    import huggingface_hub
    from test_weights import _serve_official_url

    from i2icli import weights

    def failing_download(*args, **kwargs):
        raise _TransferBackEndError("xet: failed")

    payload = tiny_env.files["realesr-general-x4v3"].read_bytes()
    _serve_official_url(monkeypatch, payload)
    monkeypatch.setattr(weights, "_reachable", lambda url: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    path = weights.fetch(weights.find("realesr-general-x4v3"))
    assert path.read_bytes() == payload


# A warning, an error line, and a batch's lines (one done, one skipped, one failed), as a command prints them.
_MESSAGES = """
from dataclasses import dataclass
from pathlib import Path

from i2icli.cli.runner import run_batch
from i2icli.cli.stderr import report_error, warn
from i2icli.errors import I2IError

@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    problem: str | None = None

existing = Path("existing.png")
existing.write_bytes(b"")
warn("a.png: a warning")
report_error(I2IError("b.png: an error", "what to do"))
jobs = [Job(Path("a.png"), Path("a-out.png")), Job(Path("b.png"), existing), Job(Path("c.png"), Path("c-out.png"), "c.png: failed")]
run_batch(jobs, lambda job: ({}, str(job.source), ""), verb="testing", skip_existing=True, record_of=lambda job: {})
"""


def _stderr_of_messages(tmp_path, *, terminal: bool, **environment: str) -> str:
    import os
    import subprocess
    import sys

    env = {name: value for name, value in os.environ.items()
           if name not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TERM", "COLORTERM", "COLUMNS")}
    env.update(environment)
    command = [sys.executable, "-c", _MESSAGES]
    if not terminal:
        done = subprocess.run(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=tmp_path,
                              check=True)
        return done.stderr.decode()
    import pty

    reader, writer = pty.openpty()
    process = subprocess.Popen(command, stderr=writer, stdout=subprocess.DEVNULL, env=env, cwd=tmp_path)
    os.close(writer)
    written = b""
    while True:
        try:
            chunk = os.read(reader, 4096)
        except OSError:  # the other end closed (Linux)
            break
        if not chunk:
            break
        written += chunk
    os.close(reader)
    assert process.wait() == 0
    return written.decode()


def test_stderr_that_is_no_terminal_gets_no_escape_codes(tmp_path):
    stderr = _stderr_of_messages(tmp_path, terminal=False, TERM="xterm-256color")
    assert stderr.splitlines() == ["warning: a.png: a warning", "error: b.png: an error — what to do",
                                   "✓ a.png (0.0 s)", "skipped b.png (existing.png exists)", "error: c.png: failed"]
    # The check sees escape codes when there are some: FORCE_COLOR asks for them on a pipe too.
    assert "\x1b[" in _stderr_of_messages(tmp_path, terminal=False, FORCE_COLOR="1")


@pytest.mark.skipif(not hasattr(__import__("os"), "openpty"), reason="needs a pseudo-terminal")
def test_a_dumb_terminal_gets_no_escape_codes(tmp_path):
    stderr = _stderr_of_messages(tmp_path, terminal=True, TERM="dumb")
    assert "\x1b" not in stderr
    assert "error: b.png: an error — what to do" in stderr and "✓ a.png" in stderr


@pytest.mark.skipif(not hasattr(__import__("os"), "openpty"), reason="needs a pseudo-terminal")
def test_no_color_on_a_terminal_leaves_no_colour(tmp_path):
    """NO_COLOR asks for no colour, not for no emphasis: bold and dim may stay (no-color.org)."""
    import re

    stderr = _stderr_of_messages(tmp_path, terminal=True, TERM="xterm-256color", NO_COLOR="1")
    styles = re.findall(r"\x1b\[([0-9;]*)m", stderr)
    assert styles  # bold "error:", dim hints
    colours = [style for style in styles for code in style.split(";")
               if code.isdigit() and (30 <= int(code) <= 49 or 90 <= int(code) <= 107)]
    assert not colours


def test_translate_lr_pairs_standard_input_with_a_folder_of_one_image(lr_run, tmp_path):  # noqa: F811
    """`translate-lr - tiny/` was refused for naming a folder, even one holding a single image,
    which restore takes as that image."""
    import shutil

    source, target = lr_run["photos"][:2]
    options = ["-c", str(lr_run["run"]), "--device", "cpu"]
    assert run("translate-lr", str(source), str(target), *options, "-o", str(tmp_path / "files.png")).exit_code == 0
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(target, one / target.name)
    result = piped(["translate-lr", "-", str(one), *options, "-o", str(tmp_path / "piped.png")], source.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "piped.png").read_bytes() == (tmp_path / "files.png").read_bytes()
    # So is a folder of one image without standard input, with -o naming a file.
    shutil.copy(source, one / "source.png")
    (one / target.name).unlink()
    from_folder = run("translate-lr", str(one), str(target), *options, "-o", str(tmp_path / "folder.png"))
    assert from_folder.exit_code == 0, from_folder.stderr
    assert (tmp_path / "folder.png").read_bytes() == (tmp_path / "files.png").read_bytes()
    # A folder of more stays refused: each pair would need its own output name.
    shutil.copy(target, one / target.name)
    refused = piped(["translate-lr", "-", str(one), *options, "-o", str(tmp_path / "more.png")], source.read_bytes())
    assert refused.exit_code == 2
    assert f"TARGET must be one image file, not the folder {one} of 2 images" in refused.stderr
    more = run("translate-lr", str(one), str(target), *options, "-o", str(tmp_path / "more.png"))
    assert more.exit_code == 2
    assert f"-o {tmp_path / 'more.png'} names one output file, but the inputs make 2 pairs" in more.stderr


@pytest.mark.parametrize("pose", [b'{"people": [{"pose_keypoints_2d": [10, 20, 0.9]}]}\n', b"10.0 20.0 0.9 0\n"])
def test_a_pose_piped_to_exemplar_pose_is_named_as_such(tmp_path, pose):
    """`--exemplar-pose -` reads a map: a pose piped there was called a damaged image file."""
    result = piped(["exemplar", PHOTO, PHOTO, "--exemplar-pose", "-", "-o", str(tmp_path / "out.png")], pose)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: -: is not an image file, and --exemplar-pose - reads a label or edge map image — a pose (.json or "
        "_candidate.txt) is not read from standard input: save it to a file and pass its path to --exemplar-pose"]
    # Piped as INPUT, the same bytes are simply no image.
    as_input = piped(["exemplar", "-", PHOTO, "--exemplar-pose", PHOTO, "-o", str(tmp_path / "out.png")], pose)
    assert as_input.exit_code == 1 and "re-export it if it is damaged" in as_input.stderr
