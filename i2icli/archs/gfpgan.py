"""GFPGAN v1.3 / v1.4 generator ("GFPGANv1Clean"), written for inference.

The network has three parts:

* a U-Net whose encoder squeezes the degraded face down to 4x4 and whose decoder grows it
  back, producing at every resolution a (scale, shift) pair of feature maps;
* a linear head on the 4x4 bottleneck that predicts the StyleGAN2 latent code(s);
* a pretrained StyleGAN2 generator (the "clean" variant: plain PyTorch ops, no custom CUDA
  kernels) that renders the face from that latent, with each resolution's features
  modulated by the U-Net's (scale, shift) maps (spatial feature transform, SFT).

Module and parameter names mirror the reference implementation in the ``gfpgan``
package exactly, so the official checkpoints load with ``strict=True`` and no key
remapping. Compared with that reference, this version:

* returns only the restored image (the intermediate U-Net RGB outputs are a training aid);
* always uses the noise maps stored in the checkpoint, so results are deterministic
  (the reference's ``randomize_noise=False``);
* computes the StyleGAN2 demodulation in float32 from a small matmul, so it neither
  overflows in float16 nor materialises the squared batch of kernels;
* has no training-only options (style mixing, truncation, loading a decoder from disk).

Nothing here touches the file system: build the module, then ``load_state_dict`` it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from i2icli.archs.stylegan2 import (  # noqa: F401  (ModulatedConv2d is re-exported)
    _LRELU_SLOPE,
    ModulatedConv2d,
    StyleGAN2Generator,
    _bilinear,
    _channels,
)

__all__ = ["GFPGANv1Clean", "gfpgan_config_from_state_dict"]

# Largest resolution the reference channel table covers; we keep the same limits so that
# anything we build is something the official code could have trained.
_MIN_SIZE = 8
_MAX_SIZE = 1024


# --------------------------------------------------------------------------------------
# StyleGAN2-clean decoder with SFT (building blocks shared with i2icli.archs.stylegan2)
# --------------------------------------------------------------------------------------


class StyleGAN2GeneratorCSFT(StyleGAN2Generator):
    """StyleGAN2-clean synthesis network with channel-split SFT modulation.

    The layers (and so the checkpoint keys) are exactly :class:`StyleGAN2Generator`'s; only the
    forward pass differs, modulating each octave's features with the U-Net's SFT maps.

    Args:
        out_size: Output resolution (power of two).
        num_style_feat: Width of the style (w) vectors.
        num_mlp: Number of linear layers in the mapping MLP (``style_mlp``).
        channel_multiplier: Width multiplier for resolutions >= 64.
        narrow: Global width ratio.
        sft_half: Apply SFT to the second half of the channels only (GFPGAN v1.3/v1.4),
            leaving the first half as the pure generative prior.
    """

    def __init__(
        self,
        out_size: int,
        num_style_feat: int = 512,
        num_mlp: int = 8,
        channel_multiplier: float = 2,
        narrow: float = 1.0,
        sft_half: bool = False,
    ) -> None:
        super().__init__(out_size, num_style_feat, num_mlp, channel_multiplier, narrow, resample="bilinear")
        self.sft_half = sft_half
        self.num_layers = self.num_convs

    def _sft(self, feat: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """Spatial feature transform: ``feat * scale + shift`` on all or half the channels."""
        if self.sft_half:
            half = feat.shape[1] // 2
            return torch.cat([feat[:, :half], torch.addcmul(shift, feat[:, half:], scale)], dim=1)
        return torch.addcmul(shift, feat, scale)

    def forward(self, latent: Tensor, conditions: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        """Render images from W-space latents, modulated by the U-Net's SFT maps.

        Args:
            latent: (b, num_style_feat) shared by all layers, or (b, num_latent,
                num_style_feat) with one vector per layer.
            conditions: One (scale, shift) pair per resolution from 8x8 upward.

        Returns:
            (b, 3, out_size, out_size) image, roughly in [-1, 1].
        """
        if len(conditions) != len(self.to_rgbs):
            raise ValueError(f"expected {len(self.to_rgbs)} SFT conditions, got {len(conditions)}")
        per_layer = latent.ndim == 3

        def w(index: int) -> Tensor:
            return latent[:, index] if per_layer else latent

        noises = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

        out = self.style_conv1(self.constant_input(latent.shape[0]), w(0), noises[0])
        skip = self.to_rgb1(out, w(1))

        # Style index j walks 1, 3, 5, ...: each octave's upsampling conv shares its style
        # with the previous octave's to_rgb, exactly as in the trained model.
        for level, (scale, shift) in enumerate(conditions):
            j = 2 * level + 1
            out = self.style_convs[2 * level](out, w(j), noises[j])
            # SFT sits between the two convs of each octave.
            out = self._sft(out, scale, shift)
            out = self.style_convs[2 * level + 1](out, w(j + 1), noises[j + 1])
            skip = self.to_rgbs[level](out, w(j + 2), skip)
        return skip


# --------------------------------------------------------------------------------------
# GFPGAN U-Net and the full model
# --------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """Residual block that halves (``mode="down"``) or doubles (``"up"``) the resolution."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "down") -> None:
        super().__init__()
        if mode not in ("down", "up"):
            raise ValueError(f"mode must be 'down' or 'up', got {mode!r}")
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2.0

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu_(self.conv1(x), _LRELU_SLOPE)
        out = _bilinear(out, self.scale_factor)
        out = F.leaky_relu_(self.conv2(out), _LRELU_SLOPE)
        return out.add_(self.skip(_bilinear(x, self.scale_factor)))


