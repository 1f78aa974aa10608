"""Tests for the shared StyleGAN2 generator and the fused-op checkpoint conversion
(i2icli.archs.stylegan2).

References: basicsr's original ``StyleGAN2Generator`` (the fused-op module whose
checkpoints we convert) and GFPGAN's ``StyleGAN2GeneratorClean`` (the bilinear form). The
fused CUDA ops are not built here, so the fused leaky ReLU is replaced by its plain-torch
definition for these tests; basicsr's upfirdn2d already runs a native path on CPU tensors.
Everything is tiny so the file runs in seconds on a CPU.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

import i2icli._compat  # noqa: F401  (must precede any gfpgan/basicsr import)
from i2icli.archs.stylegan2 import (
    StyleGAN2Generator,
    convert_fused_state_dict,
    is_fused_layout,
    stylegan2_config_from_state_dict,
    stylegan2_from_state_dict,
)

LR_MLP = 0.01

# Sizes on both sides of 64 px, where channel_multiplier starts to matter, and two MLP
# depths. Kept small: every new conv shape costs a one-off kernel setup on CPU.
CONFIGS: dict[str, dict[str, Any]] = {
    "32px": dict(out_size=32, num_style_feat=32, num_mlp=3, channel_multiplier=1, narrow=1 / 32),
    "64px-cm2": dict(out_size=64, num_style_feat=16, num_mlp=2, channel_multiplier=2, narrow=1 / 64),
}


def _plain_fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, scale: float = 2**0.5) -> Tensor:
    """What basicsr's CUDA kernel computes: leaky_relu(x + bias) * scale, bias on dim 1."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), negative_slope) * scale


@pytest.fixture(scope="module", autouse=True)
def _plain_fused_ops() -> Iterator[None]:
    # import_module, not "import a.b.c as m": basicsr's package __init__ rebinds the
    # submodule names to the functions they define.
    arch = importlib.import_module("basicsr.archs.stylegan2_arch")
    fused_act = importlib.import_module("basicsr.ops.fused_act.fused_act")
    upfirdn2d = importlib.import_module("basicsr.ops.upfirdn2d.upfirdn2d")

    # On CPU tensors basicsr's upfirdn2d dispatches to its pure-torch upfirdn2d_native;
    # check that assumption instead of silently testing against a stub.
    x, k = torch.randn(1, 2, 5, 5), torch.rand(4, 4)
    native = upfirdn2d.upfirdn2d_native(x, k, 2, 2, 1, 1, 2, 1, 2, 1)
    assert torch.equal(upfirdn2d.upfirdn2d(x, k, up=2, pad=(2, 1)), native)

    with pytest.MonkeyPatch.context() as mp:
        # EqualLinear calls the name imported into stylegan2_arch; FusedLeakyReLU calls the
        # one in its own module.
        mp.setattr(arch, "fused_leaky_relu", _plain_fused_leaky_relu)
        mp.setattr(fused_act, "fused_leaky_relu", _plain_fused_leaky_relu)
        yield


def _randomise_fused_(module: torch.nn.Module, seed: int) -> None:
    """Seeded random values for every parameter and buffer of a fused-op generator.

    Raw (pre-scale) values are chosen so that the *effective* weights look like a trained
    model's: unit-variance activations, modulation around the identity, noise and biases
    that visibly contribute. Default inits would leave noise strengths and biases at 0.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            values = torch.randn(tensor.shape, generator=gen)
            if name.startswith("style_mlp."):
                values *= (0.1 if name.endswith("bias") else 1.0) / LR_MLP  # lr_mul undoes this
            elif name.endswith("modulation.bias"):
                values = 1.0 + 0.1 * values
            elif name.endswith(".bias") or (name.endswith(".weight") and tensor.ndim == 1):
                values *= 0.2  # conv/to_rgb biases and noise strengths
            tensor.copy_(values)


def _randomise_clean_(module: torch.nn.Module, seed: int) -> None:
    """The same for a clean-layout generator (effective weights stored directly)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            values = torch.randn(tensor.shape, generator=gen)
            if ".noises." in name or "constant_input" in name:
                pass
            elif name.endswith("modulation.bias"):
                values = 1.0 + 0.1 * values
            elif tensor.ndim >= 2 and not name.endswith("bias"):
                values /= math.sqrt(tensor[0].numel() if tensor.ndim == 2 else tensor[0, 0].numel())
            else:
                values *= 0.2
            tensor.copy_(values)


