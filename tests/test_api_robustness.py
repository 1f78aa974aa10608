"""The Python API behaves alike in every pipeline: running out of device memory, settings and
arguments a script gets wrong, and calls that leave nothing behind for the next one. Every
pipeline here is built from tiny random networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from conftest import CommandRunner
from test_invert import files, networks, pipeline_with  # noqa: F401  (fixtures used below)
from test_python_api import _tiny_paired_checkpoint

from i2icli import (
    DeviceError,
    ExemplarPipeline,
    ExemplarSettings,
    LRTranslator,
    PairedTranslator,
    Picture,
    RestorePipeline,
    RestoreSettings,
)
from i2icli.archs.lr_conditioned import LRConditionedGenerator, LRTranslatorConfig
from i2icli.pipelines.memory import reports_out_of_memory
from i2icli.pipelines.memory_hints import MemoryHint

CPU = torch.device("cpu")
TINY_LR = LRTranslatorConfig(hr_size=32, lr_size=8, max_channels=16, base_channels=4, disc_base_channels=8,
                             disc_max_channels=16)


def _photo(seed: int, height: int = 48, width: int = 40) -> Picture:
    return Picture(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _label_map(seed: int) -> Picture:
    classes = np.random.default_rng(seed).integers(0, 4, (40, 40, 1), dtype=np.uint8)
    return Picture(np.repeat(classes, 3, axis=2))  # shown as greys, as a class-index map is


def _lr_translator() -> LRTranslator:
    torch.manual_seed(0)
    return LRTranslator(LRConditionedGenerator(TINY_LR), TINY_LR, device=CPU)


def _exemplar_pipeline(folder: Path) -> ExemplarPipeline:
    from cocosnet_checkpoints import write_checkpoint_dir

    return ExemplarPipeline.load(write_checkpoint_dir(folder), device="cpu",
                                 settings=ExemplarSettings(size=64, iterations=1))


def _exemplar_call(pipeline: ExemplarPipeline, seed: int) -> Any:
    from test_exemplar_cli import _pose

    exemplar = _photo(seed, 110, 75)
    folder = Path(pipeline.source).parent
    pose, exemplar_pose = _pose(folder / f"target{seed}.json", 5 + seed), _pose(folder / f"model{seed}.json")
    semantic, exemplar_semantic = pipeline.read_pair(pose, exemplar, exemplar_pose)
    return pipeline.translate(semantic, exemplar, exemplar_semantic)


# --------------------------------------------------------------------------- out of device memory

OUT_OF_MEMORY = "CUDA out of memory. Tried to allocate 2.00 GiB"


def _run_out_of_memory(network: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, method: str = "forward",
                       error: Exception | None = None) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise error or torch.OutOfMemoryError(f"{OUT_OF_MEMORY}\nmore detail")

    monkeypatch.setattr(network, method, fail)


def _pipelines_that_run_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inversion_networks: dict,
                            error: Exception | None = None) -> dict[str, Callable[[], Any]]:
    """A call of each pipeline whose network fails with ``error`` (by default, out of memory)."""
    calls: dict[str, Callable[[], Any]] = {}

    restore = RestorePipeline.load(device="cpu", settings=RestoreSettings(aligned=True))
    _run_out_of_memory(restore.face_model, monkeypatch, error=error)
    calls["restore"] = lambda: restore.restore(_photo(0, 64, 64))

    exemplar = _exemplar_pipeline(tmp_path / "cocosnet")
    _run_out_of_memory(exemplar.generator, monkeypatch, error=error)
    calls["exemplar"] = lambda: _exemplar_call(exemplar, 0)

    invert = pipeline_with(inversion_networks)
    _run_out_of_memory(invert.correspondence, monkeypatch, error=error)
    calls["invert"] = lambda: invert.invert(_photo(0, 32, 32), _photo(1, 32, 32))

    lr = _lr_translator()
    _run_out_of_memory(lr.generator, monkeypatch, error=error)
    calls["translate-lr"] = lambda: lr.translate(_photo(0), _photo(1))

    paired = PairedTranslator.load(_tiny_paired_checkpoint(tmp_path / "grit.pt"), device="cpu")
    _run_out_of_memory(paired.generator, monkeypatch, "reconstruct", error=error)
    calls["paired"] = lambda: paired.translate(_label_map(0))
    return calls


def test_every_pipeline_reports_the_device_running_out_of_memory_as_a_device_error(
        tiny_env, tmp_path, monkeypatch, networks):  # noqa: F811
    """A script catches I2IError (or DeviceError) for what it can act on: torch's own error,
    which restore alone used to turn into one, would pass it by."""
    for name, call in _pipelines_that_run_out(tmp_path, monkeypatch, networks).items():
        with pytest.raises(DeviceError) as caught:
            call()
        error = caught.value
        assert error.message.startswith("the device cpu ran out of memory"), name
        assert f"({OUT_OF_MEMORY})" in error.message and "\n" not in str(error), name
        assert error.hint and "--device cpu" in error.hint, name
        # Nothing of the failed call is kept alive by the error (its tensors, through a traceback).
        assert error.__cause__ is None and error.__context__ is None, name


def test_loading_models_that_do_not_fit_on_the_device_is_a_device_error(tiny_env, tmp_path, monkeypatch, files):  # noqa: F811
    from cocosnet_checkpoints import write_checkpoint_dir

    from i2icli import InvertPipeline, InvertSettings

    lr_checkpoint = tmp_path / "lr.pt"
    torch.save(LRConditionedGenerator(TINY_LR).state_dict(), lr_checkpoint)
    paired_checkpoint = _tiny_paired_checkpoint(tmp_path / "grit.pt")
    cocosnet = write_checkpoint_dir(tmp_path / "cocosnet")
    loads = {
        "restore": lambda: RestorePipeline.load(device="cpu", settings=RestoreSettings(aligned=True)),
        "exemplar": lambda: ExemplarPipeline.load(cocosnet, device="cpu", settings=ExemplarSettings(size=64)),
        "invert": lambda: InvertPipeline.load(generator=files["generator"], correspondence=files["vgg19"],
                                              perceptual=files["vgg16"], scorer=files["fid"], device="cpu",
                                              settings=InvertSettings(layers=(2, 4), size=32, aligned=True)),
        "translate-lr": lambda: LRTranslator.load(lr_checkpoint, lr_size=8, device="cpu"),
        "paired": lambda: PairedTranslator.load(paired_checkpoint, device="cpu"),
    }
    _run_out_of_memory(torch.nn.Module, monkeypatch, "to")
    for name, load in loads.items():
        with pytest.raises(DeviceError) as caught:
            load()
        assert caught.value.message == f"the device ran out of memory ({OUT_OF_MEMORY})", name
        assert caught.value.hint == "close other programs that use the GPU, or use --device cpu", name


class _NestedCalls:
    """A pipeline whose public call makes tensors and hands them to another public call, as
    LRTranslator.translate does to translate_tensors."""

    device = CPU

    @reports_out_of_memory(MemoryHint("use a smaller --size"))
    def outer(self, side: int) -> None:
        sources = torch.zeros(1, 3, side, side)
        self.inner(sources, sources + 1)

    @reports_out_of_memory(MemoryHint("use a smaller --size"))
    def inner(self, sources: torch.Tensor, targets: torch.Tensor) -> None:
        batch = torch.cat([sources, targets])
        raise torch.OutOfMemoryError(f"{OUT_OF_MEMORY} for {batch.shape[0]} images")


def _tensors_in_frames(error: BaseException) -> list[str]:
    """The names of the tensors that ``error``'s traceback keeps alive, frame by frame."""
    found = []
    trace = error.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        for name, value in frame.f_locals.items():
            held = value if isinstance(value, (tuple, list)) else list(value.values()) if isinstance(value, dict) else [value]
            found += [f"{frame.f_code.co_name}: {name}" for item in held if isinstance(item, torch.Tensor)]
        trace = trace.tb_next
    return found


