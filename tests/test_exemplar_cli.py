"""`i2i exemplar`: wiring, outputs, batches over a CSV of pairs, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cocosnet_checkpoints import write_checkpoint_dir
from i2icli.cli.app import app

runner = CliRunner()

_POINTS = {0: (37, 10), 1: (37, 25), 2: (27, 25), 3: (24, 45), 4: (22, 62), 5: (47, 25), 6: (50, 45), 7: (52, 62),
           8: (31, 62), 9: (30, 85), 10: (30, 105), 11: (43, 62), 12: (44, 85), 13: (44, 105)}


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _pose(path: Path, dx: float = 0.0) -> Path:
    flat = []
    for index in range(18):
        x, y = _POINTS.get(index, (0.0, 0.0))
        flat += [x + dx, y, 0.9 if index in _POINTS else 0.0]
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": flat}]}))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint_dir(tmp_path_factory.mktemp("cocosnet") / "deepfashionhd")


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    photo = tmp_path / "model.jpg"
    Image.fromarray(rng.integers(0, 255, (110, 75, 3), dtype=np.uint8)).save(photo)
    return {"photo": photo, "photo_pose": _pose(tmp_path / "model.json"), "target": _pose(tmp_path / "target.json", 5)}


def _common(checkpoint: Path) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--size", "64", "--iterations", "1", "--device", "cpu"]


def test_one_pair_with_warps_labels_and_json(checkpoint, pair, tmp_path):
    out = tmp_path / "out" / "result.png"
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(out), "--save-warps", "--save-label", "--json", *_common(checkpoint))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] == 1 and summary["failed"] == 0
    # "total" is the record's seconds, not a stage.
    assert set(summary["results"][0]["stages"]) == {"correspondence", "generator"}
    with Image.open(out) as image:
        assert image.size == (44, 64)  # the exemplar's 75:110 aspect at the 64 px working size
    assert [Path(p).name for p in summary["results"][0]["warps"]] == [
        "result_warp8.png", "result_warp16.png", "result_warp32.png", "result_warp64.png"]
    labels = [Path(p) for p in summary["results"][0]["labels"]]
    assert [p.name for p in labels] == ["result_input_label.png", "result_exemplar_label.png"]
    with Image.open(labels[0]) as drawing:
        assert drawing.size == (64, 64) and np.asarray(drawing).max() > 0


def test_one_pair_to_standard_output_is_the_file_it_would_write(checkpoint, pair, tmp_path):
    args = ["exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
            *_common(checkpoint)]
    assert run(*args, "-o", str(tmp_path / "result.png")).exit_code == 0
    piped = run(*args, "-o", "-")
    assert piped.exit_code == 0, piped.output
    assert piped.stdout_bytes == (tmp_path / "result.png").read_bytes()
    assert "→ standard output" in piped.stderr and not Path("-").exists()
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"input,exemplar,exemplar_pose\n{pair['target']},{pair['photo']},{pair['photo_pose']}\n")
    for extra, expected in ((["--json"], "--json and -o - would both write to standard output"),
                            (["--save-warps"], "--save-warps writes files beside the output"),
                            (["--save-label"], "--save-label writes files beside the output")):
        refused = run(*args, "-o", "-", *extra)
        assert refused.exit_code == 2 and refused.stdout_bytes == b"", extra
        assert expected in refused.stderr, extra
    many = run("exemplar", "--pairs", str(csv), "-o", "-", *_common(checkpoint))
    assert many.exit_code == 2 and "--pairs is for many" in many.stderr


def test_input_photo_with_its_own_pose(checkpoint, pair, tmp_path):
    result = run("exemplar", str(pair["photo"]), str(pair["photo"]), "--input-pose", str(pair["target"]),
                 "--exemplar-pose", str(pair["photo_pose"]), "-o", str(tmp_path / "out"), *_common(checkpoint))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model_model.png").is_file()


def test_same_seed_same_output(checkpoint, pair, tmp_path):
    outputs = []
    for name, seed in (("a.png", "3"), ("b.png", "3"), ("c.png", "4")):
        target = tmp_path / name
        result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                     "-o", str(target), "--seed", seed, *_common(checkpoint))
        assert result.exit_code == 0, result.output
        outputs.append(np.asarray(Image.open(target)))
    assert np.array_equal(outputs[0], outputs[1])
    # Seed 4 propagates the second fine level in the other order: the option reaches the correspondence.
    from i2icli.archs.cocosnet2 import propagation_orders

    assert propagation_orders(3, 1) != propagation_orders(4, 1)
    assert not np.array_equal(outputs[0], outputs[2])


def test_csv_batch_goes_on_past_a_bad_pair(checkpoint, pair, tmp_path):
    bad_pose = tmp_path / "broken.json"
    bad_pose.write_text("{not json")
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "input,exemplar,exemplar_pose,output\n"
        f"target.json,model.jpg,model.json,\n"
        f"{bad_pose.name},model.jpg,model.json,\n"
        f"target.json,missing.jpg,model.json,custom.png\n"
        f"target.json,model.jpg,,\n"
    )
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "batch"), "--json", *_common(checkpoint))
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert [r["status"] for r in summary["results"]] == ["ok", "failed", "failed", "failed"]
    assert (tmp_path / "batch" / "target_model.png").is_file()
    errors = [r["error"] for r in summary["results"][1:]]
    assert "broken.json" in errors[0] and "missing.jpg" in errors[1] and "no exemplar_pose" in errors[2]
    assert "Traceback" not in result.output


def test_default_checkpoint_explains_the_manual_download(pair, tmp_path):
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), "--device", "cpu")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cocosnet2-deepfashionhd" in result.stderr and "--checkpoint DIR" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "latest_net_G.pth", "takes a folder, not a file"),
        (lambda d: d.parent / "nowhere", "checkpoint folder not found"),
        (lambda d: "mymodel", "mymodel: checkpoint folder not found"),  # a bare name is a folder here
    ],
)
def test_bad_checkpoint_paths(checkpoint, pair, tmp_path, setup, message):
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), "--checkpoint", str(setup(checkpoint)), "--device", "cpu")
    assert result.exit_code == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_checkpoint_of_another_model_is_refused(pair, tmp_path):
    import torch

    folder = tmp_path / "wrong"
    folder.mkdir()
    for name in ("latest_net_G.pth", "latest_net_Corr.pth"):
        torch.save({"conv_first.weight": torch.zeros(4, 3, 3, 3)}, folder / name)
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), "--checkpoint", str(folder), "--device", "cpu")
    assert result.exit_code == 1 and "not a CoCosNet v2 checkpoint" in result.stderr


def test_usage_errors(checkpoint, pair, tmp_path):
    base = ["exemplar", str(pair["target"]), str(pair["photo"])]
    assert run(*base, *_common(checkpoint)).exit_code == 2  # no --exemplar-pose
    assert run(*base, "--exemplar-pose", str(pair["photo_pose"]), "--size", "100").exit_code == 2
    assert run("exemplar", "--pairs", str(tmp_path / "p.csv"), str(pair["target"])).exit_code == 2
    # An image format i2i does not write names a file all the same, not a folder to create.
    gif = run(*base, "--exemplar-pose", str(pair["photo_pose"]), "-o", str(tmp_path / "out.gif"), *_common(checkpoint))
    assert gif.exit_code == 2 and "cannot write .gif files" in gif.stderr
    assert not (tmp_path / "out.gif").exists()


def test_a_whole_run_failure_is_reported_in_json_too(pair, tmp_path):
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "nowhere"), "--device", "cpu", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert "checkpoint folder not found" in report["error"] and report["hint"]
    assert len(result.stderr.strip().splitlines()) == 1


def test_pairs_that_name_their_outputs_need_no_output_folder(checkpoint, pair, tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"input,exemplar,exemplar_pose,output\n{pair['target']},{pair['photo']},{pair['photo_pose']},mine.png\n")
    (tmp_path / "afile").write_text("x")  # -o names a file, but no row writes there
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "afile"), *_common(checkpoint))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mine.png").is_file()


def test_a_csv_without_header_says_so(checkpoint, pair, tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{pair['target']},{pair['photo']},{pair['photo_pose']}\n")
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), *_common(checkpoint))
    assert result.exit_code == 1
    assert "the first line is not a header" in result.stderr and "input,exemplar,exemplar_pose" in result.stderr


def test_never_overwrites_an_input(checkpoint, pair):
    before = pair["photo"].read_bytes()
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(pair["photo"]), *_common(checkpoint))
    assert result.exit_code == 1 and "would overwrite an input" in result.stderr
    assert pair["photo"].read_bytes() == before


def test_wrong_channel_count_is_one_line(checkpoint, pair, tmp_path):
    edges = tmp_path / "edges.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(edges)
    result = run("exemplar", str(edges), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), *_common(checkpoint))
    assert result.exit_code == 1
    assert "edges.png: gives 1 channel, but this checkpoint takes 20" in result.stderr
    # A photo given as INPUT without its pose: the hint names the option that takes the pose.
    result = run("exemplar", str(pair["photo"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), *_common(checkpoint))
    assert result.exit_code == 1 and "--input-pose" in result.stderr


def test_weights_commands_treat_the_manual_download_plainly():
    listed = json.loads(run("weights", "list", "--json").stdout)
    entry = next(item for item in listed if item["name"] == "cocosnet2-deepfashionhd")
    assert entry["manual_download"] is True and entry["url"].startswith("https://drive.google.com/")
    fetched = run("weights", "fetch", "cocosnet2-deepfashionhd")
    assert fetched.exit_code == 1 and "without a checksum" in fetched.stderr
    assert len(fetched.stderr.strip().splitlines()) == 1
    verified = run("weights", "verify")
    assert "cocosnet2-deepfashionhd: no published checksum" in verified.stdout


def test_batch_outputs_never_replace_inputs_or_each_other(checkpoint, pair, tmp_path):
    (tmp_path / "other.jpg").write_bytes(pair["photo"].read_bytes())
    (tmp_path / "sub").mkdir()
    for name in ("model.jpg", "model.json", "target.json"):
        (tmp_path / "sub" / name).write_bytes((tmp_path / name).read_bytes())
    photo_before = pair["photo"].read_bytes()
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "input,exemplar,exemplar_pose,output\n"
        "target.json,other.jpg,model.json,model.jpg\n"  # would replace the next row's exemplar
        "\n"
        "target.json,model.jpg,model.json,\n"
        "sub/target.json,sub/model.jpg,sub/model.json,\n"  # the same default name, target_model.png
        "target.json,model.jpg,model.json,x.png,extra\n"
    )
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), "--json", *_common(checkpoint))
    assert result.exit_code == 1 and pair["photo"].read_bytes() == photo_before
    summary = json.loads(result.stdout)
    assert [r["status"] for r in summary["results"]] == ["failed", "ok", "failed", "failed"]
    errors = [summary["results"][i]["error"] for i in (0, 2, 3)]
    assert "would overwrite an input of the batch" in errors[0]
    assert errors[1].startswith(f"{csv}:5: its output") and f"target_model.png is also written for {csv}:4" in errors[1]
    assert errors[2] == f"{csv}:6: more cells than the header has columns"  # file line numbers, blank line counted

    # A saved warp may not replace an input either.
    warp_named = tmp_path / "r_warp64.png"
    warp_named.write_bytes(pair["photo"].read_bytes())
    kept = warp_named.read_bytes()
    single = run("exemplar", str(pair["target"]), str(warp_named), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "r.png"), "--save-warps", *_common(checkpoint))
    assert single.exit_code == 1 and "would overwrite an input" in single.stderr
    assert warp_named.read_bytes() == kept


def test_the_result_is_in_the_input_photos_frame(checkpoint, pair, tmp_path):
    """A wide input photo with its pose and a tall exemplar: the structure lies in the wide frame,
    and a crop to the exemplar's shape would cut the person out."""
    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((100, 300, 3), 90, np.uint8)).save(wide)
    result = run("exemplar", str(wide), str(pair["photo"]), "--input-pose", str(pair["target"]),
                 "--exemplar-pose", str(pair["photo_pose"]), "-o", str(tmp_path / "out.png"), "--save-warps",
                 *_common(checkpoint))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (64, 21)  # 300:100 at the 64 px working size
    with Image.open(tmp_path / "out_warp64.png") as warp:
        assert warp.size == (64, 21)


