"""CoCosNet v2: official checkpoint layout, strict loading, the correspondence, and the pipeline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cocosnet_checkpoints import TINY, official_state_dicts
from i2icli.archs import cocosnet2
from i2icli.archs.cocosnet2 import (
    CoCosNetConfig,
    CorrespondenceNet,
    TranslationGenerator,
    fold_spectral_norm,
    propagation_orders,
)
from i2icli.errors import InputError, WeightsError
from i2icli.imageio import Picture
from i2icli.pipelines.exemplar import ExemplarPipeline, ExemplarSettings, build_cocosnet, exemplar_tensor
from i2icli.semantics.inputs import load_semantics

FACTS = Path(__file__).resolve().parents[2] / "shared" / "facts" / "cocosnet2_deepfashionhd_keys.json"


def _official_layout(model: torch.nn.Module) -> dict[str, list[int]]:
    from cocosnet_checkpoints import SPECTRAL

    layout = {}
    for key, value in model.state_dict().items():
        if SPECTRAL.search(key):
            layout[key + "_orig"] = list(value.shape)
            layout[key + "_u"] = [value.shape[0]]
            layout[key + "_v"] = [value[0].numel()]
        else:
            layout[key] = list(value.shape)
    return layout


# The official DeepFashionHD checkpoints: 320 tensors in latest_net_Corr.pth, 171 in latest_net_G.pth.
# A few shapes of each, as published, so the layout is pinned even without the facts file.
_PUBLISHED_SHAPES = {
    "latest_net_Corr.pth": {
        "adaptive_model_seg.layer1.0.weight_orig": [32, 20, 3, 3],
        "adaptive_model_img.layer1.0.weight_orig": [32, 23, 3, 3],
        "adaptive_model_img.layer1.0.weight_v": [207],
        "adaptive_model_seg.G_middle_1.conv_s.weight_orig": [64, 128, 1, 1],
        "adaptive_model_seg.layer2.1.model.3.weight": [1],
        "phi_2.weight": [32, 64, 1, 1],
        "patch_match.refine_net.encoder.convf1.weight": [64, 32, 7, 7],
        "patch_match.refine_net.gru.convz1.weight": [32, 96, 1, 5],
        "patch_match.refine_net.flow_head.conv2.weight": [32, 64, 3, 3],
    },
    "latest_net_G.pth": {
        "fc.weight": [512, 32, 3, 3],
        "head_0.conv_0.weight_v": [4608],
        "up_3.conv_s.weight_orig": [64, 128, 1, 1],
        "up_3.norm_s.mlp_gamma.weight": [128, 128, 3, 3],
        "conv_img.weight": [3, 64, 3, 3],
    },
}


def test_official_layout_of_both_networks():
    with torch.device("meta"):
        corr, gen = CorrespondenceNet(CoCosNetConfig()), TranslationGenerator(CoCosNetConfig())
    ours = {"latest_net_Corr.pth": _official_layout(corr), "latest_net_G.pth": _official_layout(gen)}
    assert len(ours["latest_net_Corr.pth"]) == 320 and len(ours["latest_net_G.pth"]) == 171
    for file, shapes in _PUBLISHED_SHAPES.items():
        for key, shape in shapes.items():
            assert ours[file][key] == shape, key
    if FACTS.is_file():
        facts = json.loads(FACTS.read_text())["state_dicts"]
        for file in ours:
            assert ours[file] == facts[file]


def test_spectral_norm_folds_to_what_eval_mode_computes():
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(5, 7, 3))
    conv.train()
    conv(torch.randn(1, 5, 8, 8))  # one power iteration moves u and v away from their init
    conv.eval()
    x = torch.randn(2, 5, 9, 9)
    folded = fold_spectral_norm({f"c.{k}": v for k, v in conv.state_dict().items()})
    plain = torch.nn.Conv2d(5, 7, 3)
    plain.load_state_dict({"weight": folded["c.weight"], "bias": folded["c.bias"]})
    torch.testing.assert_close(plain(x), conv(x), rtol=1e-5, atol=1e-6)


def test_strict_loading_of_official_format_state_dicts():
    corr_state, gen_state = official_state_dicts()
    corr, gen = build_cocosnet(corr_state, gen_state, iterations=3)
    assert corr.config.nef == TINY.nef and corr.config.semantic_nc == 20 and corr.config.iterations == 3
    assert gen.conv_img.weight.shape == (3, TINY.ngf, 3, 3)
    u, v = corr_state["adaptive_model_seg.layer1.0.weight_u"], corr_state["adaptive_model_seg.layer1.0.weight_v"]
    orig = corr_state["adaptive_model_seg.layer1.0.weight_orig"]
    sigma = u @ orig.reshape(orig.shape[0], -1) @ v
    torch.testing.assert_close(corr.adaptive_model_seg.layer1[0].weight, orig / sigma)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c, g: c.pop("phi_0.bias"), "1 missing (e.g. phi_0.bias)"),
        (lambda c, g: c.update(extra=torch.zeros(1)), "1 unexpected (e.g. extra)"),
        (lambda c, g: g.update({"up_0.conv_0.bias": torch.zeros(5)}), "up_0.conv_0.bias has shape (5,)"),
        (lambda c, g: c.pop("adaptive_model_seg.layer1.0.weight_u"), "latest_net_Corr.pth does not fit"),
    ],
)
def test_mismatched_checkpoints_are_refused(damage, message):
    corr_state, gen_state = official_state_dicts()
    damage(corr_state, gen_state)
    with pytest.raises(WeightsError) as caught:
        build_cocosnet(corr_state, gen_state)
    assert message in caught.value.message


def test_swapped_files_and_other_models_are_named():
    corr_state, gen_state = official_state_dicts()
    with pytest.raises(WeightsError, match="swapped"):
        build_cocosnet(gen_state, corr_state)
    with pytest.raises(WeightsError, match="not a CoCosNet v2 checkpoint"):
        build_cocosnet({"conv_first.weight": torch.zeros(1)}, gen_state)
    other = official_state_dicts(CoCosNetConfig(semantic_nc=3, nef=4, ngf=2, spade_hidden=8))[1]
    with pytest.raises(WeightsError, match="different models"):
        build_cocosnet(corr_state, other)
    # Another candidate count loads shape by shape, but the 4x4 seeding can only fill 16.
    import dataclasses

    wide = official_state_dicts(dataclasses.replace(TINY, candidates=64, motion=160))
    with pytest.raises(WeightsError, match="keeps 64 PatchMatch candidates per pixel, but CoCosNet v2 seeds 16"):
        build_cocosnet(*wide)


# --------------------------------------------------------------------------- correspondence


def _inputs(size: int, channels: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def smooth(c: int) -> torch.Tensor:
        return F.interpolate(torch.rand(1, c, size // 4, size // 4, generator=g), size=size, mode="bilinear")

    return smooth(channels), smooth(3) * 2 - 1, smooth(channels)


def test_coarsest_warp_is_the_dense_softmax_correlation(monkeypatch):
    torch.manual_seed(0)
    corr = CorrespondenceNet(TINY).eval()
    semantic, exemplar, exemplar_semantic = _inputs(64)
    with torch.no_grad():
        theta, phi = corr.matching_features(semantic, exemplar, exemplar_semantic)[0]
        # The paper's formula written out: M = softmax(theta^T phi / tau), warp = M @ avgpool8(exemplar).
        matrix = F.softmax(theta.flatten(2).transpose(1, 2) @ phi.flatten(2) / TINY.temperature, dim=-1)
        expected = (matrix @ F.avg_pool2d(exemplar, 8).flatten(2).transpose(1, 2)).transpose(1, 2).reshape(1, 3, 8, 8)
        whole = corr(semantic, exemplar, exemplar_semantic, propagation_orders(0, TINY.iterations))
        monkeypatch.setattr(cocosnet2, "_GATHER_BUDGET", 8 * 64 * 4)  # 8 rows of the matrix at a time
        chunked = corr(semantic, exemplar, exemplar_semantic, propagation_orders(0, TINY.iterations))
    torch.testing.assert_close(whole.warps[0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked.warps[0], expected, rtol=0, atol=1e-5)
    assert torch.equal(whole.indices[0][0], matrix[0].argmax(dim=-1))
    for a, b in zip(whole.warps, chunked.warps):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def _matching_twins(config: CoCosNetConfig) -> CorrespondenceNet:
    """A network whose two encoders see only the semantics and agree, and whose GRU proposes no moves:
    for it, a position's best match is the exemplar position with the same semantics."""
    torch.manual_seed(1)
    corr = CorrespondenceNet(config).eval()
    seg, img = corr.adaptive_model_seg.state_dict(), corr.adaptive_model_img.state_dict()
    for key, value in seg.items():
        if img[key].shape == value.shape:
            img[key] = value.clone()
        else:  # the photo's 3 extra input channels are ignored
            img[key] = torch.cat([torch.zeros_like(value[:, :3]), value], dim=1)
    corr.adaptive_model_img.load_state_dict(img)
    for level in range(4):
        getattr(corr, f"phi_{level}").load_state_dict(getattr(corr, f"theta_{level}").state_dict())
    torch.nn.init.zeros_(corr.patch_match.refine_net.flow_head.conv2.weight)
    torch.nn.init.zeros_(corr.patch_match.refine_net.flow_head.conv2.bias)
    return corr