def test_an_error_passed_on_by_an_outer_call_keeps_none_of_its_tensors():
    """The inner call's DeviceError went through the outer call's frames, and its traceback kept
    the outer call's tensors (and the inner call's arguments) alive for as long as a script held it."""
    with pytest.raises(DeviceError) as caught:
        _NestedCalls().outer(8)
    error = caught.value
    assert error.message == f"the device cpu ran out of memory ({OUT_OF_MEMORY} for 2 images)"
    assert error.__cause__ is None and error.__context__ is None
    assert _tensors_in_frames(error) == []
    # Tensors a script made for the call alone are let go of too: the error keeps the call's frame.
    with pytest.raises(DeviceError) as caught:
        _NestedCalls().inner(torch.zeros(1, 3, 8, 8), targets=torch.ones(1, 3, 8, 8))
    assert _tensors_in_frames(caught.value) == []


def test_other_runtime_errors_are_not_renamed(tiny_env, tmp_path, monkeypatch, networks):  # noqa: F811
    bug = RuntimeError("expected input[1, 4, 8, 8] to have 3 channels")
    for name, call in _pipelines_that_run_out(tmp_path, monkeypatch, networks, error=bug).items():
        with pytest.raises(RuntimeError, match="to have 3 channels") as caught:
            call()
        assert not isinstance(caught.value, DeviceError), name


