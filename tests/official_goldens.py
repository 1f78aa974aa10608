"""Parity with the official networks without their code: stored outputs ("goldens").

The official CoCosNet v2 and I2I-LR code is not a package, so CI cannot run it next to ours. Its
outputs can be kept, though: each recipe here makes seeded random weights in the official
checkpoint format from key names and shapes alone, and seeded inputs; run once against an
official checkout (``python tests/official_goldens.py --cocosnet DIR --i2i-lr DIR``), the official
forward's outputs on them are saved under ``tests/goldens/``; ``test_official_goldens.py`` then
checks ours against those files on every run. The tests that drive the official code directly
(``test_cocosnet_official.py``, ``test_lr_conditioned_official.py``) still run where a checkout is
given.

Only samples of the large CoCosNet outputs are kept (a regular grid of pixels at each level) so
that the files stay small; every I2I-LR output is kept whole.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / "benchmarks"))

import official_cocosnet  # noqa: E402
from cocosnet_checkpoints import to_official  # noqa: E402
from i2icli.archs.cocosnet2 import (  # noqa: E402
    CoCosNetConfig,
    CorrespondenceNet,
    TranslationGenerator,
    propagation_orders,
)
from i2icli.archs.lr_conditioned import (  # noqa: E402
    LRConditionedGenerator,
    LRDifferenceDiscriminator,
    LRTranslatorConfig,
)

GOLDENS = TESTS / "goldens"
COCOSNET_GOLDEN = GOLDENS / "cocosnet2_official.pt"
LR_GOLDEN = GOLDENS / "i2i_lr_official.pt"

# --------------------------------------------------------------------------- CoCosNet v2

COCOSNET_CONFIG = CoCosNetConfig(semantic_nc=6, nef=8, ngf=4, iterations=2)
COCOSNET_SEED = 0
# Pixels kept of each 512x512-based output: every 8th row and column, from an odd offset so that
# they are not all on the coarse levels' own grid.
_STRIDE, _OFFSET = 8, 3


def cocosnet_state_dicts() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(Corr, G) in the official format with the weights ``official_cocosnet.build_official``
    gives the official networks: the same names and shapes, drawn in the same order."""
    corr, gen = CorrespondenceNet(COCOSNET_CONFIG), TranslationGenerator(COCOSNET_CONFIG)
    layouts = (to_official(corr.state_dict(), 0), to_official(gen.state_dict(), 0))
    states = (official_cocosnet.seeded_weights(layouts[0], COCOSNET_SEED),
              official_cocosnet.seeded_weights(layouts[1], COCOSNET_SEED + 1))
    for state in states:
        # The official residual block uses one PReLU twice, inside its body (model.3) and after
        # the sum (relu): one tensor under two names, so it holds the draw of the later name.
        for name in [name for name in state if name.endswith(".relu.weight")]:
            inner = name.removesuffix("relu.weight") + "model.3.weight"
            if inner in state:
                state[inner] = state[name].clone()
    return states


def cocosnet_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(semantic input, exemplar, exemplar semantics) at 512x512: smooth, so matches are unique."""
    g = torch.Generator().manual_seed(1)

    def smooth(channels: int) -> torch.Tensor:
        return F.interpolate(torch.rand(1, channels, 16, 16, generator=g), size=official_cocosnet.SIZE, mode="bilinear")

    return smooth(6), smooth(3) * 2 - 1, smooth(6)


def cocosnet_orders() -> list:
    return propagation_orders(5, COCOSNET_CONFIG.iterations)


def cocosnet_samples(warps: list[torch.Tensor], logits: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """What is kept of one forward: the coarsest warp whole, the rest on a grid of pixels that
    is the same in image coordinates at every level."""
    kept = {"warp0": warps[0].detach().clone()}
    for level in range(1, len(warps)):
        step = _STRIDE >> (len(warps) - 1 - level)
        kept[f"warp{level}"] = warps[level][..., _OFFSET % step::step, _OFFSET % step::step].detach().clone()
    kept["logits"] = logits[..., _OFFSET::_STRIDE, _OFFSET::_STRIDE].detach().clone()
    kept["image"] = image[..., _OFFSET::_STRIDE, _OFFSET::_STRIDE].detach().clone()
    return kept


def _make_cocosnet_golden(root: Path) -> dict[str, Any]:
    corr, gen = official_cocosnet.build_official(root, COCOSNET_CONFIG, seed=COCOSNET_SEED)
    made = cocosnet_state_dicts()
    for module, state in zip((corr, gen), made):  # the recipe is the official networks' own weights
        official = module.state_dict()
        assert official.keys() == state.keys()
        assert all(torch.equal(official[key], state[key]) for key in official)
    logits = {}
    gen.conv_img.register_forward_hook(lambda module, args, output: logits.update(value=output.detach()))
    warps, image = official_cocosnet.official_forward(root, corr, gen, *cocosnet_inputs(), cocosnet_orders())
    return cocosnet_samples(warps, logits["value"], image)


# --------------------------------------------------------------------------- I2I-LR

# (hr_size, lr_size, dim_in), as in the authors' experiments' ratios; dim_in 512 is their default.
LR_CASES = ((32, 8, 256), (64, 16, 256), (32, 4, 512))
LR_SEED = 0


def lr_config(hr: int, lr: int, dim_in: int) -> LRTranslatorConfig:
    return LRTranslatorConfig(hr_size=hr, lr_size=lr, max_channels=dim_in)


def lr_state_dicts(hr: int, lr: int, dim_in: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(generator, discriminator) in the authors' checkpoint format (ours loads it unchanged):
    seeded weights, the norm layers' own vectors drawn wider (around 1 for weights, 0 for
    biases) so that they matter, and each spectral norm's vectors set to the weight's leading
    singular vectors, where the authors' training leaves them; unconverged vectors would blow
    the logits up to ~1e18."""
    config = lr_config(hr, lr, dim_in)
    with torch.device("meta"):
        layouts = (LRConditionedGenerator(config).state_dict(), LRDifferenceDiscriminator(config).state_dict())
    states = []
    for offset, layout in enumerate(layouts):
        state = official_cocosnet.seeded_weights(layout, LR_SEED + offset)
        g = torch.Generator().manual_seed(LR_SEED + 100 + offset)
        for name in sorted(state):
            if "norm" in name and state[name].is_floating_point() and state[name].dim() == 1:
                mean = 1.0 if name.endswith("weight") else 0.0
                state[name] = mean + 0.3 * torch.randn(state[name].shape, generator=g)
        for name in sorted(state):
            if name.endswith("_orig"):
                base = name.removesuffix("_orig")
                state[base + "_u"], state[base + "_v"] = _leading_singular_vectors(state[name], g)
        states.append(state)
    return states[0], states[1]


