"""CoCosNet v2 (full-resolution correspondence for exemplar-based translation), for inference.

Two networks, each loading one official checkpoint:

* :class:`CorrespondenceNet` (``latest_net_Corr.pth``) encodes the semantic input and the
  exemplar (photo + its own semantics) with two U-Net-like feature encoders into features at
  1/8, 1/4, 1/2 and 1/1 of the working size, projects and channel-centres them, and warps the
  exemplar onto the input's layout level by level: a full correlation at the coarsest level,
  then at every finer level a GRU-assisted PatchMatch seeded from the level above.
* :class:`TranslationGenerator` (``latest_net_G.pth``) is a SPADE generator whose modulation
  comes from the four warped exemplars and the semantic input.

Module names mirror the official code so that checkpoints load unchanged, except that the
official spectrally normalised convolutions are stored as (``weight_orig``, ``weight_u``,
``weight_v``); :func:`fold_spectral_norm` turns each into the plain ``weight`` it computes at
inference time (``weight_orig / (u . W v)``, no power iteration in eval mode), once, at load.

Differences from the official forward pass (same arithmetic except where noted):

* any square working size that is a multiple of 32 (the official code hard-codes 512);
* the coarsest correlation is computed in row chunks, so the (HW)^2 matrix never exists;
  finer levels gather exemplar features in candidate chunks, so memory stays O(HW*K);
* features are gathered from a (positions, channels) layout (whole rows) instead of the
  official column gathers, which is what makes the PatchMatch steps cheap on CPU (the dot
  products are then summed in another order: candidates tied to within rounding may swap);
* the order of the two propagation directions in each PatchMatch step is an argument
  (the official code draws it from Python's global ``random``);
* no CUDA-only calls, so it runs on CPU, CUDA and MPS.

Nothing here touches the file system.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "CoCosNetConfig",
    "CorrespondenceNet",
    "Correspondence",
    "TranslationGenerator",
    "cocosnet_config_from_state_dicts",
    "fold_spectral_norm",
    "propagation_orders",
    "LEVELS",
    "SIZE_MULTIPLE",
]

_LRELU_SLOPE = 0.2
# Four correspondence levels at 1/8, 1/4, 1/2 and 1/1 of the working size; the generator
# starts from 1/32 of it, so the size must be a multiple of 32.
LEVELS = 4
SIZE_MULTIPLE = 32
# The official fine-level seeding: each pixel's best coarse match (scaled x2) is spread over a
# 4x4 window of candidates, dilated by 2, at window offsets -1..2 (not centred: as trained).
_SEED_WINDOW = 4
_SEED_CENTRE = 1
_SEED_DILATION = 2
# Bytes one gather chunk may use; keeps fine levels at O(HW*K) whatever the channel count.
_GATHER_BUDGET = 64 * 1024 * 1024
_EPS_FEATURE = 1e-10
_EPS_PONO = 1e-8

HORIZONTAL, VERTICAL = "horizontal", "vertical"


@dataclass(frozen=True)
class CoCosNetConfig:
    """Widths that decide the checkpoint's shapes, plus the inference knobs."""

    semantic_nc: int = 20  # channels of the semantic input (20 for the pose label)
    nef: int = 32  # correspondence encoder width
    ngf: int = 64  # generator width
    spade_hidden: int = 128  # hidden width of every SPADE modulation branch
    candidates: int = 16  # K, PatchMatch candidates kept per pixel
    gru_hidden: int = 32  # ConvGRU state width
    motion: int = 64  # motion-encoder width (GRU input)
    iterations: int = 5  # PatchMatch + GRU iterations per fine level
    temperature: float = 0.01


# --------------------------------------------------------------------------- building blocks


def positional_norm(x: Tensor) -> Tensor:
    """Normalise every position across channels (PONO); unbiased variance, as trained.

    In float32 whatever the input (a no-op for float32): fp16 autocast leaves mean and var in
    fp16, where 1e-8 rounds away (a zero variance then gives NaN) and a variance over 65504 is inf."""
    work = x.float()
    mean = work.mean(dim=1, keepdim=True)
    std = work.var(dim=1, keepdim=True).add(_EPS_PONO).sqrt()
    return ((work - mean) / std).to(x.dtype)