def test_an_edge_map_input_keeps_its_own_shape(tmp_path):
    folder = write_checkpoint_dir(tmp_path / "edges", config=_edge_config())
    edge_in, edge_ex, photo = tmp_path / "in.png", tmp_path / "ex.png", tmp_path / "photo.png"
    Image.fromarray(np.tile(np.arange(120, dtype=np.uint8), (40, 1))).save(edge_in)  # 120x40
    Image.fromarray(np.zeros((80, 60), np.uint8)).save(edge_ex)
    Image.fromarray(np.full((80, 60, 3), 120, np.uint8)).save(photo)
    result = run("exemplar", str(edge_in), str(photo), "--exemplar-pose", str(edge_ex), "-o", str(tmp_path / "o.png"),
                 *_common(folder))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "o.png") as image:
        assert image.size == (64, 21)
    # An exemplar map of another shape than the exemplar photo cannot lie on it.
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(edge_ex)
    result = run("exemplar", str(edge_in), str(photo), "--exemplar-pose", str(edge_ex), "-o", str(tmp_path / "p.png"),
                 *_common(folder))
    assert result.exit_code == 1 and "ex.png: is 50x50, but the exemplar photo is 60x80" in result.stderr
    assert not (tmp_path / "p.png").exists()
    # A colour edge map for this grayscale model: the hint speaks of edge maps, not poses.
    Image.fromarray(np.zeros((40, 120, 3), np.uint8)).save(edge_in)
    result = run("exemplar", str(edge_in), str(photo), "--exemplar-pose", str(edge_ex), "-o", str(tmp_path / "p.png"),
                 *_common(folder))
    assert result.exit_code == 1 and "takes grayscale edge maps" in result.stderr and "pose" not in result.stderr


