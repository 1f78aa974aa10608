"""`i2i exemplar` on inputs a careless or unlucky user gives it: files that are not there,
poses in units other than pixels, options that do nothing for the inputs given, and long thin
photos and maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import traced_peak
from typer.testing import CliRunner

from i2icli.cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _pose_file(path: Path, scale: float = 1.0) -> Path:
    """A standing person's OpenPose JSON, in the pixels of a 75x110 photo times ``scale``."""
    points = {0: (37, 10), 1: (37, 25), 2: (27, 25), 5: (47, 25), 8: (31, 62), 11: (43, 62), 9: (30, 85), 12: (44, 85)}
    flat = []
    for index in range(18):
        x, y = points.get(index, (0, 0))
        flat += [x * scale, y * scale, 0.9 if index in points else 0.0]
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": flat}]}))
    return path


@pytest.mark.parametrize("missing", ["input", "exemplar", "exemplar_pose", "input_pose", "subset"])
def test_a_file_that_is_not_there_fails_the_plan_before_any_model_loads(tmp_path, missing):
    """--dry-run said "would run" for a pair naming a file that does not exist, and a real run
    loaded both networks before finding out."""
    (tmp_path / "model.jpg").write_bytes(b"")  # looked for, never read
    _pose_file(tmp_path / "model.json")
    (tmp_path / "dancer.png").write_bytes(b"")
    _pose_file(tmp_path / "dancer.json")
    (tmp_path / "walk_candidate.txt").write_text("100 100 0.9 0\n")
    (tmp_path / "walk_subset.txt").write_text(" ".join(["0"] + ["-1"] * 17 + ["1", "1"]) + "\n")
    files = {"input": "dancer.png", "exemplar": "model.jpg", "exemplar_pose": "model.json", "input_pose": "dancer.json"}
    if missing == "subset":  # an official pose whose second file is not there
        files.pop("input_pose")
        files["input"] = "walk_candidate.txt"
        (tmp_path / "walk_subset.txt").unlink()
        gone = tmp_path / "walk_subset.txt"
    else:
        gone = tmp_path / f"gone_{files[missing]}"
        files[missing] = gone.name
    args = ["exemplar", str(tmp_path / files["input"]), str(tmp_path / files["exemplar"]),
            "--exemplar-pose", str(tmp_path / files["exemplar_pose"]), "-o", str(tmp_path / "out.png"),
            "--checkpoint", str(tmp_path / "never-loaded"), "--device", "cpu"]
    if "input_pose" in files:
        args += ["--input-pose", str(tmp_path / files["input_pose"])]
    for extra in (["--dry-run", "--json"], []):
        result = run(*args, *extra)
        assert result.exit_code == 1
        assert f"{gone}: no such file" in result.stderr
        assert "never-loaded" not in result.stderr  # the checkpoint was not looked at: nothing would run
        if extra:
            assert json.loads(result.stdout)["results"][0]["status"] == "failed"
    assert not (tmp_path / "out.png").exists()


def test_a_csv_row_naming_a_missing_file_fails_alone_in_the_plan(tmp_path):
    (tmp_path / "model.jpg").write_bytes(b"")
    _pose_file(tmp_path / "model.json")
    _pose_file(tmp_path / "target.json")
    csv = tmp_path / "pairs.csv"
    csv.write_text("input,exemplar,exemplar_pose\ntarget.json,model.jpg,model.json\nnone.json,model.jpg,model.json\n")
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), "--dry-run", "--json",
                 "--checkpoint", str(tmp_path))
    document = json.loads(result.stdout)
    assert [record["status"] for record in document["results"]] == ["would run", "failed"]
    assert document["results"][1]["error"] == f"{csv}:3: {tmp_path / 'none.json'}: no such file"