# Wide enough matching features that the coarsest softmax is sharp (with 4 channels it is soft).
TWINS = CoCosNetConfig(semantic_nc=20, nef=16, ngf=2, spade_hidden=8, iterations=2)


def test_same_image_warps_to_itself_at_every_level():
    corr = _matching_twins(TWINS)
    g = torch.Generator().manual_seed(3)
    semantic = torch.rand(1, 20, 64, 64, generator=g)
    photo = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        result = corr(semantic, photo, semantic, propagation_orders(0, TWINS.iterations))
    for warp in result.warps:
        factor = 64 // warp.shape[-1]
        pooled = F.avg_pool2d(photo, factor) if factor > 1 else photo
        torch.testing.assert_close(warp, pooled, rtol=0, atol=5e-3)
    positions = torch.arange(64 * 64)
    assert torch.equal(result.indices[-1][0, :, 0], positions)


def test_a_shifted_exemplar_is_shifted_back():
    corr = _matching_twins(TWINS)
    g = torch.Generator().manual_seed(4)
    semantic = torch.rand(1, 20, 64, 64, generator=g)
    photo = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    shift = (8, 16)  # rows, columns: the exemplar shows everything 8 px lower and 16 px further right
    with torch.no_grad():
        result = corr(semantic, photo.roll(shift, dims=(2, 3)), semantic.roll(shift, dims=(2, 3)),
                      propagation_orders(0, TWINS.iterations))
    # Where both the input position and its match lie 8 px or more inside the (reflection padded)
    # borders, and the match does not wrap around: rows 8..47, columns 8..39 of the input.
    error = (result.warps[-1] - photo).abs()[:, :, 8:48, 8:40]
    assert (error < 1e-2).float().mean() > 0.97