def test_the_command_line_prints_the_pipelines_one_line(tmp_path, monkeypatch):
    import cv2

    from i2icli.archs.grit import GRITGenerator
    from i2icli.cli.app import app

    checkpoint = _tiny_paired_checkpoint(tmp_path / "grit.pt")
    cv2.imwrite(str(tmp_path / "mask.png"), np.repeat(np.arange(4, dtype=np.uint8), 12)[None].repeat(48, 0))
    _run_out_of_memory(GRITGenerator, monkeypatch, "reconstruct")
    result = CommandRunner().invoke(app, ["paired", str(tmp_path / "mask.png"), "-c", str(checkpoint),
                                          "-o", str(tmp_path / "out.png"), "--device", "cpu"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == (f"error: {tmp_path / 'mask.png'}: the device cpu ran out of memory ({OUT_OF_MEMORY}) — "
                         "use a smaller --size, or --device cpu")
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- settings and arguments


@pytest.mark.parametrize(("field", "value", "message"), [
    ("strength", 1.5, "strength must be a number from 0 to 1"),
    ("strength", -0.1, "strength must be a number from 0 to 1"),
    ("strength", float("nan"), "strength must be a number from 0 to 1"),
    ("threshold", 1.01, "threshold must be a number from 0 to 1"),
    ("threshold", float("nan"), "threshold must be a number from 0 to 1"),
    ("min_face_size", -1, "min_face_size must be a finite number of at least 0"),
    ("min_face_size", float("inf"), "min_face_size must be a finite number of at least 0"),
    ("detect_max_side", -5, r"detect_max_side must be a whole number of at least 0 \(0: full size\)"),
    ("detect_max_side", 640.5, "detect_max_side must be a whole number"),
    ("face_batch", -1, r"face_batch must be a whole number of at least 0 \(0: chosen from free memory\)"),
    ("face_batch", 2.0, "face_batch must be a whole number"),
])
def test_restore_settings_refuse_what_the_command_refuses(field, value, message):
    """A script's value failed later, after every model had loaded (a float face_batch in range(),
    say), or was used silently (a NaN strength restored the faces fully; a threshold over 1 found
    no face)."""
    with pytest.raises(ValueError, match=message):
        RestoreSettings(**{field: value})


def test_restore_settings_take_every_value_the_command_takes():
    RestoreSettings(upscale=8, strength=0, threshold=1, min_face_size=0, detect_max_side=0, face_batch=0)
    RestoreSettings(strength=1, threshold=0, min_face_size=1e6, detect_max_side=np.int64(640), face_batch=np.int32(3))


def test_the_command_refuses_a_strength_that_is_not_a_number(tmp_path):
    """The settings refuse NaN; the command must do so first, as a usage error, for a ValueError
    from the settings would reach the user as a traceback."""
    from i2icli.cli.app import app

    result = CommandRunner().invoke(app, ["restore", str(tmp_path / "a.png"), "--strength", "nan"])
    assert result.exit_code == 2 and "nan is not a finite number" in result.output


@pytest.mark.parametrize(("settings", "message"), [
    ({"seed": -5}, "seed must be a whole number of at least 0"),  # random.Random(-5) is Random(5)
    ({"seed": 2**63}, f"seed must be at most {2**63 - 1}"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"iterations": 2.0}, "iterations must be a whole number of at least 1"),
    ({"size": 64.0}, "size must be a multiple of 32"),
])
def test_exemplar_settings_refuse_seeds_and_counts_the_command_refuses(settings, message):
    with pytest.raises(ValueError, match=message):
        ExemplarSettings(**settings)


@pytest.mark.parametrize(("settings", "message"), [
    ({"seed": -1}, "--seed must be a whole number of at least 0"),
    ({"codes": 2.5}, "--codes must be at least 1"),
])
def test_invert_settings_refuse_seeds_and_counts_the_command_refuses(settings, message):
    from i2icli import InvertSettings

    with pytest.raises(ValueError, match=message):
        InvertSettings(**settings)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"samples": 0}, "samples must be a whole number of at least 1"),
    ({"samples": 2.0}, "samples must be a whole number of at least 1"),
    ({"seed": -1}, "seed must be a whole number of at least 0"),
    ({"seed": 2**63 - 2, "samples": 4}, f"seed must be at most {2**63 - 4} for 4 samples"),
    ({"samples": 1, "std_map": True}, "a standard-deviation map needs at least two samples"),
])
def test_paired_call_arguments_are_refused_before_any_work(tmp_path, monkeypatch, arguments, message):
    translator = PairedTranslator.load(_tiny_paired_checkpoint(tmp_path / "grit.pt"), device="cpu")
    _run_out_of_memory(translator.generator, monkeypatch, "reconstruct", error=AssertionError("not reached"))
    with pytest.raises(ValueError, match=message):
        translator.translate(_label_map(0), **arguments)


