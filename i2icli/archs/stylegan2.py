"""StyleGAN2 generator in plain PyTorch, shared by face restoration and GAN inversion.

Two things live here:

* the StyleGAN2 building blocks (modulated convolution, style conv, to-RGB, constant
  input, pixel-norm) in the "clean" parameterisation that GFPGAN's ``*Clean`` models use:
  ordinary ``nn.Linear``/kernel tensors holding the *effective* weights, with no
  equalized-learning-rate scales applied at run time and no custom CUDA kernels;
* :class:`StyleGAN2Generator`, the unconditional generator built from them, with a
  layer-at-a-time API (:meth:`StyleGAN2Generator.synthesis_step`) so that inversion code
  can splice, mix or re-weight intermediate features between layers.

Checkpoints saved from basicsr's original StyleGAN2 module (``basicsr.archs.
stylegan2_arch.StyleGAN2Generator``, the one built on the fused ``fused_act`` and
``upfirdn2d`` ops) keep the *raw* weights and apply their scales at run time, and use
other key names; :func:`convert_fused_state_dict` folds every such scale into the plain
weights so that those checkpoints load with ``strict=True`` and render identically
(given ``resample="fir"``, see :class:`StyleGAN2Generator`).

Nothing here touches the file system: build the module, then ``load_state_dict`` it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "ConstantInput",
    "ModulatedConv2d",
    "NormStyleCode",
    "StyleConv",
    "StyleGAN2Generator",
    "ToRGB",
    "convert_fused_state_dict",
    "is_fused_layout",
    "stylegan2_config_from_state_dict",
    "stylegan2_from_state_dict",
]

# Negative slope used by every LeakyReLU in both GFPGAN and StyleGAN2.
_LRELU_SLOPE = 0.2

# StyleGAN2's activation gain: LeakyReLU(0.2) roughly halves the second moment of a unit
# Gaussian, and multiplying by sqrt(2) restores it.
_ACT_GAIN = math.sqrt(2.0)

# Resolutions the reference channel table covers.
_MIN_SIZE = 4
_MAX_SIZE = 1024

_RESAMPLE_MODES = ("bilinear", "fir")

# The 1-D FIR taps of StyleGAN2's resampling filter (a binomial filter, the discrete
# approximation of a Gaussian); every published checkpoint uses it.
_FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


def _at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in float32, or kept in float64: half precision is promoted, double is not lowered."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


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


def _upsample_fir_kernel() -> Tensor:
    """The 2-D 4x4 FIR kernel of the original StyleGAN2's 2x upsampling, gain included.

    The outer product of the taps, normalised to sum 1, times ``factor**2 = 4``: zero
    insertion leaves only one sample in four non-zero, and the 4 restores the mean level.
    The kernel is symmetric, so whether a layer correlates or convolves with it (the
    original's upfirdn2d flips it) makes no difference.
    """
    taps = torch.tensor(_FIR_TAPS, dtype=torch.float64)
    kernel = taps[:, None] * taps[None, :]
    return (kernel / kernel.sum() * 4).float()


def _fir_filter(x: Tensor, kernel: Tensor, pad0: int, pad1: int) -> Tensor:
    """Per-channel 2-D FIR filter of (b, c, h, w) with zero padding (pad0 before, pad1 after).

    Channels are folded into the batch and filtered by one single-channel conv rather
    than by a depthwise (groups=c) conv: same result, and it avoids the depthwise
    kernels' slow paths (float64 on CPU is 10-40x slower as a depthwise conv).
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    x = F.pad(x.reshape(b * c, 1, h, w), (pad0, pad1, pad0, pad1))
    out = F.conv2d(x, kernel.to(x.dtype)[None, None])
    return out.view(b, c, h + pad0 + pad1 - kh + 1, w + pad0 + pad1 - kw + 1)


def _upsample_fir(x: Tensor, kernel: Tensor) -> Tensor:
    """2x upsampling of the original StyleGAN2 (``upfirdn2d(up=2)``) in plain PyTorch.

    Zero insertion (each sample followed by a zero, in both directions), then the 4-tap
    FIR with the original's padding of 2 before and 1 after: (2h + 3) - 4 + 1 = 2h.
    """
    b, c, h, w = x.shape
    # (b, c, h, 1, w, 1) padded to (b, c, h, 2, w, 2): sample at even positions, zero at odd.
    stuffed = F.pad(x.reshape(b, c, h, 1, w, 1), (0, 1, 0, 0, 0, 1)).reshape(b, c, 2 * h, 2 * w)
    return _fir_filter(stuffed, kernel, 2, 1)


# --------------------------------------------------------------------------------------
# StyleGAN2 ("clean") building blocks
# --------------------------------------------------------------------------------------


class NormStyleCode(nn.Module):
    """Pixel-norm of the style code, the first layer of the StyleGAN2 mapping MLP."""

    def forward(self, x: Tensor) -> Tensor:
        # Normalising over dim 1 matches the reference. For a per-layer code of shape
        # (b, num_latent, c) that is the *layer* axis, not the feature axis; it is a quirk,
        # but one the checkpoints were trained with, so it is kept. Computed in (at least)
        # float32 because squaring a half-precision code can overflow.
        xf = _at_least_fp32(x)
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=1, keepdim=True) + 1e-8)).to(x.dtype)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (no bias), evaluated as one grouped conv.

    Each sample gets its own kernel ``W * s`` (``s`` = per-input-channel style), optionally
    demodulated so every output channel has unit norm. Stacking the per-sample kernels and
    using ``groups=batch`` runs the whole batch as a single convolution call, so a batch
    whose samples all have different styles costs one call, not one per sample.

    Args:
        in_channels: Input channel count.
        out_channels: Output channel count.
        kernel_size: Square kernel size (odd; "same" padding is used).
        num_style_feat: Width of the style vector fed to the modulation layer.
        demodulate: Whether to normalise each output channel of the modulated kernel.
        upsample: Whether the layer doubles the resolution.
        gain: Constant folded into the kernel. StyleConv multiplies its output by
            ``sqrt(2)``; scaling the (small) kernel instead of the (large) activation map
            saves a full pass over the output.
        eps: Added under the square root of the demodulation.
        resample: How an upsampling layer doubles the resolution (ignored otherwise):
            ``"bilinear"`` upsamples the input bilinearly, then applies the 3x3 conv
            (StyleGAN2-clean, GFPGAN); ``"fir"`` applies the kernel as a stride-2
            transposed convolution, then blurs with the [1, 3, 3, 1] FIR (the original
            StyleGAN2). See :class:`StyleGAN2Generator` for why both exist.
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
        resample: str = "bilinear",
    ) -> None:
        super().__init__()
        if resample not in _RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {_RESAMPLE_MODES}, got {resample!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.resample = resample
        self.gain = gain
        self.eps = eps
        self.padding = kernel_size // 2
        # Batches of more than one sample scale activations instead of kernels (see
        # _forward_scaling_activations); off by default so restore's numerics stay as they are.
        self.scale_activations = False

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
        if upsample and resample == "fir":
            # A constant, not a weight: non-persistent, so state dicts stay identical
            # between the two resampling modes.
            self.register_buffer("fir_kernel", _upsample_fir_kernel(), persistent=False)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        """Convolve ``x`` (b, c_in, h, w) with kernels modulated by ``style`` (b, num_style_feat)."""
        b = x.shape[0]
        # Style arithmetic is done in (at least) float32: it is tiny (b x c_out x c_in) and
        # it keeps the demodulation's sum of squares and its eps away from fp16
        # overflow/underflow.
        s = _at_least_fp32(self.modulation(style))  # (b, c_in)
        if self.demodulate:
            # |W_o * s|^2 = sum_i s_i^2 * (sum_k W_{o,i,k}^2): a (b, c_in) @ (c_in, c_out)
            # matmul instead of squaring and reducing the whole (b, c_out, c_in, k, k) stack.
            w_sq = _at_least_fp32(self.weight[0]).pow(2).sum(dim=(2, 3))  # (c_out, c_in)
            demod = torch.rsqrt(s.pow(2) @ w_sq.t() + self.eps)  # (b, c_out)
            coef = s[:, None, :] * (demod * self.gain)[:, :, None]  # (b, c_out, c_in)
        else:
            coef = (s * self.gain)[:, None, :]  # (b, 1, c_in), broadcasts over c_out
        if self.scale_activations and b > 1:
            return self._forward_scaling_activations(x, s, demod if self.demodulate else None)
        # One multiply builds all per-sample kernels; the demodulated ones are bounded by 1
        # in magnitude, so casting back to the module dtype is safe.
        weight = self.weight * coef.to(self.weight.dtype)[..., None, None]

        k = self.kernel_size
        if self.upsample and self.resample == "fir":
            _, c_in, h, w = x.shape
            # conv_transpose2d wants (in, out, k, k) per group: swap c_out and c_in of
            # each sample's kernel. Output is (2h + 1, 2w + 1): stride-2 placement of a
            # 3x3 footprint with no padding.
            weight_t = weight.transpose(1, 2).reshape(b * c_in, self.out_channels, k, k)
            out = F.conv_transpose2d(x.reshape(1, b * c_in, h, w), weight_t, stride=2, groups=b)
            out = out.view(b, self.out_channels, 2 * h + 1, 2 * w + 1)
            # The original's blur pads 1 on each side: (2h + 1) + 2 - 4 + 1 = 2h.
            return _fir_filter(out, self.fir_kernel, 1, 1)

        if self.upsample:
            x = _bilinear(x, 2.0)

        _, c_in, h, w = x.shape
        # Fold the batch into the channel axis: sample j's channels only meet sample j's
        # kernel because of groups=b.
        out = F.conv2d(
            x.reshape(1, b * c_in, h, w),
            weight.reshape(b * self.out_channels, c_in, k, k),
            padding=self.padding,
            groups=b,
        )
        return out.view(b, self.out_channels, h, w)

    def _forward_scaling_activations(self, x: Tensor, s: Tensor, demod: Tensor | None) -> Tensor:
        """The same result with one shared kernel: scale the input channels by the style, run an
        ordinary batched convolution, scale the output channels by the demodulation.

        conv(x * s, W) * d == conv(x, W * s * d) because both scalings are per channel and the
        convolution (and the FIR blur, and bilinear upsampling) is linear. For a large batch of
        different styles (multi-code inversion) this is much faster than the grouped form, and
        under autograd the frozen kernel gets no per-sample gradient: the backward pass only
        computes the input gradient.
        """
        x = x * s.to(x.dtype)[:, :, None, None]
        weight = self.weight[0] * self.gain
        if self.upsample and self.resample == "fir":
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            out = _fir_filter(out, self.fir_kernel, 1, 1)
        else:
            if self.upsample:
                x = _bilinear(x, 2.0)
            out = F.conv2d(x, weight, padding=self.padding)
        if demod is not None:
            out = out * demod.to(out.dtype)[:, :, None, None]
        return out

    def extra_repr(self) -> str:
        text = (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, demodulate={self.demodulate}, upsample={self.upsample}"
        )
        return text + (f", resample={self.resample}" if self.upsample else "")


class StyleConv(nn.Module):
    """Modulated 3x3 conv + noise injection + bias + LeakyReLU.

    Parameter names follow the reference: ``weight`` is the scalar noise strength,
    ``bias`` the per-channel bias. The computation is
    ``leaky_relu(sqrt(2) * conv(x) + weight * noise + bias)``: the clean layout applies
    the activation gain to the conv output only, so the noise strength and bias hold
    values already multiplied by it (see :func:`convert_fused_state_dict`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_style_feat: int,
        *,
        upsample: bool = False,
        resample: str = "bilinear",
    ) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(
            in_channels,
            out_channels,
            3,
            num_style_feat,
            demodulate=True,
            upsample=upsample,
            gain=_ACT_GAIN,
            resample=resample,
        )
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        """``noise`` is (1, 1, h, w) and is shared by every sample in the batch."""
        out = self.modulated_conv(x, style)
        # addcmul = out + noise * strength in one kernel; noise broadcasts over b and c.
        # The in-place ops below are autograd-safe: they only ever write to a fresh tensor
        # made in this function, the backward of addcmul/add needs neither its output nor
        # the overwritten values, and leaky_relu_'s backward is defined from its own output
        # (valid for a positive slope), which nothing modifies afterwards.
        out = torch.addcmul(out, noise.to(out.dtype), self.weight)
        out = out.add_(self.bias)
        return F.leaky_relu_(out, _LRELU_SLOPE)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, accumulated onto the (upsampled) previous RGB skip.

    ``resample`` chooses how the skip is upsampled: ``"bilinear"`` (StyleGAN2-clean) or
    ``"fir"`` (zero insertion + [1, 3, 3, 1] FIR, the original StyleGAN2).
    """

    def __init__(
        self, in_channels: int, num_style_feat: int, *, upsample: bool = True, resample: str = "bilinear"
    ) -> None:
        super().__init__()
        if resample not in _RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {_RESAMPLE_MODES}, got {resample!r}")
        self.upsample = upsample
        self.resample = resample
        # No demodulation: the RGB output's scale is meaningful.
        self.modulated_conv = ModulatedConv2d(
            in_channels, 3, 1, num_style_feat, demodulate=False, upsample=False
        )
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample and resample == "fir":
            self.register_buffer("fir_kernel", _upsample_fir_kernel(), persistent=False)

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        # In place only on tensors created here (a conv output, whose backward does not
        # need it), so this is autograd-safe; ``skip`` itself is only read.
        out = self.modulated_conv(x, style).add_(self.bias)
        if skip is not None:
            if self.upsample:
                skip = _upsample_fir(skip, self.fir_kernel) if self.resample == "fir" else _bilinear(skip, 2.0)
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


# --------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------


class StyleGAN2Generator(nn.Module):
    """Unconditional StyleGAN2 generator ("clean" parameterisation), inference and inversion.

    Parameter and buffer names are those of GFPGAN's ``StyleGAN2GeneratorClean``, so its
    checkpoints load with ``strict=True``; checkpoints from basicsr's original (fused-op)
    generator load after :func:`convert_fused_state_dict`.

    Why two resampling modes. StyleGAN2 was trained with FIR resampling: an upsampling
    style conv is a stride-2 *transposed* convolution followed by a [1, 3, 3, 1] blur, and
    the RGB skip is upsampled by zero insertion + the same FIR. The clean variant replaced
    both with bilinear 2x upsampling (before an ordinary 3x3 conv, and of the skip).
    Bilinear 2x upsampling (``align_corners=False``) *is* zero insertion + [1, 3, 3, 1]
    filtering away from the borders, so the skip paths agree exactly in the interior. The
    conv paths do not: a transposed convolution applies its kernel spatially flipped
    relative to a plain (cross-correlating) convolution, so in the interior the FIR form
    equals bilinear upsampling followed by the 3x3 conv with its kernel *mirrored* in
    both axes, and the same weights give a visibly different image in the clean form. At
    the borders the two disagree even then, because bilinear interpolation clamps to the
    edge pixel while the FIR zero-pads (and the transposed conv's footprint, 2h + 1 wide,
    is cropped back to 2h by the blur's padding). Hence:

    * ``resample="bilinear"`` (default): the clean form; what GFPGAN's clean checkpoints
      were trained with, and what :class:`~i2icli.archs.gfpgan.GFPGANv1Clean` uses.
    * ``resample="fir"``: the original form, written with plain PyTorch ops; use it for
      checkpoints converted from the fused-op module so they render exactly as trained.

    The output is deterministic: every style conv adds its stored noise buffer
    (the reference's ``randomize_noise=False``).

    Args:
        out_size: Output resolution (power of two, 4..1024).
        num_style_feat: Width of z and w (the style vectors).
        num_mlp: Number of linear layers in the mapping MLP (``style_mlp``).
        channel_multiplier: Width multiplier for resolutions >= 64.
        narrow: Global width ratio.
        resample: ``"bilinear"`` or ``"fir"``, see above.
    """

    def __init__(
        self,
        out_size: int,
        num_style_feat: int = 512,
        num_mlp: int = 8,
        channel_multiplier: float = 2,
        narrow: float = 1.0,
        resample: str = "bilinear",
    ) -> None:
        super().__init__()
        if out_size < _MIN_SIZE or out_size > _MAX_SIZE or out_size & (out_size - 1):
            raise ValueError(f"out_size must be a power of two in [{_MIN_SIZE}, {_MAX_SIZE}], got {out_size}")
        if resample not in _RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {_RESAMPLE_MODES}, got {resample!r}")
        if num_mlp < 1:
            raise ValueError(f"num_mlp must be at least 1, got {num_mlp}")
        self.out_size = out_size
        self.num_style_feat = num_style_feat
        self.num_mlp = num_mlp
        self.channel_multiplier = channel_multiplier
        self.narrow = narrow
        self.resample = resample
        self.log_size = out_size.bit_length() - 1
        # One style conv at 4x4 plus two per octave above it.
        self.num_convs = 1 + 2 * (self.log_size - 2)
        # One w per style conv, plus one for the last to_rgb (see synthesis_step).
        self.num_latent = self.num_convs + 1

        # Sequential indices (1, 3, 5, ...) for the linears must match the checkpoints.
        layers: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            linear = nn.Linear(num_style_feat, num_style_feat, bias=True)
            nn.init.kaiming_normal_(linear.weight, a=_LRELU_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.LeakyReLU(_LRELU_SLOPE)]
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
            self.style_convs.append(StyleConv(in_ch, out_ch, num_style_feat, upsample=True, resample=resample))
            self.style_convs.append(StyleConv(out_ch, out_ch, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat, upsample=True, resample=resample))
            in_ch = out_ch

        # Fixed noise maps, one per style conv, stored as (1, 1, r, r) so that a single map
        # broadcasts over any batch. Registered last, as in the checkpoints' key order.
        self.noises = nn.Module()
        for i in range(self.num_convs):
            res = self.step_resolution(i)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))

    # ---- shapes -----------------------------------------------------------------------

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_convs:
            raise ValueError(f"style conv index must be in [0, {self.num_convs - 1}], got {index}")

    def step_resolution(self, index: int) -> int:
        """Side length of ``out`` after synthesis step ``index`` (4 for step 0, then x2 per octave)."""
        self._check_index(index)
        return 2 ** ((index + 5) // 2)

    def step_channels(self, index: int) -> int:
        """Channel count of ``out`` after synthesis step ``index``."""
        return _channels(self.step_resolution(index), self.channel_multiplier, self.narrow)

    # ---- mapping ----------------------------------------------------------------------

    def mapping(self, z: Tensor) -> Tensor:
        """The mapping network: z (b, num_style_feat) -> w (b, num_style_feat)."""
        if z.ndim != 2 or z.shape[1] != self.num_style_feat:
            raise ValueError(f"expected z of shape (b, {self.num_style_feat}), got {tuple(z.shape)}")
        return self.style_mlp(z)

    @torch.no_grad()
    def mean_latent(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """Average of ``mapping(z)`` over ``count`` Gaussian z: (1, num_style_feat).

        The centre of W, used for truncation and as a starting point for inversion. It is a
        constant, so no graph is kept. z is drawn on ``generator``'s device (the default
        generator when None) and then moved to the module's, so a CPU generator gives the
        same z on any device.
        """
        if count < 1:
            raise ValueError(f"count must be positive, got {count}")
        param = self.constant_input.weight
        draw_device = generator.device if generator is not None else param.device
        z = torch.randn(count, self.num_style_feat, generator=generator, device=draw_device)
        w = self.mapping(z.to(device=param.device, dtype=param.dtype))
        return _at_least_fp32(w).mean(dim=0, keepdim=True).to(param.dtype)

    # ---- synthesis --------------------------------------------------------------------

    def scale_activations(self, enabled: bool = True) -> StyleGAN2Generator:
        """Run batches with per-sample styles by scaling activations, not kernels.

        Same results up to float rounding; faster for large batches of different styles and
        much cheaper to differentiate (see ``ModulatedConv2d._forward_scaling_activations``).
        """
        for module in self.modules():
            if isinstance(module, ModulatedConv2d):
                module.scale_activations = enabled
        return self

    def noise(self, index: int) -> Tensor:
        """The stored (1, 1, r, r) noise map of style conv ``index``."""
        self._check_index(index)
        return getattr(self.noises, f"noise{index}")

    def _w(self, latent: Tensor, index: int) -> Tensor:
        return latent[:, index] if latent.ndim == 3 else latent

    def _check_latent(self, latent: Tensor) -> None:
        d = self.num_style_feat
        ok = (latent.ndim == 2 and latent.shape[1] == d) or (
            latent.ndim == 3 and latent.shape[1] == self.num_latent and latent.shape[2] == d
        )
        if not ok:
            raise ValueError(
                f"expected a latent of shape (b, {d}) or (b, {self.num_latent}, {d}), got {tuple(latent.shape)}"
            )

    def synthesis_step(
        self, index: int, out: Tensor | None, skip: Tensor | None, latent: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Run style conv ``index`` and, if it ends an octave, the matching to_rgb.

        Step 0 is ``style_conv1`` on the constant input (``out`` is ignored) followed by
        ``to_rgb1``; step i >= 1 is ``style_convs[i - 1]`` on ``out``, followed for even i by
        ``to_rgbs[i // 2 - 1]``, which adds the upsampled ``skip`` to its RGB (a None skip
        means there is no coarser RGB to add). Steps that run no to_rgb return ``skip``
        unchanged.

        Latent indexing is the trained model's: conv i uses ``latent[:, i]`` and the to_rgb
        after conv i uses ``latent[:, i + 1]``, so each octave's upsampling conv shares its
        w with the previous octave's to_rgb.

        Args:
            index: Style conv index, 0 .. num_convs - 1.
            out: Features from step ``index - 1``; (b, step_channels(index - 1), r, r).
            skip: RGB accumulated so far (b, 3, r, r), or None.
            latent: (b, num_latent, num_style_feat) W+ codes, one row per sample (samples
                may differ), or (b, num_style_feat) for one w shared by all layers.

        Returns:
            ``(out, skip)`` after this step.
        """
        self._check_index(index)
        self._check_latent(latent)
        if index == 0:
            x = self.constant_input(latent.shape[0])
            conv: StyleConv = self.style_conv1
        else:
            if out is None:
                raise ValueError(f"synthesis step {index} needs the features of step {index - 1}")
            x = out
            conv = self.style_convs[index - 1]
        out = conv(x, self._w(latent, index), self.noise(index))

        if index == 0:
            skip = self.to_rgb1(out, self._w(latent, 1))
        elif index % 2 == 0:
            skip = self.to_rgbs[index // 2 - 1](out, self._w(latent, index + 1), skip)
        return out, skip

    def forward(self, latent: Tensor) -> Tensor:
        """Render images from W (b, d) or W+ (b, num_latent, d) latents.

        Returns:
            (b, 3, out_size, out_size) image, nominally in [-1, 1] (not clamped).
        """
        self._check_latent(latent)
        out: Tensor | None = None
        skip: Tensor | None = None
        for index in range(self.num_convs):
            out, skip = self.synthesis_step(index, out, skip, latent)
        assert skip is not None  # step 0 always produces one
        return skip

    def extra_repr(self) -> str:
        return (
            f"out_size={self.out_size}, num_style_feat={self.num_style_feat}, num_mlp={self.num_mlp}, "
            f"channel_multiplier={self.channel_multiplier}, narrow={self.narrow}, resample={self.resample}"
        )


# --------------------------------------------------------------------------------------
# Checkpoints: layout detection, config inference, fused -> clean conversion
# --------------------------------------------------------------------------------------

_MLP_WEIGHT = re.compile(r"^style_mlp\.(\d+)\.weight$")
_RGB_BIAS = re.compile(r"^to_rgbs\.(\d+)\.bias$")
# Where a fused-op checkpoint could hold its resampling kernels. basicsr keeps them as
# plain attributes (not in its state dicts), but modules that register them as buffers
# write them out; they are constants and are checked, then dropped.
_KERNEL_KEY = re.compile(r"^(?:style_convs\.(\d+)\.modulated_conv\.smooth|to_rgbs\.(\d+)\.upsample)\.kernel$")


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """The bare state dict, from either itself or a training wrapper (params_ema first)."""
    for wrapper in ("params_ema", "params"):
        inner = state_dict.get(wrapper)
        if isinstance(inner, Mapping):
            return inner
    return state_dict


def _few(keys: Iterable[str]) -> str:
    """Up to three keys for an error message, with a count of the rest."""
    keys = sorted(keys)
    text = ", ".join(repr(k) for k in keys[:3])
    return text + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _as_number(value: float) -> float | int:
    """Return ints for integral values so inferred configs read like hand-written ones."""
    return int(value) if float(value).is_integer() else value


def is_fused_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether a StyleGAN2 generator state dict is in basicsr's fused-op layout.

    The fused layout keeps each style conv's bias inside its FusedLeakyReLU
    (``style_conv1.activate.bias``); the clean layout has it on the conv
    (``style_conv1.bias``). Training wrappers (``params_ema``/``params``) are unwrapped.

    Raises:
        ValueError: if the mapping has neither (or both) of those keys, i.e. it is not a
            StyleGAN2 generator state dict.
    """
    sd = _unwrap(state_dict)
    fused, clean = "style_conv1.activate.bias" in sd, "style_conv1.bias" in sd
    if fused == clean:
        raise ValueError(
            "not a StyleGAN2 generator state dict: expected exactly one of "
            "'style_conv1.activate.bias' (fused-op layout) and 'style_conv1.bias' (clean layout)"
        )
    return fused


def stylegan2_config_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Infer :class:`StyleGAN2Generator` kwargs from a checkpoint's tensor shapes.

    Works for both the clean and the fused-op layout and returns ``out_size``,
    ``num_style_feat``, ``num_mlp``, ``channel_multiplier`` and ``narrow``. The
    resampling mode is not a weight: use ``"fir"`` for the fused layout (see
    :func:`stylegan2_from_state_dict`). Training wrappers are unwrapped.

    Raises:
        ValueError: if a key the inference needs is missing or the layout is unknown.
    """
    sd = _unwrap(state_dict)
    fused = is_fused_layout(sd)

    def shape(key: str) -> tuple[int, ...]:
        try:
            return tuple(sd[key].shape)
        except KeyError:
            raise ValueError(f"not a StyleGAN2 generator state dict: missing {key!r}") from None

    num_style_feat = shape("style_conv1.modulated_conv.modulation.weight")[1]
    ch4 = shape("constant_input.weight")[1]  # int(512 * narrow)
    narrow = ch4 / 512

    rgb_indices = {int(m.group(1)) for k in sd if (m := _RGB_BIAS.match(k))}
    num_mlp = sum(1 for k in sd if _MLP_WEIGHT.match(k))
    if num_mlp == 0:
        raise ValueError("not a StyleGAN2 generator state dict: no style_mlp layers")
    # One to_rgb per octave above 4x4; the highest index (not the count) decides, so that
    # a missing layer shows up as a missing key rather than as a smaller model.
    out_size = 2 ** (max(rgb_indices, default=-1) + 3)

    if out_size >= 64:
        # style_convs.6 is the first conv at 64px, the first width that depends on the
        # multiplier: int(256 * channel_multiplier * narrow).
        ch64 = math.prod(shape("style_convs.6.activate.bias" if fused else "style_convs.6.bias"))
        channel_multiplier = ch64 / (256 * narrow)
    else:
        channel_multiplier = 2  # no layer at >= 64px, so the value has no effect

    return {
        "out_size": out_size,
        "num_style_feat": num_style_feat,
        "num_mlp": num_mlp,
        "channel_multiplier": _as_number(channel_multiplier),
        "narrow": _as_number(narrow),
    }


def _fused_source(clean_key: str) -> str:
    """The fused-layout key that holds the value of a clean-layout key."""
    if m := re.fullmatch(r"style_mlp\.(\d+)\.(weight|bias)", clean_key):
        # Clean Sequential: [norm, linear, lrelu, linear, lrelu, ...] -> linears at 1, 3, 5...
        # Fused Sequential: [norm, linear, linear, ...] (activation fused into the linear).
        return f"style_mlp.{(int(m.group(1)) + 1) // 2}.{m.group(2)}"
    if m := re.fullmatch(r"(style_conv1|style_convs\.\d+)\.bias", clean_key):
        return f"{m.group(1)}.activate.bias"
    return clean_key


def convert_fused_state_dict(state_dict: Mapping[str, Any], lr_mlp: float = 0.01) -> dict[str, Tensor]:
    """Convert a basicsr fused-op StyleGAN2 generator state dict to the clean layout.

    The fused module stores raw weights and applies equalized-learning-rate scales at run
    time; the clean layout stores effective weights. Folding each scale into its tensor
    (in float64, then cast back) gives a state dict that :class:`StyleGAN2Generator`
    (``resample="fir"``) loads with ``strict=True`` and that renders the same images:

    * mapping linears (``EqualLinear``, ``lr_mul=lr_mlp``, fused LeakyReLU with gain
      sqrt(2)): ``W * lr_mlp / sqrt(in) * sqrt(2)``, ``b * lr_mlp * sqrt(2)``. The gain can
      move in front of the LeakyReLU because it is positively homogeneous; the clean
      Sequential has a LeakyReLU module after each linear, so indices i -> 2i - 1;
    * modulation linears (``EqualLinear``, ``lr_mul=1``): ``W / sqrt(in)``, bias as is;
    * modulated conv kernels: ``W / sqrt(c_in * k * k)`` (for the demodulated style convs
      this scale cancels, except against eps; for to_rgb it does not);
    * style conv noise strength and bias: the fused form is
      ``sqrt(2) * lrelu(conv + s * noise + b)``, the clean one
      ``lrelu(sqrt(2) * conv + s' * noise + b')``, so ``s' = sqrt(2) s`` and
      ``b' = sqrt(2) b`` (``activate.bias`` of shape (C,) -> ``bias`` (1, C, 1, 1));
    * constant input, to_rgb biases, noise maps: unchanged;
    * resampling kernels, if present: checked to be the normalised [1, 3, 3, 1] kernel
      with the x4 upsampling gain, then dropped (the clean module rebuilds them).

    Args:
        state_dict: The fused-layout state dict, bare or in a ``params_ema``/``params``
            wrapper.
        lr_mlp: The learning-rate multiplier the mapping MLP was built with (0.01 in every
            published checkpoint). It is not stored in the file.

    Raises:
        ValueError: on anything but an exact fused-layout generator: unknown, missing or
            misshapen keys, non-tensor values, or kernels with unexpected values.
    """
    if not (isinstance(lr_mlp, (int, float)) and math.isfinite(lr_mlp) and lr_mlp > 0):
        raise ValueError(f"lr_mlp must be a positive number, got {lr_mlp!r}")
    sd = _unwrap(state_dict)
    not_tensors = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(f"state dict values must all be tensors; not tensors: {_few(not_tensors)}")
    if not is_fused_layout(sd):
        raise ValueError("state dict is already in the clean StyleGAN2 layout; load it without converting")

    config = stylegan2_config_from_state_dict(sd)
    with torch.device("meta"):  # shapes only: allocates nothing
        target = {k: tuple(v.shape) for k, v in StyleGAN2Generator(**config).state_dict().items()}
    num_style_feat = config["num_style_feat"]

    # Source key and expected source shape for every target key.
    plan: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in target.items():
        src = _fused_source(key)
        plan[key] = (src, (shape[1],) if src.endswith(".activate.bias") else shape)
    wanted = {src for src, _ in plan.values()}

    kernels = {k for k in sd if _KERNEL_KEY.match(k)}
    unexpected = set(sd) - wanted - kernels
    if unexpected:
        raise ValueError(f"unexpected keys in fused StyleGAN2 state dict: {_few(unexpected)}")
    missing = wanted - set(sd)
    if missing:
        raise ValueError(f"missing keys in fused StyleGAN2 state dict: {_few(missing)}")
    bad_shapes = {
        f"{src} {tuple(sd[src].shape)} (expected {expected})"
        for src, expected in plan.values()
        if tuple(sd[src].shape) != expected
    }
    if bad_shapes:
        raise ValueError(f"wrong shapes in fused StyleGAN2 state dict: {_few(bad_shapes)}")
    _check_kernels(sd, kernels, num_upsamples=config["out_size"].bit_length() - 3)

    sqrt2 = math.sqrt(2.0)
    converted: dict[str, Tensor] = {}
    for key, (src, _) in plan.items():
        value = sd[src]
        v = value.detach().to(torch.float64)
        if key.startswith("style_mlp."):
            v = v * (lr_mlp * sqrt2 / math.sqrt(num_style_feat) if key.endswith(".weight") else lr_mlp * sqrt2)
        elif key.endswith(".modulation.weight"):
            v = v / math.sqrt(v.shape[1])
        elif key.endswith(".modulated_conv.weight"):
            _, _, c_in, kh, kw = v.shape
            v = v / math.sqrt(c_in * kh * kw)
        elif re.fullmatch(r"(style_conv1|style_convs\.\d+)\.(weight|bias)", key):
            v = (v * sqrt2).reshape(target[key])
        converted[key] = v.to(value.dtype)
    return converted


def _check_kernels(sd: Mapping[str, Tensor], keys: set[str], num_upsamples: int) -> None:
    """Accept stored resampling kernels only where an upsampling layer exists and only if
    they are the kernel the clean module rebuilds (the [1, 3, 3, 1] kernel, gain 4)."""
    misplaced = set()
    for key in keys:
        m = _KERNEL_KEY.match(key)
        assert m is not None
        conv, rgb = m.group(1), m.group(2)
        # Only the first conv of each octave (even index) and every to_rgbs entry upsample.
        if (conv is not None and (int(conv) % 2 or int(conv) // 2 >= num_upsamples)) or (
            rgb is not None and int(rgb) >= num_upsamples
        ):
            misplaced.add(key)
    if misplaced:
        raise ValueError(f"unexpected keys in fused StyleGAN2 state dict: {_few(misplaced)}")
    expected = _upsample_fir_kernel().double()
    wrong = {
        k
        for k in keys
        if tuple(sd[k].shape) != tuple(expected.shape)
        or not torch.allclose(sd[k].detach().double().cpu(), expected, rtol=1e-5, atol=1e-7)
    }
    if wrong:
        raise ValueError(
            f"resampling kernels are not the normalised [1, 3, 3, 1] upsampling kernel "
            f"(x4 gain) the converted model uses: {_few(wrong)}"
        )


def stylegan2_from_state_dict(
    state_dict: Mapping[str, Any], *, lr_mlp: float = 0.01, resample: str | None = None
) -> StyleGAN2Generator:
    """Build a :class:`StyleGAN2Generator` from a checkpoint in either layout, loaded strictly.

    Fused-op checkpoints are converted (:func:`convert_fused_state_dict`) and, unless
    ``resample`` says otherwise, rendered with ``"fir"`` as they were trained; clean ones
    load as they are with ``"bilinear"``. The model is returned in eval mode on the CPU.

    Raises:
        ValueError: if the state dict is not an exact StyleGAN2 generator of either layout.
    """
    sd = _unwrap(state_dict)
    fused = is_fused_layout(sd)
    config = stylegan2_config_from_state_dict(sd)
    weights = convert_fused_state_dict(sd, lr_mlp=lr_mlp) if fused else dict(sd)
    model = StyleGAN2Generator(**config, resample=resample or ("fir" if fused else "bilinear"))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = set(expected) - set(weights), set(weights) - set(expected)
    if missing:
        raise ValueError(f"missing keys in StyleGAN2 state dict: {_few(missing)}")
    if unexpected:
        raise ValueError(f"unexpected keys in StyleGAN2 state dict: {_few(unexpected)}")
    bad = {f"{k} {tuple(weights[k].shape)} (expected {s})" for k, s in expected.items() if tuple(weights[k].shape) != s}
    if bad:
        raise ValueError(f"wrong shapes in StyleGAN2 state dict: {_few(bad)}")
    model.load_state_dict(weights, strict=True)
    return model.eval()