def test_propagation_orders_are_seeded_and_leave_global_random_alone():
    random.seed(123)
    before = random.random()
    random.seed(123)
    first = propagation_orders(7, 5)
    assert random.random() == before
    assert first == propagation_orders(7, 5) and first != propagation_orders(8, 5)
    assert len(first) == 3 and all(len(level) == 5 for level in first)
    assert {pair for level in first for pair in level} <= {("horizontal", "vertical"), ("vertical", "horizontal")}


@pytest.mark.parametrize("size", [64, 96, 128])
def test_sizes_other_than_512(size):
    corr_state, gen_state = official_state_dicts()
    corr, gen = build_cocosnet(corr_state, gen_state, iterations=1)
    semantic, exemplar, exemplar_semantic = _inputs(size)
    with torch.no_grad():
        result = corr(semantic, exemplar, exemplar_semantic, propagation_orders(0, 1))
        image = gen(semantic, result.warps)
    assert [w.shape[-1] for w in result.warps] == [size // 8, size // 4, size // 2, size]
    assert image.shape == (1, 3, size, size) and image.abs().max() <= 1
    assert result.indices[-1].shape == (1, size * size, TINY.candidates)


def test_fine_levels_never_build_a_full_correlation(monkeypatch):
    """Beyond the coarsest level the largest tensor is O(HW*K): watch every softmax's input."""
    corr_state, gen_state = official_state_dicts()
    corr, _ = build_cocosnet(corr_state, gen_state, iterations=1)
    biggest = []
    real_softmax = F.softmax

    def watched(x, *args, **kwargs):
        biggest.append(x.numel())
        return real_softmax(x, *args, **kwargs)

    monkeypatch.setattr(cocosnet2.F, "softmax", watched)
    semantic, exemplar, exemplar_semantic = _inputs(128)
    with torch.no_grad():
        corr(semantic, exemplar, exemplar_semantic, propagation_orders(0, 1))
    coarse = (128 // 8) ** 4
    assert biggest[0] == coarse
    assert max(biggest[1:]) <= 128 * 128 * 3 * TINY.candidates


# --------------------------------------------------------------------------- pipeline


@pytest.fixture
def tiny_pipeline():
    corr_state, gen_state = official_state_dicts()
    corr, gen = build_cocosnet(corr_state, gen_state, iterations=2)
    return ExemplarPipeline(corr, gen, device=torch.device("cpu"), settings=ExemplarSettings(size=64, iterations=2))


def _pose_json(path: Path, points: dict[int, tuple[float, float]]) -> Path:
    flat = []
    for index in range(18):
        x, y = points.get(index, (0.0, 0.0))
        flat += [x, y, 0.9 if index in points else 0.0]
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": flat}]}))
    return path


_STANDING = {0: (37, 10), 1: (37, 25), 2: (27, 25), 3: (24, 45), 4: (22, 62), 5: (47, 25), 6: (50, 45), 7: (52, 62),
             8: (31, 62), 9: (30, 85), 10: (30, 105), 11: (43, 62), 12: (44, 85), 13: (44, 105)}


def test_stage_times_wait_for_the_device_queue(tiny_pipeline, monkeypatch):
    # CUDA and MPS run queued work after the call returns: the stage clocks must wait for it.
    # Only the waits are recorded here; nothing runs on those devices.
    waited = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(str(device)))
    for name in ("mps", "cuda:1", "cpu"):
        tiny_pipeline.device = torch.device(name)
        tiny_pipeline._sync()
    assert waited == ["mps", "cuda:1"]


def test_pipeline_output_keeps_the_exemplar_aspect_ratio(tiny_pipeline, tmp_path):
    photo = Picture(np.full((110, 75, 3), 200, np.uint8))  # a DeepFashion-shaped (portrait) photo
    pose = _pose_json(tmp_path / "pose.json", _STANDING)
    semantic = tiny_pipeline.read_semantics(pose, frame=(75, 110))
    assert semantic.kind == "pose" and semantic.channels.shape == (20, 64, 64) and semantic.drawing is not None
    result = tiny_pipeline.translate(semantic, photo, semantic)
    assert (result.picture.width, result.picture.height) == (44, 64)
    assert [(w.width, w.height) for w in result.warps] == [(5, 8), (11, 16), (22, 32), (44, 64)]
    again = tiny_pipeline.translate(semantic, photo, semantic)
    assert np.array_equal(result.picture.rgb, again.picture.rgb)  # deterministic


def test_exemplar_is_padded_with_the_official_grey():
    photo = Picture(np.zeros((64, 32, 3), np.uint8))
    tensor = exemplar_tensor(photo, 64)
    assert tensor.shape == (3, 64, 64)
    assert np.allclose(tensor[:, :, :14], 232 / 127.5 - 1) and np.allclose(tensor[:, :, 18:46], -1)


def test_label_maps_are_one_hot_and_channel_counts_are_checked(tmp_path):
    from PIL import Image

    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 10:30] = 2
    labels[30:, :] = 255  # "unknown"
    Image.fromarray(labels).save(tmp_path / "labels.png")
    one_hot = load_semantics(tmp_path / "labels.png", size=40, channels=3, frame=(40, 40), label_nc=3)
    assert one_hot.kind == "label" and one_hot.channels.shape == (3, 40, 40)
    assert one_hot.channels[2, 15, 15] == 1 and one_hot.channels[0, 15, 15] == 0 and one_hot.channels[0, 5, 5] == 1
    assert one_hot.channels[:, 35, 5].sum() == 0
    with pytest.raises(InputError, match="has class 2"):
        load_semantics(tmp_path / "labels.png", size=40, channels=2, frame=(40, 40), label_nc=2)
    with pytest.raises(InputError, match="--label-nc 3 does not match"):
        load_semantics(tmp_path / "labels.png", size=40, channels=20, frame=(40, 40), label_nc=3)
    with pytest.raises(InputError, match="gives 1 channel, but this checkpoint takes 20"):
        load_semantics(tmp_path / "labels.png", size=40, channels=20, frame=(40, 40))
    edges = load_semantics(tmp_path / "labels.png", size=32, channels=1, frame=(40, 40))
    assert edges.kind == "edge" and edges.channels.shape == (1, 32, 32) and edges.channels.max() == 1.0