def _wrong_pictures(tmp_path: Path) -> list[tuple[Any, str]]:
    """What a script passes instead of a Picture, and how the error names it."""
    array = _photo(0).rgb
    return [("photo.png", "a path"), (tmp_path / "photo.png", "a path"), (array, "a NumPy array"),
            ([array], "a list")]


MAKING_A_PICTURE = "; read a file with read_image(path) or wrap an RGB array with Picture(array)"


def test_every_call_that_takes_a_picture_says_so_of_anything_else(tiny_env, tmp_path, networks):  # noqa: F811
    """A path or an array used to end in an AttributeError ('str' object has no attribute 'rgb')
    from deep inside, or worse, after a face detector had run."""
    import re

    restore = RestorePipeline.load(device="cpu", settings=RestoreSettings(aligned=True))
    exemplar = _exemplar_pipeline(tmp_path / "cocosnet")
    invert = pipeline_with(networks)
    lr = _lr_translator()
    paired = PairedTranslator.load(_tiny_paired_checkpoint(tmp_path / "grit.pt"), device="cpu")
    picture = _photo(1, 32, 32)
    calls = {  # call, what the message says the call takes
        "RestorePipeline.restore() takes a Picture": lambda wrong: restore.restore(wrong),
        "RestorePipeline.output_size() takes a Picture": lambda wrong: restore.output_size(wrong),
        "ExemplarPipeline.read_pair() takes the exemplar as a Picture":
            lambda wrong: exemplar.read_pair("target.json", wrong, "model.json"),
        "InvertPipeline.invert() takes the source as a Picture": lambda wrong: invert.invert(wrong, picture),
        "InvertPipeline.invert() takes the exemplar as a Picture": lambda wrong: invert.invert(picture, wrong),
        "LRTranslator.translate() takes the source as a Picture": lambda wrong: lr.translate(wrong, picture),
        "LRTranslator.translate() takes the target as a Picture": lambda wrong: lr.translate(picture, wrong),
        "PairedTranslator.translate() takes the label map as a Picture": lambda wrong: paired.translate(wrong),
        "PairedTranslator.translate() takes the style photo as a Picture":
            lambda wrong: paired.translate(_label_map(0), style=wrong),
        "PairedTranslator.style_code() takes the style photo as a Picture": lambda wrong: paired.style_code(wrong),
    }
    for wrong, named in _wrong_pictures(tmp_path):
        for takes, call in calls.items():
            with pytest.raises(TypeError, match=re.escape(f"{takes}, not {named}{MAKING_A_PICTURE}")):
                call(wrong)


