"""Tiny CoCosNet v2 checkpoints in the official format (spectral norm stored as weight_orig/u/v)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from i2icli.archs.cocosnet2 import CoCosNetConfig, CorrespondenceNet, TranslationGenerator

# The official networks spectrally normalise the encoders' convolutions and every SPADE block's
# conv_0 / conv_1 / conv_s; their checkpoints store those as (weight_orig, weight_u, weight_v).
SPECTRAL = re.compile(r"(conv_[01s]|layer\d\.0(\.0)?)\.weight$")

TINY = CoCosNetConfig(semantic_nc=20, nef=4, ngf=2, spade_hidden=8, iterations=2)


def to_official(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Our plain weights re-expressed as the official spectral-norm triples."""
    rng = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if SPECTRAL.search(key):
            matrix = value.reshape(value.shape[0], -1)
            v = torch.randn(matrix.shape[1], generator=rng)
            v = v / v.norm()
            u = matrix @ v
            u = u / u.norm()
            out[key + "_orig"] = value.clone()
            out[key + "_u"] = u
            out[key + "_v"] = v
        else:
            out[key] = value.clone()
    return out


def official_state_dicts(config: CoCosNetConfig = TINY, seed: int = 0) -> tuple[dict, dict]:
    """(latest_net_Corr, latest_net_G) state dicts with seeded random weights."""
    torch.manual_seed(seed)
    corr = CorrespondenceNet(config)
    gen = TranslationGenerator(config)
    return to_official(corr.state_dict(), seed), to_official(gen.state_dict(), seed + 1)


def write_checkpoint_dir(folder: Path, config: CoCosNetConfig = TINY, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corr, gen = official_state_dicts(config, seed)
    torch.save(corr, folder / "latest_net_Corr.pth")
    torch.save(gen, folder / "latest_net_G.pth")
    return folder
