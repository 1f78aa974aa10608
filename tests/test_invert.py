"""`i2i invert` (Multiple GAN Inversion): warp, multi-code inversion, batched hypotheses, CLI and errors.

Every network is tiny or random: a 32 px StyleGAN2 saved from basicsr's original module (the
layout of the published FFHQ files), random VGG-16/19 and FID-Inception files in the official
layouts. What is checked is the method's mechanics, not the quality of a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS
from feature_checkpoints import FID_INCEPTION_FILE, VGG_FILES, random_fid_inception_state_dict, random_vgg_state_dict
from i2icli.archs.mgi import MultiCodeInversion, initial_codes
from i2icli.cli.app import app
from i2icli.faces.align import alignment_matrix, crop_face
from i2icli.faces.detect import DetectedFace
from i2icli.imageio import Picture, read_image
from i2icli.pipelines.correspondence import correspondence_features, soft_warp
from i2icli.pipelines.devices import cpu_has_native_bf16
from i2icli.pipelines.invert import (
    InvertPipeline,
    InvertSettings,
    build_generator,
    build_scorer,
    build_vgg,
    parse_layers,
)

runner = CliRunner()
GENERATOR_SIZE = 32  # 7 style convs: composing layers 1-6


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def fused_generator_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A 32 px StyleGAN2 in basicsr's original (fused-op) layout, every tensor seeded-random."""
    from i2icli import _compat  # noqa: F401  (basicsr imports a module new torchvision lacks)
    from basicsr.archs.stylegan2_arch import StyleGAN2Generator as FusedStyleGAN2

    torch.manual_seed(seed)
    network = FusedStyleGAN2(GENERATOR_SIZE, num_style_feat=16, num_mlp=2, channel_multiplier=1, narrow=1 / 32)
    state = network.state_dict()
    generator = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.startswith("style_mlp.") and key.endswith(".weight"):
            # Stored divided by the mapping's learning-rate multiplier (0.01), as basicsr keeps them.
            state[key] = torch.randn(value.shape, generator=generator) * 100
        elif key.endswith(("activate.bias", ".bias")) or key.endswith("conv1.weight") or ".weight" not in key:
            state[key] = torch.randn(value.shape, generator=generator) * 0.1 + (1.0 if "modulation.bias" in key else 0.0)
        else:
            state[key] = torch.randn(value.shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("invert-weights")
    paths = {
        "generator": folder / "StyleGAN2_32_tiny.pth",
        "vgg19": folder / VGG_FILES[19],
        "vgg16": folder / VGG_FILES[16],
        "fid": folder / FID_INCEPTION_FILE,
    }
    torch.save({"params_ema": fused_generator_state_dict()}, paths["generator"])
    torch.save(random_vgg_state_dict(19, seed=1), paths["vgg19"])
    torch.save(random_vgg_state_dict(16, seed=2), paths["vgg16"])
    torch.save(random_fid_inception_state_dict(seed=3), paths["fid"])
    return paths


@pytest.fixture(scope="module")
def networks(files):
    from i2icli import weights

    load = weights.load_state_dict
    return {
        "generator": build_generator(load(files["generator"])),
        "vgg19": build_vgg(19)(load(files["vgg19"])),
        "vgg16": build_vgg(16)(load(files["vgg16"])),
        "fid": build_scorer(load(files["fid"])),
    }


def pipeline_with(networks, detector=None, **settings) -> InvertPipeline:
    defaults = dict(layers=(2, 4), codes=3, steps=20, lr=0.05, size=32, aligned=detector is None)
    defaults.update(settings)
    return InvertPipeline(networks["generator"], networks["vgg19"], networks["vgg16"], networks["fid"],
                          detector=detector, device=torch.device("cpu"), settings=InvertSettings(**defaults))


def smooth_image(seed: int, size: int = 32) -> torch.Tensor:
    """A (1, 3, size, size) image in [-1, 1] with structure at several scales."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=generator)
    fine = torch.rand(1, 3, size, size, generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.7 * image + 0.3 * fine) * 2 - 1


def write_png(path: Path, image: torch.Tensor) -> Path:
    array = ((image[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path


# -- correspondence ---------------------------------------------------------------------------


def test_warp_of_an_image_onto_itself_is_the_image(networks):
    image = smooth_image(0)
    features = correspondence_features(networks["vgg19"], image)
    warped = soft_warp(features, features, image, temperature=1e4)
    assert (warped - image).abs().max() < 1e-3


def test_warp_follows_the_source_layout(networks):
    exemplar = smooth_image(1, 64)
    source = torch.roll(exemplar, shifts=(16, 8), dims=(2, 3))  # the same content, moved
    both = correspondence_features(networks["vgg19"], torch.cat([source, exemplar]))
    warped = soft_warp(both[:1], both[1:], exemplar, temperature=1e3)
    inner = (slice(None), slice(None), slice(24, 56), slice(16, 56))  # away from the wrapped borders
    assert (warped - source)[inner].abs().mean() < 0.5 * (exemplar - source)[inner].abs().mean()


def test_warp_in_row_blocks_equals_the_whole_matrix(networks):
    source, exemplar = smooth_image(2, 64), smooth_image(3, 64)
    both = correspondence_features(networks["vgg19"], torch.cat([source, exemplar]))
    # The definition, in float64, with the whole (HW)^2 matrix at once.
    queries = both[0].flatten(1).t().double()
    keys = both[1].flatten(1).double()
    weights = torch.softmax(100.0 * queries @ keys, dim=1)
    patches = torch.nn.functional.unfold(exemplar.double(), kernel_size=4, stride=4)[0].t()
    expected = torch.nn.functional.fold((weights @ patches).t()[None], (64, 64), kernel_size=4, stride=4).float()
    for chunk_bytes in (1 << 30, 4 * 256 * 7):  # all rows at once; 7 rows at a time
        warped = soft_warp(both[:1], both[1:], exemplar, temperature=100.0, chunk_bytes=chunk_bytes)
        # fp32 similarities differ from float64 in the last bit; alpha = 100 amplifies that.
        torch.testing.assert_close(warped, expected, rtol=0, atol=1e-3)


# -- multi-code inversion ---------------------------------------------------------------------


def test_checkpoint_from_the_original_module_loads_strictly(files):
    from i2icli import weights

    state = weights.load_state_dict(files["generator"])
    generator = build_generator(state)
    assert generator.out_size == GENERATOR_SIZE and generator.num_convs == 7
    assert generator(torch.zeros(1, 16)).shape == (1, 3, GENERATOR_SIZE, GENERATOR_SIZE)
    broken = dict(state)
    broken.pop("style_conv1.activate.bias")
    with pytest.raises(ValueError, match="activate.bias"):
        build_generator(broken)


def test_one_code_with_unit_weights_is_the_plain_render(networks):
    generator = networks["generator"]
    codes = initial_codes(generator, [3], 1, seed=5)
    model = MultiCodeInversion(generator, [3], codes)
    with torch.no_grad():
        torch.testing.assert_close(model(), generator(codes[:, 0]), rtol=0, atol=1e-6)


def test_hypotheses_in_one_batch_render_as_one_by_one(networks):
    generator = networks["generator"]
    layers = [1, 3, 6]
    model = MultiCodeInversion(generator, layers, initial_codes(generator, layers, 4, seed=1))
    with torch.no_grad():  # make the blend weights and rest latents differ from their start
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        batched = model()
        for index in range(len(layers)):
            torch.testing.assert_close(batched[index : index + 1], model.hypothesis(index)(), rtol=0, atol=1e-5)


def test_fitting_all_layers_at_once_equals_fitting_each_alone(networks):
    progress: list[tuple[int, int, list[float]]] = []
    together, together_losses = pipeline_with(networks, layers=(2, 5), steps=8, batch_hypotheses=True).fit(
        smooth_image(4), on_step=lambda step, total, losses: progress.append((step, total, losses)))
    assert [step for step, _, _ in progress] == list(range(1, 9)) and progress[-1][1] == 8
    for index, layer in enumerate((2, 5)):
        alone, alone_losses = pipeline_with(networks, layers=(layer,), steps=8).fit(smooth_image(4))
        torch.testing.assert_close(together[index : index + 1], alone, rtol=0, atol=2e-4)
        assert together_losses[index] == pytest.approx(alone_losses[0], rel=1e-3)


def test_one_after_another_reports_every_step_and_matches_one_batch(networks):
    progress: list[tuple[int, int, list[float]]] = []
    pipeline = pipeline_with(networks, layers=(2, 5), steps=4, batch_hypotheses=False)
    assert not pipeline.batches_hypotheses()
    sequential, losses = pipeline.fit(smooth_image(4), on_step=lambda *args: progress.append(args))
    assert [(step, total) for step, total, _ in progress] == [(step, 8) for step in range(1, 9)]
    assert np.isnan(progress[0][2][1]) and not np.isnan(progress[4][2][0])  # layer 5 waits for layer 2
    batched, batched_losses = pipeline_with(networks, layers=(2, 5), steps=4, batch_hypotheses=True).fit(smooth_image(4))
    torch.testing.assert_close(sequential, batched, rtol=0, atol=2e-4)
    assert losses == pytest.approx(batched_losses, rel=1e-3)


def test_inversion_loss_falls_and_the_render_approaches_its_target(networks):
    generator = networks["generator"]
    with torch.no_grad():  # a target the generator can reach, from codes the search does not start at
        target = generator(generator.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(9))))
    pipeline = pipeline_with(networks, layers=(3,), codes=4, steps=60, lr=0.05)
    history: list[float] = []
    renders, losses = pipeline.fit(target, on_step=lambda step, total, values: history.append(values[0]))
    assert len(history) == 60
    assert losses[0] < 0.5 * history[0]
    with torch.no_grad():
        start, _ = pipeline_with(networks, layers=(3,), codes=4, steps=0).fit(target)
    assert (renders - target).pow(2).mean() < 0.5 * (start - target).pow(2).mean()


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU would emulate bf16")
def test_bf16_inversion_also_converges(networks):
    generator = networks["generator"]
    with torch.no_grad():
        target = generator(generator.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(9))))
    history: list[float] = []
    pipeline = pipeline_with(networks, layers=(3,), codes=4, steps=40, precision="bf16")
    renders, losses = pipeline.fit(target, on_step=lambda step, total, values: history.append(values[0]))
    assert renders.dtype == torch.float32 and losses[0] < 0.5 * history[0]


def test_parse_layers():
    assert parse_layers("4-8") == (4, 5, 6, 7, 8)
    assert parse_layers("3,5, 9") == (3, 5, 9)
    assert parse_layers("6") == (6,)
    for bad in ("8-4", "a", "0", "3,3", "", "40"):
        with pytest.raises(ValueError):
            parse_layers(bad)
    with pytest.raises(ValueError, match="at most 32 composing layers") as caught:
        parse_layers("1-300000000")  # refused before the range is spelled out
    assert len(str(caught.value)) < 100


def test_layers_and_sizes_the_generator_cannot_do_are_refused(networks):
    with pytest.raises(ValueError, match="outside 1-6"):
        pipeline_with(networks, layers=(4, 7))
    with pytest.raises(ValueError, match="larger than"):
        pipeline_with(networks, size=64)
    with pytest.raises(ValueError, match="multiple of 8"):
        InvertSettings(size=36)


# -- the whole pipeline -------------------------------------------------------------------------


class _KnownFaceDetector:
    """Stands in for RetinaFace on the example photo, whose landmarks are known."""

    def detect(self, rgb, **_):
        box = np.array([120, 45, 180, 110], dtype=np.float32)
        return [DetectedFace(box=box, score=0.99, landmarks=OLD_PHOTO_LANDMARKS.copy())]


def test_faces_are_aligned_like_restore_aligns_them(networks):
    photo = read_image(EXAMPLES / "old_photo.jpg")
    pipeline = pipeline_with(networks, detector=_KnownFaceDetector(), steps=2, codes=2)
    result = pipeline.invert(photo, photo)
    expected = crop_face(photo.rgb, alignment_matrix(OLD_PHOTO_LANDMARKS))
    assert np.array_equal(result.source_face.rgb, expected)
    assert result.picture.rgb.shape == (GENERATOR_SIZE, GENERATOR_SIZE, 3)
    assert [h.layer for h in result.hypotheses] == [2, 4]
    assert result.layer == min(result.hypotheses, key=lambda h: h.score).layer


def test_no_face_is_a_clear_error(networks, tmp_path):
    class NoFaces:
        def detect(self, rgb, **_):
            return []

    picture = Picture(rgb=np.full((40, 40, 3), 128, np.uint8), source=tmp_path / "wall.png")
    from i2icli.errors import InputError

    with pytest.raises(InputError, match="no face found in the source"):
        pipeline_with(networks, detector=NoFaces()).invert(picture, picture)


# -- command line -------------------------------------------------------------------------------


def _model_options(files: dict[str, Path]) -> list[str]:
    return ["--generator", str(files["generator"]), "--correspondence-model", str(files["vgg19"]),
            "--perceptual-model", str(files["vgg16"]), "--score-model", str(files["fid"])]


def test_cli_writes_the_result_every_hypothesis_and_a_summary(files, tmp_path):
    source = write_png(tmp_path / "source.png", smooth_image(10, 48))
    exemplar = write_png(tmp_path / "exemplar.png", smooth_image(11, 48))
    target = tmp_path / "out" / "result.png"
    result = run("invert", str(source), str(exemplar), "-o", str(target), "--aligned", "--layers", "2-3",
                 "--codes", "2", "--steps", "3", "--size", "32", "--save-all", "--json", *_model_options(files))
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["ok"], document["skipped"], document["failed"]) == (1, 0, 0)
    [summary] = document["results"]
    assert summary["output"] == str(target) and summary["status"] == "ok" and summary["layer"] in (2, 3)
    assert isinstance(summary["seconds"], float) and set(summary["stages"]) == {"align", "warp", "invert", "score"}
    assert [h["layer"] for h in summary["hypotheses"]] == [2, 3]
    assert read_image(target).rgb.shape == (GENERATOR_SIZE, GENERATOR_SIZE, 3)
    for name in ("result_layer02.png", "result_layer03.png", "result_warped.png", "result_source_face.png",
                 "result_exemplar_face.png"):
        assert (target.parent / name).is_file(), name
    for name in ("warped", "source_face", "exemplar_face", "scores"):
        assert summary[name] == str(target.parent / f"result_{name}.{'json' if name == 'scores' else 'png'}")
    scores = json.loads((target.parent / "result_scores.json").read_text())
    assert scores["chosen_layer"] == summary["layer"]
    chosen = min(summary["hypotheses"], key=lambda h: h["frechet"])
    assert chosen["layer"] == summary["layer"]
    assert np.array_equal(read_image(target).rgb, read_image(chosen["file"]).rgb)


def test_cli_result_to_standard_output_is_the_file_it_would_write(files, tmp_path):
    source = write_png(tmp_path / "source.png", smooth_image(10, 48))
    exemplar = write_png(tmp_path / "exemplar.png", smooth_image(11, 48))
    args = ["invert", str(source), str(exemplar), "--aligned", "--layers", "2", "--codes", "2", "--steps", "2",
            "--size", "32", *_model_options(files)]
    assert run(*args, "-o", str(tmp_path / "result.png")).exit_code == 0
    piped = run(*args, "-o", "-")
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout_bytes == (tmp_path / "result.png").read_bytes()
    assert "→ standard output" in piped.stderr and not Path("-").exists()
    for extra, expected in ((["--json"], "--json and -o - would both write to standard output"),
                            (["--save-all"], "--save-all writes files beside the output")):
        refused = run(*args, "-o", "-", *extra)
        assert refused.exit_code == 2 and refused.stdout_bytes == b"", extra
        assert expected in refused.stderr, extra


def test_cli_names_a_detector_that_aligned_leaves_unused(files, tmp_path):
    source = write_png(tmp_path / "source.png", smooth_image(10, 48))
    result = run("invert", str(source), str(source), "-o", str(tmp_path / "out.png"), "--aligned", "--layers", "2",
                 "--codes", "2", "--steps", "1", "--size", "32", "--detector", "other.pth", *_model_options(files))
    assert result.exit_code == 0, result.stderr
    assert "warning: --detector: not used with --aligned" in result.stderr


@pytest.mark.parametrize("aligned", [["--aligned"], []])
def test_cli_default_generator_explains_the_manual_download(files, tmp_path, aligned):
    # The generator is looked for before the detector (which would be fetched by name): the
    # one manual download is named first.
    source = write_png(tmp_path / "a.png", smooth_image(12))
    result = run("invert", str(source), str(source), "-o", str(tmp_path / "o.png"), *aligned)
    assert result.exit_code == 1
    assert "stylegan2-ffhq-512" in result.stderr and "--generator" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("missing", "option"), [("vgg19", "--correspondence-model"), ("vgg16", "--perceptual-model"),
                                               ("fid", "--score-model")])
def test_cli_a_network_that_cannot_be_had_names_the_option_that_takes_a_file(files, tmp_path, monkeypatch, missing,
                                                                             option):
    from huggingface_hub import constants

    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    options = _model_options(files)
    flag = options.index(option)
    del options[flag:flag + 2]  # that network by its registry name, which cannot be had offline
    source = write_png(tmp_path / "a.png", smooth_image(12))
    result = run("invert", str(source), str(source), "-o", str(tmp_path / "o.png"), "--aligned", "--layers", "2-4", "--size", "32",
                 *options)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert files[missing].name in line and line.endswith(f"pass a checkpoint path with {option}")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--size", "36"], 2, "multiple of 8"),
        (["--layers", "5-9"], 2, "outside 1-6"),
        (["--layers", "x"], 2, "--layers"),
    ],
)
def test_cli_refuses_options_the_generator_cannot_do(files, tmp_path, args, code, needle):
    source = write_png(tmp_path / "a.png", smooth_image(13))
    result = run("invert", str(source), str(source), "-o", str(tmp_path / "o.png"), "--aligned",
                 *_model_options(files), "--steps", "1", *args)
    assert result.exit_code == code
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_input_errors_are_one_line(files, tmp_path):
    good = write_png(tmp_path / "good.png", smooth_image(14))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for source, needle in ((text, str(text)), (tmp_path / "missing.png", "missing.png")):
        result = run("invert", str(source), str(good), "-o", str(tmp_path / "o.png"), "--aligned", *_model_options(files))
        assert result.exit_code == 1 and needle in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    result = run("invert", str(good), str(good), "-o", str(good), "--aligned", *_model_options(files))
    assert result.exit_code == 1 and "overwrite an input" in result.stderr
    dot = write_png(tmp_path / "dot.png", smooth_image(14, 8)[..., :1, :1])
    result = run("invert", str(good), str(dot), "-o", str(tmp_path / "o.png"), "--aligned", "--layers", "2", "--codes", "2",
                 "--steps", "1", "--size", "32", *_model_options(files))
    assert result.exit_code == 1 and "dot.png: the exemplar is 1x1 px, too small for a face crop" in result.stderr
    # --save-all's extra files are checked too: the warp of r.png is r_warped.png.
    exemplar = write_png(tmp_path / "r_warped.png", smooth_image(15))
    kept = exemplar.read_bytes()
    result = run("invert", str(good), str(exemplar), "-o", str(tmp_path / "r.png"), "--save-all", "--aligned",
                 *_model_options(files))
    assert result.exit_code == 1 and "overwrite an input" in result.stderr and exemplar.read_bytes() == kept
    for option in ("--lr", "--temperature", "--perceptual-weight"):
        result = run("invert", str(good), str(exemplar), "-o", str(tmp_path / "o.png"), option, "inf", "--aligned",
                     *_model_options(files))
        assert result.exit_code == 2 and "all finite" in result.stderr


def test_cli_wrong_checkpoint_is_one_line(files, tmp_path):
    good = write_png(tmp_path / "good.png", smooth_image(15))
    options = _model_options(files)
    options[1] = str(files["vgg16"])  # a VGG file given as the generator
    result = run("invert", str(good), str(good), "-o", str(tmp_path / "o.png"), "--aligned", *options)
    assert result.exit_code == 1
    assert str(files["vgg16"]) in result.stderr and "StyleGAN2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_diverged_fit_is_one_line_and_writes_nothing(files, tmp_path):
    """A learning rate far too high drives every render to NaN: scoring must not crash in the
    matrix square root, and the run ends with one line (and the JSON error) instead."""
    source = write_png(tmp_path / "a.png", smooth_image(16, 48))
    target = tmp_path / "o.png"
    result = run("invert", str(source), str(source), "-o", str(target), "--aligned", "--layers", "2",
                 "--codes", "2", "--steps", "2", "--size", "32", "--lr", "1e30", "--json", *_model_options(files))
    assert result.exit_code == 1, result.stderr
    assert "the inversion diverged" in result.stderr and "--lr" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    document = json.loads(result.stdout)
    assert document["failed"] == 1 and document["ok"] == 0 and not target.exists()
    [record] = document["results"]
    assert record["status"] == "failed" and "diverged" in record["error"] and str(source) in record["error"]


def test_frechet_distance_of_a_non_finite_image_is_infinite():
    from i2icli.pipelines.frechet import frechet_distance

    mean, cov = np.zeros(3), np.eye(3)
    assert frechet_distance(mean, cov, mean, cov) == 0.0
    assert frechet_distance(np.full(3, np.nan), cov, mean, cov) == float("inf")
    assert frechet_distance(mean, cov, mean, np.full((3, 3), np.inf)) == float("inf")


def test_any_accepted_seed_gives_codes_and_small_seeds_keep_theirs(networks):
    generator = networks["generator"]
    largest = initial_codes(generator, [2, 4], 3, seed=2**63 - 1)  # the largest --seed accepts
    assert largest.shape[:2] == (2, 3) and torch.isfinite(largest).all()
    z = torch.randn(3, generator.num_style_feat, generator=torch.Generator().manual_seed(7 * 1000 + 4))
    with torch.no_grad():
        torch.testing.assert_close(initial_codes(generator, [4], 3, seed=7)[0], generator.mapping(z))


def test_a_temperature_that_overflows_the_warp_is_named_before_fitting(networks, monkeypatch):
    from i2icli.errors import I2IError

    pipeline = pipeline_with(networks, temperature=1e39, steps=5)
    monkeypatch.setattr(pipeline, "fit", lambda *args, **kwargs: pytest.fail("fitted a non-finite target"))
    face = Picture(rgb=((smooth_image(0)[0].permute(1, 2, 0) + 1) * 127.5).byte().numpy())
    with pytest.raises(I2IError, match="--temperature 1e\\+39 is too large"):
        pipeline.invert(face, face)


def test_reading_the_warp_is_timed_as_the_warp(networks, monkeypatch):
    # On a GPU the warp runs after warp() has returned, until something reads its result (the
    # finiteness check). A slow check stands in for that wait: it belongs to the warp stage.
    import time

    isfinite = torch.isfinite

    def slow(tensor: torch.Tensor) -> torch.Tensor:
        time.sleep(0.3)
        return isfinite(tensor)

    pipeline = pipeline_with(networks, steps=0)
    monkeypatch.setattr(pipeline, "warp", lambda source, exemplar: exemplar.clone())  # itself instant
    face = Picture(rgb=((smooth_image(0)[0].permute(1, 2, 0) + 1) * 127.5).byte().numpy())
    monkeypatch.setattr(torch, "isfinite", slow)
    result = pipeline.invert(face, face)
    assert result.seconds["warp"] >= 0.3


def test_hypotheses_are_scored_as_saved_within_the_pixel_range(networks, monkeypatch):
    import i2icli.pipelines.invert as invert_module

    seen = []
    score = invert_module.single_image_frechet

    def spy(scorer, renders, reference):
        seen.append(renders)
        return score(scorer, renders, reference)

    monkeypatch.setattr(invert_module, "single_image_frechet", spy)
    face = Picture(rgb=((smooth_image(1)[0].permute(1, 2, 0) + 1) * 127.5).byte().numpy())
    pipeline_with(networks, lr=0.5, steps=5).invert(face, face)
    assert seen[0].abs().max() <= 1.0


def test_bf16_refusal_names_this_commands_way_out_before_any_download(files, monkeypatch):
    import i2icli.pipelines.devices as devices
    from i2icli.errors import DeviceError

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    settings = InvertSettings(layers=(2,), size=32, aligned=True, precision="bf16")
    with pytest.raises(DeviceError) as caught:  # the generator named here does not exist: not reached
        InvertPipeline.load(generator=str(files["generator"].parent / "missing.pth"), device="cpu", settings=settings)
    assert caught.value.hint == "leave out --bf16"


def test_layers_the_generator_cannot_do_are_refused_before_the_other_networks_load(files):
    settings = InvertSettings(layers=(9,), size=32, aligned=True)
    with pytest.raises(ValueError, match="--layers 9 outside 1-6"):  # VGG-19 named here does not exist
        InvertPipeline.load(generator=str(files["generator"]), correspondence=str(files["vgg19"].parent / "none.pth"),
                            device="cpu", settings=settings)


def test_json_documents_write_null_for_non_finite_numbers():
    from i2icli.cli.stdout import json_document

    text = json_document({"loss": float("nan"), "scores": [1.5, float("inf")], "nested": ({"x": -float("inf")},)})
    assert json.loads(text) == {"loss": None, "scores": [1.5, None], "nested": [{"x": None}]}
    assert "NaN" not in text and "Infinity" not in text


@pytest.fixture
def tf32_allowed():
    """TF32 on, as PyTorch starts cuDNN; the flags are process-wide, so they are put back after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fp32_on_a_gpu_turns_tf32_off_as_every_commands_fp32_does(files, tf32_allowed):
    # No GPU is needed to read the flags: they are set before any network is loaded (the generator
    # named here does not exist, so loading stops there).
    from i2icli.errors import WeightsError

    settings = InvertSettings(layers=(2,), size=32, aligned=True)
    with pytest.raises(WeightsError):
        InvertPipeline.load(generator=str(files["generator"].parent / "missing.pth"), device=torch.device("cuda", 0),
                            settings=settings)
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False



def test_without_the_perceptual_term_vgg16_is_not_needed(files):
    # --perceptual-weight 0 fits pixels only: a missing VGG-16 (a download of over 500 MB) must
    # not stop the run.
    settings = InvertSettings(layers=(2,), codes=2, steps=2, size=32, aligned=True, perceptual_weight=0)
    pipeline = InvertPipeline.load(generator=str(files["generator"]), correspondence=str(files["vgg19"]),
                                   perceptual=str(files["vgg16"].parent / "missing.pth"), scorer=str(files["fid"]),
                                   device="cpu", settings=settings)
    assert pipeline.perceptual is None
    face = Picture(rgb=((smooth_image(2)[0].permute(1, 2, 0) + 1) * 127.5).byte().numpy())
    result = pipeline.invert(face, face)
    assert [h.layer for h in result.hypotheses] == [2] and np.isfinite(result.hypotheses[0].loss)


def test_cli_a_crop_too_small_is_refused_before_any_network_loads(files, tmp_path):
    # The generator named here does not exist: the input is judged before it is looked for, so a
    # 1x1 picture does not first cost the networks' loading (or download).
    good = write_png(tmp_path / "good.png", smooth_image(14))
    dot = write_png(tmp_path / "dot.png", smooth_image(14, 8)[..., :1, :1])
    options = _model_options(files)
    options[1] = str(tmp_path / "missing.pth")
    result = run("invert", str(good), str(dot), "-o", str(tmp_path / "o.png"), "--aligned", "--size", "32", *options)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "dot.png: the exemplar is 1x1 px, too small for a face crop" in line and "missing.pth" not in line


@pytest.mark.parametrize(("output", "save_all", "folder"), [("out", [], "out/a_a.png"),
                                                            ("r.png", ["--save-all"], "r_layer02.png")])
def test_cli_an_output_that_is_a_folder_is_refused_before_any_work(files, tmp_path, output, save_all, folder):
    # Found only at the write, it would come after the whole inversion (hours with the defaults on
    # a CPU); the generator named here does not exist, so the check must come before it is looked for.
    source = write_png(tmp_path / "a.png", smooth_image(16))
    (tmp_path / folder).mkdir(parents=True)
    options = _model_options(files)
    options[1] = str(tmp_path / "missing.pth")
    result = run("invert", str(source), str(source), "-o", str(tmp_path / output), "--aligned", "--layers", "2",
                 *save_all, *options)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert f"{tmp_path / folder}: is a folder" in line and "missing.pth" not in line


def test_an_unreadable_input_is_a_failed_record_before_any_network_loads(files, tmp_path):
    """As a batch command records an input it cannot read: one line, exit 1, and the --json
    document with the failed record (the networks are not loaded for it)."""
    source = write_png(tmp_path / "a.png", smooth_image(16, 48))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    target = tmp_path / "o.png"
    options = _model_options(files)
    options[1] = str(tmp_path / "no-generator.pt")  # not loaded: the input fails first
    result = run("invert", str(source), str(broken), "-o", str(target), "--aligned", "--json", *options)
    assert result.exit_code == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(broken) in result.stderr
    document = json.loads(result.stdout)
    assert (document["ok"], document["skipped"], document["failed"]) == (0, 0, 1)
    [record] = document["results"]
    assert record == {"source": str(source), "exemplar": str(broken), "output": str(target), "status": "failed",
                      "error": record["error"]}
    assert str(broken) in record["error"] and not target.exists()