def _leading_singular_vectors(weight: torch.Tensor, g: torch.Generator, steps: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) of a convolution weight by power iteration from a seeded start, in float64, as
    spectral norm's own iteration would leave them after training (a full SVD of the widest
    layers takes a minute; these need only be close and the same on every machine)."""
    matrix = weight.double().reshape(weight.shape[0], -1)
    v = torch.randn(matrix.shape[1], generator=g, dtype=torch.float64)
    for _ in range(steps):
        u = matrix @ v
        u = u / u.norm()
        v = matrix.T @ u
        v = v / v.norm()
    return u.float(), v.float()


def lr_inputs(hr: int, lr: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source, target, another target) in [-1, 1]."""
    g = torch.Generator().manual_seed(2)
    return (torch.rand(2, 3, hr, hr, generator=g) * 2 - 1, torch.rand(2, 3, lr, lr, generator=g) * 2 - 1,
            torch.rand(2, 3, lr, lr, generator=g) * 2 - 1)


def lr_forward(generator: torch.nn.Module, discriminator: torch.nn.Module, hr: int, lr: int) -> dict[str, torch.Tensor]:
    """Eval-mode outputs: the image, and the discriminator's logits on it for two targets (the
    second shows that they depend on the target's difference map)."""
    source, target, other = lr_inputs(hr, lr)
    generator.eval(), discriminator.eval()
    with torch.no_grad():
        image = generator(source, target)
        return {"image": image, "logits": discriminator(image, target.abs()), "other_logits": discriminator(image, other.abs())}


def _make_lr_golden(root: Path) -> dict[str, Any]:
    sys.path.insert(0, str(root))
    import networks.modules as modules  # type: ignore[import-not-found]

    # networks.py imports a block the published modules.py no longer defines (and never uses).
    modules.SPAdaInResBlk01 = getattr(modules, "SPAdaInResBlk01", modules.SPAdaInResBlk)
    from networks.networks import Discriminator, PonoSPadaInGenerator  # type: ignore[import-not-found]

    golden = {}
    for hr, lr, dim_in in LR_CASES:
        theirs_g, theirs_d = PonoSPadaInGenerator(dim_in, img_size=hr, low_size=lr), Discriminator(img_size=hr, low_size=lr)
        g_state, d_state = lr_state_dicts(hr, lr, dim_in)
        theirs_g.load_state_dict(g_state, strict=True)
        theirs_d.load_state_dict(d_state, strict=True)
        outputs = lr_forward(theirs_g, theirs_d, hr, lr)
        # A varied image (spectral norm keeps every layer's gain at most 1, so not a wide one), and
        # logits in a range where float32 tolerances mean something.
        assert outputs["image"].std() > 0.03 and 1e-3 < outputs["logits"].abs().max() < 1e3
        golden.update({f"{hr}-{lr}-{dim_in}/{name}": value for name, value in outputs.items()})
    return golden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cocosnet", type=Path, help="checkout of microsoft/CoCosNet-v2")
    parser.add_argument("--i2i-lr", type=Path, help="checkout of Medabid1/I2I-LR")
    args = parser.parse_args()
    GOLDENS.mkdir(exist_ok=True)
    if args.cocosnet:
        torch.save(_make_cocosnet_golden(args.cocosnet.resolve()), COCOSNET_GOLDEN)
        print(f"wrote {COCOSNET_GOLDEN}")
    if args.i2i_lr:
        torch.save(_make_lr_golden(args.i2i_lr.resolve()), LR_GOLDEN)
        print(f"wrote {LR_GOLDEN}")


if __name__ == "__main__":
    main()