def _official_square(array, value):
    """``array`` centred on a square canvas of ``value``, as the official preprocessing pads photos and maps."""
    import numpy as np

    height, width = array.shape[:2]
    side = max(width, height)
    canvas = np.full((side, side, *array.shape[2:]), value, dtype=array.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = array
    return canvas


@pytest.mark.parametrize("scale", ["0 to 1", "-1 to 1"])
def test_keypoints_normalised_to_the_photo_are_refused_not_drawn_as_a_blob(tmp_path, scale):
    """OpenPose --keypoint_scale 3 (0 to 1) or 4 (-1 to 1): read as pixels, the person was drawn
    as one dot in the corner of the frame, without a word (0 to 1), or with a warning that sent the
    user looking for another photo (-1 to 1)."""
    from i2icli.errors import InputError
    from i2icli.semantics.pose import read_pose

    path = _pose_file(tmp_path / "pose.json", scale=1 / 110)
    if scale == "-1 to 1":
        data = json.loads(path.read_text())
        flat = data["people"][0]["pose_keypoints_2d"]
        data["people"][0]["pose_keypoints_2d"] = [value * 2 - 1 if i % 3 < 2 and flat[i - i % 3 + 2] else value
                                                  for i, value in enumerate(flat)]
        path.write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        read_pose(path, (75, 110))
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "normalised" in message and "--keypoint_scale 0" in message
    # In pixels, the same person is read; and on a photo of a pixel or two, coordinates of 1 are pixels.
    assert read_pose(_pose_file(tmp_path / "pixels.json"), (75, 110)).present.sum() == 8
    assert read_pose(_pose_file(tmp_path / "tiny.json", scale=1 / 110), (2, 2)).present.sum() == 8


def test_save_label_and_label_nc_given_for_semantics_they_cannot_apply_to_are_warned_of(tmp_path):
    """--save-label writes pose skeletons and --label-nc reads label maps: typed for pairs that
    have none of those, they did nothing without a word (a map pair's JSON listed "labels": [])."""
    for name in ("model.jpg", "edges.png", "model_edges.png"):
        (tmp_path / name).write_bytes(b"")  # looked for, never read
    _pose_file(tmp_path / "model.json")
    _pose_file(tmp_path / "target.json")

    def planned(input: str, exemplar_pose: str, *options: str) -> list[str]:
        result = run("exemplar", str(tmp_path / input), str(tmp_path / "model.jpg"), "--exemplar-pose",
                     str(tmp_path / exemplar_pose), "-o", str(tmp_path / "out.png"), "--dry-run",
                     "--checkpoint", str(tmp_path), *options)
        return [line for line in result.stderr.splitlines() if line.startswith("warning:")]

    assert planned("edges.png", "model_edges.png", "--save-label") == [
        "warning: --save-label: not used with label or edge maps: only a pose is drawn, and a map is its own picture"]
    assert planned("target.json", "model.json", "--label-nc", "20") == [
        "warning: --label-nc: not used with poses: it is the number of classes of label maps"]
    assert planned("target.json", "model.json", "--save-label") == []
    assert planned("edges.png", "model_edges.png", "--label-nc", "20") == []
    # In a batch, an option that serves one pair is not warned of.
    csv = tmp_path / "pairs.csv"
    csv.write_text("input,exemplar,exemplar_pose,output\nedges.png,model.jpg,model_edges.png,a.png\n"
                   "target.json,model.jpg,model.json,b.png\n")
    result = run("exemplar", "--pairs", str(csv), "-o", str(tmp_path / "out"), "--dry-run", "--checkpoint",
                 str(tmp_path), "--save-label", "--label-nc", "20")
    assert "warning" not in result.stderr


@pytest.mark.parametrize("place", ["exemplar", "exemplar_pose", "input"])
def test_a_file_of_a_type_its_place_does_not_take_fails_the_plan(tmp_path, place):
    """An exemplar photo that is a pose file, say: --dry-run said it would run, and a real run
    loaded both networks before reading it as an image of an unsupported type."""
    (tmp_path / "model.jpg").write_bytes(b"")
    _pose_file(tmp_path / "model.json")
    _pose_file(tmp_path / "target.json")
    (tmp_path / "notes.yaml").write_text("pose: none\n")
    files = {"input": "target.json", "exemplar": "model.jpg", "exemplar_pose": "model.json"}
    files[place] = "target.json" if place == "exemplar" else "notes.yaml"
    result = run("exemplar", str(tmp_path / files["input"]), str(tmp_path / files["exemplar"]), "--exemplar-pose",
                 str(tmp_path / files["exemplar_pose"]), "-o", str(tmp_path / "out.png"), "--dry-run", "--json",
                 "--checkpoint", str(tmp_path))
    assert result.exit_code == 1
    record = json.loads(result.stdout)["results"][0]
    shown = "'.json'" if place == "exemplar" else "'.yaml'"
    assert record["status"] == "failed"
    assert record["error"].startswith(f"{tmp_path / files[place]}: unsupported file type ({shown}) (i2i reads .png")
    # A photo as INPUT with its pose is an image in INPUT's place: a pose file there is refused as such.
    result = run("exemplar", str(tmp_path / "notes.yaml"), str(tmp_path / "model.jpg"), "--input-pose",
                 str(tmp_path / "target.json"), "--exemplar-pose", str(tmp_path / "model.json"), "-o",
                 str(tmp_path / "out.png"), "--dry-run", "--checkpoint", str(tmp_path))
    assert result.exit_code == 1 and "notes.yaml: unsupported file type ('.yaml')" in result.stderr


def test_a_long_thin_map_is_laid_out_without_building_its_padded_square(tmp_path):
    """A map is laid out as the official code does, padded to a centred square and resized by
    nearest neighbour; padding first made a 20000x300 edge map a 20000x20000 float array (4.8 GB)
    to give a 512x512 one. The same pixels are picked from the map itself."""
    import cv2
    import numpy as np
    from PIL import Image

    from i2icli.imageio import Picture
    from i2icli.semantics.inputs import load_semantics

    rng = np.random.default_rng(0)
    for width, height, size in ((8000, 3, 64), (75, 110, 64), (33, 20, 96), (511, 512, 512), (7, 5, 128)):
        labels = rng.integers(0, 5, (height, width), dtype=np.uint8)
        path = tmp_path / f"labels_{width}x{height}.png"
        Image.fromarray(labels).save(path)
        semantics, peak = traced_peak(lambda: load_semantics(path, size=size, channels=5, frame=(1, 1), label_nc=5))
        official = cv2.resize(_official_square(labels, 0), (size, size), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(semantics.channels.argmax(axis=0), official)
        if width == 8000:
            assert peak < 16 * 2**20  # its padded square alone is 64 MB
        edges = rng.random((height, width, 3), dtype=np.float32)
        picture = Picture(np.round(edges * 255).astype(np.uint8))
        semantics = load_semantics("edges.png", size=size, channels=3, frame=(1, 1), picture=picture)
        official = cv2.resize(_official_square(picture.rgb, 0), (size, size), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(semantics.channels, official.transpose(2, 0, 1) / np.float32(255))


def test_a_long_thin_exemplar_is_laid_out_without_building_its_padded_square():
    """The exemplar photo is padded with the official grey to a centred square and resized
    bicubically; padding first made a 20000x300 photo a 20000x20000 array (1.2 GB) to give a
    512x512 one. The pixels are PIL's own for the padded square, to the bit."""
    import numpy as np
    from PIL import Image

    from i2icli.imageio import Picture
    from i2icli.pipelines.exemplar import exemplar_tensor
    from i2icli.semantics.pose import PAD_VALUE

    rng = np.random.default_rng(0)
    for width, height, size in ((6000, 4, 64), (4, 6000, 64), (75, 110, 64), (300, 37, 96), (640, 640, 512),
                                (512, 300, 512), (20, 31, 160), (1, 1, 64)):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        laid_out, peak = traced_peak(lambda: exemplar_tensor(Picture(rgb), size))
        square = Image.fromarray(_official_square(rgb, PAD_VALUE)).resize((size, size), Image.Resampling.BICUBIC)
        official = np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        assert np.array_equal(laid_out, official), (width, height, size)
        if max(width, height) == 6000:
            assert peak < 16 * 2**20  # its padded square alone is 108 MB


@pytest.mark.parametrize("given", ["WALK_CANDIDATE.TXT", "WALK_Subset.txt"])
def test_an_official_pose_pair_named_in_upper_case_is_planned(tmp_path, given):
    """Copies made on Windows may upper-case NAME_candidate.txt / NAME_subset.txt; such a pair was
    refused as "not a pose file"."""
    (tmp_path / "model.jpg").write_bytes(b"")  # looked for, never read
    _pose_file(tmp_path / "model.json")
    (tmp_path / "WALK_CANDIDATE.TXT").write_text("100 100 0.9 0\n")
    (tmp_path / "WALK_Subset.txt").write_text(" ".join(["0"] + ["-1"] * 17 + ["1", "1"]) + "\n")
    result = run("exemplar", str(tmp_path / given), str(tmp_path / "model.jpg"), "--exemplar-pose",
                 str(tmp_path / "model.json"), "-o", str(tmp_path / "out.png"), "--checkpoint",
                 str(tmp_path / "never-loaded"), "--device", "cpu", "--dry-run", "--json")
    statuses = [record["status"] for record in json.loads(result.stdout)["results"]]
    assert statuses == ["would run"], result.stdout
    # Into a folder, the pair is named WALK, as a lower-case pair is, not WALK_CANDIDATE.
    result = run("exemplar", str(tmp_path / given), str(tmp_path / "model.jpg"), "--exemplar-pose",
                 str(tmp_path / "model.json"), "-o", str(tmp_path / "results"), "--checkpoint",
                 str(tmp_path / "never-loaded"), "--device", "cpu", "--dry-run", "--json")
    [record] = json.loads(result.stdout)["results"]
    assert record["output"] == str(tmp_path / "results" / "WALK_model.png"), record