def _unit_channels(x: Tensor) -> Tensor:
    """Scale every position's feature vector to unit L2 norm (in float32, as for PONO)."""
    work = x.float()
    return (work / (torch.linalg.vector_norm(work, dim=1, keepdim=True) + _EPS_FEATURE)).to(x.dtype)


def _centred_unit_channels(x: Tensor) -> Tensor:
    """Subtract the channel mean, then unit norm: what the matching compares (PONO_C)."""
    return _unit_channels(x - x.mean(dim=1, keepdim=True))


class SPADE(nn.Module):
    """Positional normalisation modulated by a (scale, shift) predicted from a conditioning map."""

    def __init__(self, channels: int, condition_nc: int, hidden: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(condition_nc, hidden, 3), nn.ReLU())
        self.pad = nn.ReflectionPad2d(1)
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        condition = F.interpolate(condition, size=x.shape[2:], mode="nearest")
        hidden = self.pad(self.mlp_shared(condition))
        return positional_norm(x) * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class SPADEResnetBlock(nn.Module):
    """Two SPADE-modulated 3x3 convolutions (reflection padded) and a (learned) shortcut."""

    def __init__(self, fin: int, fout: int, condition_nc: int, hidden: int) -> None:
        super().__init__()
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.pad = nn.ReflectionPad2d(1)
        self.conv_0 = nn.Conv2d(fin, fmiddle, 3)
        self.conv_1 = nn.Conv2d(fmiddle, fout, 3)
        self.norm_0 = SPADE(fin, condition_nc, hidden)
        self.norm_1 = SPADE(fmiddle, condition_nc, hidden)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)
            self.norm_s = SPADE(fin, condition_nc, hidden)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        shortcut = self.conv_s(self.norm_s(x, condition)) if self.learned_shortcut else x
        dx = self.conv_0(self.pad(F.leaky_relu(self.norm_0(x, condition), _LRELU_SLOPE)))
        dx = self.conv_1(self.pad(F.leaky_relu(self.norm_1(dx, condition), _LRELU_SLOPE)))
        return shortcut + dx


class ResidualBlock(nn.Module):
    """Reflection-padded conv / instance norm pair with one PReLU shared by both places it acts.

    The official block registers the same PReLU as ``relu`` and as ``model.3``, so checkpoints
    hold its single weight under both names; sharing the module here keeps that true.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu = nn.PReLU()
        self.model = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            self.relu,
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.model(x))


def _conv_instance_norm(cin: int, cout: int, stride: int) -> nn.Sequential:
    # Bias-free: the instance norm right after it would cancel any bias.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.InstanceNorm2d(cout))


class FeatureEncoder(nn.Module):
    """U-Net-like encoder giving matching features at 1/8, 1/4, 1/2 and 1/1 of its input size."""

    def __init__(self, in_channels: int, nef: int, hidden: int) -> None:
        super().__init__()
        self.layer1 = _conv_instance_norm(in_channels, nef, 1)
        self.layer2 = nn.Sequential(_conv_instance_norm(nef, nef * 2, 1), ResidualBlock(nef * 2))
        self.layer3 = nn.Sequential(_conv_instance_norm(nef * 2, nef * 4, 2), ResidualBlock(nef * 4))
        self.layer4 = nn.Sequential(_conv_instance_norm(nef * 4, nef * 4, 2), ResidualBlock(nef * 4))
        self.layer5 = nn.Sequential(_conv_instance_norm(nef * 4, nef * 4, 2), ResidualBlock(nef * 4))
        # The decoder is conditioned on the encoder's own input.
        self.head_0 = SPADEResnetBlock(nef * 4, nef * 4, in_channels, hidden)
        self.G_middle_0 = SPADEResnetBlock(nef * 4, nef * 4, in_channels, hidden)
        self.G_middle_1 = SPADEResnetBlock(nef * 4, nef * 2, in_channels, hidden)
        self.G_middle_2 = SPADEResnetBlock(nef * 2, nef, in_channels, hidden)

    def forward(self, x: Tensor) -> list[Tensor]:
        def act(t: Tensor) -> Tensor:
            return F.leaky_relu(t, _LRELU_SLOPE)

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)

        x1 = self.layer1(x)
        x2 = self.layer2(act(x1))
        x3 = self.layer3(act(x2))
        x4 = self.layer4(act(x3))
        x5 = self.layer5(act(x4))
        x6 = self.head_0(x5, x)
        x7 = self.G_middle_0(up(x6) + x4, x)
        x8 = self.G_middle_1(up(x7) + x3, x)
        x9 = self.G_middle_2(up(x8) + x2, x)
        return [x6, x7, x8, x9]


class MotionEncoder(nn.Module):
    """Encodes the candidates' scores and offsets for the GRU (RAFT-style)."""

    def __init__(self, candidates: int, motion: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(candidates, motion, 1)
        self.convc2 = nn.Conv2d(motion, motion, 3, padding=1)
        self.convf1 = nn.Conv2d(2 * candidates, motion, 7, padding=3)
        self.convf2 = nn.Conv2d(motion, motion, 3, padding=1)
        self.conv = nn.Conv2d(2 * motion, motion - 2 * candidates, 3, padding=1)

    def forward(self, offsets: Tensor, scores: Tensor) -> Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(scores))))
        flo = F.relu(self.convf2(F.relu(self.convf1(offsets))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], dim=1))), offsets], dim=1)


