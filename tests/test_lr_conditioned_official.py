"""Parity with the authors' networks (Medabid1/I2I-LR) on the same seeded random weights.

Needs a checkout of that repository: set I2I_LR_OFFICIAL to its folder (it is not a package, so
the suite cannot install it; without it these tests are skipped).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from i2icli.archs.lr_conditioned import (
    LRConditionedGenerator,
    LRDifferenceDiscriminator,
    LRTranslatorConfig,
    config_from_state_dicts,
)

OFFICIAL_ENV = "I2I_LR_OFFICIAL"
ROOT = Path(os.environ[OFFICIAL_ENV]) if os.environ.get(OFFICIAL_ENV) else None
pytestmark = pytest.mark.skipif(ROOT is None, reason=f"set {OFFICIAL_ENV} to an I2I-LR checkout")


def _authors_networks():
    sys.path.insert(0, str(ROOT))
    import networks.modules as modules

    # networks.py imports a block the published modules.py no longer defines (and never uses).
    modules.SPAdaInResBlk01 = getattr(modules, "SPAdaInResBlk01", modules.SPAdaInResBlk)
    from networks.networks import Discriminator, PonoSPadaInGenerator

    return PonoSPadaInGenerator, Discriminator


@pytest.mark.parametrize(("hr", "lr", "dim_in"), [(32, 8, 256), (64, 16, 256), (32, 4, 512), (48, 12, 256)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_same_outputs_as_the_authors_networks(hr: int, lr: int, dim_in: int, mode: str):
    generator_class, discriminator_class = _authors_networks()
    torch.manual_seed(0)
    theirs_g = generator_class(dim_in, img_size=hr, low_size=lr)
    theirs_d = discriminator_class(img_size=hr, low_size=lr)
    with torch.no_grad():  # the affine norms start at 1/0: move them so they matter
        for name, parameter in [*theirs_g.named_parameters(), *theirs_d.named_parameters()]:
            if "norm" in name:
                parameter.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)

        # Spectral norm's power iteration starts from random vectors: in eval mode, unconverged,
        # they blow the logits up to ~1e18, where float32 rounding hides every difference. A few
        # train-mode passes converge them (the vectors are part of the state dict ours loads).
        theirs_g.train(), theirs_d.train()
        for _ in range(20):
            theirs_d(theirs_g(torch.rand(2, 3, hr, hr) * 2 - 1, torch.rand(2, 3, lr, lr)), torch.rand(2, 3, lr, lr))

    config = config_from_state_dicts(theirs_g.state_dict(), theirs_d.state_dict())
    assert (config.hr_size, config.lr_size) == (hr, lr)
    ours_g, ours_d = LRConditionedGenerator(config), LRDifferenceDiscriminator(config)
    ours_g.load_state_dict(theirs_g.state_dict(), strict=True)  # their checkpoint keys, unchanged
    ours_d.load_state_dict(theirs_d.state_dict(), strict=True)
    for module in (theirs_g, theirs_d, ours_g, ours_d):
        module.train(mode == "train")  # train mode also runs one power iteration per forward

    source = torch.rand(2, 3, hr, hr) * 2 - 1
    target = torch.rand(2, 3, lr, lr) * 2 - 1
    other_target = torch.rand(2, 3, lr, lr) * 2 - 1
    with torch.no_grad():
        theirs, ours = theirs_g(source, target), ours_g(source, target)
        theirs_logits = theirs_d(theirs, target.abs())
        ours_logits = ours_d(theirs, target.abs())
        theirs_other = theirs_d(theirs, other_target.abs())
        ours_other = ours_d(theirs, other_target.abs())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_other, theirs_other, rtol=0, atol=1e-6)
    assert theirs.std() > 0.1
    # Logits in a range where 1e-6 means something, and depending on the target's difference map.
    assert 1e-3 < theirs_logits.abs().max() < 1e3
    assert (theirs_other - theirs_logits).abs().max() > 1e-3
    if mode == "train":  # the power iteration moved the same vectors the same way
        for key, value in theirs_g.state_dict().items():
            torch.testing.assert_close(ours_g.state_dict()[key], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("hr", "lr"), [(18, 9), (48, 12), (40, 20), (62, 31)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_discriminator_is_the_authors_at_sizes_that_are_no_power_of_two(hr: int, lr: int, mode: str):
    """Their head has int(log2(lr)) - 3 downsampling blocks, not as many as halve lr to 8 or less."""
    _, discriminator_class = _authors_networks()
    torch.manual_seed(1)
    theirs = discriminator_class(img_size=hr, max_conv_dim=64, low_size=lr)
    with torch.no_grad():  # converge the spectral norms' vectors (see the test above)
        theirs.train()
        for _ in range(20):
            theirs(torch.rand(2, 3, hr, hr) * 2 - 1, torch.rand(2, 3, lr, lr))

    ours = LRDifferenceDiscriminator(LRTranslatorConfig(hr_size=hr, lr_size=lr, disc_max_channels=64))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.train(mode == "train"), ours.train(mode == "train")
    images = torch.rand(2, 3, hr, hr) * 2 - 1
    difference = torch.rand(2, 3, lr, lr)
    with torch.no_grad():
        theirs_logits, ours_logits = theirs(images, difference), ours(images, difference)
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=0, atol=1e-6)
    assert 1e-3 < theirs_logits.abs().max() < 1e3
    if mode == "train":
        for key, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=1e-6)