def _fused_reference(cfg: dict[str, Any], seed: int = 1234) -> torch.nn.Module:
    from basicsr.archs.stylegan2_arch import StyleGAN2Generator as FusedStyleGAN2

    torch.manual_seed(0)
    reference = FusedStyleGAN2(**cfg, resample_kernel=(1, 3, 3, 1), lr_mlp=LR_MLP).eval()
    _randomise_fused_(reference, seed)
    return reference


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def fused_pair(request: pytest.FixtureRequest) -> tuple[dict[str, Any], torch.nn.Module, StyleGAN2Generator]:
    """(config, randomised fused reference, our "fir" model loaded from its converted weights)."""
    cfg = CONFIGS[request.param]
    reference = _fused_reference(cfg)
    ours = StyleGAN2Generator(**cfg, resample="fir").eval()
    ours.load_state_dict(convert_fused_state_dict(reference.state_dict(), lr_mlp=LR_MLP), strict=True)
    return cfg, reference, ours


def _w_plus(batch: int, model: StyleGAN2Generator, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.num_latent, model.num_style_feat, generator=gen)


# --------------------------------------------------------------------------------------
# Parity with the fused-op reference
# --------------------------------------------------------------------------------------


def test_fused_parity_w_plus(fused_pair, record_property) -> None:
    cfg, reference, ours = fused_pair
    latent = _w_plus(3, ours, seed=7)
    assert reference.num_latent == ours.num_latent
    with torch.inference_mode():
        # A (b, num_latent, d) style is used as given: conv i gets latent[:, i], the to_rgb
        # after it latent[:, i + 1], the same indexing as synthesis_step.
        expected = reference([latent], input_is_latent=True, randomize_noise=False)[0]
        actual = ours(latent)
    assert actual.shape == expected.shape == (3, 3, cfg["out_size"], cfg["out_size"])
    assert expected.std() > 0.05  # not a vacuous comparison
    diff = (actual - expected).abs().max().item()
    record_property("max_abs_diff", diff)
    print(f"fused parity {cfg['out_size']}px W+: max abs diff {diff:.3e} (image std {expected.std():.3f})")
    assert diff < 1e-5