class SeparableConvGRU(nn.Module):
    """A ConvGRU step done as a 1x5 pass then a 5x1 pass."""

    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        both = hidden + inputs
        self.convz1 = nn.Conv2d(both, hidden, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(both, hidden, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(both, hidden, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(both, hidden, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(both, hidden, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(both, hidden, (5, 1), padding=(2, 0))

    @staticmethod
    def _step(h: Tensor, x: Tensor, convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d) -> Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(convz(hx))
        r = torch.sigmoid(convr(hx))
        q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        h = self._step(h, x, self.convz1, self.convr1, self.convq1)
        return self._step(h, x, self.convz2, self.convr2, self.convq2)


class OffsetHead(nn.Module):
    """Predicts a (row, column) correction for every candidate from the GRU state."""

    def __init__(self, hidden: int, candidates: int, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * candidates, 3, padding=1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        delta = self.conv2(F.relu(self.conv1(h)))
        return delta.chunk(2, dim=1)


class UpdateBlock(nn.Module):
    def __init__(self, config: CoCosNetConfig) -> None:
        super().__init__()
        self.encoder = MotionEncoder(config.candidates, config.motion)
        self.gru = SeparableConvGRU(config.gru_hidden, config.motion)
        self.flow_head = OffsetHead(config.gru_hidden, config.candidates)

    def forward(self, hidden: Tensor, scores: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden = self.gru(hidden, self.encoder(offsets, scores))
        delta_rows, delta_cols = self.flow_head(hidden)
        return hidden, delta_rows, delta_cols


# --------------------------------------------------------------------------- PatchMatch


def _grid(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    rows = torch.arange(height, device=device, dtype=torch.float32).view(1, 1, height, 1)
    cols = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, 1, width)
    return rows, cols


def offsets_to_indices(row_offsets: Tensor, col_offsets: Tensor) -> Tensor:
    """Flat exemplar index each candidate points at, (B, K, H, W) int64.

    The target is clamped into the image and flattened as ``row * W + col`` *before* the
    truncation to an integer, exactly as the network was trained: after a fractional GRU
    update, a fractional row spills into the column. Do not "fix" this without retraining.
    """
    height, width = row_offsets.shape[2:]
    rows, cols = _grid(height, width, row_offsets.device)
    target_rows = torch.clamp(rows + row_offsets.float(), 0, height - 1)
    target_cols = torch.clamp(cols + col_offsets.float(), 0, width - 1)
    return (target_rows * width + target_cols).long()


def indices_to_offsets(indices: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """(row, column) offsets (float32) from each pixel to the flat indices it points at."""
    height = indices.shape[2]
    rows, cols = _grid(height, width, indices.device)
    return (indices // width).float() - rows, (indices % width).float() - cols


def _gather_rows(table: Tensor, indices: Tensor) -> Tensor:
    """table (B, N, C), indices (B, M) -> (B, M, C), one contiguous row per index."""
    batch, count, channels = table.shape
    base = torch.arange(batch, device=table.device).view(batch, 1) * count
    return table.reshape(batch * count, channels).index_select(0, (indices + base).reshape(-1)).view(
        batch, -1, channels
    )


def _full_precision(function):  # type: ignore[no-untyped-def]
    """Run ``function`` with autocast off: matching scores are divided by a 0.01 temperature, so
    the bf16/fp16 rounding of a dot product would reorder the candidates."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        first = next(a for a in args if isinstance(a, Tensor))
        with torch.autocast(first.device.type, enabled=False):
            return function(*args, **kwargs)

    return wrapper


@_full_precision
def candidate_scores(queries: Tensor, keys: Tensor, indices: Tensor, temperature: float) -> Tensor:
    """Similarity of every pixel to each of its candidates.

    queries, keys: (B, HW, C) unit features; indices: (B, HW, N) flat key positions.
    Returns (B, HW, N) logits. Candidates are gathered a chunk at a time so that at most
    ``_GATHER_BUDGET`` bytes of gathered features exist at once.
    """
    batch, positions, candidates = indices.shape
    channels = queries.shape[2]
    per_candidate = max(1, batch * positions * channels * queries.element_size())
    chunk = max(1, min(candidates, _GATHER_BUDGET // per_candidate))
    scores = []
    for start in range(0, candidates, chunk):
        block = indices[:, :, start : start + chunk]
        gathered = _gather_rows(keys, block.reshape(batch, -1)).view(batch * positions, -1, channels)
        # One (k x C) @ (C x 1) product per pixel: the fastest contraction measured (0.85 s per
        # 48-candidate evaluation at 512x512 on 2 CPU cores; the official per-candidate column
        # gathers take 4.2 s). Its summation order differs from the official channel-by-channel
        # sum, so scores tied to within rounding may come out in the other order.
        dots = torch.bmm(gathered, queries.reshape(batch * positions, channels, 1))
        scores.append(dots.view(batch, positions, -1))
    return torch.cat(scores, dim=2) / temperature


@_full_precision
def soft_warp(values: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """values (B, HW, C) gathered at indices (B, HW, K) and blended with weights (B, HW, K)."""
    batch, positions, candidates = indices.shape
    out = None
    for k in range(candidates):
        term = _gather_rows(values, indices[:, :, k]) * weights[:, :, k : k + 1]
        out = term if out is None else out + term
    assert out is not None
    return out


def _propagate(row_offsets: Tensor, col_offsets: Tensor, direction: str) -> tuple[Tensor, Tensor]:
    """Each pixel also tries its two neighbours' candidates (zeros beyond the border).

    Candidate order is [previous neighbour's, own, next neighbour's], as trained.
    """
    dim = 3 if direction == HORIZONTAL else 2

    def spread(t: Tensor) -> Tensor:
        zero = torch.zeros_like(t.narrow(dim, 0, 1))
        size = t.shape[dim]
        before = torch.cat([zero, t.narrow(dim, 0, size - 1)], dim=dim)
        after = torch.cat([t.narrow(dim, 1, size - 1), zero], dim=dim)
        return torch.cat([before, t, after], dim=1)

    return spread(row_offsets), spread(col_offsets)


@dataclass
class _LevelFeatures:
    queries: Tensor  # (B, HW, C) input-side unit features
    keys: Tensor  # (B, HW, C) exemplar-side unit features
    height: int
    width: int


class PatchMatchGRU(nn.Module):
    """T rounds of (propagate, re-score, keep top K) each followed by a ConvGRU offset update."""

    def __init__(self, config: CoCosNetConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.gru_hidden
        self.initial_layer = nn.Sequential(
            nn.Conv2d(config.nef * 2, hidden, 3, padding=1),
            nn.InstanceNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.InstanceNorm2d(hidden),
            nn.ReLU(),
        )
        self.refine_net = UpdateBlock(config)

    def _evaluate(self, level: _LevelFeatures, row_offsets: Tensor, col_offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Score every candidate, keep the K best; returns their offsets and softmax scores."""
        batch, count = row_offsets.shape[:2]
        indices = offsets_to_indices(row_offsets, col_offsets).flatten(2).transpose(1, 2)  # (B, HW, N)
        probabilities = F.softmax(candidate_scores(level.queries, level.keys, indices, self.config.temperature), dim=-1)
        best, order = torch.topk(probabilities, self.config.candidates, dim=-1)
        kept = torch.gather(indices, -1, order).transpose(1, 2).reshape(batch, -1, level.height, level.width)
        rows, cols = indices_to_offsets(kept, level.width)
        return rows, cols, best.transpose(1, 2).reshape(batch, -1, level.height, level.width)

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        exemplar: Tensor,
        row_offsets: Tensor,
        col_offsets: Tensor,
        orders: Sequence[tuple[str, str]],
    ) -> tuple[Tensor, Tensor]:
        """Refine the seed candidates and warp ``exemplar`` (B, 3, H, W) with them.

        ``orders`` gives, for each iteration, the two propagation directions in turn.
        Returns the final flat indices (B, HW, K) and the warped exemplar (B, 3, H, W).
        """
        batch, channels, height, width = queries.shape
        hidden = self.initial_layer(torch.cat([queries, keys], dim=1))
        level = _LevelFeatures(
            queries.float().flatten(2).transpose(1, 2).contiguous(),
            keys.float().flatten(2).transpose(1, 2).contiguous(),
            height,
            width,
        )
        for first, second in orders:
            with torch.no_grad():
                row_offsets, col_offsets = _propagate(row_offsets, col_offsets, first)
                row_offsets, col_offsets, _ = self._evaluate(level, row_offsets, col_offsets)
                row_offsets, col_offsets = _propagate(row_offsets, col_offsets, second)
                row_offsets, col_offsets, scores = self._evaluate(level, row_offsets, col_offsets)
            offsets = torch.cat([row_offsets, col_offsets], dim=1).to(hidden.dtype)
            hidden, delta_rows, delta_cols = self.refine_net(hidden, scores.to(hidden.dtype), offsets)
            row_offsets = row_offsets + delta_rows.float()
            col_offsets = col_offsets + delta_cols.float()
        indices = offsets_to_indices(row_offsets, col_offsets).flatten(2).transpose(1, 2)
        weights = F.softmax(candidate_scores(level.queries, level.keys, indices, self.config.temperature), dim=-1)
        flat_exemplar = exemplar.float().flatten(2).transpose(1, 2).contiguous()
        warp = soft_warp(flat_exemplar, indices, weights).transpose(1, 2).reshape(batch, -1, height, width)
        return indices, warp


# --------------------------------------------------------------------------- correspondence


@dataclass
class Correspondence:
    """The exemplar warped onto the input at each level (coarsest first), in [-1, 1]."""

    warps: list[Tensor]
    indices: list[Tensor]  # per level: (B, HW) best match at the coarsest, (B, HW, K) after


@_full_precision
def _coarse_match(queries: Tensor, keys: Tensor, exemplar: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Full softmax correlation at the coarsest level, a block of rows at a time.

    Returns the best match of every position (B, HW) and the warped exemplar (B, 3, H, W).
    """
    batch, channels, height, width = queries.shape
    positions = height * width
    q = queries.float().flatten(2).transpose(1, 2)  # (B, HW, C)
    k = keys.float().flatten(2)  # (B, C, HW)
    values = exemplar.float().flatten(2).transpose(1, 2)  # (B, HW, 3)
    rows = max(1, _GATHER_BUDGET // max(1, batch * positions * 4))
    best, warped = [], []
    for start in range(0, positions, rows):
        probabilities = F.softmax(torch.bmm(q[:, start : start + rows], k) / temperature, dim=-1)
        best.append(torch.topk(probabilities, 1, dim=-1).indices.squeeze(-1))
        warped.append(torch.bmm(probabilities, values))
    warp = torch.cat(warped, dim=1).transpose(1, 2).reshape(batch, -1, height, width)
    return torch.cat(best, dim=1), warp


def _seed_candidates(best: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """K seeds per fine pixel from each coarse pixel's best match (flat indices (B, h*w))."""
    batch = best.shape[0]
    coarse_rows, coarse_cols = indices_to_offsets(best.view(batch, 1, height, width), width)
    window = torch.arange(_SEED_WINDOW, device=best.device, dtype=torch.float32) - _SEED_CENTRE
    drow = (window.view(-1, 1).expand(-1, _SEED_WINDOW).reshape(1, -1, 1, 1)) * _SEED_DILATION
    dcol = (window.view(1, -1).expand(_SEED_WINDOW, -1).reshape(1, -1, 1, 1)) * _SEED_DILATION
    rows = F.interpolate(2 * coarse_rows + drow, scale_factor=2, mode="nearest")
    cols = F.interpolate(2 * coarse_cols + dcol, scale_factor=2, mode="nearest")
    return rows, cols


class CorrespondenceNet(nn.Module):
    """Domain-aligned features plus hierarchical PatchMatch; warps the exemplar onto the input."""

    def __init__(self, config: CoCosNetConfig) -> None:
        super().__init__()
        self.config = config
        nef, hidden, nc = config.nef, config.spade_hidden, config.semantic_nc
        self.adaptive_model_seg = FeatureEncoder(nc, nef, hidden)
        self.adaptive_model_img = FeatureEncoder(3 + nc, nef, hidden)
        widths = (nef * 4, nef * 4, nef * 2, nef)
        for level, width in enumerate(widths):
            self.add_module(f"phi_{level}", nn.Conv2d(width, nef, 1))
        for level, width in enumerate(widths):
            self.add_module(f"theta_{level}", nn.Conv2d(width, nef, 1))
        self.patch_match = PatchMatchGRU(config)

    def matching_features(self, semantic: Tensor, exemplar: Tensor, exemplar_semantic: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(input-side, exemplar-side) unit, channel-centred features per level, coarsest first."""
        seg_features = self.adaptive_model_seg(semantic)
        img_features = self.adaptive_model_img(torch.cat([exemplar, exemplar_semantic], dim=1))
        pairs = []
        for level, (seg, img) in enumerate(zip(seg_features, img_features)):
            theta = getattr(self, f"theta_{level}")(_unit_channels(seg))
            phi = getattr(self, f"phi_{level}")(_unit_channels(img))
            with torch.autocast(theta.device.type, enabled=False):
                pairs.append((_centred_unit_channels(theta.float()), _centred_unit_channels(phi.float())))
        return pairs

    def forward(
        self,
        semantic: Tensor,
        exemplar: Tensor,
        exemplar_semantic: Tensor,
        orders: Sequence[Sequence[tuple[str, str]]],
    ) -> Correspondence:
        """Warp ``exemplar`` (B, 3, S, S) onto ``semantic``; ``orders[l]`` per fine level l=1..3."""
        size = semantic.shape[-1]
        pairs = self.matching_features(semantic, exemplar, exemplar_semantic)
        warps, indices = [], []
        best = None
        for level, (queries, keys) in enumerate(pairs):
            height, width = queries.shape[2:]
            factor = size // width
            pooled = F.avg_pool2d(exemplar, factor) if factor > 1 else exemplar
            if level == 0:
                best, warp = _coarse_match(queries, keys, pooled, self.config.temperature)
                indices.append(best)
            else:
                assert best is not None
                rows, cols = _seed_candidates(best, height // 2, width // 2)
                found, warp = self.patch_match(queries, keys, pooled, rows, cols, orders[level - 1])
                indices.append(found)
                best = found[:, :, 0]  # the first kept candidate, after its GRU update, as trained
            warps.append(warp)
        return Correspondence(warps, indices)


# --------------------------------------------------------------------------- generator


class TranslationGenerator(nn.Module):
    """SPADE generator conditioned on the four warped exemplars and the semantic input."""

    def __init__(self, config: CoCosNetConfig) -> None:
        super().__init__()
        nf, hidden = config.ngf, config.spade_hidden
        condition = 3 * LEVELS + config.semantic_nc
        self.fc = nn.Conv2d(condition, 8 * nf, 3, padding=1)
        self.head_0 = SPADEResnetBlock(8 * nf, 8 * nf, condition, hidden)
        self.G_middle_0 = SPADEResnetBlock(8 * nf, 8 * nf, condition, hidden)
        self.G_middle_1 = SPADEResnetBlock(8 * nf, 8 * nf, condition, hidden)
        self.up_0 = SPADEResnetBlock(8 * nf, 8 * nf, condition, hidden)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, condition, hidden)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, condition, hidden)
        self.up_3 = SPADEResnetBlock(2 * nf, nf, condition, hidden)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, semantic: Tensor, warps: Sequence[Tensor]) -> Tensor:
        size = semantic.shape[2:]
        layers = [F.interpolate(w, size=size, mode="nearest") if w.shape[2:] != size else w for w in warps]
        condition = torch.cat([*(w.to(semantic.dtype) for w in layers), semantic], dim=1)
        x = F.interpolate(condition, size=(size[0] // SIZE_MULTIPLE, size[1] // SIZE_MULTIPLE), mode="nearest")
        x = self.head_0(self.fc(x), condition)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.G_middle_1(self.G_middle_0(x, condition), condition)
        for block in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), condition)
        return torch.tanh(self.conv_img(F.leaky_relu(x, _LRELU_SLOPE)))


# --------------------------------------------------------------------------- checkpoints


def fold_spectral_norm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Replace each (weight_orig, weight_u, weight_v) triple with the weight it normalises to.

    In eval mode the official spectral norm divides ``weight_orig`` by ``u . (W v)`` with the
    stored vectors; doing that once here gives plain convolutions with identical outputs.
    A triple with a part missing is left as is, so that strict loading reports it.
    """
    folded: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith((".weight_u", ".weight_v")):
            stem = key[: -len("_u")]
            if f"{stem}_orig" in state_dict and f"{stem}_u" in state_dict and f"{stem}_v" in state_dict:
                continue
        if key.endswith(".weight_orig"):
            stem = key[: -len("_orig")]
            u, v = state_dict.get(f"{stem}_u"), state_dict.get(f"{stem}_v")
            if u is not None and v is not None:
                matrix = value.float().reshape(value.shape[0], -1)
                sigma = torch.dot(u.float(), torch.mv(matrix, v.float()))
                folded[stem] = (value.float() / sigma).to(value.dtype)
                continue
        folded[key] = value
    return folded


def _shape(state_dict: Mapping[str, Tensor], key: str, what: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise KeyError(f"{what} has no {key!r}")
    return tuple(state_dict[key].shape)


def cocosnet_config_from_state_dicts(
    correspondence: Mapping[str, Tensor], generator: Mapping[str, Tensor], **knobs: float
) -> CoCosNetConfig:
    """Read every width from the two (official-format) state dicts' shapes."""
    corr, gen = "correspondence checkpoint", "generator checkpoint"
    nef, semantic_nc = _shape(correspondence, "adaptive_model_seg.layer1.0.weight_orig", corr)[:2]
    spade_hidden = _shape(correspondence, "adaptive_model_seg.head_0.norm_0.mlp_shared.1.weight", corr)[0]
    candidates = _shape(correspondence, "patch_match.refine_net.encoder.convc1.weight", corr)[1]
    motion = _shape(correspondence, "patch_match.refine_net.encoder.convc1.weight", corr)[0]
    gru_hidden = _shape(correspondence, "patch_match.initial_layer.0.weight", corr)[0]
    ngf = _shape(generator, "conv_img.weight", gen)[1]
    condition = _shape(generator, "fc.weight", gen)[1]
    if candidates != _SEED_WINDOW**2:  # it would load, then fail on every pair
        raise ValueError(f"the correspondence network keeps {candidates} PatchMatch candidates per pixel, but "
                         f"CoCosNet v2 seeds {_SEED_WINDOW**2} (a {_SEED_WINDOW}x{_SEED_WINDOW} window): not a CoCosNet "
                         "v2 model this code can run")
    if condition != 3 * LEVELS + semantic_nc:
        raise ValueError(
            f"the generator expects {condition - 3 * LEVELS} semantic channels but the correspondence network "
            f"{semantic_nc}: the two files come from different models"
        )
    return CoCosNetConfig(
        semantic_nc=semantic_nc,
        nef=nef,
        ngf=ngf,
        spade_hidden=spade_hidden,
        candidates=candidates,
        gru_hidden=gru_hidden,
        motion=motion,
        **knobs,  # type: ignore[arg-type]
    )


def propagation_orders(seed: int, iterations: int, fine_levels: int = LEVELS - 1) -> list[list[tuple[str, str]]]:
    """Which propagation direction goes first, per fine level and iteration.

    The official code flips a fair coin with Python's global ``random`` at every iteration;
    here the coin is a private ``random.Random(seed)``, drawn in the same order (level by
    level, iteration by iteration), so a seed always gives the same result.
    """
    import random

    coin = random.Random(seed)
    orders = []
    for _ in range(fine_levels):
        level = []
        for _ in range(iterations):
            level.append((HORIZONTAL, VERTICAL) if coin.random() < 0.5 else (VERTICAL, HORIZONTAL))
        orders.append(level)
    return orders