def _edge_config():
    from cocosnet_checkpoints import TINY
    import dataclasses

    return dataclasses.replace(TINY, semantic_nc=1)


def test_semantics_of_two_kinds_are_refused(checkpoint, pair, tmp_path):
    label = tmp_path / "label.png"
    Image.fromarray(np.zeros((110, 75), np.uint8)).save(label)
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(label),
                 "--label-nc", "20", "-o", str(tmp_path / "x.png"), *_common(checkpoint))
    assert result.exit_code == 1
    assert "label.png: is a label map, but the input target.json is a pose" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_the_output_keeps_the_exemplars_colour_profile(checkpoint, pair, tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = tmp_path / "tagged.png"
    Image.open(pair["photo"]).save(tagged, icc_profile=profile)
    result = run("exemplar", str(pair["target"]), str(tagged), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), "--save-warps", *_common(checkpoint))
    assert result.exit_code == 0, result.output
    for name in ("x.png", "x_warp64.png"):
        with Image.open(tmp_path / name) as image:
            assert image.info.get("icc_profile") == profile


def test_a_pair_cut_short_is_redone_by_skip_existing(checkpoint, pair, tmp_path):
    """The output is written last: if a warp cannot be written, no output says the pair is done."""
    (tmp_path / "x_warp32.png").mkdir()  # in the way of one warp
    args = ["exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
            "-o", str(tmp_path / "x.png"), "--save-warps", "--skip-existing", *_common(checkpoint)]
    assert run(*args).exit_code == 1
    assert not (tmp_path / "x.png").exists()
    (tmp_path / "x_warp32.png").rmdir()
    again = run(*args)
    assert again.exit_code == 0 and "skipped" not in again.stderr
    assert (tmp_path / "x.png").is_file() and (tmp_path / "x_warp32.png").is_file()


