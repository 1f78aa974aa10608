"""The Python API: what `import i2icli` exports and costs, and the README's Python examples, run
against tiny random checkpoints."""

from __future__ import annotations

import functools
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS

import i2icli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _python_section() -> str:
    """The README's "Use from Python" section ("" if it has none: the tests below then fail)."""
    start = README.find("\n## Use from Python")
    return "" if start < 0 else README[start:README.index("\n## ", start + 1)]


PYTHON_SECTION = _python_section()
EXAMPLES_IN_README = re.findall(r"```python\n(.*?)```", PYTHON_SECTION, re.S)


def _example(containing: str) -> str:
    (found,) = [code for code in EXAMPLES_IN_README if containing in code]
    return found


def _run(code: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


# --------------------------------------------------------------------------- the package


def test_importing_the_package_imports_neither_torch_nor_numpy():
    code = "import sys, i2icli; assert not {'torch', 'numpy', 'cv2'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves_to_what_its_module_defines():
    assert i2icli.__all__[0] == "__version__" and len(set(i2icli.__all__)) == len(i2icli.__all__)
    for name in i2icli.__all__[1:]:
        value = getattr(i2icli, name)
        assert value.__name__ == name, name
        assert value is getattr(sys.modules[value.__module__], name), name
    star: dict[str, object] = {}
    exec("from i2icli import *", star)
    assert set(i2icli.__all__) <= set(star)
    assert set(i2icli.__all__) <= set(dir(i2icli))


def test_a_name_that_is_not_public_is_an_attribute_error_and_submodules_still_import():
    with pytest.raises(AttributeError, match="no attribute 'restore_stages'"):
        i2icli.restore_stages  # noqa: B018
    from i2icli import weights

    assert weights.__name__ == "i2icli.weights"


def test_every_public_callable_has_a_docstring_of_its_own():
    missing = []
    for name in i2icli.__all__[1:]:
        value = getattr(i2icli, name)
        doc = inspect.getdoc(value) or ""
        if not doc or doc.startswith(f"{name}("):  # a dataclass's generated signature is no docstring
            missing.append(name)
        if inspect.isclass(value) and not issubclass(value, Exception):
            for member, attribute in vars(value).items():
                function = getattr(attribute, "__func__", attribute)
                if not member.startswith("_") and inspect.isfunction(function) and not function.__doc__:
                    missing.append(f"{name}.{member}")
    assert missing == []


def test_the_pipelines_take_a_picture_made_from_a_numpy_array(tiny_env, landmarks_detector):
    """What a script has in hand: an RGB uint8 array, also a view of another array (a BGR frame
    reversed), which is not contiguous."""
    from i2icli import Picture, RestorePipeline, RestoreSettings

    landmarks_detector([OLD_PHOTO_LANDMARKS])
    bgr = cv2.imread(str(EXAMPLES / "old_photo.jpg"))
    pipeline = RestorePipeline.load(bg_model=None, parser=None, device="cpu", settings=RestoreSettings(upscale=1))
    for rgb in (np.ascontiguousarray(bgr[:, :, ::-1]), bgr[:, :, ::-1]):
        result = pipeline.restore(Picture(rgb))
        assert result.face_count == 1
        assert result.picture.rgb.shape == bgr.shape and result.picture.rgb.dtype == np.uint8
        assert result.picture.alpha is None
    alpha = np.full(bgr.shape[:2], 255, np.uint8)
    alpha[:40] = 0
    kept = pipeline.restore(Picture(bgr[:, :, ::-1], alpha=alpha)).picture.alpha
    assert kept.dtype == np.uint8 and np.array_equal(kept[:30], alpha[:30]) and np.array_equal(kept[-30:], alpha[-30:])


def test_the_exemplar_pair_is_read_alike_from_files_and_from_pictures(tmp_path):
    """A script may hold the photo or the map already (a piped image in the CLI too): its semantics
    are those of the file it came from, and a pose's frame is the photo's size."""
    from cocosnet_checkpoints import write_checkpoint_dir
    from test_exemplar_cli import _pose

    from i2icli import ExemplarPipeline, ExemplarSettings, Picture, read_image

    pipeline = ExemplarPipeline.load(write_checkpoint_dir(tmp_path / "model"), device="cpu",
                                     settings=ExemplarSettings(size=64, iterations=1))
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "model.png"), rng.integers(0, 255, (110, 75, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "person.png"), rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    exemplar, person = read_image(tmp_path / "model.png"), read_image(tmp_path / "person.png")
    pose, model_pose = _pose(tmp_path / "person.json", 5), _pose(tmp_path / "model.json")

    from_files = pipeline.read_pair(tmp_path / "person.png", exemplar, model_pose, input_pose=pose)
    from_pictures = pipeline.read_pair(Picture(person.rgb), exemplar, model_pose, input_pose=pose)
    for by_path, by_picture in zip(from_files, from_pictures):
        assert by_path.kind == by_picture.kind == "pose"
        assert np.array_equal(by_path.channels, by_picture.channels)
    assert from_files[0].frame == from_pictures[0].frame == (90, 120)  # the photo's, not the exemplar's
    assert from_files[1].frame == (75, 110)
    alone, _ = pipeline.read_pair(pose, exemplar, model_pose)  # a pose file alone: in the exemplar's frame
    assert alone.frame == (75, 110)
    result = pipeline.translate(*from_pictures[:1], exemplar, from_pictures[1])
    assert result.picture.rgb.shape == (64, 48, 3)  # the person photo's 3:4


@pytest.mark.parametrize("upscale", [0, -2, float("nan"), float("inf")])
def test_a_restore_factor_no_image_can_be_scaled_by_is_refused_when_set(upscale):
    from i2icli import RestoreSettings

    with pytest.raises(ValueError, match="upscale must be a number from 1 to 8"):
        RestoreSettings(upscale=upscale)


def _tiny_paired_checkpoint(path: Path) -> Path:
    """An `i2i train paired` checkpoint of a tiny random GRIT for 4-class label maps, 32 px."""
    from i2icli.archs.grit import GRITConfig, GRITGenerator

    config = GRITConfig(input_channels=4, image_size=32, base_channels=8, max_channels=16, style_dim=4,
                        style_channels=8, mapping_dim=16, disc_base_channels=8, disc_max_channels=16)
    torch.manual_seed(0)
    generator = GRITGenerator(config)
    with torch.no_grad():  # noise strengths included: they start at zero, and the samples would not differ
        for parameter in generator.parameters():
            parameter.normal_(0, 0.3) if parameter.ndim > 1 else parameter.uniform_(-0.5, 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"method": "paired", "config": {"model": config.to_dict()}, "G_ema": generator.state_dict()}, path)
    return path