def test_exemplar_translate_says_where_its_semantics_come_from(tmp_path):
    from test_exemplar_cli import _pose

    pipeline = _exemplar_pipeline(tmp_path / "cocosnet")
    exemplar = _photo(0, 110, 75)
    semantic, exemplar_semantic = pipeline.read_pair(_pose(tmp_path / "target.json", 5), exemplar,
                                                     _pose(tmp_path / "model.json"))
    with pytest.raises(TypeError, match=r"takes the input's semantics as read_pair\(\) returns them, not a path; "
                                        r"call read_pair\(input, exemplar, exemplar_pose\) first"):
        pipeline.translate(tmp_path / "target.json", exemplar, exemplar_semantic)
    with pytest.raises(TypeError, match="takes the exemplar's semantics as read_pair"):
        pipeline.translate(semantic, exemplar, "model.json")
    with pytest.raises(TypeError, match="takes the exemplar as a Picture, not a NumPy array"):
        pipeline.translate(semantic, exemplar.rgb, exemplar_semantic)


def test_a_flag_that_is_not_a_bool_is_refused_rather_than_taken_as_true(tmp_path):
    with pytest.raises(TypeError, match="exact must be True or False; got 'no'"):
        _lr_translator().translate(_photo(0), _photo(1), exact="no")
    paired = PairedTranslator.load(_tiny_paired_checkpoint(tmp_path / "grit.pt"), device="cpu")
    with pytest.raises(TypeError, match="std_map must be True or False; got 'False'"):
        paired.translate(_label_map(0), samples=2, std_map="False")
    assert _lr_translator().translate(_photo(0), _photo(1), exact=np.bool_(True)).exact


NOT_BOOLS = ["no", 0, 1, None]


def _settings_flags() -> list[Any]:
    from i2icli import InvertSettings

    flags = [(RestoreSettings, name) for name in ("only_center_face", "aligned", "keep_faces")]
    return [pytest.param(settings, name, value, id=f"{settings.__name__}.{name}={value!r}")
            for settings, name in [*flags, (InvertSettings, "aligned")] for value in NOT_BOOLS]


@pytest.mark.parametrize(("settings", "field", "value"), _settings_flags())
def test_settings_refuse_a_flag_that_is_not_a_bool(settings, field, value):
    """aligned="no" was taken as true: restore skipped face detection and treated the whole photo
    as one aligned face."""
    with pytest.raises(TypeError, match=f"{field} must be True or False; got {value!r}"):
        settings(**{field: value})
    assert getattr(settings(**{field: np.bool_(True)}), field)