@pytest.mark.parametrize(("header", "message"), [
    ("Input,Exemplar,Exemplar_Pose", None),  # as a spreadsheet may capitalise it
    ("input,exemplar,exemplar_pose,input", "names the column 'input' twice"),
])
def test_csv_headers(checkpoint, pair, tmp_path, header, message):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{header}\ntarget.json,model.jpg,model.json{',x.json' if header.count(',') == 3 else ''}\n")
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), *_common(checkpoint))
    if message is None:
        assert result.exit_code == 0, result.output
        assert (tmp_path / "out" / "target_model.png").is_file()
    else:
        assert result.exit_code == 1 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_dry_run_lists_the_plan_without_loading_the_checkpoint(pair, tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text("input,exemplar,exemplar_pose,output\n"
                   "target.json,model.jpg,model.json,done.png\n"
                   "target.json,model.jpg,model.json,todo.png\n"
                   "target.json,model.jpg,model.json,model.jpg\n")
    out = tmp_path / "out"
    (tmp_path / "done.png").write_bytes(b"an earlier result")  # a CSV's output names are the CSV folder's
    before = sorted(tmp_path.rglob("*"))
    missing = tmp_path / "no-checkpoint-here"  # never loaded: a dry run opens no file
    args = ["exemplar", "--pairs", str(csv), "-o", str(out), "--skip-existing", "--dry-run", "--checkpoint", str(missing)]
    listed = run(*args)
    assert listed.exit_code == 1  # the row that would replace its exemplar photo
    assert listed.stdout.splitlines() == [f"skipped {tmp_path / 'target.json'} + {tmp_path / 'model.jpg'} ({tmp_path / 'done.png'} exists)",
                                          f"{tmp_path / 'target.json'} + {tmp_path / 'model.jpg'} → {tmp_path / 'todo.png'}"]
    assert "would overwrite an input" in listed.stderr
    document = json.loads(run(*args, "--json").stdout)
    assert (document["dry_run"], document["would_run"], document["skipped"], document["failed"]) == (True, 1, 1, 1)
    assert [r["status"] for r in document["results"]] == ["skipped", "would run", "failed"]
    assert sorted(tmp_path.rglob("*")) == before


def test_the_input_photo_is_read_for_its_size_only(checkpoint, pair, tmp_path, monkeypatch):
    """With --input-pose, INPUT's pixels are never used: its size comes from the header, with the
    EXIF orientation applied (the pose was found on the photo as shown)."""
    import i2icli.imageio

    photo = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 300x100, shown 100x300
    Image.fromarray(np.full((100, 300, 3), 90, np.uint8)).save(photo, exif=exif.tobytes())
    decoded = []
    read_image = i2icli.imageio.read_image
    monkeypatch.setattr(i2icli.imageio, "read_image",
                        lambda path, **kwargs: decoded.append(Path(path).name) or read_image(path, **kwargs))
    result = run("exemplar", str(photo), str(pair["photo"]), "--input-pose", str(pair["target"]),
                 "--exemplar-pose", str(pair["photo_pose"]), "-o", str(tmp_path / "out.png"), *_common(checkpoint))
    assert result.exit_code == 0, result.output
    assert decoded == ["model.jpg"]  # the exemplar, whose pixels are used
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (21, 64)  # 100:300 at the 64 px working size


@pytest.mark.parametrize(("make", "message"), [
    (lambda path: None, "no such file"),
    (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
    (lambda path: path.write_text("not a photo"), "is not an image file"),
    (lambda path: path.mkdir(), "is a directory"),
    (lambda path: Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="GIF"), "in GIF format"),
    (lambda path: Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(path), "over the limit"),
])
def test_an_input_photo_that_cannot_be_read_is_one_line(checkpoint, pair, tmp_path, make, message):
    photo = tmp_path / "photo.png"
    make(photo)
    result = run("exemplar", str(photo), str(pair["photo"]), "--input-pose", str(pair["target"]),
                 "--exemplar-pose", str(pair["photo_pose"]), "-o", str(tmp_path / "out.png"), "--max-pixels", "9000",
                 *_common(checkpoint))
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and f"{photo}: " in result.stderr and message in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_csv_lines_of_empty_cells_are_blank_lines(checkpoint, pair, tmp_path):
    """A spreadsheet exports rows it once touched as commas alone: nothing to translate, no failure."""
    csv = tmp_path / "pairs.csv"
    csv.write_text("input,exemplar,exemplar_pose\r\n"
                   "target.json,model.jpg,model.json\r\n"
                   ",,\r\n"
                   " , ,  \r\n"
                   ",,,,\r\n")
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), "--json", *_common(checkpoint))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"]) == (1, 0)
    assert (tmp_path / "out" / "target_model.png").is_file()
    # A CSV of header and empty cells only has no pairs to run.
    csv.write_text("input,exemplar,exemplar_pose\n,,\n")
    empty = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), *_common(checkpoint))
    assert empty.exit_code == 1 and "no pairs in this CSV file" in empty.stderr


