"""Drive the official CoCosNet v2 networks (microsoft/CoCosNet-v2) next to ours.

The official code is not a package: point ``I2I_COCOSNET_OFFICIAL`` (or ``--official``) at a
checkout of the repository. Its networks only run on CUDA as written (``Tensor.get_device()``
returns -1 on the CPU, which ``.to()`` rejects) and only at 512x512 (sizes are hard-coded), so
on the CPU ``get_device`` is made to name the CPU for the duration of a call, and everything is
512x512. Its PatchMatch draws the propagation order from Python's global ``random``; here that
draw is replaced by the same sequence of orders our network is given, so both do the same work.

Used by ``tests/test_cocosnet_official.py`` (skipped without a checkout) and by
``benchmarks/exemplar_vs_official.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from i2icli.archs.cocosnet2 import HORIZONTAL, CoCosNetConfig

OFFICIAL_ENV = "I2I_COCOSNET_OFFICIAL"
SIZE = 512  # the only size the official forward supports


def official_root(explicit: str | None = None) -> Path | None:
    value = explicit or os.environ.get(OFFICIAL_ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    return root if (root / "models" / "networks" / "patch_match.py").is_file() else None


def official_options(config: CoCosNetConfig, batch: int = 1) -> argparse.Namespace:
    """The option namespace the official constructors read (README DeepFashionHD test flags)."""
    return argparse.Namespace(
        semantic_nc=config.semantic_nc,
        label_nc=config.semantic_nc,
        nef=config.nef,
        ngf=config.ngf,
        norm_E="spectralinstance",
        norm_G="spectralspadesyncbatch3x3",
        PONO=True,
        PONO_C=True,
        featEnc_kernel=3,
        match_kernel=1,
        temperature=config.temperature,
        iteration_count=config.iterations,
        batchSize=batch,
        crop_size=SIZE,
        aspect_ratio=1.0,
        isTrain=False,
        phase="test",
        weight_novgg_featpair=0.0,
        weight_warp_cycle=0.0,
        amp=False,
    )


def import_official(root: Path):
    """(correspondence module, generator module, patch_match module) from the checkout."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `is` with string literals in the official code
        from models.networks import correspondence, generator, patch_match  # type: ignore[import-not-found]
    return correspondence, generator, patch_match


def build_official(root: Path, config: CoCosNetConfig, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Official (Corr, G) networks with seeded random weights, in eval mode."""
    correspondence, generator, _ = import_official(root)
    options = official_options(config)
    corr = correspondence.NoVGGHPMCorrespondence(options)
    gen = generator.SPADEGenerator(official_options(config))
    randomize(corr, seed)
    randomize(gen, seed + 1)
    return corr.eval(), gen.eval()


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter and spectral-norm vector of ``module`` drawn by :func:`seeded_weights`."""
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in seeded_weights(state, seed).items():
            state[name].copy_(value)


def seeded_weights(layout: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random tensors of ``layout``'s names, shapes and dtypes, drawn in sorted name order:
    a function of the names and shapes alone, so that the official networks and a state dict in
    their format made without them (``tests/official_goldens.py``) get the same weights.

    Weights get a fan-in scale so activations neither vanish nor explode through the deep
    stacks; PReLU slopes stay near their usual 0.25.
    """
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in sorted(layout.items()):
        shape = tuple(tensor.shape)
        if name.endswith(("_u", "_v")):
            fresh = torch.randn(shape, generator=rng)
            value = fresh / fresh.norm()
        elif name.endswith((".relu.weight", "model.3.weight")):
            value = 0.25 + 0.05 * torch.randn(shape, generator=rng)
        elif len(shape) > 1:
            value = torch.randn(shape, generator=rng) / math.prod(shape[1:]) ** 0.5
        else:
            value = 0.1 * torch.randn(shape, generator=rng)
        out[name] = value.to(tensor.dtype)
    return out


@contextlib.contextmanager
def official_runs_here(patch_match_module, orders: Sequence[Sequence[tuple[str, str]]]) -> Iterator[None]:
    """Let the official forward run on the CPU with a given propagation order."""
    draws = [0.25 if first == HORIZONTAL else 0.75 for level in orders for first, _ in level]

    class _Orders:
        @staticmethod
        def random() -> float:
            return draws.pop(0)

    original_random = patch_match_module.random
    original_get_device = torch.Tensor.get_device
    patch_match_module.random = _Orders
    torch.Tensor.get_device = lambda self: self.device  # type: ignore[method-assign]
    try:
        yield
    finally:
        patch_match_module.random = original_random
        torch.Tensor.get_device = original_get_device  # type: ignore[method-assign]
    if draws:
        raise AssertionError(f"the official forward used {len(draws)} fewer propagation draws than given")


def official_forward(root: Path, corr, gen, semantic, exemplar, exemplar_semantic, orders) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(warps per level, output image) from the official networks."""
    _, _, patch_match = import_official(root)
    with torch.no_grad(), official_runs_here(patch_match, orders):
        out = corr(exemplar, None, semantic, exemplar_semantic)
        image = gen(semantic, warp_out=out["warp_out"])
    return out["warp_out"], image
