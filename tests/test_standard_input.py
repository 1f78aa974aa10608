"""- as an image input of paired, translate-lr, invert and exemplar: read from standard input, as
`i2i restore -` reads it, so that the commands chain through pipes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from cocosnet_checkpoints import TINY as TINY_COCOSNET
from cocosnet_checkpoints import write_checkpoint_dir
from conftest import CommandRunner
from PIL import Image
from test_exemplar_cli import _common as exemplar_options
from test_exemplar_cli import _pose
from test_exemplar_cli import checkpoint  # noqa: F401  (a fixture: the tiny pose model)
from test_invert import _model_options as invert_models
from test_invert import files  # noqa: F401  (a fixture: the tiny inversion networks)
from test_invert import smooth_image, write_png
from test_paired import train_cli as train_paired
from test_paired import write_pairs
from test_translate_lr import train_cli as train_translate_lr
from test_translate_lr import write_photos

from i2icli.cli.app import app

runner = CommandRunner()


def piped(args: list[str], data: bytes):
    return runner.invoke(app, args, input=data)


def assert_refused(result, code: int, expected: str) -> None:
    assert result.exit_code == code, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error:") and expected in line, line
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- paired


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paired-stdin")
    data = write_pairs(root / "data", 8)
    result = train_paired(data, root / "run", 2)
    assert result.exit_code == 0, result.output
    return {"labels": data / "labels", "photos": data / "photos", "run": root / "run"}


def test_paired_reads_the_label_map_and_the_style_from_standard_input(paired_run, tmp_path):
    label = paired_run["labels"] / "000.png"
    style = paired_run["photos"] / "001.png"
    options = ["-c", str(paired_run["run"]), "--device", "cpu"]
    assert runner.invoke(app, ["paired", str(label), *options, "-o", str(tmp_path / "by_path.png")]).exit_code == 0
    expected = (tmp_path / "by_path.png").read_bytes()

    into_file = piped(["paired", "-", *options, "-o", str(tmp_path / "piped.png"), "--json"], label.read_bytes())
    assert into_file.exit_code == 0, into_file.output
    assert (tmp_path / "piped.png").read_bytes() == expected
    assert json.loads(into_file.stdout)["results"][0]["label"] == "-"
    through = piped(["paired", "-", *options, "-o", "-"], label.read_bytes())
    assert through.exit_code == 0, through.output
    assert through.stdout_bytes == expected and "- → standard output" in through.stderr

    # --style -: the outputs are named after the label maps, so an output folder is fine.
    styled = ["--style", str(style), "-o", str(tmp_path / "styled")]
    assert runner.invoke(app, ["paired", str(paired_run["labels"]), *options, *styled]).exit_code == 0
    from_stdin = piped(["paired", str(paired_run["labels"]), *options, "--style", "-", "-o", str(tmp_path / "piped_styled")],
                       style.read_bytes())
    assert from_stdin.exit_code == 0, from_stdin.output
    for output in sorted((tmp_path / "styled").iterdir()):
        assert (tmp_path / "piped_styled" / output.name).read_bytes() == output.read_bytes(), output.name
    assert (tmp_path / "styled" / "000.png").read_bytes() != expected  # the style is used


def test_paired_refuses_what_standard_input_cannot_give(paired_run, tmp_path, monkeypatch):
    label = (paired_run["labels"] / "000.png").read_bytes()
    options = ["-c", str(paired_run["run"]), "--device", "cpu"]
    out = tmp_path / "out.png"
    assert_refused(piped(["paired", "-", *options, "--style", "-", "-o", str(out)], label),
                   2, "LABEL and --style are both -")
    monkeypatch.chdir(tmp_path)  # the default output folder, results, would be made here
    assert_refused(piped(["paired", "-", *options], label), 2, "needs an output file name")
    assert_refused(piped(["paired", "-", *options, "-o", "folder/"], label), 2, "needs an output file name")
    for data, expected in ((b"", "-: is empty (0 bytes)"), (b"hello", "-: is not an image file")):
        assert_refused(piped(["paired", "-", *options, "-o", str(out)], data), 1, expected)
        assert_refused(piped(["paired", str(paired_run["labels"]), *options, "--style", "-", "-o", "styled/"], data),
                       1, expected)
    assert_refused(piped(["paired", "-", *options, "-o", str(out), "--max-pixels", "100"], label),
                   1, "-: image is 40x40 = 1,600 pixels, over the limit of 100")
    assert list(tmp_path.iterdir()) == []


def test_paired_dry_run_leaves_standard_input_unread_and_a_folder_named_dash_is_dot_slash_dash(paired_run, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = ["-c", str(paired_run["run"]), "--device", "cpu"]
    preview = piped(["paired", "-", *options, "-o", "out.png", "--dry-run", "--json"], b"not read")
    assert preview.exit_code == 0, preview.output
    assert [record["label"] for record in json.loads(preview.stdout)["results"]] == ["-"]
    (tmp_path / "-").mkdir()
    (tmp_path / "-" / "000.png").write_bytes((paired_run["labels"] / "000.png").read_bytes())
    folder = runner.invoke(app, ["paired", "./-", *options, "-o", "out/"])
    assert folder.exit_code == 0, folder.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["000.png"]


# --------------------------------------------------------------------------- translate-lr


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("translate-lr-stdin")
    photos = write_photos(root / "data", 8)
    result = train_translate_lr(root / "data", root / "run", 2)
    assert result.exit_code == 0, result.output
    return {"data": root / "data", "photos": photos, "run": root / "run"}


def test_translate_lr_reads_the_source_or_the_target_from_standard_input(lr_run, tmp_path):
    source, target = lr_run["photos"][:2]
    options = ["-c", str(lr_run["run"]), "--device", "cpu"]
    assert runner.invoke(app, ["translate-lr", str(source), str(target), *options, "-o", str(tmp_path / "a.png")]).exit_code == 0
    expected = (tmp_path / "a.png").read_bytes()
    for args, data in ((["-", str(target)], source), ([str(source), "-"], target)):
        result = piped(["translate-lr", *args, *options, "-o", str(tmp_path / "piped.png"), "--json"], data.read_bytes())
        assert result.exit_code == 0, result.output
        assert (tmp_path / "piped.png").read_bytes() == expected, args
        record = json.loads(result.stdout)["results"][0]
        assert "-" in (record["source"], record["target"])
    chained = piped(["translate-lr", "-", str(target), *options, "-o", "-"], source.read_bytes())
    assert chained.exit_code == 0 and chained.stdout_bytes == expected, chained.stderr


def test_translate_lr_refuses_what_standard_input_cannot_give(lr_run, tmp_path):
    source, target = lr_run["photos"][:2]
    options = ["-c", str(lr_run["run"]), "--device", "cpu"]
    out = tmp_path / "out.png"
    data = source.read_bytes()
    assert_refused(piped(["translate-lr", "-", "-", *options, "-o", str(out)], data), 2, "SOURCE and TARGET are both -")
    assert_refused(piped(["translate-lr", "-", str(target), *options, "-o", str(tmp_path / "folder")], data),
                   2, "needs an output file name")
    assert_refused(piped(["translate-lr", "-", str(lr_run["data"]), *options, "-o", str(out)], data),
                   2, "TARGET must be one image file, not the folder")
    assert_refused(piped(["translate-lr", str(source), "-", *options, "-o", str(out)], b"hello"),
                   1, "-: is not an image file")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- invert


def test_invert_reads_the_source_or_the_exemplar_from_standard_input(files, tmp_path):  # noqa: F811
    source = write_png(tmp_path / "source.png", smooth_image(10, 48))
    exemplar = write_png(tmp_path / "exemplar.png", smooth_image(11, 48))
    options = ["--aligned", "--layers", "2", "--codes", "2", "--steps", "2", "--size", "32", *invert_models(files)]
    by_path = runner.invoke(app, ["invert", str(source), str(exemplar), *options, "-o", str(tmp_path / "a.png")])
    assert by_path.exit_code == 0, by_path.output
    expected = (tmp_path / "a.png").read_bytes()
    for args, data, role in ((["-", str(exemplar)], source, "source"), ([str(source), "-"], exemplar, "exemplar")):
        result = piped(["invert", *args, *options, "-o", str(tmp_path / "piped.png"), "--json"], data.read_bytes())
        assert result.exit_code == 0, result.output
        assert (tmp_path / "piped.png").read_bytes() == expected, args
        assert json.loads(result.stdout)["results"][0][role] == "-"


def test_invert_refuses_what_standard_input_cannot_give(files, tmp_path):  # noqa: F811
    photo = write_png(tmp_path / "photo.png", smooth_image(10, 48))
    options = ["--aligned", "--steps", "1", *invert_models(files)]
    out = tmp_path / "out.png"
    assert_refused(piped(["invert", "-", "-", *options, "-o", str(out)], photo.read_bytes()),
                   2, "SOURCE and EXEMPLAR are both -")
    assert_refused(piped(["invert", "-", str(photo), *options, "-o", str(tmp_path / "folder/")], photo.read_bytes()),
                   2, "needs an output file name")
    assert_refused(piped(["invert", str(photo), "-", *options, "-o", str(out)], b"hello"), 1, "-: is not an image file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


# --------------------------------------------------------------------------- exemplar


@pytest.fixture(scope="module")
def edge_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of colour edge maps: its INPUT and --exemplar-pose are images."""
    return write_checkpoint_dir(tmp_path_factory.mktemp("cocosnet-edges") / "edges",
                                dataclasses.replace(TINY_COCOSNET, semantic_nc=3))