def test_a_checkpoint_file_cut_short_is_named_once(checkpoint, pair, tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    for name in ("latest_net_G.pth", "latest_net_Corr.pth"):
        (folder / name).write_bytes((checkpoint / name).read_bytes())
    generator = folder / "latest_net_G.pth"
    generator.write_bytes(generator.read_bytes()[:5000])
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "x.png"), "--checkpoint", str(folder), "--device", "cpu")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {generator}: not a readable checkpoint")
    assert not (tmp_path / "x.png").exists()


def test_keypoints_outside_their_photo_are_warned_of(checkpoint, pair, tmp_path):
    """A pose found on a photo twice the size of the one it is placed on: the person would be
    drawn cut off, so the user is told, whichever photo the frame is."""
    small = tmp_path / "small.jpg"
    Image.open(pair["photo"]).resize((37, 55)).save(small)
    result = run("exemplar", str(small), str(pair["photo"]), "--input-pose", str(pair["target"]),
                 "--exemplar-pose", str(pair["photo_pose"]), "-o", str(tmp_path / "a.png"), *_common(checkpoint))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{pair['target']}: its keypoints" in warnings[0]
    assert f"beyond the 37x55 photo {small}" in warnings[0]

    doubled = json.loads(pair["target"].read_text())
    flat = doubled["people"][0]["pose_keypoints_2d"]
    doubled["people"][0]["pose_keypoints_2d"] = [v * 2 if i % 3 != 2 else v for i, v in enumerate(flat)]
    far = tmp_path / "far.json"
    far.write_text(json.dumps(doubled))
    result = run("exemplar", str(far), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "b.png"), *_common(checkpoint))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "75x110 frame of the exemplar" in warnings[0] and "--input-pose" in warnings[0]
    # The pair that fits: not a word.
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--exemplar-pose", str(pair["photo_pose"]),
                 "-o", str(tmp_path / "c.png"), *_common(checkpoint))
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_an_official_pose_pair_gives_one_output_name_however_it_is_named(tmp_path):
    (tmp_path / "dancer_candidate.txt").write_text("100 100 0.9 0\n")
    (tmp_path / "dancer_subset.txt").write_text(" ".join(["0"] + ["-1"] * 17 + ["1", "1"]) + "\n")
    (tmp_path / "model.jpg").write_bytes(b"")  # a dry run reads nothing
    (tmp_path / "model.json").write_bytes(b"")  # only looked for
    (tmp_path / "model").mkdir()
    for name in ("latest_net_Corr.pth", "latest_net_G.pth"):
        (tmp_path / "model" / name).write_bytes(b"")  # only looked for
    outputs = []
    for name in ("dancer_{}.txt", "dancer_candidate.txt", "dancer_subset.txt"):
        result = run("exemplar", str(tmp_path / name), str(tmp_path / "model.jpg"), "--exemplar-pose",
                     str(tmp_path / "model.json"), "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "model"),
                     "--dry-run", "--json")
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout)["results"][0]["output"])
    assert outputs == [str(tmp_path / "out" / "dancer_model.png")] * 3


