"""The Python API: what `import i2icli` exports and costs, and the pipelines called from a script."""

from __future__ import annotations

import inspect
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS

import i2icli

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
