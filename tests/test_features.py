"""Feature networks (VGG trunks, FID Inception stem) and the single-image Fréchet distance.

Random weights in the official file layouts (tests/feature_checkpoints.py); parity is checked
against torchvision's and pytorch-fid's own networks loaded with the same state dicts.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
import torchvision
from feature_checkpoints import (
    random_fid_inception_state_dict,
    random_torchvision_inception_state_dict,
    random_vgg_state_dict,
)

from i2icli.archs.features import FIDInceptionFeatures, VGGFeatures, vgg_layer_names
from i2icli.pipelines.frechet import (
    frechet_distance,
    frechet_distance_of_samples,
    single_image_frechet,
    spatial_statistics,
)

VGG_LAYERS = {
    19: ["relu1_2", "relu2_2", "relu3_4", "relu4_4"],
    16: ["relu1_2", "relu2_2", "relu3_3", "relu4_3"],
}
# Channels and downsampling of each named output for a 64x64 input.
EXPECTED = {"relu1_2": (64, 64), "relu2_2": (128, 32), "relu3_4": (256, 16), "relu4_4": (512, 8), "relu3_3": (256, 16), "relu4_3": (512, 8)}


def images(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def vgg_dicts() -> dict[int, dict[str, torch.Tensor]]:
    return {16: random_vgg_state_dict(16, seed=1), 19: random_vgg_state_dict(19, seed=2)}


@pytest.fixture(scope="module")
def fid_dict() -> dict[str, torch.Tensor]:
    return random_fid_inception_state_dict(seed=3)


@pytest.fixture(scope="module")
def fid_net(fid_dict) -> FIDInceptionFeatures:
    net = FIDInceptionFeatures()
    net.load_fid_state_dict(fid_dict)
    return net


# --------------------------------------------------------------------------------------------
# VGG
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [16, 19])
def test_vgg_loads_official_layout_and_names_outputs(depth, vgg_dicts):
    net = VGGFeatures(depth, VGG_LAYERS[depth])
    net.load_torchvision_state_dict(vgg_dicts[depth])
    out = net(images(2, 64, 64, seed=0))
    assert list(out) == VGG_LAYERS[depth]
    for name, value in out.items():
        channels, size = EXPECTED[name]
        assert value.shape == (2, channels, size, size)
        assert net.channels[name] == channels
    # Cut after the deepest requested layer: relu4_4 is index 26 in VGG-19, relu4_3 is 22 in VGG-16.
    assert len(net.features) == {19: 27, 16: 23}[depth]
    assert set(net.state_dict()) <= set(vgg_dicts[depth])
    assert torch.equal(net.features[0].weight, vgg_dicts[depth]["features.0.weight"])


@pytest.mark.parametrize(("model_depth", "file_depth"), [(19, 16), (16, 19)])
def test_vgg_rejects_the_other_depth(model_depth, file_depth, vgg_dicts):
    net = VGGFeatures(model_depth, ["relu2_2"])
    with pytest.raises(ValueError, match=f"a VGG-{file_depth}.*VGG-{model_depth}"):
        net.load_torchvision_state_dict(vgg_dicts[file_depth])


def _vgg19_variants(state: dict[str, torch.Tensor]) -> dict[str, tuple[dict, str]]:
    missing = dict(state)
    del missing["features.34.bias"]  # even a key past the kept trunk: the file must be whole
    wrong_shape = dict(state)
    wrong_shape["classifier.6.weight"] = torch.zeros(10, 4096)
    extra = dict(state, **{"features.99.weight": torch.zeros(1)})
    no_head = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    wrapped = {"state_dict": state}
    with torch.device("meta"):
        bn_layout = torchvision.models.vgg19_bn(weights=None).state_dict()
    batch_norm = {k: torch.zeros(()).expand(v.shape) for k, v in bn_layout.items()}
    integer = dict(state)
    integer["features.0.weight"] = state["features.0.weight"].to(torch.int32)
    return {
        "missing": (missing, "missing 'features.34.bias'"),
        "wrong shape": (wrong_shape, r"'classifier.6.weight' of shape \(10, 4096\) where \(1000, 4096\)"),
        "unexpected": (extra, "unexpected key 'features.99.weight'"),
        "no classifier": (no_head, "no classifier"),
        "wrapped": (wrapped, "no features.N.weight"),
        "batch norm": (batch_norm, "batch-normalised"),
        "integer": (integer, "floating-point"),
        "not a mapping": ([1, 2], "state dict"),
    }


@pytest.mark.parametrize("case", ["missing", "wrong shape", "unexpected", "no classifier", "wrapped", "batch norm", "integer", "not a mapping"])
def test_vgg_rejects_damaged_or_foreign_files(case, vgg_dicts):
    state, message = _vgg19_variants(vgg_dicts[19])[case]
    net = VGGFeatures(19, ["relu3_4"])
    before = net.features[0].weight.clone()
    with pytest.raises(ValueError, match=message):
        net.load_torchvision_state_dict(state)
    assert torch.equal(net.features[0].weight, before)  # nothing half-loaded


def test_vgg_layer_names_are_validated():
    assert "relu3_4" in vgg_layer_names(19) and "relu3_4" not in vgg_layer_names(16)
    assert vgg_layer_names(16)[-1] == "pool5"
    with pytest.raises(ValueError, match="VGG-16 has no layer named 'relu3_4'"):
        VGGFeatures(16, ["relu3_3", "relu3_4"])
    with pytest.raises(ValueError, match="depth"):
        VGGFeatures(13, ["relu1_1"])
    with pytest.raises(ValueError, match="at least one"):
        VGGFeatures(19, [])
    with pytest.raises(ValueError, match=r"\(b, 3, h, w\)"):
        VGGFeatures(19, ["relu1_1"])(torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("depth", [16, 19])
def test_vgg_matches_torchvision(depth, vgg_dicts):
    """Same weights, same input: our relu outputs equal torchvision's own trunk's."""
    state = vgg_dicts[depth]
    layers = VGG_LAYERS[depth] + ["conv1_1", "pool3"]
    ours = VGGFeatures(depth, layers)
    ours.load_torchvision_state_dict(state)

    build = {16: torchvision.models.vgg16, 19: torchvision.models.vgg19}[depth]
    with torch.device("meta"):
        reference = build(weights=None)
    reference.load_state_dict(state, strict=True, assign=True)  # strict: the file layout is torchvision's
    reference.eval()

    x = images(2, 64, 64, seed=5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = ((x + 1) / 2 - mean) / std
    # The standard names, derived here independently of the module under test.
    wanted = {}
    position = {}
    block, conv = 1, 0
    for i, module in enumerate(reference.features):
        if isinstance(module, torch.nn.Conv2d):
            conv += 1
            position[f"conv{block}_{conv}"] = i
        elif isinstance(module, torch.nn.ReLU):
            position[f"relu{block}_{conv}"] = i
        else:
            position[f"pool{block}"] = i
            block, conv = block + 1, 0
    with torch.no_grad():
        got = ours(x)
        for i, module in enumerate(reference.features[: max(position[n] for n in layers) + 1]):
            h = module(h)
            for name in layers:
                if position[name] == i:
                    wanted[name] = h.clone()  # torchvision's ReLUs work in place
    for name in layers:
        diff = (got[name] - wanted[name]).abs().max().item()
        scale = wanted[name].abs().max().item()
        assert diff <= 1e-5 * max(scale, 1.0), (name, diff, scale)


def test_vgg_is_frozen_but_differentiable(vgg_dicts):
    net = VGGFeatures(16, ["relu2_2", "relu3_3"])
    net.load_torchvision_state_dict(vgg_dicts[16])
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # stays in eval mode even when a parent model trains
    x = images(1, 32, 32, seed=6).requires_grad_(True)
    out = net(x)
    (out["relu2_2"].square().mean() + out["relu3_3"].mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_random_vgg_dict_is_compact_and_survives_weights_only_load(vgg_dicts):
    state = vgg_dicts[16]
    assert state["classifier.0.weight"].shape == (4096, 25088)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert buffer.tell() < 80e6  # the official file is 528 MB; the trunk alone is ~59 MB
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    net = VGGFeatures(16, ["relu1_2"])
    net.load_torchvision_state_dict(loaded)
    assert torch.equal(loaded["classifier.0.weight"], state["classifier.0.weight"])
    assert torch.equal(random_vgg_state_dict(16, seed=1)["features.0.weight"], state["features.0.weight"])  # seeded


# --------------------------------------------------------------------------------------------
# FID Inception
# --------------------------------------------------------------------------------------------


def test_fid_inception_loads_and_has_block1_shape(fid_net, fid_dict):
    out = fid_net(images(2, 48, 40, seed=7))
    assert out.shape == (2, 192, 35, 35)
    assert torch.isfinite(out).all()
    assert set(fid_net.state_dict()) < set(fid_dict)
    assert not fid_net.training and all(not p.requires_grad for p in fid_net.parameters())
    # Files saved by older PyTorch have no num_batches_tracked; inference never reads it.
    without = {k: v for k, v in fid_dict.items() if not k.endswith("num_batches_tracked")}
    FIDInceptionFeatures().load_fid_state_dict(without)


def test_fid_inception_matches_pytorch_fid(monkeypatch, fid_net, fid_dict):
    """pytorch-fid's own InceptionV3, its weight download replaced by our random file."""
    import pytorch_fid.inception as fid_inception

    fetched = []

    def fake_download(url, *args, **kwargs):
        fetched.append(url)
        return dict(fid_dict)

    monkeypatch.setattr(fid_inception, "load_state_dict_from_url", fake_download)
    reference = fid_inception.InceptionV3([1], resize_input=True, normalize_input=False, use_fid_inception=True).eval()
    assert fetched == [fid_inception.FID_WEIGHTS_URL]  # and its load was strict: the layout is official

    for h, w in [(70, 90), (299, 299)]:
        x = images(2, h, w, seed=8)
        with torch.no_grad():
            want = reference(x)[0]
            got = fid_net(x)
        assert got.shape == want.shape == (2, 192, 35, 35)
        diff = (got - want).abs().max().item()
        assert diff <= 1e-5 * max(want.abs().max().item(), 1.0), diff