@pytest.mark.parametrize("value", ["no", 0, 1])
def test_invert_settings_refuse_a_batch_choice_that_is_not_a_bool(value):
    from i2icli import InvertSettings

    with pytest.raises(TypeError, match=f"batch_hypotheses must be True or False; got {value!r}"):
        InvertSettings(batch_hypotheses=value)
    assert InvertSettings(batch_hypotheses=None).batch_hypotheses is None  # None: decided by the device


@pytest.mark.parametrize(("settings", "message"), [
    ({"upscale": True}, "upscale must be a number from 1 to 8; got True"),
    ({"upscale": "2"}, "upscale must be a number from 1 to 8; got '2'"),
])
def test_restore_settings_refuse_a_bool_for_a_number(settings, message):
    """upscale=True was taken as 1."""
    with pytest.raises(ValueError, match=message):
        RestoreSettings(**settings)


@pytest.mark.parametrize(("settings", "message"), [
    ({"lr": True}, "--lr and --temperature must be positive"),
    ({"temperature": True}, "--lr and --temperature must be positive"),
    ({"perceptual_weight": False}, "--perceptual-weight not negative"),
    ({"layers": (True, 4)}, "--layers must name distinct composing layers"),  # True == 1, a layer
    ({"layers": "45"}, "--layers must name distinct composing layers"),
])
def test_invert_settings_refuse_a_bool_for_a_number(settings, message):
    from i2icli import InvertSettings

    with pytest.raises(ValueError, match=message):
        InvertSettings(**settings)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"tile": True}, r"tile must be a whole number of at least 0 \(0: the whole image at once\)"),  # a 1 px tile
    ({"tile": 400.0}, "tile must be a whole number"),
    ({"max_memory": True}, "max_memory must be a finite number of at least 0; got True"),  # a 1 GB budget
])
def test_restore_load_refuses_a_bool_for_a_number_before_loading_anything(monkeypatch, arguments, message):
    from i2icli.pipelines import restore

    monkeypatch.setattr(restore, "load_checkpoint", lambda *args: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match=message):
        RestorePipeline.load(device="cpu", **arguments)


@pytest.mark.parametrize("value", NOT_BOOLS)
def test_lr_translator_load_refuses_an_align_faces_that_is_not_a_bool(tmp_path, value):
    """align_faces="no" loaded the face detector and aligned every face."""
    lr_checkpoint = tmp_path / "lr.pt"
    torch.save(LRConditionedGenerator(TINY_LR).state_dict(), lr_checkpoint)
    with pytest.raises(TypeError, match=f"align_faces must be True or False; got {value!r}"):
        LRTranslator.load(lr_checkpoint, lr_size=8, device="cpu", align_faces=value)


# --------------------------------------------------------------------------- calls share nothing


def _outputs(result: Any) -> list[np.ndarray]:
    """Every picture a result holds, as arrays."""
    pictures = getattr(result, "outputs", None) or [result.picture]
    return [picture.rgb for picture in pictures]


def _calls_with_fresh_pipelines(tmp_path: Path, inversion_networks: dict) -> dict[str, Callable[[], Callable]]:
    """For each pipeline, a factory of a fresh pipeline's call on input number ``seed``."""
    def restore() -> Callable:
        pipeline = RestorePipeline.load(device="cpu", settings=RestoreSettings(aligned=True, strength=0.7))
        return lambda seed: pipeline.restore(_photo(seed, 512, 512))

    def exemplar() -> Callable:
        pipeline = _exemplar_pipeline(tmp_path / "cocosnet")
        return lambda seed: _exemplar_call(pipeline, seed)

    def invert() -> Callable:
        pipeline = pipeline_with(inversion_networks, steps=2)
        return lambda seed: pipeline.invert(_photo(seed, 32, 32), _photo(seed + 10, 32, 32))

    def translate_lr() -> Callable:
        pipeline = _lr_translator()
        return lambda seed: pipeline.translate(_photo(seed), _photo(seed + 10), exact=bool(seed % 2))

    def paired() -> Callable:
        pipeline = PairedTranslator.load(_tiny_paired_checkpoint(tmp_path / "grit.pt"), device="cpu")
        return lambda seed: paired_call(pipeline, seed)

    def paired_call(pipeline: PairedTranslator, seed: int) -> Any:
        return pipeline.translate(_label_map(seed), style=_photo(seed + 10), samples=2, seed=seed)

    return {"restore": restore, "exemplar": exemplar, "invert": invert, "translate-lr": translate_lr,
            "paired": paired}


