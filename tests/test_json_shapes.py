"""Every inference command's --json document has one shape, so that one script reads them all:
the counts, and in ``results`` one record per job with its ``status`` and ``output``; a job that
ran has ``seconds`` (a number: its whole time) and, where the command times its stages,
``stages`` (seconds per stage, without a "total": that is ``seconds``). Sizes nobody knows are
null, never 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS, CommandRunner
from test_exemplar_cli import _common as exemplar_options
from test_exemplar_cli import checkpoint, pair  # noqa: F401  (fixtures: a tiny CoCosNet and one pair)
from test_invert import _model_options as invert_models
from test_invert import files  # noqa: F401  (a fixture: the tiny inversion networks)
from test_invert import smooth_image, write_png
from test_paired import write_pairs
from test_translate_lr import write_photos

from i2icli.cli.app import app

runner = CommandRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def assert_batch_document(stdout: str, *, ok: int, failed: int = 0, timed_stages: bool = True) -> list[dict]:
    """The shape every inference command's --json document shares; return its records."""
    document = json.loads(stdout)
    assert {key: document[key] for key in ("ok", "skipped", "failed")} == {"ok": ok, "skipped": 0, "failed": failed}
    records = document["results"]
    assert isinstance(records, list) and len(records) == ok + failed
    for record in records:
        assert isinstance(record["output"], str)
        if record["status"] == "failed":
            assert isinstance(record["error"], str) and record["error"]
            continue
        assert record["status"] == "ok"
        assert _is_number(record["seconds"]), record
        if timed_stages:
            stages = record["stages"]
            assert isinstance(stages, dict) and stages and "total" not in stages, stages
            assert all(_is_number(seconds) for seconds in stages.values()), stages
    return records


def assert_dry_run_document(stdout: str, *, would_run: int) -> list[dict]:
    document = json.loads(stdout)
    assert (document["dry_run"], document["would_run"], document["skipped"], document["failed"]) == (
        True, would_run, 0, 0)
    records = document["results"]
    assert [record["status"] for record in records] == ["would run"] * would_run
    assert all(isinstance(record["output"], str) for record in records)
    return records


def test_restore(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((EXAMPLES / "old_photo.jpg").read_bytes())
    out = tmp_path / "out"
    result = run("restore", str(photo), "-o", str(out), "--bg-model", "none", "--parser", "none", "--save-faces",
                 "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    [record] = assert_batch_document(result.stdout, ok=1)
    # The face files, as the other commands name their extra files: a list of paths per kind.
    for folder in ("cropped_faces", "restored_faces", "cmp"):
        assert record[folder] == [str(out / folder / "photo_00.png")] and Path(record[folder][0]).is_file()


def test_exemplar(checkpoint, pair, tmp_path):  # noqa: F811
    out = tmp_path / "result.png"
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(out), "--json", *exemplar_options(checkpoint))
    assert result.exit_code == 0, result.stderr
    [record] = assert_batch_document(result.stdout, ok=1)
    assert record["output"] == str(out)


def test_invert(files, tmp_path):  # noqa: F811
    source = write_png(tmp_path / "a.png", smooth_image(10, 48))
    exemplar = write_png(tmp_path / "b.png", smooth_image(11, 48))
    out = tmp_path / "result.png"
    args = ["invert", str(source), str(exemplar), "--aligned", "--layers", "2", "--codes", "2", "--steps", "1",
            "--size", "32", "--json", *invert_models(files)]
    result = run(*args, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    [record] = assert_batch_document(result.stdout, ok=1)
    assert (record["source"], record["exemplar"], record["output"]) == (str(source), str(exemplar), str(out))
    assert record["layer"] == 2 and [h["layer"] for h in record["hypotheses"]] == [2]
    # Its dry run is the same document, with the run's statuses.
    [planned] = assert_dry_run_document(run(*args, "-o", str(tmp_path / "other.png"), "--dry-run").stdout, would_run=1)
    assert (planned["source"], planned["exemplar"]) == (str(source), str(exemplar))


def test_an_inversion_that_fails_is_a_failed_record(files, tmp_path):  # noqa: F811
    source = write_png(tmp_path / "a.png", smooth_image(16, 48))
    result = run("invert", str(source), str(source), "-o", str(tmp_path / "o.png"), "--aligned", "--layers", "2",
                 "--codes", "2", "--steps", "2", "--size", "32", "--lr", "1e30", "--json", *invert_models(files))
    assert result.exit_code == 1
    [record] = assert_batch_document(result.stdout, ok=0, failed=1)
    assert record["status"] == "failed" and "diverged" in record["error"]


def test_translate_lr_and_paired_dry_runs(tmp_path):
    """Their real runs need a trained model: tests/test_translate_lr.py and tests/test_paired.py
    check those records."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.pt").write_bytes(b"never opened")  # only looked for
    sources = write_photos(tmp_path / "sources", 2)
    target = write_photos(tmp_path / "targets", 1, seed=1, size=(8, 8))[0]
    result = run("translate-lr", str(tmp_path / "sources"), str(target), "-c", str(tmp_path / "run"),
                 "-o", str(tmp_path / "out"), "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    records = assert_dry_run_document(result.stdout, would_run=2)
    assert [record["source"] for record in records] == [str(source) for source in sources]
    labels = write_pairs(tmp_path / "data", 1) / "labels"
    result = run("paired", str(labels), "-c", str(tmp_path / "run"), "-o", str(tmp_path / "out"), "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert_dry_run_document(result.stdout, would_run=1)


def test_an_unknown_size_is_null(tmp_path, monkeypatch):
    """The registry writes 0 for a checkpoint whose size it does not know (FID Inception's): both
    listings say null, not a size of 0 bytes."""
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    listed = {entry["name"]: entry for entry in json.loads(run("weights", "list", "--json").stdout)}
    assert listed["fid-inception"]["bytes"] is None
    assert listed["gfpgan-1.4"]["bytes"] > 0
    photo = write_png(tmp_path / "a.png", smooth_image(1, 48))
    generator = tmp_path / "g.pt"
    generator.write_bytes(b"only looked at")
    result = run("invert", str(photo), str(photo), "-o", str(tmp_path / "o.png"), "--generator", str(generator),
                 "--aligned", "--dry-run", "--json")
    checkpoints = {entry["name"]: entry for entry in json.loads(result.stdout)["checkpoints"]}
    assert checkpoints["fid-inception"]["status"] == "download" and checkpoints["fid-inception"]["bytes"] is None
    assert checkpoints["vgg16-imagenet"]["bytes"] > 0
    # A file given by path has its own size, whatever it is.
    assert checkpoints[str(generator)]["bytes"] == len(b"only looked at")
