"""--dry-run says where each checkpoint the run would load comes from (here, to be downloaded, or
not to be had), and fails for one that cannot be had, without downloading, hashing or loading."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CommandRunner, fake_hub_cache

from i2icli import weights
from i2icli.cli.app import app

runner = CommandRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(autouse=True)
def nothing_fetched_or_opened(monkeypatch: pytest.MonkeyPatch):
    """A dry run that downloads, hashes or loads a checkpoint fails the test."""
    def refused(*args, **kwargs):
        raise AssertionError(f"a dry run touched a checkpoint: {args}")

    for name in ("fetch", "resolve", "sha256_of", "load_state_dict", "load_checkpoint_file", "_download_from_url",
                 "_reachable"):
        monkeypatch.setattr(weights, name, refused)
    only_local = weights._from_hub

    def from_hub(checkpoint, *, local_only):
        if not local_only:
            refused(checkpoint)
        return only_local(checkpoint, local_only=True)

    monkeypatch.setattr(weights, "_from_hub", from_hub)


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((24, 32, 3), 90, np.uint8))
    return path


def _checkpoint_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("checkpoint ")]


def test_restore_names_each_checkpoint_found_here(tiny_env, tmp_path):
    photo = _photo(tmp_path / "a.png")
    result = run("restore", str(photo), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{photo} → {tmp_path / 'out' / 'a.png'}"]  # one line per job, as before
    folder = tiny_env.folder
    assert _checkpoint_lines(result.stderr) == [
        f"checkpoint gfpgan-1.4: here ({folder / 'GFPGANv1.4.pth'})",
        f"checkpoint retinaface-resnet50: here ({folder / 'detection_Resnet50_Final.pth'})",
        f"checkpoint parsenet: here ({folder / 'parsing_parsenet.pth'})",
        f"checkpoint realesrgan-x2plus: here ({folder / 'RealESRGAN_x2plus.pth'})",
    ]
    assert not (tmp_path / "out").exists()


def test_restore_lists_only_what_its_options_load(tiny_env, tmp_path):
    photo = str(_photo(tmp_path / "a.png"))
    above_2x = run("restore", photo, "-s", "4", "--parser", "none", "--dry-run")
    assert [line.split(":")[0] for line in _checkpoint_lines(above_2x.stderr)] == [
        "checkpoint gfpgan-1.4", "checkpoint retinaface-resnet50", "checkpoint realesrgan-x4plus"]
    no_background = run("restore", photo, "--bg-model", "none", "--dry-run", "--json")
    assert [c["name"] for c in json.loads(no_background.stdout)["checkpoints"]] == [
        "gfpgan-1.4", "retinaface-resnet50", "parsenet"]
    aligned = run("restore", photo, "--aligned", "--dry-run", "--json")
    assert [c["name"] for c in json.loads(aligned.stdout)["checkpoints"]] == ["gfpgan-1.4"]


def test_the_json_document_says_where_each_checkpoint_is(tiny_env, tmp_path, monkeypatch):
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    fake_hub_cache(tmp_path / "hub", "i2i-tests/tiny", {"GFPGANv1.4.pth": tiny_env.files["gfpgan-1.4"]})
    result = run("restore", str(_photo(tmp_path / "a.png")), "--aligned", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["dry_run"], document["would_run"]) == (True, 1)
    [face] = document["checkpoints"]
    assert face["path"].startswith(str(tmp_path / "hub" / "models--i2i-tests--tiny"))
    assert {key: face[key] for key in ("option", "name", "file", "bytes", "status", "origin", "reason")} == {
        "option": "--model", "name": "gfpgan-1.4", "file": "GFPGANv1.4.pth",
        "bytes": tiny_env.files["gfpgan-1.4"].stat().st_size, "status": "here", "origin": None, "reason": None}


def test_a_checkpoint_not_here_would_be_downloaded_when_online(tiny_env, tmp_path, monkeypatch):
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    size = tiny_env.files["gfpgan-1.4"].stat().st_size
    result = run("restore", str(_photo(tmp_path / "a.png")), "--aligned", "--dry-run")
    assert result.exit_code == 0, result.output  # a download is no failure
    assert _checkpoint_lines(result.stderr) == [
        f"checkpoint gfpgan-1.4: would download GFPGANv1.4.pth ({size / 2**20:.1f} MB) from the Hub"]
    document = json.loads(run("restore", str(tmp_path / "a.png"), "--aligned", "--dry-run", "--json").stdout)
    assert [(c["status"], c["origin"], c["bytes"]) for c in document["checkpoints"]] == [("download", "the Hub", size)]


def test_offline_a_checkpoint_not_here_fails_the_dry_run(tiny_env, tmp_path, monkeypatch):
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    photo = str(_photo(tmp_path / "a.png"))
    result = run("restore", photo, "--aligned", "--dry-run")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{photo} → {Path('results') / 'a.png'}"]
    [error] = result.stderr.splitlines()
    assert error.startswith("error: checkpoint GFPGANv1.4.pth (gfpgan-1.4) is not on this machine and was not "
                            "downloaded: HF_HUB_OFFLINE is set")
    assert "unset HF_HUB_OFFLINE" in error and error.endswith("or pass a checkpoint path with --model")
    listed = run("restore", photo, "--aligned", "--dry-run", "--json")
    assert listed.exit_code == 1
    [face] = json.loads(listed.stdout)["checkpoints"]
    assert (face["status"], face["path"], face["reason"]) == (
        "missing", None, "not on this machine, and HF_HUB_OFFLINE is set")


def test_a_checkpoint_path_that_is_not_there_fails_the_dry_run(tiny_env, tmp_path):
    photo = str(_photo(tmp_path / "a.png"))
    gone = tmp_path / "gone.pth"
    result = run("restore", photo, "--model", str(gone), "--dry-run")
    assert result.exit_code == 1
    assert (f"error: {gone}: checkpoint file not found — check the path, or use a name from `i2i weights list`"
            in result.stderr.splitlines())
    assert "checkpoint retinaface-resnet50: here" in result.stderr  # the others are still said
    (tmp_path / "folder.pth").mkdir()
    folder = run("restore", photo, "--model", str(tmp_path / "folder.pth"), "--dry-run", "--json")
    assert folder.exit_code == 1
    assert json.loads(folder.stdout)["checkpoints"][0]["reason"] == f"{tmp_path / 'folder.pth'}: is a folder, not a checkpoint file"
    stand_in = tmp_path / "mine.pth"
    stand_in.write_bytes(b"not opened by a dry run")
    own = run("restore", photo, "--model", str(stand_in), "--dry-run")
    assert own.exit_code == 0, own.output
    assert f"checkpoint {stand_in}: here ({stand_in})" in _checkpoint_lines(own.stderr)


def test_a_name_given_to_the_wrong_option_fails_the_dry_run(tiny_env, tmp_path):
    result = run("restore", str(_photo(tmp_path / "a.png")), "--model", "parsenet", "--aligned", "--dry-run")
    assert result.exit_code == 1
    assert "error: parsenet is a ParseNet checkpoint, not a GFPGAN one" in result.stderr


def test_no_checkpoint_is_named_when_every_job_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("I2I_WEIGHTS_DIR", raising=False)
    photo = _photo(tmp_path / "a.png")
    _photo(tmp_path / "out" / "a.png")
    result = run("restore", str(photo), "-o", str(tmp_path / "out"), "--skip-existing", "--model", "./gone.pth",
                 "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoints"] == []


def _label(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((40, 40), np.uint8))
    return path


def test_a_training_run_stands_for_its_latest_checkpoint(tmp_path):
    label = _label(tmp_path / "labels" / "000.png")
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    latest.parent.mkdir(parents=True)
    latest.write_bytes(b"not opened by a dry run")
    result = run("paired", str(label), "-c", str(tmp_path / "run"), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert _checkpoint_lines(result.stderr) == [f"checkpoint {tmp_path / 'run'}: here ({latest})"]
    document = json.loads(run("paired", str(label), "-c", str(tmp_path / "run"), "-o", str(tmp_path / "out"),
                              "--dry-run", "--json").stdout)
    assert [(c["option"], c["status"], c["path"]) for c in document["checkpoints"]] == [
        ("--checkpoint", "here", str(latest))]


def test_a_training_run_that_is_not_there_fails_the_dry_run(tmp_path):
    label = str(_label(tmp_path / "labels" / "000.png"))
    missing = run("paired", label, "-c", str(tmp_path / "no-run"), "-o", str(tmp_path / "out"), "--dry-run")
    assert missing.exit_code == 1
    assert missing.stderr.splitlines() == [f"error: {tmp_path / 'no-run'}: no such checkpoint file or run folder — "
                                           "pass a checkpoint (or run folder) from `i2i train paired`"]
    (tmp_path / "empty-run").mkdir()
    empty = run("paired", label, "-c", str(tmp_path / "empty-run"), "-o", str(tmp_path / "out"), "--dry-run", "--json")
    assert empty.exit_code == 1
    [record] = json.loads(empty.stdout)["checkpoints"]
    assert record["status"] == "missing" and "no checkpoints/latest.pt in this folder" in record["reason"]


def test_translate_lr_names_its_run_and_the_detector_for_aligned_faces(tiny_env, tmp_path):
    photo = _photo(tmp_path / "a.png")
    (tmp_path / "run.pt").write_bytes(b"not opened by a dry run")
    args = ["translate-lr", str(photo), str(photo), "-c", str(tmp_path / "run.pt"), "-o", str(tmp_path / "out"),
            "--dry-run", "--json"]
    plain = json.loads(run(*args).stdout)
    assert [c["name"] for c in plain["checkpoints"]] == [str(tmp_path / "run.pt")]
    aligned = run(*args, "--align-faces")
    assert aligned.exit_code == 0, aligned.output
    assert [(c["option"], c["name"], c["status"]) for c in json.loads(aligned.stdout)["checkpoints"]] == [
        ("--checkpoint", str(tmp_path / "run.pt"), "here"), ("--detector", "retinaface-resnet50", "here")]
    gone = run(*args[:4], str(tmp_path / "gone"), *args[5:])
    assert gone.exit_code == 1 and f"{tmp_path / 'gone'}: no such checkpoint file or run folder" in gone.stderr


def test_exemplar_names_both_files_of_its_checkpoint_folder(tmp_path):
    for name in ("target.json", "model.json", "model.jpg"):
        (tmp_path / name).write_bytes(b"")  # a dry run reads none of them
    model = tmp_path / "model"
    model.mkdir()
    for name in ("latest_net_Corr.pth", "latest_net_G.pth"):
        (model / name).write_bytes(b"not opened by a dry run")
    args = ["exemplar", str(tmp_path / "target.json"), str(tmp_path / "model.jpg"), "--exemplar-pose",
            str(tmp_path / "model.json"), "-o", str(tmp_path / "out"), "--dry-run"]
    found = run(*args, "--checkpoint", str(model))
    assert found.exit_code == 0, found.output
    assert _checkpoint_lines(found.stderr) == [f"checkpoint {model / name}: here ({model / name})"
                                               for name in ("latest_net_Corr.pth", "latest_net_G.pth")]
    (model / "latest_net_G.pth").unlink()
    half = run(*args, "--checkpoint", str(model))
    assert half.exit_code == 1 and f"error: {model}: no latest_net_G.pth in this folder" in half.stderr
    manual = run(*args)  # the official model is a manual download, never fetched by name
    assert manual.exit_code == 1 and "cocosnet2-deepfashionhd is published only at" in manual.stderr


def test_invert_previews_its_one_output_and_the_networks_it_would_load(tiny_env, tmp_path):
    source, exemplar = _photo(tmp_path / "face.png"), _photo(tmp_path / "style.png")
    stand_ins = {}
    for option in ("--generator", "--correspondence-model", "--perceptual-model", "--score-model"):
        stand_ins[option] = tmp_path / f"{option.strip('-')}.pth"
        stand_ins[option].write_bytes(b"not opened by a dry run")
    args = ["invert", str(source), str(exemplar), "-o", str(tmp_path / "out"), "--dry-run",
            *(part for option, path in stand_ins.items() for part in (option, str(path)))]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{source} + {exemplar} → {tmp_path / 'out' / 'face_style.png'}"]
    document = json.loads(run(*args, "--json").stdout)
    assert [(c["option"], c["status"]) for c in document["checkpoints"]] == [
        ("--generator", "here"), ("--detector", "here"), ("--correspondence-model", "here"),
        ("--perceptual-model", "here"), ("--score-model", "here")]
    lean = json.loads(run(*args, "--json", "--aligned", "--perceptual-weight", "0").stdout)
    assert [c["option"] for c in lean["checkpoints"]] == ["--generator", "--correspondence-model", "--score-model"]
    assert not (tmp_path / "out").exists()


def test_invert_dry_run_fails_for_a_missing_image_or_checkpoint(tiny_env, tmp_path):
    source = str(_photo(tmp_path / "face.png"))
    gone = run("invert", source, str(tmp_path / "gone.png"), "--dry-run", "--json")
    assert gone.exit_code == 1 and f"error: {tmp_path / 'gone.png'}: no such file" in gone.stderr
    assert json.loads(gone.stdout)["checkpoints"] == []  # nothing would run, so nothing would load
    no_generator = run("invert", source, source, "--aligned", "--generator", str(tmp_path / "g.pth"), "--dry-run")
    assert no_generator.exit_code == 1
    assert f"error: {tmp_path / 'g.pth'}: checkpoint file not found" in no_generator.stderr


def test_translate_lr_loads_no_checkpoint_when_every_pair_is_skipped(tmp_path):
    """The run loaded it anyway, so offline, or with the run folder moved, a batch with nothing
    left to do failed; now the run and its preview agree that only --grid needs it then."""
    source, target = _photo(tmp_path / "s.png"), _photo(tmp_path / "t.png")
    _photo(tmp_path / "out" / "s__t.png")
    args = ["translate-lr", str(source), str(target), "-c", str(tmp_path / "moved-run"), "-o", str(tmp_path / "out"),
            "--skip-existing"]
    done = run(*args)
    assert done.exit_code == 0, done.output
    assert "skipped" in done.stderr
    preview = run(*args, "--dry-run", "--json")
    assert preview.exit_code == 0 and json.loads(preview.stdout)["checkpoints"] == []
    with_grid = run(*args, "--grid", str(tmp_path / "grid.png"), "--dry-run", "--json")
    assert with_grid.exit_code == 1
    assert [c["status"] for c in json.loads(with_grid.stdout)["checkpoints"]] == ["missing"]
