"""Small defects a careful user could still hit: an output named like a text file, a download
failing in a way the hub library does not name, escape codes where no terminal reads them."""

from __future__ import annotations

import pytest
from test_cli import EXAMPLES, run

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