def _edge_map(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((60, 44, 3)) > 0.8).astype(np.uint8) * 255).save(path)
    return path


def test_exemplar_reads_an_input_map_or_the_exemplar_from_standard_input(checkpoint, edge_checkpoint, tmp_path):  # noqa: F811
    photo = tmp_path / "model.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 44, 3), dtype=np.uint8)).save(photo)
    edges, photo_edges = _edge_map(tmp_path / "edges.png", 1), _edge_map(tmp_path / "model_edges.png", 2)
    pose, photo_pose = _pose(tmp_path / "target.json", 5), _pose(tmp_path / "model.json")
    cases = [  # (arguments by path, the one read from standard input, the checkpoint)
        ([str(edges), str(photo), "--exemplar-pose", str(photo_edges)], edges, edge_checkpoint),
        ([str(edges), str(photo), "--exemplar-pose", str(photo_edges)], photo_edges, edge_checkpoint),
        ([str(pose), str(photo), "--exemplar-pose", str(photo_pose)], photo, checkpoint),
    ]
    for args, data, model in cases:
        by_path = runner.invoke(app, ["exemplar", *args, *exemplar_options(model), "-o", str(tmp_path / "a.png")])
        assert by_path.exit_code == 0, by_path.output
        with_dash = [("-" if arg == str(data) else arg) for arg in args]
        assert with_dash.count("-") == 1
        result = piped(["exemplar", *with_dash, *exemplar_options(model), "-o", str(tmp_path / "piped.png"), "--json"],
                       data.read_bytes())
        assert result.exit_code == 0, result.output
        assert (tmp_path / "piped.png").read_bytes() == (tmp_path / "a.png").read_bytes(), data.name
        record = json.loads(result.stdout)["results"][0]
        assert "-" in (record["input"], record["exemplar"]) or data == photo_edges


