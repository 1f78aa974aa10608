"""Symbolic links in an input folder or pattern that lead to no file: each is a failed image that
names the link, never left out without a word."""

from __future__ import annotations

import pytest
from test_cli import _photo


def _folder_with_unreadable_links(tmp_path):
    folder = tmp_path / "in"
    _photo(folder / "here.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "a.png").symlink_to(folder / "b.png")
    (folder / "b.png").symlink_to(folder / "a.png")
    (folder / "away.png").symlink_to(tmp_path / "unmounted" / "away.png")
    return folder


def test_restore_fails_each_link_in_a_loop_as_it_fails_a_link_to_nothing(tmp_path):
    """A link in a loop was left out without a word, and the run exited 0."""
    from i2icli.batch import plan_jobs

    folder = _folder_with_unreadable_links(tmp_path)
    for spec in (str(folder), str(folder / "*.*")):
        problems = {job.source.name: job.problem for job in plan_jobs([spec], tmp_path / "out", recursive=False)}
        assert set(problems) == {"here.png", "loop.jpg", "a.png", "b.png", "away.png"}, spec
        assert problems["here.png"] is None
        assert all("leads back to itself" in problems[name] for name in ("loop.jpg", "a.png", "b.png"))
        assert "a symbolic link to" in problems["away.png"] and "does not exist" in problems["away.png"]
    # Named on its own, the link is named as one, not as "no such file or folder".
    [job] = plan_jobs([str(folder / "away.png")], tmp_path / "out", recursive=False)
    assert "a symbolic link to" in job.problem


def test_a_folder_argument_keeps_its_unreadable_links_and_reading_one_names_it(tmp_path):
    """paired and translate-lr read folders through image_files, which left such links out, so a
    folder of photos on a drive that was not mounted ran without them and exited 0."""
    from i2icli.cli.paths import image_files
    from i2icli.errors import InputImageError
    from i2icli.imageio import read_image

    folder = _folder_with_unreadable_links(tmp_path)
    found = image_files(folder, "LABEL")
    assert [path.name for path in found] == ["a.png", "away.png", "b.png", "here.png", "loop.jpg"]
    for name, reason in [("loop.jpg", "leads back to itself"), ("away.png", "which does not exist")]:
        with pytest.raises(InputImageError) as caught:
            read_image(folder / name)
        assert str(folder / name) in str(caught.value) and reason in str(caught.value)
    read_image(folder / "here.png")