def test_csv_columns_left_empty_beyond_the_header_are_ignored(checkpoint, pair, tmp_path):
    """A spreadsheet may end the header and every row with commas: empty cells under no name are
    nothing; a cell with something in it there is refused, since it would be lost."""
    csv = tmp_path / "pairs.csv"
    csv.write_text("input,exemplar,exemplar_pose,,\n"
                   "target.json,model.jpg,model.json,,\n"
                   "target.json,model.jpg,model.json,,b.png\n"
                   "target.json,model.jpg,model.json,,,c.png\n"
                   ",,,,\n")
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), "--json", *_common(checkpoint))
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert [r["status"] for r in summary["results"]] == ["ok", "failed", "failed"]
    assert (tmp_path / "out" / "target_model.png").is_file()
    assert summary["results"][1]["error"] == f"{csv}:3: a cell in column 5, which the header leaves unnamed"
    assert summary["results"][2]["error"] == f"{csv}:4: more cells than the header has columns"
    # A header of commas alone names nothing.
    csv.write_text(",,\ntarget.json,model.jpg,model.json\n")
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 1 and "the first line is not a header" in result.stderr


def test_a_pose_as_input_with_an_input_pose_says_so(pair, tmp_path):
    result = run("exemplar", str(pair["target"]), str(pair["photo"]), "--input-pose", str(pair["target"]),
                 "--exemplar-pose", str(pair["photo_pose"]), "-o", str(tmp_path / "x.png"), "--device", "cpu",
                 "--checkpoint", str(tmp_path / "never-loaded"))
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"{pair['target']}: is a pose itself, so it takes no input pose" in result.stderr
    assert "unsupported file type" not in result.stderr