def test_fid_inception_rejects_torchvision_inception():
    net = FIDInceptionFeatures()
    with pytest.raises(ValueError, match="torchvision's ImageNet Inception-v3.*AuxLogits.*not the FID Inception"):
        net.load_fid_state_dict(random_torchvision_inception_state_dict(seed=0))


def test_fid_inception_rejects_damaged_files(fid_dict):
    net = FIDInceptionFeatures()
    no_aux = dict(fid_dict, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    with pytest.raises(ValueError, match="not the FID Inception"):
        net.load_fid_state_dict(no_aux)
    missing = {k: v for k, v in fid_dict.items() if k != "Mixed_7c.branch_pool.conv.weight"}
    with pytest.raises(ValueError, match="missing 'Mixed_7c.branch_pool.conv.weight'"):
        net.load_fid_state_dict(missing)
    wrong = dict(fid_dict, **{"fc.weight": torch.zeros(1008, 1024)})
    with pytest.raises(ValueError, match=r"'fc.weight' of shape \(1008, 1024\) where \(1008, 2048\)"):
        net.load_fid_state_dict(wrong)
    extra = dict(fid_dict, **{"module.fc.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected key 'module.fc.weight'"):
        net.load_fid_state_dict(extra)


# --------------------------------------------------------------------------------------------
# Fréchet
# --------------------------------------------------------------------------------------------


def test_spatial_statistics_match_numpy():
    features = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(9))
    mean, cov = spatial_statistics(features)
    assert mean.dtype == cov.dtype == torch.float64
    assert mean.shape == (2, 4) and cov.shape == (2, 4, 4)
    for i in range(2):
        samples = features[i].reshape(4, -1).double().numpy()  # rows: channels; columns: positions
        np.testing.assert_allclose(mean[i].numpy(), samples.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(cov[i].numpy(), np.cov(samples), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="two spatial positions"):
        spatial_statistics(torch.zeros(1, 4, 1, 1))


def test_frechet_distance_of_known_gaussians():
    mu = np.zeros(2)
    assert frechet_distance(mu, np.eye(2), mu + [3.0, 4.0], np.eye(2)) == pytest.approx(25.0)
    assert frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), 4 * torch.eye(2)) == pytest.approx(2.0)  # tr(1 + 4 - 2*2) per dim


