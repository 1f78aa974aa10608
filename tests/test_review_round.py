"""Defects found reviewing the recent changes: each test names what a user saw."""

from __future__ import annotations

import os
import subprocess
import sys

_PROGRESS_AND_A_WARNING = """
import time
from rich.progress import BarColumn, TextColumn
from i2icli.cli.stderr import transient_progress, warn

with transient_progress(TextColumn("{task.description}"), BarColumn()) as progress:
    task = progress.add_task("restoring", total=3)
    for _ in range(3):
        time.sleep(0.05)
        progress.advance(task)
warn("a.png: done")
"""


def _stderr_on_a_pipe(script: str, **environment: str) -> str:
    env = {name: value for name, value in os.environ.items()
           if name not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TERM", "COLORTERM", "COLUMNS")}
    env.update(environment)
    done = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          env=env, check=True)
    return done.stderr.decode()


def test_force_color_on_a_pipe_keeps_colour_but_draws_no_progress_bar():
    """FORCE_COLOR=1 with stderr going to a CI log: the bar was drawn and redrawn into the log."""
    stderr = _stderr_on_a_pipe(_PROGRESS_AND_A_WARNING, FORCE_COLOR="1", TERM="xterm-256color")
    assert "restoring" not in stderr
    assert "\x1b[?25l" not in stderr  # the bar hides the cursor while it draws
    assert "\x1b[" in stderr  # the warning keeps its colour, as FORCE_COLOR asks
    assert stderr.endswith("a.png: done\n")


def test_a_webp_output_of_a_photo_captioned_only_in_iptc_says_the_captions_are_left_out(tiny_env, tmp_path):
    """WebP (like HEIC and AVIF) has no place for IPTC-IIM: a JPEG whose captions are there alone
    lost them without a word, where a BMP output said so."""

    from conftest import restore_without_background
    from PIL import Image
    from test_exif_metadata import STORED
    from test_iptc_metadata import CATALOGUED, add_photoshop_segment

    source = tmp_path / "captioned.jpg"
    Image.fromarray(STORED).save(source)
    add_photoshop_segment(source, CATALOGUED)
    result = restore_without_background(str(source), "-o", str(tmp_path / "out.webp"))
    assert result.exit_code == 0, result.output
    assert "a WEBP file holds no IPTC-IIM metadata" in result.stderr
    assert "name a .png, .jpg or .tif file with -o" in result.stderr
    quiet = restore_without_background(str(source), "-o", str(tmp_path / "quiet.webp"), "--strip-metadata")
    assert "IPTC" not in quiet.stderr



_TRAINING_BAR = """
import time
from i2icli.cli.stderr import warn
from i2icli.cli.train_common import training_progress

with training_progress(("loss",)) as on_progress:
    for step in range(1, 4):
        time.sleep(0.05)
        on_progress(step, 3, {"loss": 0.5})
warn("a.png: done")
"""


def test_force_color_on_a_pipe_draws_no_training_bar():
    """The training bar was redrawn into a CI log under FORCE_COLOR, ten frames a second."""
    stderr = _stderr_on_a_pipe(_TRAINING_BAR, FORCE_COLOR="1", TERM="xterm-256color")
    assert "training" not in stderr
    assert "\x1b[?25l" not in stderr
    assert stderr.endswith("a.png: done\n")


_SPINNER = """
import time
from i2icli.cli.stderr import spinner, warn

with spinner("evaluating"):
    time.sleep(0.2)
warn("a.png: done")
"""


def test_force_color_on_a_pipe_draws_no_evaluation_spinner():
    """`train ... --eval` spun its "evaluating" spinner into a CI log under FORCE_COLOR."""
    stderr = _stderr_on_a_pipe(_SPINNER, FORCE_COLOR="1", TERM="xterm-256color")
    assert "evaluating" not in stderr
    assert stderr.endswith("a.png: done\n")


def test_a_damaged_cached_copy_is_still_named_when_the_hub_download_fails(tiny_env, tmp_path, monkeypatch):
    """A damaged copy in i2i's download cache was passed over without a word when the Hub download
    then failed with an error of unknown type: only the Hub's failure was said."""
    import huggingface_hub
    from typer.testing import CliRunner

    from i2icli import weights
    from i2icli.cli.app import app

    def failing_download(*args, **kwargs):
        raise RuntimeError("xet: connection reset")

    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "_reachable", lambda url: "example.invalid" not in url)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    cached = weights.download_cache_dir() / "parsing_parsenet.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cut short")
    result = CliRunner().invoke(app, ["weights", "fetch", "parsenet"], catch_exceptions=False)
    assert result.exit_code == 1
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith("warning: ") and str(cached) in warning
    assert error.startswith("error: checkpoint parsing_parsenet.pth (parsenet) could not be downloaded from the Hub")


def test_a_hub_failure_without_a_message_names_its_type_once(tiny_env, monkeypatch):
    """An error raised with no message was said as "XetError: XetError"."""
    import huggingface_hub
    from typer.testing import CliRunner

    from i2icli import weights
    from i2icli.cli.app import app

    class XetError(Exception):
        pass

    def failing_download(*args, **kwargs):
        raise XetError()

    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "_reachable", lambda url: "example.invalid" not in url)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    result = CliRunner().invoke(app, ["weights", "fetch", "parsenet"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "could not be downloaded from the Hub (i2i-tests/tiny): XetError — try again" in result.stderr
