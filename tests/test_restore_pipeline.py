"""The restore pipeline end to end, against the reference GFPGANer on the same weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS
from i2icli.faces.align import alignment_matrix, crop_face, paste_matrix
from i2icli.faces.paste import paste_face
from i2icli.imageio import Picture, read_image, write_image
from i2icli.pipelines.restore import RestorePipeline, RestoreSettings

CPU = torch.device("cpu")


def _load(tiny_env, precision: str = "fp32", *, parser: bool = True, **settings) -> RestorePipeline:
    """The tiny pipeline. ``parser=False`` leaves out the face parser, the one network of full size
    even here, for tests that look at the faces themselves rather than at how they are pasted."""
    settings.setdefault("keep_faces", True)
    models = {} if parser else {"parser": None}
    return RestorePipeline.load(device="cpu", precision=precision, settings=RestoreSettings(**settings), **models)


def _old_photo() -> Picture:
    return read_image(EXAMPLES / "old_photo.jpg")


class _Tint(torch.nn.Module):
    """A 'restoration' that only reddens the face: where it lands shows where faces are pasted."""

    def forward(self, x):
        y = x.clone()
        y[:, 0] = 1.0
        return y


def test_face_is_pasted_where_it_was_found(tiny_env, landmarks_detector):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    pipeline = _load(tiny_env, upscale=2)
    pipeline.face_model = _Tint()
    pipeline.parser = None
    result = pipeline.restore(_old_photo())
    rgb = result.picture.rgb.astype(np.int16)
    redness = rgb[:, :, 0] - (rgb[:, :, 1] + rgb[:, :, 2]) // 2
    ys, xs = np.nonzero(redness > 60)
    # The tinted square is the aligned crop mapped back: centred on the crop's centre, and as wide
    # as the crop at the face's scale, less the soft edge that the square mask fades out.
    inverse = paste_matrix(alignment_matrix(OLD_PHOTO_LANDMARKS), 2)
    centre = inverse @ np.array([256.0, 256.0, 1.0])
    assert abs(xs.mean() - centre[0]) < 4 and abs(ys.mean() - centre[1]) < 4
    crop_width = 512 * np.hypot(inverse[0, 0], inverse[1, 0])
    assert 0.75 * crop_width < xs.max() - xs.min() <= crop_width
    # Far from the face the photo is only upscaled.
    assert redness[500:, :].max() < 60


def test_strength_zero_keeps_the_original_face(tiny_env, landmarks_detector):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    pipeline = _load(tiny_env, strength=0.0, parser=False)
    result = pipeline.restore(_old_photo())
    face = result.faces[0]
    np.testing.assert_allclose(face.restored, face.crop, atol=1e-6)
    half = _load(tiny_env, strength=0.5, parser=False).restore(_old_photo()).faces[0]
    full = _load(tiny_env, strength=1.0, parser=False).restore(_old_photo()).faces[0]
    np.testing.assert_allclose(half.restored, 0.5 * full.restored + 0.5 * full.crop, atol=1e-5)


def test_faces_run_as_one_batch_and_match_single_runs(tiny_env, landmarks_detector):
    second = OLD_PHOTO_LANDMARKS + np.array([120, 150], np.float32)
    landmarks_detector([OLD_PHOTO_LANDMARKS, second])
    pipeline = _load(tiny_env, face_batch=4, parser=False)
    calls = []
    original_forward = pipeline.face_model.forward
    pipeline.face_model.forward = lambda x: calls.append(len(x)) or original_forward(x)
    both = pipeline.restore(_old_photo())
    assert calls == [2] and len(both.faces) == 2 and both.face_count == 2
    landmarks_detector([second])
    alone = pipeline.restore(_old_photo())
    np.testing.assert_allclose(both.faces[1].restored, alone.faces[0].restored, atol=1e-5)


def test_every_face_is_cut_from_the_photo_as_given(tiny_env, landmarks_detector):
    """At --upscale 1 with no background model the canvas was the photo's own array: each face
    pasted changed the photo, so the next face's crop (one per batch on a CPU) held the faces
    restored before it, and the caller's picture came back changed."""
    neighbour = OLD_PHOTO_LANDMARKS + np.array([20, 8], np.float32)  # its crop overlaps the first face
    landmarks_detector([OLD_PHOTO_LANDMARKS, neighbour])
    pipeline = _load(tiny_env, upscale=1, face_batch=1, parser=False)
    pipeline.upscaler = None
    pipeline.face_model = _Tint()
    photo = _old_photo()
    original = photo.rgb.copy()
    result = pipeline.restore(photo)
    np.testing.assert_array_equal(photo.rgb, original)
    for face, points in zip(result.faces, (OLD_PHOTO_LANDMARKS, neighbour)):
        np.testing.assert_allclose(face.crop, crop_face(original, alignment_matrix(points)) / 255.0, atol=1e-6)