class GFPGANv1Clean(nn.Module):
    """GFPGAN v1.3/v1.4 generator: U-Net encoder/decoder + StyleGAN2-clean decoder with SFT.

    Defaults are the configuration of the official v1.3 and v1.4 checkpoints.

    Args:
        out_size: Face resolution in and out (power of two, 8..1024).
        num_style_feat: Width of the StyleGAN2 style vectors.
        channel_multiplier: StyleGAN2 width multiplier for resolutions >= 64.
        narrow: Global width ratio (the U-Net uses half of it).
        sft_half: Modulate only half of the decoder channels (v1.3/v1.4 behaviour).
        different_w: Predict one latent per decoder layer instead of a shared one.
        num_mlp: Layers in StyleGAN2's mapping MLP (present in checkpoints; only used
            when ``input_is_latent`` is False).
        input_is_latent: The predicted code is already in W space (skip the mapping MLP).
        decoder_load_path: Accepted for signature compatibility with the reference and
            ignored: this module never reads files. Load a full checkpoint instead.
        fix_decoder: Accepted for compatibility and ignored (a training option).
    """

    def __init__(
        self,
        out_size: int = 512,
        num_style_feat: int = 512,
        channel_multiplier: float = 2,
        narrow: float = 1.0,
        sft_half: bool = True,
        different_w: bool = True,
        num_mlp: int = 8,
        input_is_latent: bool = True,
        decoder_load_path: str | None = None,
        fix_decoder: bool = False,
    ) -> None:
        super().__init__()
        if out_size < _MIN_SIZE or out_size > _MAX_SIZE or out_size & (out_size - 1):
            raise ValueError(f"out_size must be a power of two in [{_MIN_SIZE}, {_MAX_SIZE}], got {out_size}")
        if decoder_load_path is not None:
            warnings.warn(
                "GFPGANv1Clean ignores decoder_load_path; load a full checkpoint with load_state_dict",
                stacklevel=2,
            )
        del fix_decoder  # training-only; nothing to do at inference

        self.out_size = out_size
        self.num_style_feat = num_style_feat
        self.different_w = different_w
        self.input_is_latent = input_is_latent
        self.log_size = out_size.bit_length() - 1
        levels = range(3, self.log_size + 1)  # resolutions 8 .. out_size, as log2

        # The U-Net is half as wide as the decoder so that, with sft_half, its (scale,
        # shift) maps exactly cover the modulated half of the decoder's channels.
        unet_narrow = narrow * 0.5

        def unet_ch(res: int) -> int:
            return _channels(res, channel_multiplier, unet_narrow)

        # Fail at construction, not mid-forward, if the widths cannot be combined: the SFT
        # maps must cover exactly the decoder channels they modulate.
        for level in levels:
            dec_ch = _channels(2**level, channel_multiplier, narrow)
            cond_ch = unet_ch(2**level) if sft_half else 2 * unet_ch(2**level)
            target_ch = dec_ch // 2 if sft_half else dec_ch
            if cond_ch != target_ch or (sft_half and dec_ch % 2):
                raise ValueError(
                    f"narrow={narrow}, channel_multiplier={channel_multiplier} give decoder width "
                    f"{dec_ch} and U-Net width {unet_ch(2**level)} at {2**level}px, which the "
                    f"SFT (sft_half={sft_half}) cannot combine"
                )

        # ---- encoder: out_size -> 4x4 ----
        first_ch = unet_ch(out_size)
        self.conv_body_first = nn.Conv2d(3, first_ch, 1)
        self.conv_body_down = nn.ModuleList()
        in_ch = first_ch
        for level in range(self.log_size, 2, -1):
            out_ch = unet_ch(2 ** (level - 1))
            self.conv_body_down.append(ResBlock(in_ch, out_ch, mode="down"))
            in_ch = out_ch
        self.final_conv = nn.Conv2d(in_ch, unet_ch(4), 3, 1, 1)

        # ---- U-Net decoder: 4x4 -> out_size, one SFT pair per resolution ----
        self.conv_body_up = nn.ModuleList()
        in_ch = unet_ch(4)
        for level in levels:
            out_ch = unet_ch(2**level)
            self.conv_body_up.append(ResBlock(in_ch, out_ch, mode="up"))
            in_ch = out_ch

        # Intermediate RGB heads: used only by the training losses, never at inference,
        # but the checkpoints contain them and strict loading needs the keys.
        self.toRGB = nn.ModuleList(nn.Conv2d(unet_ch(2**level), 3, 1) for level in levels)

        # ---- latent head ----
        num_latent = self.log_size * 2 - 2
        self.final_linear = nn.Linear(
            unet_ch(4) * 4 * 4, num_latent * num_style_feat if different_w else num_style_feat
        )

        self.stylegan_decoder = StyleGAN2GeneratorCSFT(
            out_size=out_size,
            num_style_feat=num_style_feat,
            num_mlp=num_mlp,
            channel_multiplier=channel_multiplier,
            narrow=narrow,
            sft_half=sft_half,
        )

        # ---- SFT condition heads (scale and shift), one per resolution ----
        def cond_head(ch: int) -> nn.Sequential:
            out = ch if sft_half else 2 * ch
            return nn.Sequential(
                nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(_LRELU_SLOPE, inplace=True), nn.Conv2d(ch, out, 3, 1, 1)
            )

        self.condition_scale = nn.ModuleList(cond_head(unet_ch(2**level)) for level in levels)
        self.condition_shift = nn.ModuleList(cond_head(unet_ch(2**level)) for level in levels)

    def forward(self, x: Tensor) -> Tensor:
        """Restore a batch of aligned faces.

        Args:
            x: (b, 3, out_size, out_size) RGB in [-1, 1], same dtype/device as the module.

        Returns:
            (b, 3, out_size, out_size) restored RGB, nominally in [-1, 1] (not clamped).
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.out_size or x.shape[3] != self.out_size:
            raise ValueError(
                f"expected input of shape (b, 3, {self.out_size}, {self.out_size}), got {tuple(x.shape)}"
            )
        b = x.shape[0]

        # Encoder; keep each block's output for the U-Net skip connections.
        feat = F.leaky_relu_(self.conv_body_first(x), _LRELU_SLOPE)
        skips: list[Tensor] = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu_(self.final_conv(feat), _LRELU_SLOPE)

        # Latent code(s) from the bottleneck. flatten (not view) keeps C,H,W order even
        # for channels_last inputs.
        latent = self.final_linear(feat.flatten(1))
        if self.different_w:
            latent = latent.view(b, -1, self.num_style_feat)
        if not self.input_is_latent:
            latent = self.stylegan_decoder.style_mlp(latent)

        # U-Net decoder: at each resolution, predict the SFT scale and shift maps.
        conditions: list[tuple[Tensor, Tensor]] = []
        for up, head_scale, head_shift, skip in zip(
            self.conv_body_up, self.condition_scale, self.condition_shift, reversed(skips)
        ):
            feat = up(feat + skip)
            conditions.append((head_scale(feat), head_shift(feat)))

        return self.stylegan_decoder(latent, conditions)


# --------------------------------------------------------------------------------------
# Config inference
# --------------------------------------------------------------------------------------

_DOWN_KEY = re.compile(r"^conv_body_down\.(\d+)\.conv1\.weight$")
_MLP_KEY = re.compile(r"^stylegan_decoder\.style_mlp\.(\d+)\.weight$")


def _as_number(value: float) -> float | int:
    """Return ints for integral values so inferred configs read like hand-written ones."""
    return int(value) if float(value).is_integer() else value


def gfpgan_config_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Infer :class:`GFPGANv1Clean` constructor kwargs from a checkpoint's tensor shapes.

    Accepts either the bare state dict or the training wrapper ``{"params_ema": ...}`` /
    ``{"params": ...}``. ``input_is_latent`` cannot be seen in the weights; it is returned
    as True, which is what every published GFPGANv1Clean checkpoint uses.

    Raises:
        ValueError: if the mapping does not look like a GFPGANv1Clean state dict.
    """
    sd: Mapping[str, Any] = state_dict
    for wrapper in ("params_ema", "params"):
        inner = sd.get(wrapper)
        if isinstance(inner, Mapping):
            sd = inner
            break

    def shape(key: str) -> tuple[int, ...]:
        try:
            return tuple(sd[key].shape)
        except KeyError:
            raise ValueError(f"not a GFPGANv1Clean state dict: missing {key!r}") from None

    num_down = sum(1 for k in sd if _DOWN_KEY.match(k))
    if num_down == 0:
        raise ValueError("not a GFPGANv1Clean state dict: no conv_body_down blocks")
    # One down block per octave from out_size to 4.
    out_size = 2 ** (num_down + 2)
    num_latent = 2 * (num_down + 2) - 2

    num_style_feat = shape("stylegan_decoder.style_conv1.modulated_conv.modulation.weight")[1]
    ch4 = shape("stylegan_decoder.constant_input.weight")[1]  # int(512 * narrow)
    narrow = ch4 / 512

    if out_size >= 64:
        # style_convs.6 is the first conv at 64px, the first width that depends on the multiplier:
        # int(256 * channel_multiplier * narrow).
        ch64 = shape("stylegan_decoder.style_convs.6.bias")[1]
        channel_multiplier = ch64 / (256 * narrow)
    else:
        channel_multiplier = 2  # no layer at >= 64px, so the value has no effect

    sft_half = shape("condition_scale.0.2.weight")[0] == shape("condition_scale.0.0.weight")[0]

    linear_out = shape("final_linear.weight")[0]
    if linear_out == num_latent * num_style_feat:
        different_w = True
    elif linear_out == num_style_feat:
        different_w = False
    else:
        raise ValueError(f"final_linear has {linear_out} outputs, not a multiple GFPGANv1Clean produces")

    num_mlp = sum(1 for k in sd if _MLP_KEY.match(k))

    return {
        "out_size": out_size,
        "num_style_feat": num_style_feat,
        "channel_multiplier": _as_number(channel_multiplier),
        "narrow": _as_number(narrow),
        "sft_half": sft_half,
        "different_w": different_w,
        "num_mlp": num_mlp,
        "input_is_latent": True,
    }
