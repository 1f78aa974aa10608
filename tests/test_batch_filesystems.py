"""Batches on real file systems: names and paths too long for them, full and read-only disks,
outputs that collide, and folders of many files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from conftest import CommandRunner
from test_cli import _photo, run

from i2icli.cli.app import app
from i2icli.errors import DiskFullError

TINY_RESTORE = ("--device", "cpu", "--bg-model", "none", "--parser", "none")


@dataclass(frozen=True)
class FakeJob:
    source: Path
    output: Path
    problem: str | None = None


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_an_output_name_over_255_bytes_fails_before_the_work(tiny_env, landmarks_detector, tmp_path):
    """A 250-byte photo name plus --suffix made an output name the file system refuses: --dry-run
    said it would run, and the run failed it only when saving, after the work, with
    "[Errno 36] File name too long" (or a bare "cannot write" when the folder was new)."""
    landmarks_detector([])
    folder = tmp_path / "in"
    long_name = _photo(folder / ("a" * 246 + ".png"))
    _photo(folder / "ok.png")
    out = tmp_path / "out"
    common = [str(folder), "-o", str(out), "--suffix", "_restored", *TINY_RESTORE]
    for first_run in (True, False):  # into a new folder, and into one that exists
        preview = run("restore", *common, "--dry-run", "--json")
        assert preview.exit_code == 1
        status = {Path(record["input"]).name: record["status"] for record in json.loads(preview.stdout)["results"]}
        assert status == {long_name.name: "failed", "ok.png": "would run"}
        result = run("restore", *common)
        assert result.exit_code == 1
        [line] = _errors(result.stderr)
        assert line.startswith(f"error: {long_name}: its output ") and "name of 259 bytes, over the 255" in line, line
        assert "Errno" not in result.stderr and "Traceback" not in result.stderr
        assert sorted(path.name for path in out.iterdir()) == ["ok_restored.png"]  # no temporary file left


def test_a_pair_whose_output_name_is_too_long_fails_while_planning(tmp_path):
    """translate-lr names an output SOURCE__TARGET.png: two long names make one no disk holds."""
    from test_translate_lr import write_photos

    long_source = _photo(tmp_path / "sources" / ("s" * 140 + ".png"))
    short_source = _photo(tmp_path / "sources" / "short.png")
    target = write_photos(tmp_path / "targets", 1, seed=1, size=(8, 8))[0].rename(tmp_path / ("t" * 120 + ".png"))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.pt").write_bytes(b"never opened")
    result = CommandRunner().invoke(app, ["translate-lr", str(tmp_path / "sources"), str(target), "-c",
                                          str(tmp_path / "run"), "-o", str(tmp_path / "out"), "--dry-run", "--json"])
    assert result.exit_code == 1
    status = {Path(record["source"]).name: record["status"] for record in json.loads(result.stdout)["results"]}
    assert status == {long_source.name: "failed", short_source.name: "would run"}
    [line] = _errors(result.stderr)
    assert line.startswith(f"error: {long_source} + {target}: its output ") and "name of 266 bytes" in line, line


def test_an_output_path_over_path_max_fails_while_planning(tiny_env, tmp_path):
    """-r mirrors sub-folders under -o: a tree whose own paths fit gave outputs over PATH_MAX
    (4096 bytes), which failed when saved with "[Errno 36] File name too long"."""
    deep = tmp_path / "in"
    for _ in range(20):
        deep /= "d" * 200
    photo = _photo(deep / "p.png")
    shallow = _photo(tmp_path / "in" / "top.png")
    result = run("restore", str(tmp_path / "in"), "-r", "-o", str(tmp_path / ("o" * 150)), "--dry-run", "--json")
    assert result.exit_code == 1
    status = {Path(record["input"]).name: record["status"] for record in json.loads(result.stdout)["results"]}
    assert status == {photo.name: "failed", shallow.name: "would run"}
    [line] = _errors(result.stderr)
    assert line.startswith(f"error: {photo}: its output ") and "an output folder with a shorter path" in line


def test_an_output_named_too_long_fails_without_its_work(tmp_path):
    """The outputs no planner looks at (a file named with -o, say) are checked by the runner."""
    from i2icli.cli.runner import run_batch

    jobs = [FakeJob(tmp_path / "a.png", tmp_path / ("x" * 300 + ".png")),
            FakeJob(tmp_path / "b.png", tmp_path / "b_out.png")]
    done = []

    def process(job):
        done.append(job.source.name)
        return {}, str(job.source), ""

    records = run_batch(jobs, process, verb="testing", skip_existing=False,
                        record_of=lambda job: {"input": str(job.source)})
    assert done == ["b.png"]
    assert [record["status"] for record in records] == ["failed", "ok"]
    assert "name of 304 bytes" in records[0]["error"]


def _disk_full_after(monkeypatch, writes: int) -> None:
    """The disk fills after ``writes`` files: later files fail as a full tmpfs fails them, at the
    fsync of their temporary file."""
    import errno
    import os

    from i2icli import atomic_files

    done = []
    real_atomic_write = atomic_files._atomic_write

    def fsync_on_full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def counted(target, data):
        if len(done) >= writes:
            monkeypatch.setattr(os, "fsync", fsync_on_full_disk)
        done.append(target)
        real_atomic_write(target, data)

    monkeypatch.setattr(atomic_files, "_atomic_write", counted)


def test_a_full_disk_stops_the_batch_there(tiny_env, landmarks_detector, tmp_path, monkeypatch):
    """When the disk filled up, every later photo was still restored, then failed at its write,
    each with its own line: hours of work thrown away on a long batch. Now the photo being
    written fails, naming the disk as full, and the rest for that disk are not run (one line)."""
    from i2icli.pipelines.restore import RestorePipeline

    landmarks_detector([])
    folder = tmp_path / "in"
    for name in "abcd":
        _photo(folder / f"{name}.png")
    out = tmp_path / "out"
    restored = []
    real_restore = RestorePipeline.restore

    def counted(self, picture, *args, **kwargs):
        restored.append(picture.source.name)
        return real_restore(self, picture, *args, **kwargs)

    monkeypatch.setattr(RestorePipeline, "restore", counted)
    with monkeypatch.context() as full:
        _disk_full_after(full, 1)
        result = run("restore", str(folder), "-o", str(out), *TINY_RESTORE, "--json")
    assert result.exit_code == 1
    assert restored == ["a.png", "b.png"]  # not c.png and d.png
    records = json.loads(result.stdout)["results"]
    assert [(Path(record["input"]).name, record["status"]) for record in records] == [
        ("a.png", "ok"), ("b.png", "failed"), ("c.png", "failed"), ("d.png", "failed")]
    assert "not run: the disk of its output" in records[2]["error"]
    assert _errors(result.stderr) == [
        f"error: {folder / 'b.png'}: {out / 'b.png'}: cannot write: No space left on device — free some space on "
        "that disk, or write the results to another one",
        f"error: {out}: the disk is full, so 2 more inputs were not run — free some space on it, then run the same "
        "command again with --skip-existing"]
    assert sorted(path.name for path in out.iterdir()) == ["a.png"]  # no temporary file left behind
    # With space again, the advice does the rest.
    again = run("restore", str(folder), "-o", str(out), *TINY_RESTORE, "--skip-existing")
    assert again.exit_code == 0, again.stderr
    assert restored[2:] == ["b.png", "c.png", "d.png"]


def run_on_disks(monkeypatch, tmp_path: Path, disks: list[tuple[str, str]], device_of,
                 write_error: type | dict[str, type] | None = None) -> tuple[list[str], list[str]]:
    """A batch whose outputs lie on the disks named (input name, disk), of which "full" is full
    (or fails writes with ``write_error``; given as {disk: error}, each disk named there fails
    with its own): the inputs processed, and each job's status. ``device_of`` tells an output's disk."""
    from i2icli.cli import runner
    from i2icli.errors import DiskFullError

    failing = write_error if isinstance(write_error, dict) else {"full": write_error or DiskFullError}

    jobs = [FakeJob(tmp_path / f"{name}.png", tmp_path / disk / f"{name}.png") for name, disk in disks]
    monkeypatch.setattr(runner, "device_of", device_of)
    done = []

    def process(job):
        done.append(job.source.name)
        if (error := failing.get(job.output.parent.name)) is not None:
            raise error(job.output, f"{job.output}: cannot write")
        return {}, str(job.source), ""

    records = runner.run_batch(jobs, process, verb="testing", skip_existing=False,
                               record_of=lambda job: {"input": job.source.name})
    return done, [record["status"] for record in records]


def test_a_full_disk_stops_only_the_outputs_on_that_disk(tmp_path, monkeypatch):
    """Outputs may go to several disks (exemplar --pairs with an output column): those on others go on."""
    done, statuses = run_on_disks(monkeypatch, tmp_path, [("a", "full"), ("b", "other"), ("c", "full"), ("d", "other")],
                                  lambda path: path.parent.name)
    assert done == ["a.png", "b.png", "d.png"]
    assert statuses == ["failed", "ok", "failed", "ok"]


def test_a_second_full_or_read_only_disk_stops_its_outputs_too(tmp_path, monkeypatch, capsys):
    """Only the first disk found full was remembered: the outputs of a second one, full or
    read-only, were each worked on and failed at their write, one line each."""
    from i2icli.errors import ReadOnlyDiskError

    disks = [("a", "full"), ("b", "card"), ("c", "other"), ("d", "full"), ("e", "card"), ("f", "card"), ("g", "other")]
    done, statuses = run_on_disks(monkeypatch, tmp_path, disks, lambda path: path.parent.name,
                                  {"full": DiskFullError, "card": ReadOnlyDiskError})
    assert done == ["a.png", "b.png", "c.png", "g.png"]
    assert statuses == ["failed", "failed", "ok", "failed", "failed", "failed", "ok"]
    summaries = [line for line in _errors(capsys.readouterr().err) if "not run" in line]
    assert len(summaries) == 2
    assert summaries[0].startswith(f"error: {tmp_path / 'full'}: the disk is full, so 1 more input was not run")
    assert "read-only, so 2 more inputs were not run" in summaries[1]


def test_an_output_folder_on_a_read_only_disk_says_so(tmp_path, monkeypatch):
    """A folder on a disk mounted read-only was refused as "permission denied": the user would
    look at permissions that no chmod can fix (root included). Root is refused by a read-only
    mount alone, which a test cannot make: os.access and statvfs answer as they do there."""
    import os
    from types import SimpleNamespace

    photo = _photo(tmp_path / "photo.png")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    result = run("restore", str(photo), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 1
    assert _errors(result.stderr) == [f"error: {tmp_path / 'out'}: cannot be written ({tmp_path} is on a read-only "
                                      "disk) — choose another -o/--output"]
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=0))  # writable, but not by this user
    result = run("restore", str(photo), "-o", str(tmp_path / "out"), "--dry-run")
    assert "permission denied" in result.stderr


def test_outputs_that_differ_only_in_case_are_refused(tmp_path):
    """A.png and a.png (or Trip/ and trip/ under -r) made A.png and a.png: on a disk that ignores
    case (macOS, Windows, a memory card) the second replaced the first without a word, and only a
    second run, finding the file, said that both wanted it."""
    folder = tmp_path / "in"
    upper, lower = _photo(folder / "A.png", 10), _photo(folder / "a.png", 200)
    deep_upper, deep_lower = _photo(folder / "Trip" / "x.png"), _photo(folder / "trip" / "x.png")
    out = tmp_path / "out"
    result = run("restore", str(folder), "-r", "-o", str(out), "--dry-run", "--json")
    assert result.exit_code == 1
    status = {record["input"]: record["status"] for record in json.loads(result.stdout)["results"]}
    assert status == {str(upper): "would run", str(lower): "failed", str(deep_upper): "would run",
                      str(deep_lower): "failed"}
    assert _errors(result.stderr)[0] == (
        f"error: {lower}: its output {out / 'a.png'} differs only in case from {out / 'A.png'}, the output of {upper}, "
        "and a disk that ignores case (as macOS's, Windows' and most memory cards' do) takes them for one file; "
        "rename one of them, or restore them in separate runs into different --output folders")


def test_pair_outputs_that_differ_only_in_case_are_refused(tmp_path):
    from i2icli.cli.runner import one_writer_per_file

    jobs = [FakeJob(tmp_path / "A.png", tmp_path / "out" / "A__t.png"),
            FakeJob(tmp_path / "a.png", tmp_path / "out" / "a__t.png")]
    checked, written = one_writer_per_file(jobs, lambda job: [job.output])
    assert checked[0].problem is None and written == [jobs[0].output]
    assert checked[1].problem.startswith(f"{jobs[1].source}: its output {jobs[1].output} differs only in case from "
                                         f"{jobs[0].output}, the output of {jobs[0].source}, ")


def test_a_file_where_a_mirrored_sub_folder_goes_fails_while_planning(tiny_env, tmp_path):
    """-r makes out/trip/ for in/trip/: a file named out/trip failed each photo of it only when
    saving, after the work, and --dry-run said they would run."""
    photo = _photo(tmp_path / "in" / "trip" / "x.png")
    top = _photo(tmp_path / "in" / "y.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "trip").write_bytes(b"a file, not a folder")
    result = run("restore", str(tmp_path / "in"), "-r", "-o", str(out), "--dry-run", "--json")
    assert result.exit_code == 1
    status = {record["input"]: record["status"] for record in json.loads(result.stdout)["results"]}
    assert status == {str(photo): "failed", str(top): "would run"}
    assert _errors(result.stderr) == [f"error: {photo}: its output {out / 'trip' / 'x.png'} would be in {out / 'trip'}, "
                                      "which is a file, not a folder; move it aside, or choose another output folder"]


def test_a_photo_whose_face_files_could_not_all_be_written_is_not_taken_as_done(tiny_env, landmarks_detector,
                                                                                 tmp_path, monkeypatch):
    """With --save-faces the output was written first: a disk that filled up while the face files
    were written left a photo whose output existed, so --skip-existing passed it by and its face
    files stayed incomplete. The output, which says a photo is done, now comes last."""
    from conftest import OLD_PHOTO_LANDMARKS

    landmarks_detector([OLD_PHOTO_LANDMARKS])
    photo = tmp_path / "in" / "a.png"
    _photo(photo)
    out = tmp_path / "out"
    with monkeypatch.context() as full:
        _disk_full_after(full, 1)  # the first face file is written, the disk is full from the second
        failed = run("restore", str(photo), "-o", str(out), *TINY_RESTORE, "--save-faces")
    assert failed.exit_code == 1
    assert not (out / "a.png").exists()
    again = run("restore", str(photo), "-o", str(out), *TINY_RESTORE, "--save-faces", "--skip-existing")
    assert again.exit_code == 0, again.stderr
    assert (out / "a.png").is_file()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*_00.png")) == [
        "cmp/a_00.png", "cropped_faces/a_00.png", "restored_faces/a_00.png"]


def _dry_run(*arguments: str) -> tuple[int, dict[str, str], list[str]]:
    """A --dry-run --json restore: its exit code, the status of each input, and its error lines."""
    result = run("restore", *arguments, *TINY_RESTORE, "--dry-run", "--json")
    status = {record["input"]: record["status"] for record in json.loads(result.stdout)["results"]}
    return result.exit_code, status, _errors(result.stderr)


def test_an_output_named_like_a_face_file_of_another_is_refused_while_planning(tiny_env, tmp_path):
    """With -r, in/cropped_faces/x_00.png was restored to out/cropped_faces/x_00.png, which is also
    where --save-faces writes the first face of in/x.png: one replaced the other without a word,
    the order deciding which."""
    folder, out = tmp_path / "in", tmp_path / "out"
    photo, crop = _photo(folder / "x.png"), _photo(folder / "cropped_faces" / "x_00.png")
    code, status, errors = _dry_run(str(folder), "-r", "-o", str(out), "--save-faces")
    assert code == 1
    assert status == {str(photo): "would run", str(crop): "failed"}
    assert errors == [f"error: {crop}: its output {out / 'cropped_faces' / 'x_00.png'} has the name of a face file "
                      f"--save-faces writes for {photo} (beside its output {out / 'x.png'}), and one would replace "
                      f"the other; move {crop} aside, or restore it in a separate run into another --output"]
    code, status, errors = _dry_run(str(folder), "-r", "-o", str(out))  # no face files, no clash
    assert code == 0 and set(status.values()) == {"would run"}, errors


def test_face_file_names_over_255_bytes_fail_while_planning(tiny_env, tmp_path):
    """An output name of 254 bytes fits, but its face files (STEM_00.png, 257 bytes) did not: the
    photo was restored, then failed when its faces were saved."""
    long_name = _photo(tmp_path / "in" / ("a" * 250 + ".png"))
    short = _photo(tmp_path / "in" / "ok.png")
    out = tmp_path / "out"
    code, status, errors = _dry_run(str(tmp_path / "in"), "-o", str(out), "--save-faces")
    assert code == 1
    assert status == {str(long_name): "failed", str(short): "would run"}
    assert errors == [f"error: {long_name}: its --save-faces file {out / 'cropped_faces' / ('a' * 250 + '_00.png')} "
                      "would have a name of 257 bytes, over the 255 its file system allows; use shorter file names"]
    code, status, errors = _dry_run(str(tmp_path / "in"), "-o", str(out))  # the output alone fits
    assert code == 0, errors


def test_a_file_where_a_face_folder_goes_fails_while_planning(tiny_env, tmp_path):
    """out/cmp, a file, failed each photo only when its faces were saved, after the work."""
    photo = _photo(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cmp").write_bytes(b"a file, not a folder")
    code, status, errors = _dry_run(str(photo), "-o", str(out), "--save-faces")
    assert code == 1 and status == {str(photo): "failed"}
    assert errors == [f"error: {photo}: its --save-faces file {out / 'cmp' / 'x_00.png'} would be in {out / 'cmp'}, "
                      "which is a file, not a folder; move it aside, or choose another output folder"]


def test_face_file_names_past_99_faces_are_measured_before_any_is_written(tmp_path):
    """Planning measures STEM_00.png; the 101st face of a crowd is STEM_100.png, a byte longer.
    A name that fitted with two digits failed at that face, with a hundred face files written and
    the photo failed anyway."""
    import numpy as np
    import pytest

    from i2icli.cli.restore import _save_faces
    from i2icli.errors import I2IError
    from i2icli.pipelines.restore import RestoredFace, RestoreResult

    pixels = np.zeros((2, 2, 3), np.float32)
    picture = SimpleNamespace(icc_profile=None)
    stem = "a" * 248  # a_00.png: 255 bytes, the most a name may have; a_100.png: 256
    out = tmp_path / "out"
    crowd = RestoreResult(picture=picture, face_count=101, faces=[RestoredFace(pixels, pixels, None)] * 101)
    with pytest.raises(I2IError, match=f"with 101 faces, its --save-faces file .*{stem}_100.png would have a name "
                                       "of 256 bytes, over the 255"):
        _save_faces(out / f"{stem}.png", stem, crowd, np.dtype(np.uint8))
    assert not out.exists()  # not a hundred faces of a photo that failed
    written = _save_faces(out / f"{stem}.png", stem, RestoreResult(picture, 2, crowd.faces[:2]), np.dtype(np.uint8))
    assert [Path(path).name for path in written["cmp"]] == [f"{stem}_00.png", f"{stem}_01.png"]


def test_outputs_whose_stems_differ_only_in_case_get_face_files_of_their_own(tmp_path):
    """A.png and a.jpg wrote cropped_faces/A_00.png and a_00.png: one file on a disk that ignores
    case (macOS, Windows, a memory card), so one photo's faces replaced the other's."""
    from i2icli.cli.restore import face_stems

    jobs = [FakeJob(tmp_path / "A.png", tmp_path / "out" / "A.png"),
            FakeJob(tmp_path / "a.jpg", tmp_path / "out" / "a.jpg"),
            FakeJob(tmp_path / "b.png", tmp_path / "out" / "b.png")]
    stem_of = face_stems(jobs)
    assert [stem_of(job.output) for job in jobs] == ["A.png", "a.jpg", "b"]


def test_a_face_file_that_would_overwrite_an_input_fails_while_planning(tiny_env, tmp_path):
    """Restoring a face crop back beside its photo (in/cropped_faces/x_00.png to -o in/x.png) wrote
    the crop of the first face found over the input itself."""
    crop = _photo(tmp_path / "in" / "cropped_faces" / "x_00.png")
    before = crop.read_bytes()
    code, status, errors = _dry_run(str(crop), "-o", str(tmp_path / "in" / "x.png"), "--save-faces")
    assert code == 1 and status == {str(crop): "failed"}
    assert errors == [f"error: {crop}: its face file {crop} (--save-faces) would overwrite an input of this run; move "
                      "that input aside, or choose another output"]
    result = run("restore", str(crop), "-o", str(tmp_path / "in" / "x.png"), *TINY_RESTORE, "--save-faces")
    assert result.exit_code == 1 and crop.read_bytes() == before


def test_outputs_whose_face_files_would_be_one_are_refused(tiny_env, tmp_path):
    """x.jpg and x.png name their faces by the whole name (x.jpg_00.png), which is also how the
    unique stem of x.jpg.png names its faces: the second's faces replaced the first's."""
    folder, out = tmp_path / "in", tmp_path / "out"
    jpg, png, double = _photo(folder / "x.jpg"), _photo(folder / "x.png"), _photo(folder / "x.jpg.png")
    code, status, errors = _dry_run(str(folder), "-o", str(out), "--save-faces")
    assert code == 1
    assert status == {str(jpg): "would run", str(double): "failed", str(png): "would run"}
    assert errors == [f"error: {double}: its face files ({out / 'cropped_faces' / 'x.jpg_NN.png'} and the like) would "
                      f"be those of {jpg} too; rename one of them, or restore them in separate runs into different "
                      "--output folders"]


def test_a_folder_where_a_face_file_goes_fails_while_planning(tiny_env, tmp_path):
    photo = _photo(tmp_path / "x.png")
    out = tmp_path / "out"
    (out / "restored_faces" / "x_00.png").mkdir(parents=True)
    code, status, errors = _dry_run(str(photo), "-o", str(out), "--save-faces")
    assert code == 1 and status == {str(photo): "failed"}
    assert errors == [f"error: {photo}: its --save-faces file {out / 'restored_faces' / 'x_00.png'} is a folder; move "
                      "it aside, or use another --output or a --suffix"]
