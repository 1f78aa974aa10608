"""Defects found in the EXIF carrying, the batch planning on real file systems and the full-disk
stop, each with the case that showed it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FakeJob:
    source: Path
    output: Path
    problem: str | None = None


def _count_looks_at_folders_under(monkeypatch, root: Path) -> list[Path]:
    """Every look at a folder (not a file) under ``root`` that the batch planner makes."""
    from i2icli import batch

    looked_at: list[Path] = []
    kind = batch._kind

    def counted(path: Path) -> str:
        if path != root and root in path.parents and path.suffix != ".png":
            looked_at.append(path)
        return kind(path)

    monkeypatch.setattr(batch, "_kind", counted)
    return looked_at


def test_planning_looks_at_each_output_folder_once_not_once_per_output(tmp_path, monkeypatch):
    """Each output's folders were looked up again for each output (a file in the way, from the
    output's folder up to one that exists): 20,000 photos into a new out/a/b/c took 4.3 s to plan
    rather than 2.0 s here, and on a network disk each of those look-ups is a round trip."""
    from i2icli.batch import plan_jobs

    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(30):
        (folder / f"photo{index}.png").write_bytes(b"")
    out = tmp_path / "out"
    looked_at = _count_looks_at_folders_under(monkeypatch, out)
    jobs = plan_jobs([str(folder)], out / "a" / "b", recursive=False)
    assert [job.problem for job in jobs] == [None] * 30
    assert len(looked_at) <= 2 * 3  # out/a/b, out/a and out, looked at by two checks, once each


def test_checking_pair_outputs_looks_at_each_output_folder_once(tmp_path, monkeypatch):
    from i2icli.cli.runner import one_writer_per_file

    out = tmp_path / "out"
    jobs = [FakeJob(tmp_path / f"{index}.png", out / "a" / "b" / f"{index}__t.png") for index in range(30)]
    looked_at = _count_looks_at_folders_under(monkeypatch, out)
    checked, _ = one_writer_per_file(jobs, lambda job: [job.output])
    assert [job.problem for job in checked] == [None] * 30
    assert len(looked_at) <= 2 * 3
