"""Tests for our GFPGANv1Clean implementation (i2icli.archs.gfpgan).

Forward passes use tiny configurations so the whole file runs in seconds on a CPU; the
full-size (512) model is only ever built on the meta device, which allocates nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import i2icli._compat  # noqa: F401  (must precede any gfpgan/basicsr import)
from i2icli.archs.gfpgan import GFPGANv1Clean, ModulatedConv2d, gfpgan_config_from_state_dict

FACTS = Path("/work/shared/facts/gfpgan_v1_clean_512_keys.json")

# Tiny configurations that together cover every branch: sft_half on/off, one shared vs
# per-layer latents, with and without the mapping MLP (including the reference's
# pixel-norm-over-layers quirk for per-layer codes), and sizes on both sides of 64px,
# where channel_multiplier starts to matter.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "64-v1.3-like": dict(
        out_size=64, num_style_feat=32, channel_multiplier=2, narrow=1 / 16,
        sft_half=True, different_w=True, num_mlp=2, input_is_latent=True,
    ),
    "32-full-sft-shared-w-mlp": dict(
        out_size=32, num_style_feat=16, channel_multiplier=1, narrow=1 / 32,
        sft_half=False, different_w=False, num_mlp=3, input_is_latent=False,
    ),
    "128-per-layer-w-mlp": dict(
        out_size=128, num_style_feat=32, channel_multiplier=1, narrow=1 / 16,
        sft_half=True, different_w=True, num_mlp=2, input_is_latent=False,
    ),
}


def _load_facts() -> dict[str, Any]:
    if not FACTS.exists():
        pytest.skip(f"facts file {FACTS} not available")
    return json.loads(FACTS.read_text())


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer with seeded random values.

    Default inits leave the noise strengths at zero (so noise handling would go
    untested) and make several layers identities; random values exercise everything.
    Scales keep activations O(1): weights ~0.1, modulation biases around 1 (the
    identity modulation, as in a trained StyleGAN2), noise maps and the constant input ~1.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            unit_scale = ".noises." in name or "constant_input" in name
            values = torch.randn(tensor.shape, generator=gen) * (1.0 if unit_scale else 0.1)
            if name.endswith("modulation.bias"):
                values += 1.0
            tensor.copy_(values)


def _random_faces(batch: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 2 - 1


@pytest.fixture(scope="module", params=list(TINY_CONFIGS), ids=list(TINY_CONFIGS))
def pair(request: pytest.FixtureRequest) -> tuple[dict[str, Any], torch.nn.Module, GFPGANv1Clean]:
    """(config, randomised reference model, our model loaded from its state dict)."""
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean as ReferenceGFPGAN

    cfg = TINY_CONFIGS[request.param]
    torch.manual_seed(0)
    reference = ReferenceGFPGAN(**cfg).eval()
    _randomise_(reference, seed=1234)
    ours = GFPGANv1Clean(**cfg).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return cfg, reference, ours


# --------------------------------------------------------------------------------------


def test_state_dict_matches_official_512_checkpoint() -> None:
    facts = _load_facts()
    with torch.device("meta"):  # the 512 model has ~80M parameters; allocate none of them
        model = GFPGANv1Clean(**facts["constructor"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = facts["state_dict"]
    assert sorted(set(expected) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(expected)) == [], "unexpected keys"
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}, "shape mismatches"
    assert list(ours) == list(expected), "same keys, different order"


def test_official_constructor_defaults() -> None:
    """The no-argument constructor is the v1.3/v1.4 configuration."""
    facts = _load_facts()
    with torch.device("meta"):
        model = GFPGANv1Clean()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == facts["state_dict"]


def test_parity_with_reference(
    pair: tuple[dict[str, Any], torch.nn.Module, GFPGANv1Clean], record_property: Any
) -> None:
    cfg, reference, ours = pair
    x = _random_faces(3, cfg["out_size"], seed=7)
    with torch.inference_mode():
        expected = reference(x.clone(), return_rgb=False, randomize_noise=False)[0]
        actual = ours(x.clone())
    assert actual.shape == expected.shape == x.shape
    # Guard against a vacuous comparison (e.g. everything collapsing to a constant).
    assert expected.std() > 0.05
    max_diff = (actual - expected).abs().max().item()
    record_property("max_abs_diff", max_diff)
    print(f"parity {cfg['out_size']}px sft_half={cfg['sft_half']}: max abs diff {max_diff:.3e}")
    assert max_diff < 1e-5


def test_noise_is_used_and_deterministic(pair: tuple[dict[str, Any], torch.nn.Module, GFPGANv1Clean]) -> None:
    cfg, _, ours = pair
    x = _random_faces(2, cfg["out_size"], seed=8)
    with torch.inference_mode():
        first = ours(x)
        second = ours(x)
        assert torch.equal(first, second)
        # Changing a stored noise map must change the output, i.e. the buffers are read.
        noise = ours.stylegan_decoder.noises.noise1
        saved = noise.clone()
        noise.mul_(-1)
        changed = ours(x)
        noise.copy_(saved)
    assert not torch.allclose(first, changed)


def test_batch_matches_single_faces(pair: tuple[dict[str, Any], torch.nn.Module, GFPGANv1Clean]) -> None:
    cfg, _, ours = pair
    x = _random_faces(4, cfg["out_size"], seed=9)
    with torch.inference_mode():
        batched = ours(x)
        singles = torch.cat([ours(x[i : i + 1]) for i in range(x.shape[0])])
    assert (batched - singles).abs().max().item() < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_forward(
    pair: tuple[dict[str, Any], torch.nn.Module, GFPGANv1Clean], dtype: torch.dtype
) -> None:
    cfg, _, ours = pair
    x = _random_faces(2, cfg["out_size"], seed=10)
    low = GFPGANv1Clean(**cfg).eval()
    low.load_state_dict(ours.state_dict())
    low.to(dtype)
    with torch.inference_mode():
        try:  # the kernels the network uses, alone: only their absence may skip the test
            probe = torch.ones(1, 2, 4, 4, dtype=dtype)
            torch.nn.functional.conv2d(probe, torch.ones(2, 2, 3, 3, dtype=dtype), padding=1)
            torch.nn.functional.linear(probe.flatten(1), torch.ones(2, 32, dtype=dtype))
            torch.nn.functional.interpolate(probe, scale_factor=2, mode="bilinear", align_corners=False)
        except RuntimeError as err:
            pytest.skip(f"{dtype} not supported on CPU here: {err}")
        reference = ours(x)
        out = low(x.to(dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    # Loose, relative to the output range: bf16 keeps 8 mantissa bits, fp16 11, and the
    # network is ~30 layers deep (observed: ~1.5% for bf16, ~0.15% for fp16).
    rel_tol = {torch.bfloat16: 0.05, torch.float16: 0.01}[dtype]
    err = (out.float() - reference).abs().max().item()
    assert err < rel_tol * reference.abs().max().item(), err


def test_demodulation_does_not_overflow_in_fp16() -> None:
    """Kernels whose squared norm exceeds fp16's range must still demodulate correctly.

    Demodulation is invariant to the kernel's scale, so a hugely scaled kernel in fp16
    must give the fp32 result; a naive fp16 sum of squares would hit inf and yield zeros.
    """
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 16, 3, num_style_feat=8, demodulate=True).eval()
    with torch.no_grad():
        conv.weight.mul_(300.0)  # sum of squares ~ 64*9*(300*|w|)^2 >> 65504
    x = torch.randn(2, 64, 8, 8)
    style = torch.randn(2, 8)
    with torch.inference_mode():
        expected = conv(x, style)
        naive_sq = (conv.weight.half() * conv.modulation(style).half().view(2, 1, 64, 1, 1)).pow(2).sum([2, 3, 4])
        assert torch.isinf(naive_sq).any(), "test setup should overflow a naive fp16 demodulation"
        out = conv.half()(x.half(), style.half())
    assert torch.isfinite(out).all()
    assert (out.float() - expected).abs().max().item() < 2e-2 * expected.abs().max().item()


# --------------------------------------------------------------------------------------
# config inference
# --------------------------------------------------------------------------------------


def test_config_from_official_512_shapes() -> None:
    facts = _load_facts()
    state_dict = {k: torch.empty(shape, device="meta") for k, shape in facts["state_dict"].items()}
    expected = {k: v for k, v in facts["constructor"].items() if k not in ("decoder_load_path", "fix_decoder")}
    assert gfpgan_config_from_state_dict(state_dict) == expected
    # The training wrapper used by the official .pth files is unwrapped too.
    for wrapper in ("params_ema", "params"):
        assert gfpgan_config_from_state_dict({wrapper: state_dict}) == expected


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_config_round_trip_tiny(name: str) -> None:
    cfg = TINY_CONFIGS[name]
    with torch.device("meta"):
        state_dict = GFPGANv1Clean(**cfg).state_dict()
    inferred = gfpgan_config_from_state_dict(state_dict)

    # input_is_latent is invisible in the weights (it only decides whether the MLP runs),
    # and channel_multiplier has no effect below 64px.
    invisible = {"input_is_latent"} | ({"channel_multiplier"} if cfg["out_size"] < 64 else set())
    assert {k: v for k, v in inferred.items() if k not in invisible} == {
        k: v for k, v in cfg.items() if k not in invisible
    }
    # Whatever was inferred must rebuild a model that loads the state dict strictly.
    with torch.device("meta"):
        rebuilt = GFPGANv1Clean(**inferred)
    rebuilt.load_state_dict(state_dict, strict=True, assign=True)


def test_config_rejects_other_models() -> None:
    with pytest.raises(ValueError):
        gfpgan_config_from_state_dict({"conv_first.weight": torch.empty(1)})


# --------------------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------------------


def test_rejects_wrong_input_size() -> None:
    model = GFPGANv1Clean(**TINY_CONFIGS["64-v1.3-like"])
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("out_size", [4, 100, 2048])
def test_rejects_bad_out_size(out_size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        GFPGANv1Clean(out_size=out_size)


def test_rejects_incompatible_widths() -> None:
    # narrow=0.3 gives decoder width 153 (odd), which a half split cannot pair with the U-Net.
    with pytest.raises(ValueError, match="SFT"):
        GFPGANv1Clean(out_size=32, num_style_feat=16, narrow=0.3, num_mlp=1)


def test_reference_only_arguments_are_accepted() -> None:
    cfg = TINY_CONFIGS["64-v1.3-like"]
    with pytest.warns(UserWarning, match="decoder_load_path"):
        GFPGANv1Clean(**cfg, decoder_load_path="stylegan2.pth", fix_decoder=True)