def test_exemplar_refuses_what_standard_input_cannot_give(checkpoint, tmp_path):  # noqa: F811
    photo = tmp_path / "model.png"
    Image.fromarray(np.zeros((60, 44, 3), np.uint8)).save(photo)
    pose, photo_pose = _pose(tmp_path / "target.json"), _pose(tmp_path / "model.json")
    options = exemplar_options(checkpoint)
    out = tmp_path / "out.png"
    data = photo.read_bytes()
    assert_refused(piped(["exemplar", "-", "-", "--exemplar-pose", str(photo_pose), *options, "-o", str(out)], data),
                   2, "INPUT and EXEMPLAR are both -")
    assert_refused(piped(["exemplar", str(pose), "-", "--exemplar-pose", str(photo_pose), *options,
                          "-o", str(tmp_path / "folder")], data), 2, "needs an output file name")
    assert_refused(piped(["exemplar", str(photo), str(photo), "--input-pose", "-", "--exemplar-pose", str(photo_pose),
                          *options, "-o", str(out)], data), 2, "--input-pose -: a pose file is not read from standard input")
    assert_refused(piped(["exemplar", "--pairs", "-", *options], data), 2, "--pairs -: a CSV list of pairs is not read")
    assert_refused(piped(["exemplar", str(pose), "-", "--exemplar-pose", str(photo_pose), *options, "-o", str(out)],
                         b"hello"), 1, "-: is not an image file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.png", "target.json"]


def test_image_arguments_taken_as_typed_still_expand_a_quoted_home(tmp_path, monkeypatch):
    """They are no longer Paths (whose "./-" is "-"), which the home expansion of every command covered."""
    monkeypatch.setenv("HOME", str(tmp_path))
    label = write_pairs(tmp_path / "data", 1) / "labels" / "000.png"
    (tmp_path / "000.png").write_bytes(label.read_bytes())
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.pt").write_bytes(b"never opened")  # only looked for
    paired = runner.invoke(app, ["paired", "~/000.png", "-c", "~/run", "-o", "~/out.png", "--dry-run", "--json"])
    assert paired.exit_code == 0, paired.output
    assert json.loads(paired.stdout)["results"][0]["label"] == str(tmp_path / "000.png")
    pair = runner.invoke(app, ["translate-lr", "~/000.png", "~/000.png", "-c", "~/run", "-o", "~/out.png", "--dry-run",
                               "--json"])
    assert pair.exit_code == 0, pair.output
    assert json.loads(pair.stdout)["results"][0]["target"] == str(tmp_path / "000.png")
    missing = runner.invoke(app, ["invert", "~/000.png", "~/missing.png", "-o", "~/out.png", "--aligned"])
    assert missing.exit_code == 1 and f"{tmp_path / 'missing.png'}: no such file" in missing.stderr, missing.output