@pytest.mark.parametrize("sizes, dims", [((3, 3), 256), ((12, 30), 64), ((5, 200), 48), ((90, 70), 16)])
def test_frechet_distance_of_samples_matches_pytorch_fid(sizes, dims):
    """Fewer samples than dimensions take the cross-product route, more take pytorch-fid's: both agree with it."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(sum(sizes) + dims)
    mixing = rng.normal(size=(dims, dims)) / np.sqrt(dims)  # correlated features, as a network's are
    first = rng.normal(size=(sizes[0], dims)) @ mixing
    second = 0.7 * rng.normal(size=(sizes[1], dims)) @ mixing + 0.3
    statistics = [(samples.mean(axis=0), np.cov(samples, rowvar=False)) for samples in (first, second)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns about the singular products it is given here
        expected = calculate_frechet_distance(*statistics[0], *statistics[1])
    assert frechet_distance_of_samples(first, second) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance_of_samples(torch.from_numpy(first), torch.from_numpy(first)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # pytorch-fid called directly
def test_frechet_distance_where_the_matrix_root_comes_back_complex(monkeypatch):
    """pytorch-fid raises "Imaginary component" for some products of singular covariances with a
    wide range of scales: a traceback after a whole inversion. The symmetric form gives the
    distance; on statistics pytorch-fid handles, both forms agree."""
    import pytorch_fid.fid_score
    from pytorch_fid.fid_score import calculate_frechet_distance

    def statistics(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        a, b = (rng.normal(size=(5, 8)) * np.exp(3 * rng.normal(size=8)) for _ in range(2))
        return [a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)]

    with pytest.raises(ValueError, match="Imaginary component"):
        calculate_frechet_distance(*statistics(19))
    distance = frechet_distance(*statistics(19))
    assert math.isfinite(distance) and distance > 0
    well_posed = statistics(1)
    well_posed[1] = well_posed[1] + np.eye(8)
    well_posed[3] = well_posed[3] + np.eye(8)
    expected = calculate_frechet_distance(*well_posed)

    def complex_root(*args):
        raise ValueError("Imaginary component 1")

    monkeypatch.setattr(pytorch_fid.fid_score, "calculate_frechet_distance", complex_root)
    assert frechet_distance(*well_posed) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_samples_refuses_what_has_no_covariance():
    with pytest.raises(ValueError, match="two samples"):
        frechet_distance_of_samples(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="same d"):
        frechet_distance_of_samples(np.zeros((3, 4)), np.zeros((3, 5)))
    assert frechet_distance_of_samples(np.full((3, 4), np.nan), np.zeros((3, 4))) == float("inf")


@pytest.fixture(scope="module")
def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth reference, and candidates: itself, a blend towards noise, pure noise."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    reference = torch.stack([xx, yy, xx * yy]).unsqueeze(0)
    noise = images(1, 64, 64, seed=10)
    candidates = torch.cat([reference, 0.8 * reference + 0.2 * noise, noise])
    return candidates, reference


@pytest.fixture(scope="module")
def scene_scores(fid_net, scene) -> list[float]:
    candidates, reference = scene
    return single_image_frechet(fid_net, candidates, reference)


def test_single_image_frechet_ranks_candidates(scene_scores):
    assert len(scene_scores) == 3 and all(isinstance(s, float) for s in scene_scores)
    same, blend, noise = scene_scores
    assert same <= 1e-6 * noise
    assert same < blend < noise


def test_single_image_frechet_batch_equals_one_by_one(fid_net, scene, scene_scores):
    candidates, reference = scene
    alone = [single_image_frechet(fid_net, candidates[i : i + 1], reference)[0] for i in (1, 2)]
    assert scene_scores[1:] == pytest.approx(alone, rel=1e-5)
    # Chunks of two leave a last chunk of one.
    chunked = single_image_frechet(fid_net, candidates, reference, chunk=2)
    assert chunked == pytest.approx(scene_scores, rel=1e-5, abs=1e-9)
    with pytest.raises(ValueError, match="one reference"):
        single_image_frechet(fid_net, candidates, candidates)


def test_pooled_fid_inception_matches_pytorch_fid_pool3(monkeypatch, fid_dict):
    """The 2048 pooled features FID compares, against pytorch-fid's block 3 on the same weights."""
    import pytorch_fid.inception as fid_inception

    monkeypatch.setattr(fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: dict(fid_dict))
    reference = fid_inception.InceptionV3([3], resize_input=True, normalize_input=False, use_fid_inception=True).eval()
    pooled = FIDInceptionFeatures(pooled=True)
    pooled.load_fid_state_dict(fid_dict)
    x = images(2, 64, 80, seed=9)
    with torch.no_grad():
        want = reference(x)[0].flatten(1)
        got = pooled(x)
    assert got.shape == want.shape == (2, 2048)
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5 * max(want.abs().max().item(), 1.0), diff
