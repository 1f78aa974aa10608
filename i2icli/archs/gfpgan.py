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

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["GFPGANv1Clean", "gfpgan_config_from_state_dict"]

# Negative slope used by every LeakyReLU in both GFPGAN and StyleGAN2.
_LRELU_SLOPE = 0.2

# Largest resolution the reference channel table covers; we keep the same limits so that
# anything we build is something the official code could have trained.
_MIN_SIZE = 8
_MAX_SIZE = 1024


def _channels(resolution: int, channel_multiplier: float, narrow: float) -> int:
    """Feature width StyleGAN2 uses at ``resolution`` (same arithmetic as the reference).

    Up to 32x32 the width is flat (512); above that it halves per octave and is scaled by
    ``channel_multiplier``. The multiplication order matches the reference so that the
    ``int()`` truncation lands on the same values for non-dyadic ``narrow`` as well.
    """
    if resolution <= 32:
        return int(512 * narrow)
    return int((16384 // resolution) * channel_multiplier * narrow)


def _bilinear(x: Tensor, scale_factor: float) -> Tensor:
    """Resample by ``scale_factor`` the way every GFPGAN/StyleGAN2-clean layer does."""
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------
# StyleGAN2 ("clean") building blocks
# --------------------------------------------------------------------------------------


class NormStyleCode(nn.Module):
    """Pixel-norm of the style code, the first layer of the StyleGAN2 mapping MLP."""

    def forward(self, x: Tensor) -> Tensor:
        # Normalising over dim 1 matches the reference. For a per-layer code of shape
        # (b, num_latent, c) that is the *layer* axis, not the feature axis; it is a quirk,
        # but one the checkpoints were trained with, so it is kept. Computed in float32
        # because squaring a half-precision code can overflow.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=1, keepdim=True) + 1e-8)).to(x.dtype)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (no bias), evaluated as one grouped conv.

    Each sample gets its own kernel ``W * s`` (``s`` = per-input-channel style), optionally
    demodulated so every output channel has unit norm. Stacking the per-sample kernels and
    using ``groups=batch`` runs the whole batch as a single convolution call.

    Args:
        in_channels: Input channel count.
        out_channels: Output channel count.
        kernel_size: Square kernel size (odd; "same" padding is used).
        num_style_feat: Width of the style vector fed to the modulation layer.
        demodulate: Whether to normalise each output channel of the modulated kernel.
        upsample: Whether to 2x bilinear-upsample the input before convolving.
        gain: Constant folded into the kernel. StyleConv multiplies its output by
            ``sqrt(2)``; scaling the (small) kernel instead of the (large) activation map
            saves a full pass over the output.
        eps: Added under the square root of the demodulation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_style_feat: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
        gain: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.gain = gain
        self.eps = eps
        self.padding = kernel_size // 2

        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        # A bias of 1 makes an untrained layer start as the identity modulation, as in
        # StyleGAN2; real use always overwrites it from a checkpoint.
        nn.init.kaiming_normal_(self.modulation.weight, a=0, mode="fan_in", nonlinearity="linear")
        nn.init.ones_(self.modulation.bias)

        # Leading singleton dim: the kernel broadcasts against per-sample styles.
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in)
        )

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        """Convolve ``x`` (b, c_in, h, w) with kernels modulated by ``style`` (b, num_style_feat)."""
        b = x.shape[0]
        # Style arithmetic is done in float32: it is tiny (b x c_out x c_in) and it keeps
        # the demodulation's sum of squares and its eps away from fp16 overflow/underflow.
        s = self.modulation(style).float()  # (b, c_in)
        if self.demodulate:
            # |W_o * s|^2 = sum_i s_i^2 * (sum_k W_{o,i,k}^2): a (b, c_in) @ (c_in, c_out)
            # matmul instead of squaring and reducing the whole (b, c_out, c_in, k, k) stack.
            w_sq = self.weight[0].float().pow(2).sum(dim=(2, 3))  # (c_out, c_in)
            demod = torch.rsqrt(s.pow(2) @ w_sq.t() + self.eps)  # (b, c_out)
            coef = s[:, None, :] * (demod * self.gain)[:, :, None]  # (b, c_out, c_in)
        else:
            coef = (s * self.gain)[:, None, :]  # (b, 1, c_in), broadcasts over c_out
        # One multiply builds all per-sample kernels; the demodulated ones are bounded by 1
        # in magnitude, so casting back to the module dtype is safe.
        weight = self.weight * coef.to(self.weight.dtype)[..., None, None]

        if self.upsample:
            x = _bilinear(x, 2.0)

        _, c_in, h, w = x.shape
        k = self.kernel_size
        # Fold the batch into the channel axis: sample j's channels only meet sample j's
        # kernel because of groups=b.
        out = F.conv2d(
            x.reshape(1, b * c_in, h, w),
            weight.reshape(b * self.out_channels, c_in, k, k),
            padding=self.padding,
            groups=b,
        )
        return out.view(b, self.out_channels, h, w)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, demodulate={self.demodulate}, upsample={self.upsample}"
        )