def test_fused_parity_mapping(fused_pair) -> None:
    cfg, reference, ours = fused_pair
    z = torch.randn(4, cfg["num_style_feat"], generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        w_ref, w = reference.style_mlp(z), ours.mapping(z)
        image_ref = reference([z], input_is_latent=False, randomize_noise=False)[0]
        image = ours(ours.mapping(z))
    assert w_ref.std() > 0.05
    w_diff = (w - w_ref).abs().max().item()
    image_diff = (image - image_ref).abs().max().item()
    print(f"fused parity {cfg['out_size']}px mapping: w {w_diff:.3e}, image from z {image_diff:.3e}")
    assert w_diff < 1e-5
    # Rounding differences of ~1e-6 in w (three float32 layers) are amplified by the
    # synthesis; the float64 test below shows the converted model itself is exact.
    assert image_diff < 1e-4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_conversion_is_exact_in_float64(name: str) -> None:
    """In float64 the only differences left are float64 rounding: the folding is exact."""
    cfg = CONFIGS[name]
    reference = _fused_reference(cfg).double()
    ours = StyleGAN2Generator(**cfg, resample="fir").eval().double()
    ours.load_state_dict(convert_fused_state_dict(reference.state_dict(), lr_mlp=LR_MLP), strict=True)
    latent = _w_plus(2, ours, seed=9).double()
    z = torch.randn(2, cfg["num_style_feat"], generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    with torch.inference_mode():
        w_plus_diff = (reference([latent], input_is_latent=True, randomize_noise=False)[0] - ours(latent)).abs().max()
        z_diff = (reference([z], input_is_latent=False, randomize_noise=False)[0] - ours(ours.mapping(z))).abs().max()
    print(f"fused parity {cfg['out_size']}px float64: W+ {w_plus_diff:.2e}, from z {z_diff:.2e}")
    assert w_plus_diff < 1e-11 and z_diff < 1e-11


def test_bilinear_vs_fir_on_fused_weights(fused_pair) -> None:
    """How far the clean (bilinear) form is from the trained (FIR) one on the same weights.

    The skip upsampling agrees in the interior, but a transposed conv applies its kernel
    flipped, so the upsampling convs differ everywhere; flipping those kernels leaves
    only border effects. Reported for information; the bound is loose on purpose.
    """
    cfg, reference, ours = fused_pair
    weights = ours.state_dict()
    bilinear = StyleGAN2Generator(**cfg, resample="bilinear").eval()
    bilinear.load_state_dict(weights, strict=True)
    flipped = StyleGAN2Generator(**cfg, resample="bilinear").eval()
    # Even style_convs are the upsampling ones.
    up_kernels = {f"style_convs.{i}.modulated_conv.weight" for i in range(0, len(ours.style_convs), 2)}
    flipped.load_state_dict({k: v.flip(-1, -2) if k in up_kernels else v for k, v in weights.items()}, strict=True)
    latent = _w_plus(3, ours, seed=11)
    with torch.inference_mode():
        fir, bil, bil_flipped = ours(latent), bilinear(latent), flipped(latent)
    border = cfg["out_size"] // 8
    inner = (slice(None), slice(None), slice(border, -border), slice(border, -border))
    stats = {
        name: ((img - fir).abs().max().item(), (img - fir).abs().mean().item(), (img - fir)[inner].abs().mean().item())
        for name, img in (("bilinear", bil), ("bilinear, up-kernels flipped", bil_flipped))
    }
    for name, (mx, mean, interior) in stats.items():
        print(
            f"{cfg['out_size']}px {name} vs fir: max {mx:.3f}, mean {mean:.4f}, interior mean {interior:.4f} "
            f"(fir image std {fir.std():.3f})"
        )
    mx, mean, _ = stats["bilinear"]
    assert 1e-4 < mean < fir.std().item() * 2 and math.isfinite(mx)
    # With the kernels flipped only the borders disagree, so the interior gets much closer.
    assert stats["bilinear, up-kernels flipped"][2] < stats["bilinear"][2]


# --------------------------------------------------------------------------------------
# Parity with the clean (bilinear) reference, which GFPGAN shares
# --------------------------------------------------------------------------------------


def test_clean_parity_with_gfpgan_reference() -> None:
    from gfpgan.archs.stylegan2_clean_arch import StyleGAN2GeneratorClean

    cfg = CONFIGS["64px-cm2"]
    torch.manual_seed(0)
    reference = StyleGAN2GeneratorClean(**cfg).eval()
    _randomise_clean_(reference, seed=99)
    ours = StyleGAN2Generator(**cfg).eval()
    ref_sd = reference.state_dict()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref_sd.items()]
    ours.load_state_dict(ref_sd, strict=True)
    assert not is_fused_layout(ref_sd)
    assert stylegan2_config_from_state_dict(ref_sd) == cfg

    latent = _w_plus(2, ours, seed=5)
    with torch.inference_mode():
        expected = reference([latent], input_is_latent=True, randomize_noise=False)[0]
        actual = ours(latent)
    assert expected.std() > 0.05
    diff = (actual - expected).abs().max().item()
    print(f"clean parity {cfg['out_size']}px: max abs diff {diff:.3e}")
    assert diff < 1e-5


# --------------------------------------------------------------------------------------
# Layer-at-a-time API
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("resample", ["bilinear", "fir"])
def test_synthesis_steps_equal_forward(resample: str) -> None:
    cfg = CONFIGS["64px-cm2"]
    torch.manual_seed(0)
    model = StyleGAN2Generator(**cfg, resample=resample).eval()
    _randomise_clean_(model, seed=3)
    latent = _w_plus(2, model, seed=1)
    assert model.num_convs == 1 + 2 * (int(math.log2(cfg["out_size"])) - 2)
    assert model.num_latent == model.num_convs + 1
    with torch.inference_mode():
        out = skip = None
        for index in range(model.num_convs):
            previous_skip = skip
            out, skip = model.synthesis_step(index, out, skip, latent)
            res, ch = model.step_resolution(index), model.step_channels(index)
            assert out.shape == (2, ch, res, res)
            ends_octave = index == 0 or index % 2 == 0
            # The RGB catches up with the features at the end of each octave.
            skip_res = res if ends_octave else res // 2
            assert skip is not None and skip.shape == (2, 3, skip_res, skip_res)
            assert (skip is previous_skip) == (not ends_octave)
        assert torch.equal(skip, model(latent))
        # A single w (b, d) is the same as repeating it over all layers.
        w = latent[:, 0]
        assert torch.allclose(model(w), model(w[:, None].expand(-1, model.num_latent, -1)), atol=1e-6)


def test_batch_of_different_latents_equals_each_alone(fused_pair) -> None:
    _, _, ours = fused_pair
    latent = _w_plus(3, ours, seed=21)
    with torch.inference_mode():
        batch = ours(latent)
        alone = torch.cat([ours(latent[i : i + 1]) for i in range(3)])
    assert (batch - alone).abs().max().item() < 1e-5
    assert (batch[0] - batch[1]).abs().max() > 0.01  # the samples really differ


@pytest.mark.parametrize("resample", ["bilinear", "fir"])
def test_scaling_activations_equals_modulating_kernels(resample: str) -> None:
    torch.manual_seed(0)
    model = StyleGAN2Generator(**CONFIGS["64px-cm2"], resample=resample)
    _randomise_clean_(model, seed=5)
    model.requires_grad_(False)
    results = {}
    for scaled in (False, True):
        model.scale_activations(scaled)
        latent = _w_plus(3, model, seed=6).requires_grad_(True)
        image = model(latent)
        image.square().mean().backward()
        results[scaled] = (image.detach(), latent.grad)
    model.scale_activations(False)
    (image_k, grad_k), (image_a, grad_a) = results[False], results[True]
    assert (image_a - image_k).abs().max() < 1e-4 * image_k.abs().max()
    assert (grad_a - grad_k).abs().max() < 1e-4 * grad_k.abs().max()


def test_mean_latent_is_seeded_average_of_mapping() -> None:
    torch.manual_seed(0)
    model = StyleGAN2Generator(**CONFIGS["64px-cm2"]).eval()
    mean = model.mean_latent(256, generator=torch.Generator().manual_seed(4))
    assert mean.shape == (1, model.num_style_feat) and not mean.requires_grad
    z = torch.randn(256, model.num_style_feat, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(mean, model.mapping(z).mean(0, keepdim=True), atol=1e-6)


@pytest.mark.parametrize("resample", ["bilinear", "fir"])
def test_gradients_reach_the_latent(resample: str) -> None:
    torch.manual_seed(0)
    model = StyleGAN2Generator(**CONFIGS["64px-cm2"], resample=resample)
    _randomise_clean_(model, seed=8)
    model.requires_grad_(False)
    latent = _w_plus(2, model, seed=2).requires_grad_(True)
    target = torch.rand(2, 3, 64, 64) * 2 - 1
    loss = (model(latent) - target).square().mean()
    loss.backward()
    assert latent.grad is not None and torch.isfinite(latent.grad).all()
    # Every layer's code influences the image, so every row gets a gradient.
    assert (latent.grad.abs().sum(dim=(0, 2)) > 0).all()

    z = torch.randn(2, model.num_style_feat, requires_grad=True)
    model(model.mapping(z)).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------
# Conversion: config inference, strictness
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fused_state_dict() -> dict[str, Tensor]:
    return dict(_fused_reference(CONFIGS["64px-cm2"]).state_dict())


def test_config_and_layout_detection(fused_state_dict) -> None:
    assert is_fused_layout(fused_state_dict)
    assert is_fused_layout({"params_ema": fused_state_dict})
    assert stylegan2_config_from_state_dict({"params_ema": fused_state_dict}) == CONFIGS["64px-cm2"]
    with pytest.raises(ValueError, match="not a StyleGAN2"):
        is_fused_layout({"foo": torch.zeros(1)})


def test_loader_builds_the_right_model(fused_state_dict) -> None:
    model = stylegan2_from_state_dict({"params_ema": fused_state_dict})
    assert model.resample == "fir" and not model.training
    clean = stylegan2_from_state_dict(model.state_dict())
    assert clean.resample == "bilinear"
    latent = _w_plus(1, model, seed=0)
    with torch.inference_mode():
        assert torch.equal(stylegan2_from_state_dict(model.state_dict(), resample="fir")(latent), model(latent))


def _convert(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return convert_fused_state_dict(sd, lr_mlp=LR_MLP)


def test_conversion_rejects_missing_key(fused_state_dict) -> None:
    sd = dict(fused_state_dict)
    del sd["to_rgbs.1.modulated_conv.weight"]
    with pytest.raises(ValueError, match=r"missing keys.*'to_rgbs\.1\.modulated_conv\.weight'"):
        _convert(sd)


def test_conversion_rejects_extra_key(fused_state_dict) -> None:
    sd = dict(fused_state_dict)
    sd["style_convs.0.unused"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys.*'style_convs\.0\.unused'"):
        _convert(sd)


@pytest.mark.parametrize("key", ["style_convs.3.activate.bias", "style_mlp.2.weight", "noises.noise4"])
def test_conversion_rejects_wrong_shape(fused_state_dict, key: str) -> None:
    sd = dict(fused_state_dict)
    sd[key] = torch.zeros(*sd[key].shape[:-1], sd[key].shape[-1] + 1)
    with pytest.raises(ValueError, match="wrong shapes.*" + re.escape(key)):
        _convert(sd)


def test_conversion_checks_and_drops_resampling_kernels(fused_state_dict) -> None:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = taps[:, None] * taps[None, :]
    kernel = kernel / kernel.sum() * 4
    sd = dict(fused_state_dict)
    sd["style_convs.2.modulated_conv.smooth.kernel"] = kernel
    sd["to_rgbs.0.upsample.kernel"] = kernel
    converted = _convert(sd)
    assert not any(k.endswith("kernel") for k in converted)
    assert converted.keys() == _convert(fused_state_dict).keys()

    with pytest.raises(ValueError, match=r"to_rgbs\.0\.upsample\.kernel"):
        _convert({**sd, "to_rgbs.0.upsample.kernel": kernel / 4})
    # Only even (upsampling) style convs carry a blur.
    with pytest.raises(ValueError, match=r"unexpected keys.*style_convs\.3\.modulated_conv\.smooth\.kernel"):
        _convert({**sd, "style_convs.3.modulated_conv.smooth.kernel": kernel})


def test_conversion_rejects_other_inputs(fused_state_dict) -> None:
    clean = StyleGAN2Generator(**CONFIGS["64px-cm2"]).state_dict()
    with pytest.raises(ValueError, match="clean"):
        _convert(clean)
    with pytest.raises(ValueError, match="lr_mlp"):
        convert_fused_state_dict(fused_state_dict, lr_mlp=0)
    with pytest.raises(ValueError, match="not tensors.*'style_mlp.1.bias'"):
        _convert({**fused_state_dict, "style_mlp.1.bias": [0.0]})
