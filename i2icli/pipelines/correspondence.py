"""Dense correspondence: warp an exemplar onto a source's layout through VGG-19 features.

Every source position is matched against every exemplar position by the cosine similarity of
their channel-centred VGG-19 features (the correlation matrix M of the MGI and CoCosNet papers),
and takes the softmax(alpha * M)-weighted average of the exemplar's pixels. Features live on a
grid 1/4 of the image side, so each position carries the 4x4 pixel patch it covers and the
warp comes out at the full working size.

The full matrix is (HW)^2: 16.8 M entries for 64x64 features, 268 M for 128x128. It is never
held: source rows are matched a block at a time, each block's softmax and weighted sum done
before the next, so peak memory is ``rows x HW`` and fixed by ``chunk_bytes``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from i2icli.archs.features import VGGFeatures

__all__ = ["CORRESPONDENCE_LAYERS", "correspondence_features", "soft_warp"]

# relu3_4 sees textures and parts at stride 4; relu4_4 adds context at stride 8 (upsampled to the
# stride-4 grid). Each is normalised before they are joined so neither dominates by scale.
CORRESPONDENCE_LAYERS = ("relu3_4", "relu4_4")
DEFAULT_CHUNK_BYTES = 64 * 2**20


def _centred_unit(features: Tensor) -> Tensor:
    """Subtract each position's mean over channels, then scale each position to unit length.

    Centring removes the component every feature vector shares (ReLU features are all
    non-negative, so raw cosine similarities crowd near 1 and the softmax sees little contrast).
    """
    centred = features - features.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-6)


def correspondence_features(network: VGGFeatures, images: Tensor) -> Tensor:
    """(b, c, h/4, w/4) matching features for images in [-1, 1]; unit length at each position."""
    named = network(images)
    grid = named[CORRESPONDENCE_LAYERS[0]].shape[-2:]
    parts = []
    for name in CORRESPONDENCE_LAYERS:
        part = named[name]
        if part.shape[-2:] != grid:
            part = F.interpolate(part, size=grid, mode="bilinear", align_corners=False)
        parts.append(_centred_unit(part))
    return _centred_unit(torch.cat(parts, dim=1))


def soft_warp(
    source_features: Tensor,
    exemplar_features: Tensor,
    exemplar: Tensor,
    *,
    temperature: float = 100.0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Tensor:
    """Warp ``exemplar`` (1, 3, H, W) to the source's layout.

    Args:
        source_features, exemplar_features: (1, c, h, w) unit-length features on the same grid,
            with H = h * s and W = w * s for an integer patch size s.
        exemplar: the exemplar image whose s x s patches are averaged.
        temperature: alpha; higher values make each position copy its single best match.
        chunk_bytes: memory for one block of similarity rows.

    Returns:
        (1, 3, H, W) warped exemplar.
    """
    _, channels, h, w = source_features.shape
    if exemplar_features.shape[-2:] != (h, w):
        raise ValueError("source and exemplar features must be on the same grid")
    height, width = exemplar.shape[-2:]
    if height % h or width % w or height // h != width // w:
        raise ValueError(f"exemplar {height}x{width} is not a whole number of {h}x{w} patches")
    patch = height // h
    positions = h * w

    # Both feature sets in fp32: the similarities feed an exponential with alpha ~ 100.
    queries = source_features.float().reshape(channels, positions).t()  # (HW, c)
    keys = exemplar_features.float().reshape(channels, positions)  # (c, HW)
    # Each exemplar position's s x s x 3 patch, flattened: (HW, 3 s^2).
    patches = F.unfold(exemplar.float(), kernel_size=patch, stride=patch)[0].t()

    rows = max(1, min(positions, chunk_bytes // (4 * positions)))
    warped = torch.empty(positions, patches.shape[1], dtype=torch.float32, device=exemplar.device)
    for start in range(0, positions, rows):
        similarity = queries[start : start + rows] @ keys  # (rows, HW), cosine in [-1, 1]
        weights = torch.softmax(similarity.mul_(temperature), dim=1)
        warped[start : start + rows] = weights @ patches
    image = F.fold(warped.t().unsqueeze(0), output_size=(height, width), kernel_size=patch, stride=patch)
    return image.to(exemplar.dtype)