class StyleConv(nn.Module):
    """Modulated 3x3 conv + noise injection + bias + LeakyReLU.

    Parameter names follow the reference: ``weight`` is the scalar noise strength,
    ``bias`` the per-channel bias.
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_style_feat: int, *, upsample: bool = False
    ) -> None:
        super().__init__()
        # sqrt(2) is StyleGAN2's gain that keeps the variance after LeakyReLU ~constant.
        self.modulated_conv = ModulatedConv2d(
            in_channels,
            out_channels,
            3,
            num_style_feat,
            demodulate=True,
            upsample=upsample,
            gain=math.sqrt(2.0),
        )
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        """``noise`` is (1, 1, h, w) and is shared by every sample in the batch."""
        out = self.modulated_conv(x, style)
        # addcmul = out + noise * strength in one kernel; noise broadcasts over b and c.
        out = torch.addcmul(out, noise.to(out.dtype), self.weight)
        out = out.add_(self.bias)
        return F.leaky_relu_(out, _LRELU_SLOPE)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, accumulated onto the (upsampled) previous RGB skip."""

    def __init__(self, in_channels: int, num_style_feat: int, *, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        # No demodulation: the RGB output's scale is meaningful.
        self.modulated_conv = ModulatedConv2d(
            in_channels, 3, 1, num_style_feat, demodulate=False, upsample=False
        )
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.modulated_conv(x, style).add_(self.bias)
        if skip is not None:
            if self.upsample:
                skip = _bilinear(skip, 2.0)
            out = out.add_(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 tensor the StyleGAN2 synthesis starts from."""

    def __init__(self, num_channel: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch: int) -> Tensor:
        # expand, not repeat: the first modulated conv reshapes (copies) it anyway.
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2GeneratorCSFT(nn.Module):
    """StyleGAN2-clean synthesis network with channel-split SFT modulation.

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
        super().__init__()
        self.num_style_feat = num_style_feat
        self.sft_half = sft_half
        self.log_size = out_size.bit_length() - 1
        # One style conv at 4x4 plus two per octave above it.
        self.num_layers = (self.log_size - 2) * 2 + 1
        # Style vectors consumed: convs + to_rgbs (to_rgb1 reuses index 1, see forward).
        self.num_latent = self.log_size * 2 - 2

        # The mapping MLP. GFPGAN feeds latents directly (input_is_latent=True), but the
        # layers exist in the checkpoints; Sequential indices (1, 3, 5, ...) must match.
        layers: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            linear = nn.Linear(num_style_feat, num_style_feat, bias=True)
            nn.init.kaiming_normal_(linear.weight, a=_LRELU_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.LeakyReLU(_LRELU_SLOPE, inplace=True)]
        self.style_mlp = nn.Sequential(*layers)

        ch4 = _channels(4, channel_multiplier, narrow)
        self.constant_input = ConstantInput(ch4, size=4)
        self.style_conv1 = StyleConv(ch4, ch4, num_style_feat, upsample=False)
        self.to_rgb1 = ToRGB(ch4, num_style_feat, upsample=False)

        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch4
        for level in range(3, self.log_size + 1):
            out_ch = _channels(2**level, channel_multiplier, narrow)
            self.style_convs.append(StyleConv(in_ch, out_ch, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_ch, out_ch, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat, upsample=True))
            in_ch = out_ch

        # Fixed noise maps, one per style conv; layer i runs at 2**((i + 5) // 2) pixels.
        # Stored as (1, 1, r, r) so a single map broadcasts over any batch size. Registered
        # last so the state_dict key order matches the official checkpoints too.
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))

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