def test_a_jpeg_label_map_is_warned_of_and_its_stray_classes_explained(tmp_path, caplog):
    """JPEG moves grey levels along every edge: stray classes, refused as 'has class 3' with no
    reason given, or used without a word."""
    from PIL import Image

    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 10:30] = 2
    Image.fromarray(labels).save(tmp_path / "labels.jpg", quality=60)
    assert np.asarray(Image.open(tmp_path / "labels.jpg")).max() > 2  # the compression made other classes
    with pytest.raises(InputError) as refused:
        load_semantics(tmp_path / "labels.jpg", size=40, channels=3, frame=(40, 40), label_nc=3)
    assert "JPEG compression changes the values along edges" in str(refused.value.hint)
    labels[labels == 2] = 0
    Image.fromarray(labels).save(tmp_path / "plain.jpg")  # one class: nothing for JPEG to blur
    load_semantics(tmp_path / "plain.jpg", size=40, channels=3, frame=(40, 40), label_nc=3)
    assert any(f"{tmp_path / 'plain.jpg'}: is a JPEG label map" in record.getMessage() for record in caplog.records)
    caplog.clear()
    load_semantics(tmp_path / "plain.jpg", size=32, channels=1, frame=(40, 40))  # an edge image: JPEG is fine
    assert not caplog.records


def test_a_pose_for_a_label_model_is_refused(tmp_path):
    pose = _pose_json(tmp_path / "pose.json", _STANDING)
    with pytest.raises(InputError, match="is a pose, but this checkpoint takes 3-channel semantics"):
        load_semantics(pose, size=64, channels=3, frame=(75, 110))


def test_a_stray_unknown_class_is_found_at_every_working_size(tmp_path):
    from PIL import Image

    labels = np.zeros((100, 100), np.uint8)
    labels[37, 41] = 7  # one pixel: nearest-neighbour resizing to 64 px would drop it
    path = tmp_path / "stray.png"
    Image.fromarray(labels).save(path)
    for size in (64, 256):
        with pytest.raises(InputError, match="has class 7, but the model knows 5 classes"):
            load_semantics(path, size=size, channels=5, frame=(100, 100), label_nc=5)
