"""Our CoCosNet v2 and I2I-LR networks against the official networks' stored outputs.

The goldens were made by the official code (see ``official_goldens.py``) on seeded weights in
the official checkpoint format; here the same weights go through our loaders unchanged. This
runs in every suite, with no official checkout.
"""

from __future__ import annotations

import pytest
import torch

import official_goldens as golden
from i2icli.archs.lr_conditioned import LRConditionedGenerator, LRDifferenceDiscriminator, config_from_state_dicts
from i2icli.pipelines.exemplar import build_cocosnet


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_cocosnet_warps_and_image_match_the_official_forward():
    expected = _load(golden.COCOSNET_GOLDEN)
    corr_state, gen_state = golden.cocosnet_state_dicts()
    corr, gen = build_cocosnet(corr_state, gen_state, iterations=golden.COCOSNET_CONFIG.iterations)
    logits = {}
    gen.conv_img.register_forward_hook(lambda module, args, output: logits.update(value=output.detach()))
    semantic, exemplar, exemplar_semantic = golden.cocosnet_inputs()
    with torch.no_grad():
        warps = corr(semantic, exemplar, exemplar_semantic, golden.cocosnet_orders()).warps
        image = gen(semantic, warps)
    ours = golden.cocosnet_samples(warps, logits["value"], image)
    assert ours.keys() == expected.keys()
    # The coarsest warp is one softmax over a full correlation: float tolerance. The finer ones
    # and the image go through PatchMatch's top-k, GRU and SPADE stacks.
    torch.testing.assert_close(ours["warp0"], expected["warp0"], rtol=0, atol=1e-5)
    for level in (1, 2, 3):
        torch.testing.assert_close(ours[f"warp{level}"], expected[f"warp{level}"], rtol=0, atol=1e-4)
    # Random weights saturate most of tanh's output, so the values before it are checked too.
    scale = expected["logits"].abs().max().item()
    torch.testing.assert_close(ours["logits"], expected["logits"], rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(ours["image"], expected["image"], rtol=0, atol=1e-4)
    assert expected["logits"].std() > 0.1 and expected["warp3"].std() > 0.1  # real signals, not constants


@pytest.mark.parametrize(("hr", "lr", "dim_in"), golden.LR_CASES)
def test_i2i_lr_image_and_logits_match_the_authors_forward(hr, lr, dim_in):
    expected = _load(golden.LR_GOLDEN)
    g_state, d_state = golden.lr_state_dicts(hr, lr, dim_in)
    config = config_from_state_dicts(g_state, d_state)
    assert (config.hr_size, config.lr_size, config.max_channels) == (hr, lr, dim_in)
    generator, discriminator = LRConditionedGenerator(config), LRDifferenceDiscriminator(config)
    generator.load_state_dict(g_state, strict=True)  # the authors' keys, unchanged
    discriminator.load_state_dict(d_state, strict=True)
    ours = golden.lr_forward(generator, discriminator, hr, lr)
    for name, value in ours.items():
        reference = expected[f"{hr}-{lr}-{dim_in}/{name}"]
        torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    # The logits depend on the target's difference map, so the second target's differ.
    assert (expected[f"{hr}-{lr}-{dim_in}/logits"] - expected[f"{hr}-{lr}-{dim_in}/other_logits"]).abs().max() > 1e-3