def test_a_pipeline_called_again_gives_what_a_fresh_one_gives(tiny_env, tmp_path, networks):  # noqa: F811
    """Nothing of one call is kept for the next (the per-image state on ``self`` that
    RealESRGANer and FaceRestoreHelper keep): a loaded pipeline's second call, with other inputs
    and arguments, is the first call of a newly loaded one."""
    for name, fresh in _calls_with_fresh_pipelines(tmp_path, networks).items():
        call = fresh()
        first, second = call(1), call(2)
        for again, alone in zip(_outputs(second), _outputs(fresh()(2))):
            assert np.array_equal(again, alone), name
        assert not np.array_equal(_outputs(first)[0], _outputs(second)[0]), name  # the inputs did differ
        for again, alone in zip(_outputs(call(1)), _outputs(first)):
            assert np.array_equal(again, alone), name


def test_one_pipeline_called_from_two_threads_at_once_gives_what_it_gives_alone(tiny_env, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    calls = _calls_with_fresh_pipelines(tmp_path, {})
    for name in ("restore", "exemplar", "translate-lr", "paired"):
        call = calls[name]()
        alone = [_outputs(call(seed)) for seed in (1, 2)]
        with ThreadPoolExecutor(2) as threads:
            together = [_outputs(result) for result in threads.map(call, (1, 2))]
        for expected, got in zip(alone, together):
            for a, b in zip(expected, got):
                # Equal to the level: threads may split a reduction differently and round apart.
                assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, name


def test_working_sizes_that_are_not_whole_numbers_are_refused_at_load(tmp_path):
    """64.0 passed the multiple-of check and failed later in a resize; 8.5 became the working size."""
    with pytest.raises(ValueError, match="--size 64.0: this model needs a multiple of"):
        PairedTranslator.load(_tiny_paired_checkpoint(tmp_path / "grit.pt"), size=64.0, device="cpu")
    for no_size in (0, False):  # were taken for "the training size"
        with pytest.raises(ValueError, match=f"--size {no_size}: this model needs a multiple of"):
            PairedTranslator.load(tmp_path / "grit.pt", size=no_size, device="cpu")
    lr_checkpoint = tmp_path / "lr.pt"
    torch.save(LRConditionedGenerator(TINY_LR).state_dict(), lr_checkpoint)
    with pytest.raises(ValueError, match="--lr-size 8.5 is not a whole number from 4 to 32"):
        LRTranslator.load(lr_checkpoint, lr_size=8.5, device="cpu")
    with pytest.raises(ValueError, match="--lr-size 64 is not a whole number from 4 to 32"):
        LRTranslator.load(lr_checkpoint, lr_size=64, device="cpu")


@pytest.mark.parametrize("label_nc", [True, 0, 2.0, "3"])
def test_read_pair_refuses_a_class_count_that_is_not_a_whole_number(tmp_path, label_nc):
    """True was taken for one class by a model of one input channel."""
    from test_exemplar_cli import _pose

    pipeline = _exemplar_pipeline(tmp_path / "cocosnet")
    with pytest.raises(ValueError, match=f"label_nc must be a whole number of at least 1; got {label_nc!r}"):
        pipeline.read_pair(_pose(tmp_path / "target.json", 5), _photo(0, 110, 75), _pose(tmp_path / "model.json"),
                           label_nc=label_nc)