def test_the_loaders_take_a_path_as_they_take_its_string(tiny_env, tmp_path):
    """Scripts hold paths as Path objects: a checkpoint named by one is loaded, or refused as missing,
    as its string would be (not an AttributeError from deep inside)."""
    from i2icli import PairedTranslator, RestorePipeline, RestoreSettings, WeightsError

    aligned = dict(device="cpu", settings=RestoreSettings(aligned=True))  # the face network alone
    assert RestorePipeline.load(model=tiny_env.files["gfpgan-1.4"], **aligned).detector is None
    with pytest.raises(WeightsError, match="nothere.pth"):
        RestorePipeline.load(model=tmp_path / "nothere.pth", **aligned)
    translator = PairedTranslator.load(_tiny_paired_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt").parent.parent)
    assert translator.size == 32
    assert PairedTranslator.load(tmp_path / "run" / "checkpoints" / "latest.pt").size == 32
    with pytest.raises(WeightsError, match="nothere.pt: no such checkpoint file"):
        PairedTranslator.load(tmp_path / "nothere.pt")


# --------------------------------------------------------------------------- the README's examples


def test_the_readme_shows_every_pipeline_and_every_example_is_tested():
    for name in ("RestorePipeline", "ExemplarPipeline", "InvertPipeline", "LRTranslator", "PairedTranslator"):
        assert f"`{name}" in PYTHON_SECTION, name
    # Each example is run by one test below: a new one needs a test too.
    assert len(EXAMPLES_IN_README) == 5


@pytest.fixture
def in_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_restores_a_file(tiny_env, landmarks_detector, in_folder, capsys):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    shutil.copy(EXAMPLES / "old_photo.jpg", in_folder / "old_photo.jpg")
    namespace = _run(_example('read_image("old_photo.jpg")'))
    assert capsys.readouterr().out == "faces restored: 1\n"
    written = cv2.imread(str(in_folder / "old_photo_restored.png"))
    assert written.shape == (682, 682, 3)  # 2x the 341 px photo
    result = namespace["result"]
    assert result.picture.rgb.dtype == np.uint8 and np.array_equal(written[:, :, ::-1], result.picture.rgb)


def test_the_readme_restores_the_frames_of_a_video(tiny_env, landmarks_detector, in_folder):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    frame = cv2.imread(str(EXAMPLES / "old_photo.jpg"))[:340, :340]  # even sides, as video codecs want
    video = cv2.VideoWriter("home_movie.mp4", cv2.VideoWriter_fourcc(*"mp4v"), 10, (340, 340))
    video.write(frame)
    video.release()
    namespace = _run(_example("home_movie.mp4"))
    result = namespace["result"]
    assert result.face_count == 1
    assert result.picture.rgb.shape == (340, 340, 3) and result.picture.rgb.dtype == np.uint8
    restored = cv2.VideoCapture(str(in_folder / "home_movie_restored.mp4"))
    frames = []
    while (read := restored.read())[0]:
        frames.append(read[1])
    assert len(frames) == 1 and frames[0].shape == (340, 340, 3)
    # The face was restored (by random networks): the frame changed around it, not elsewhere.
    changed = np.abs(frames[0].astype(int) - frame.astype(int)).max(axis=2) > 40
    assert changed[60:100, 130:170].mean() > 0.5 and changed[300:, :60].mean() < 0.05


def test_the_readme_translates_a_label_map_with_a_trained_run(in_folder):
    _tiny_paired_checkpoint(in_folder / "runs" / "faces-grit" / "checkpoints" / "latest.pt")
    cv2.imwrite("mask.png", np.repeat(np.arange(4, dtype=np.uint8), 12)[None].repeat(48, 0))
    namespace = _run(_example("PairedTranslator"))
    assert namespace["result"].seeds == [0, 1, 2, 3]
    for seed in range(4):
        written = cv2.imread(str(in_folder / f"face-seed{seed}.png"))
        assert written.shape == (32, 32, 3)
    first, second = (cv2.imread(str(in_folder / f"face-seed{seed}.png")) for seed in (0, 1))
    assert not np.array_equal(first, second)  # each sample from its own noise


def test_the_readme_translates_a_pose_with_an_exemplar(in_folder, monkeypatch):
    from cocosnet_checkpoints import write_checkpoint_dir
    from test_exemplar_cli import _pose

    from i2icli.pipelines import exemplar

    # The example's default settings at 64 px and one refinement round: 512 px takes a minute on a CPU.
    monkeypatch.setattr(exemplar, "ExemplarSettings", functools.partial(exemplar.ExemplarSettings, size=64, iterations=1))

    write_checkpoint_dir(in_folder / "deepfashionhd")
    photo = np.random.default_rng(0).integers(0, 255, (110, 75, 3), dtype=np.uint8)
    cv2.imwrite("model.jpg", photo)
    _pose(in_folder / "model.json")
    _pose(in_folder / "target.json", 5)
    namespace = _run(_example("ExemplarPipeline"))
    result = namespace["result"]
    assert namespace["semantic"].kind == namespace["exemplar_semantic"].kind == "pose"
    # The pose alone is drawn in the exemplar's frame: the result has the photo's aspect ratio.
    assert result.picture.rgb.shape == (64, 44, 3) and result.picture.rgb.dtype == np.uint8
    assert cv2.imread(str(in_folder / "model_target.png")).shape == (64, 44, 3)


def test_the_readme_catches_a_user_error(in_folder, capsys):
    _run(_example("except I2IError"))
    assert capsys.readouterr().out == "scan.tif: no such file\ncheck the path\n"
