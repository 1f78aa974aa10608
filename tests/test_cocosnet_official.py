"""Parity with the official CoCosNet v2 networks, on the same seeded random weights.

Needs a checkout of microsoft/CoCosNet-v2: set I2I_COCOSNET_OFFICIAL to its folder (the official
code is not a package, so the suite cannot install it; without it these tests are skipped).
The official forward only runs at 512x512, so this is the slowest test when it runs (~1 min).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import official_cocosnet  # noqa: E402
from i2icli.archs.cocosnet2 import CoCosNetConfig, propagation_orders  # noqa: E402
from i2icli.pipelines.exemplar import build_cocosnet  # noqa: E402

ROOT = official_cocosnet.official_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason=f"set {official_cocosnet.OFFICIAL_ENV} to a CoCosNet-v2 checkout")


def test_same_warps_and_output_as_the_official_networks():
    config = CoCosNetConfig(semantic_nc=6, nef=8, ngf=4, iterations=2)
    corr, gen = official_cocosnet.build_official(ROOT, config, seed=0)
    ours_corr, ours_gen = build_cocosnet(corr.state_dict(), gen.state_dict(), iterations=config.iterations)
    g = torch.Generator().manual_seed(1)

    def smooth(channels: int) -> torch.Tensor:
        return F.interpolate(torch.rand(1, channels, 16, 16, generator=g), size=512, mode="bilinear")

    semantic, exemplar, exemplar_semantic = smooth(6), smooth(3) * 2 - 1, smooth(6)
    orders = propagation_orders(5, config.iterations)
    # Random weights saturate most of tanh's output at +-1, which would hide differences there:
    # the last convolution's output, before tanh, is compared too.
    before_tanh = {}
    gen.conv_img.register_forward_hook(lambda module, args, output: before_tanh.update(theirs=output.detach()))
    ours_gen.conv_img.register_forward_hook(lambda module, args, output: before_tanh.update(ours=output.detach()))
    warps, image = official_cocosnet.official_forward(ROOT, corr, gen, semantic, exemplar, exemplar_semantic, orders)
    with torch.no_grad():
        ours = ours_corr(semantic, exemplar, exemplar_semantic, orders)
        our_image = ours_gen(semantic, ours.warps)
    theirs_logits = before_tanh["theirs"]
    torch.testing.assert_close(before_tanh["ours"], theirs_logits, rtol=1e-4, atol=1e-4 * theirs_logits.abs().max().item())
    assert theirs_logits.std() > 0.1
    torch.testing.assert_close(ours.warps[0], warps[0], rtol=0, atol=1e-5)  # the coarsest warp
    for level in range(1, 4):
        torch.testing.assert_close(ours.warps[level], warps[level], rtol=0, atol=1e-4)
    torch.testing.assert_close(our_image, image, rtol=0, atol=1e-4)
    assert image.std() > 0.1  # a real image, not a constant
