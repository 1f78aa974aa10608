"""`i2i invert`: odd inputs and option combinations a user can give."""

from __future__ import annotations

import json
import os

import pytest

import test_invert
from test_invert import _model_options, pipeline_with, run, smooth_image, write_png

# The tiny checkpoints and their networks, as fixtures of this module too.
files = test_invert.files
networks = test_invert.networks


@pytest.mark.parametrize(("name", "needle"), [("folder", "is a directory, not an image file"),
                                              ("notes.txt", "unsupported file type ('.txt')"),
                                              ("pipe.png", "is not a regular file")])
def test_dry_run_refuses_an_input_the_run_could_not_read(files, tmp_path, name, needle):
    # The run refuses these when it reads them; the preview must not say "would run".
    good = write_png(tmp_path / "good.png", smooth_image(20))
    unreadable = tmp_path / name
    if name == "folder":
        unreadable.mkdir()
    elif name == "pipe.png":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes here")
        os.mkfifo(unreadable)
    else:
        unreadable.write_bytes(good.read_bytes())
    for source, exemplar in ((unreadable, good), (good, unreadable)):
        result = run("invert", str(source), str(exemplar), "-o", str(tmp_path / "o.png"), "--aligned", "--dry-run",
                     "--json", *_model_options(files))
        assert result.exit_code == 1, result.stdout
        [record] = json.loads(result.stdout)["results"]
        assert record["status"] != "would run" and needle in record["error"] and str(unreadable) in record["error"]


def test_a_perceptual_model_that_weight_0_leaves_unused_is_named(files, tmp_path):
    source = write_png(tmp_path / "a.png", smooth_image(21, 48))
    args = ["invert", str(source), str(source), "--aligned", "--layers", "2", "--codes", "2", "--steps", "1", "--size",
            "32", *_model_options(files)]
    result = run(*args, "-o", str(tmp_path / "o.png"), "--perceptual-weight", "0")
    assert result.exit_code == 0, result.stderr
    assert "warning: --perceptual-model: not used with --perceptual-weight 0" in result.stderr
    assert "warning" not in run(*args, "-o", str(tmp_path / "p.png")).stderr


def test_transparent_areas_are_named_since_their_hidden_colours_are_used(files, tmp_path):
    import numpy as np
    from PIL import Image

    opaque = write_png(tmp_path / "opaque.png", smooth_image(22, 48))
    rgb = np.asarray(Image.open(opaque))
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "solid.png")  # an alpha channel, nothing transparent
    alpha[:, :10] = 0
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cutout.png")
    args = ["--aligned", "--layers", "2", "--codes", "2", "--steps", "1", "--size", "32", *_model_options(files)]
    result = run("invert", str(opaque), str(tmp_path / "cutout.png"), "-o", str(tmp_path / "o.png"), *args)
    assert result.exit_code == 0, result.stderr
    assert f"warning: {tmp_path / 'cutout.png'}: has transparent areas" in result.stderr
    result = run("invert", str(tmp_path / "solid.png"), str(opaque), "-o", str(tmp_path / "p.png"), *args)
    assert result.exit_code == 0 and "warning" not in result.stderr
    cutout = str(tmp_path / "cutout.png")
    result = run("invert", cutout, cutout, "-o", str(tmp_path / "q.png"), *args)
    assert result.exit_code == 0 and result.stderr.count("has transparent areas") == 1


def test_a_learning_rate_that_steps_0_leaves_unused_is_named(files, tmp_path):
    source = write_png(tmp_path / "a.png", smooth_image(23, 48))
    result = run("invert", str(source), str(source), "-o", str(tmp_path / "o.png"), "--aligned", "--layers", "2",
                 "--codes", "2", "--steps", "0", "--lr", "0.5", "--size", "32", *_model_options(files))
    assert result.exit_code == 0, result.stderr
    assert "warning: --lr: not used with --steps 0" in result.stderr


def _face():
    from i2icli.imageio import Picture

    return Picture(rgb=((smooth_image(24)[0].permute(1, 2, 0) + 1) * 127.5).byte().numpy())


def test_a_perceptual_weight_that_overflows_the_loss_is_named_not_the_learning_rate(networks):
    from i2icli.errors import I2IError

    with pytest.raises(I2IError, match="--perceptual-weight 1e\\+300 is too large") as caught:
        pipeline_with(networks, perceptual_weight=1e300, steps=3).invert(_face(), _face())
    assert "--lr" not in str(caught.value) + str(caught.value.hint)


def test_a_generator_that_renders_non_finite_values_is_named_not_the_learning_rate(networks):
    import copy

    from i2icli.errors import I2IError

    generator = copy.deepcopy(networks["generator"])
    generator.constant_input.weight.data.fill_(float("nan"))  # as a damaged file would hold
    pipeline = pipeline_with({**networks, "generator": generator}, steps=3)
    with pytest.raises(I2IError, match="the generator renders non-finite values") as caught:
        pipeline.invert(_face(), _face())
    assert "--generator" in caught.value.hint


def test_an_exemplar_larger_than_the_renders_is_scored_at_their_size(networks, monkeypatch):
    # A render that is the exemplar itself at the generator's size must be the perfect match: the
    # reference is not a much larger face that the scorer's unfiltered resize would alias.
    import numpy as np

    from i2icli.imageio import Picture
    from i2icli.pipelines.imagetensors import square_resize, to_tensor

    large = smooth_image(25, 640)
    face = Picture(rgb=np.ascontiguousarray(((large[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()))
    pipeline = pipeline_with(networks, layers=(2,), steps=0)
    render = to_tensor(square_resize(face.rgb, networks["generator"].out_size))
    monkeypatch.setattr(pipeline, "fit", lambda target, on_step=None: (render, [0.0]))
    [hypothesis] = pipeline.invert(face, face).hypotheses
    assert hypothesis.score == pytest.approx(0.0, abs=1e-6)


def test_results_keep_the_colour_space_their_colours_come_from(networks):
    # The colours are the exemplar's numbers: without its profile a wide-gamut (Display P3, Adobe
    # RGB) exemplar's style would be shown as sRGB, washed out.
    import dataclasses

    source = dataclasses.replace(_face(), icc_profile=b"source profile")
    exemplar = dataclasses.replace(_face(), icc_profile=b"exemplar profile")
    result = pipeline_with(networks, layers=(2, 3), codes=2, steps=1).invert(source, exemplar)
    assert result.picture.icc_profile == b"exemplar profile" and result.warped.icc_profile == b"exemplar profile"
    assert all(hypothesis.picture.icc_profile == b"exemplar profile" for hypothesis in result.hypotheses)
    assert result.exemplar_face.icc_profile == b"exemplar profile"
    assert result.source_face.icc_profile == b"source profile"