def test_grayscale_alpha_and_16_bit_survive(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    pipeline = _load(tiny_env, parser=False)
    # A Lanczos background, so the alpha ramp is still a ramp (random Real-ESRGAN weights would
    # scramble it); the upscaler's own tests cover these layouts against RealESRGANer.
    pipeline.upscaler = None
    photo = _old_photo()
    gray = photo.rgb.mean(axis=2, keepdims=True).astype(np.uint8).repeat(3, axis=2)
    alpha = np.tile(np.linspace(0, 255, photo.width, dtype=np.float32).astype(np.uint8), (photo.height, 1))
    cases = {
        "gray.png": Picture(rgb=gray, alpha=None, grayscale=True, source=None),
        "rgba.png": Picture(rgb=photo.rgb, alpha=alpha, grayscale=False, source=None),
        "deep.png": Picture(rgb=photo.rgb.astype(np.uint16) * 257, alpha=None, grayscale=False, source=None),
    }
    for name, picture in cases.items():
        write_image(tmp_path / name, picture)
        loaded = read_image(tmp_path / name)
        result = pipeline.restore(loaded)
        write_image(tmp_path / f"out_{name}", result.picture)
        again = read_image(tmp_path / f"out_{name}")
        assert (again.height, again.width) == (2 * picture.height, 2 * picture.width)
        assert again.grayscale == picture.grayscale
        assert again.rgb.dtype == picture.rgb.dtype
        assert (again.alpha is None) == (picture.alpha is None)
    deep = read_image(tmp_path / "out_deep.png")
    assert deep.rgb.max() > 255 and len(np.unique(deep.rgb)) > 256
    rgba = read_image(tmp_path / "out_rgba.png")
    assert rgba.alpha[:, :10].mean() < 20 and rgba.alpha[:, -10:].mean() > 235  # the ramp, upscaled


def test_aligned_input(tiny_env):
    pipeline = _load(tiny_env, aligned=True)
    assert pipeline.detector is None and pipeline.upscaler is None
    face = crop_face(_old_photo().rgb, alignment_matrix(OLD_PHOTO_LANDMARKS))
    result = pipeline.restore(Picture(rgb=face, alpha=None, grayscale=False, source=None, icc_profile=b"profile",
                                      lossless_webp=True))
    assert result.picture.rgb.shape == (512, 512, 3) and len(result.faces) == 1
    assert result.picture.icc_profile == b"profile"  # the pixels stay in the photo's colour space
    assert result.picture.lossless_webp
    # The output is the face network's answer for the crop, not the crop passed through.
    with torch.no_grad():
        network_input = torch.from_numpy(face).permute(2, 0, 1)[None].float() / 127.5 - 1
        expected = ((pipeline.face_model(network_input).clamp(-1, 1) + 1) * 127.5)[0].permute(1, 2, 0).numpy()
    assert np.abs(result.picture.rgb.astype(np.float32) - expected).max() <= 1.0
    assert np.abs(result.picture.rgb.astype(np.float32) - face).mean() > 10


def test_no_face_found_still_upscales(tiny_env, landmarks_detector):
    landmarks_detector([])
    photo = dataclasses.replace(_old_photo(), icc_profile=b"profile", lossless_webp=True)
    result = _load(tiny_env, upscale=1.5).restore(photo)
    assert result.faces == [] and result.face_count == 0 and result.picture.rgb.shape == (511, 511, 3)
    assert result.picture.icc_profile == b"profile" and result.picture.source == photo.source
    assert result.picture.lossless_webp  # a lossless WebP master comes back lossless


def test_paste_matches_facexlib(tiny_env, tmp_path, monkeypatch):
    """Paste-back parity with facexlib's FaceRestoreHelper for both mask kinds."""
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    folder = tmp_path / "facexlib"
    folder.mkdir()
    from conftest import retinaface_state_dict

    torch.save(retinaface_state_dict("resnet50"), folder / "detection_Resnet50_Final.pth")
    (folder / "parsing_parsenet.pth").symlink_to(tiny_env.files["parsenet"])
    photo = _old_photo()
    rng = np.random.default_rng(0)
    restored = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    matrix = alignment_matrix(OLD_PHOTO_LANDMARKS)
    pipeline = _load(tiny_env)
    for use_parse in (False, True):
        helper = FaceRestoreHelper(2, face_size=512, det_model="retinaface_resnet50", use_parse=use_parse,
                                   device=CPU, model_rootpath=str(folder))
        helper.read_image(photo.rgb[:, :, ::-1].copy())
        helper.all_landmarks_5 = [OLD_PHOTO_LANDMARKS]
        helper.align_warp_face()
        np.testing.assert_array_equal(helper.cropped_faces[0][:, :, ::-1], crop_face(photo.rgb, matrix))
        helper.add_restored_face(restored[:, :, ::-1].copy())
        helper.get_inverse_affine()
        background = photo.rgb[:, :, ::-1].repeat(2, 0).repeat(2, 1)
        expected = helper.paste_faces_to_input_image(upsample_img=background.copy())[:, :, ::-1]

        canvas = photo.rgb.repeat(2, 0).repeat(2, 1)
        mask = None
        if use_parse:
            mask = pipeline._face_masks(restored[None].astype(np.float32) / 255)[0]
        paste_face(canvas, restored.astype(np.float32), paste_matrix(matrix, 2), mask=mask, upscale=2)
        difference = np.abs(canvas.astype(np.int16) - expected.astype(np.int16))
        # facexlib warps the face as uint8 and truncates its float64 blend, where we warp float32
        # and round once: each costs at most one level, on a face of pure noise (the worst case).
        assert difference.max() <= 2, (use_parse, difference.max())
        assert difference.mean() < 0.5


def _reference_restorer(tmp_path, face_checkpoint, bg_checkpoint, parser_checkpoint, monkeypatch):
    """gfpgan's GFPGANer with RealESRGANer, set up as gfpgan's inference script does, on CPU."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from gfpgan import GFPGANer
    from realesrgan import RealESRGANer

    from conftest import retinaface_state_dict

    folder = tmp_path / "gfpgan" / "weights"  # GFPGANer looks for facexlib's files here, relative to the cwd
    folder.mkdir(parents=True)
    torch.save(retinaface_state_dict("resnet50"), folder / "detection_Resnet50_Final.pth")
    (folder / "parsing_parsenet.pth").symlink_to(parser_checkpoint)
    monkeypatch.chdir(tmp_path)
    bg = RealESRGANer(scale=2, model_path=str(bg_checkpoint),
                      model=RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4, scale=2),
                      tile=400, tile_pad=10, pre_pad=0, half=False, device=CPU)
    return GFPGANer(model_path=str(face_checkpoint), upscale=2, arch="clean", channel_multiplier=2,
                    bg_upsampler=bg, device=CPU)


@pytest.fixture(scope="module")
def full_size_gfpgan(tmp_path_factory):
    """A GFPGAN v1.4-shaped checkpoint with the reference's own random initialisation."""
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    torch.manual_seed(0)
    model = GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                          fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    with torch.no_grad():  # noise strengths start at zero; give them weight so the noise path is exercised
        for name, parameter in model.named_parameters():
            if name.endswith(".weight") and parameter.ndim == 1 and parameter.numel() == 1:
                parameter.fill_(0.05)
    path = tmp_path_factory.mktemp("full") / "GFPGANv1.4.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    return path


def test_whole_pipeline_matches_gfpganer(tiny_env, full_size_gfpgan, tmp_path, monkeypatch, landmarks_detector):
    """Same photo, same weights, same landmarks: our output against GFPGANer.enhance()."""
    reference = _reference_restorer(
        tmp_path, full_size_gfpgan, tiny_env.files["realesrgan-x2plus"], tiny_env.files["parsenet"], monkeypatch
    )

    def fixed_landmarks(**kwargs):
        reference.face_helper.all_landmarks_5 = [OLD_PHOTO_LANDMARKS.astype(np.float64)]
        reference.face_helper.det_faces = [np.array([120, 45, 180, 110, 0.999])]
        return 1

    monkeypatch.setattr(reference.face_helper, "get_face_landmarks_5", fixed_landmarks)
    photo = _old_photo()
    # GFPGANer draws fresh noise on every call; ours uses the checkpoint's fixed noise. Match them.
    monkeypatch.setattr(reference.gfpgan, "forward",
                        lambda x, **kw: type(reference.gfpgan).forward(reference.gfpgan, x, return_rgb=False, randomize_noise=False))
    _, ref_faces, ref_image = reference.enhance(photo.rgb[:, :, ::-1].copy(), paste_back=True)
    ref_image = ref_image[:, :, ::-1]

    landmarks_detector([OLD_PHOTO_LANDMARKS])
    ours = RestorePipeline.load(model=str(full_size_gfpgan), device="cpu", precision="fp32", settings=RestoreSettings(upscale=2, keep_faces=True))
    result = ours.restore(photo)

    restored_face = np.clip(np.rint(result.faces[0].restored * 255), 0, 255).astype(np.int16)
    face_difference = np.abs(restored_face - ref_faces[0][:, :, ::-1].astype(np.int16))
    assert face_difference.max() <= 1
    difference = np.abs(result.picture.rgb.astype(np.int16) - ref_image.astype(np.int16))
    print(f"pipeline parity: face max {face_difference.max()}, image max {difference.max()} mean {difference.mean():.4f}")
    assert result.picture.rgb.shape == ref_image.shape
    assert difference.max() <= 2 and difference.mean() < 0.5


def test_precision_choice():
    from i2icli.errors import DeviceError
    from i2icli.pipelines.restore import cpu_has_native_bf16, pick_dtype

    assert pick_dtype("fp32", CPU) == torch.float32
    assert pick_dtype("auto", CPU) == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    with pytest.raises(DeviceError, match="CUDA"):
        pick_dtype("fp16", CPU)


def test_bf16_is_refused_on_gpus_that_would_emulate_it(monkeypatch):
    from i2icli.errors import DeviceError
    from i2icli.pipelines.devices import explicit_dtype

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # Turing
    with pytest.raises(DeviceError, match="--bf16 needs an Ampere or later GPU.*cuda:0 is 7.5"):
        explicit_dtype("bf16", gpu)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # Hopper
    assert explicit_dtype("bf16", gpu) == torch.bfloat16


@pytest.mark.skipif(not __import__("i2icli.pipelines.restore", fromlist=["x"]).cpu_has_native_bf16(),
                    reason="this CPU has no native bf16")
def test_bf16_stays_within_a_level_of_fp32(tiny_env, landmarks_detector):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    exact = _load(tiny_env, precision="fp32").restore(_old_photo()).picture.rgb.astype(np.int16)
    fast_pipeline = _load(tiny_env, precision="bf16")
    assert fast_pipeline.dtype == torch.bfloat16 and fast_pipeline.upscaler.dtype == torch.bfloat16
    fast = fast_pipeline.restore(_old_photo()).picture.rgb.astype(np.int16)
    difference = np.abs(fast - exact)
    print(f"bf16 vs fp32: max {difference.max()} mean {difference.mean():.3f} levels")
    assert difference.mean() < 1.0


def test_crowds_are_processed_in_bounded_batches(tiny_env, landmarks_detector):
    """Many faces: the network sees at most face_batch at a time, and faces are kept only on request."""
    shifts = [np.array([dx, dy], np.float32) for dx in (-60, 0, 60) for dy in (-30, 30)]
    landmarks_detector([OLD_PHOTO_LANDMARKS + shift for shift in shifts])
    # Without the parser and the background network, which have nothing to do with face batches.
    pipeline = RestorePipeline.load(device="cpu", precision="fp32", parser=None, bg_model=None,
                                    settings=RestoreSettings(face_batch=2, keep_faces=False))
    sizes = []
    original_forward = pipeline.face_model.forward
    pipeline.face_model.forward = lambda x: sizes.append(len(x)) or original_forward(x)
    result = pipeline.restore(_old_photo())
    assert sizes == [2, 2, 2] and result.face_count == 6 and result.faces == []


class _Red(torch.nn.Module):
    """A 'restoration' that paints the whole face pure red: where and how fully it lands shows the mask."""

    def forward(self, x):
        y = torch.full_like(x, -1.0)
        y[:, 0] = 1.0
        return y


def _template_landmarks(centre_x: float, centre_y: float, size: float) -> np.ndarray:
    from i2icli.faces.align import FACE_TEMPLATE_512

    return ((FACE_TEMPLATE_512 - 256) * (size / 512) + [centre_x, centre_y]).astype(np.float32)


@pytest.mark.parametrize("upscale, with_alpha", [(2, False), (1.5, True)])
def test_paste_back_touches_only_the_faces_and_reaches_the_photo_s_edge(tiny_env, landmarks_detector, upscale, with_alpha):
    """Faces at known places, one running off the top-left corner: outside the faces' squares the
    result is the background upscale alone (alpha included), inside them it changed, and the
    corner face is pasted in full right up to the photo's edge (no seam or fade along it)."""
    from i2icli.faces.paste import covered_region

    rng = np.random.default_rng(1)
    photo = Picture(rgb=rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), grayscale=False, source=None,
                    alpha=rng.integers(0, 256, (64, 96), dtype=np.uint8) if with_alpha else None)
    faces = [_template_landmarks(5, 5, 60), _template_landmarks(70, 40, 50)]
    pipeline = _load(tiny_env, parser=False, upscale=upscale, min_face_size=0)
    landmarks_detector([])
    background = pipeline.restore(photo).picture
    landmarks_detector(faces)
    pipeline.face_model = _Red()
    result = pipeline.restore(photo).picture

    changed = np.abs(result.rgb.astype(np.int16) - background.rgb.astype(np.int16)).max(axis=2) > 0
    squares = np.zeros_like(changed)
    for points in faces:
        region = covered_region(paste_matrix(alignment_matrix(points), upscale), 512, result.rgb.shape)
        squares[region.y0 : region.y1, region.x0 : region.x1] = True
        assert changed[region.y0 : region.y1, region.x0 : region.x1].mean() > 0.5
    assert not (changed & ~squares).any()
    if with_alpha:
        np.testing.assert_array_equal(result.alpha, background.alpha)
    corner = paste_matrix(alignment_matrix(faces[0]), upscale) @ np.array([256.0, 256.0, 1.0])
    reach = int(corner[0])  # the corner face's centre: from the edge up to there it is pure red
    assert (result.rgb[0, :reach] == (255, 0, 0)).all() and (result.rgb[:reach, 0] == (255, 0, 0)).all()
