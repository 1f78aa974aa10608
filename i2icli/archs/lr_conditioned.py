"""Translation with low-resolution conditioning (Abid, Hedhli, Lalonde, Gagné): the networks.

The generator turns a high-resolution source X and a tiny target y (e.g. 8x8) into a
high-resolution image that keeps X's detail and downsamples (average pooling) to y:

* encoder: residual blocks with instance normalisation that halve the size down to y's size;
  positional normalisation (PONO) after each convolution, whose per-pixel mean and std are kept
  as moment shortcuts;
* decoder: residual blocks with SPAdaIN (instance norm modulated per pixel by 1x1 convolutions of
  y, bilinearly upsampled to the block's size) that double the size back; after each convolution
  a dynamic moment shortcut (a 3x3 conv of the encoder's (mu, sigma) at that size) gives beta,
  gamma for ``x * gamma + beta``;
* spectral normalisation on every convolution but SPAdaIN's.

The discriminator is StarGAN v2's without domain heads: residual blocks down to y's size, where
the low-resolution difference map |y - round(DS(G(X, y)))| (zero for real images) is
concatenated, then a patch head.

Module and parameter names follow the authors' code (Medabid1/I2I-LR) on purpose, so that its
checkpoints ({'Gen', 'Dis', 'AverageG', ...}) load unchanged; torch's spectral norm gives the same
``weight_orig / weight_u / weight_v`` keys. Nothing here touches files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# The configuration needs no PyTorch, so that commands can check it before importing it.
from i2icli.archs.lr_conditioned_config import (
    MAX_LR_SIZE,
    MIN_LR_SIZE,
    LRTranslatorConfig,
)

_PONO_EPS = 1e-5
_SQRT2 = math.sqrt(2.0)


def downscale(images: Tensor, lr_size: int | tuple[int, int]) -> Tensor:
    """The method's downscaling operator DS: average pooling over whole blocks, used everywhere
    (training targets, the difference map, consistency checks)."""
    height, width = (lr_size, lr_size) if isinstance(lr_size, int) else lr_size
    if images.shape[-2] % height or images.shape[-1] % width:
        raise ValueError(f"{tuple(images.shape[-2:])} is not a whole multiple of {(height, width)}")
    return F.avg_pool2d(images, (images.shape[-2] // height, images.shape[-1] // width))


def round_straight_through(values: Tensor, quantum: float) -> Tensor:
    """Round [-1, 1] colours to steps of ``quantum`` counted from -1 (with 2/255, the 8-bit levels)
    forward, identity backward (the straight-through estimator): the difference map shows what
    survives 8-bit storage yet still passes gradients."""
    rounded = torch.round((values + 1) / quantum) * quantum - 1
    return values + (rounded - values).detach()


def bilinear(x: Tensor, scale: float) -> Tensor:
    """``nn.UpsamplingBilinear2d``, which the method uses throughout: bilinear with aligned corners."""
    if scale <= 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=True)


def positional_norm(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """PONO: normalise each position across channels; return the result, the mean and the std
    (unbiased variance, as ``Tensor.var`` computes it in the authors' code)."""
    mean = x.mean(dim=1, keepdim=True)
    std = (x.var(dim=1, keepdim=True) + _PONO_EPS).sqrt()
    return (x - mean) / std, mean, std


class SnConv2d(nn.Module):
    """A spectrally normalised convolution (the wrapper gives the ``conv.`` level of the keys)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.utils.spectral_norm(nn.Conv2d(cin, cout, kernel, stride, padding, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


Moments = tuple[Tensor, Tensor]  # (mean, std) over channels, one value per pixel


class ResBlk(nn.Module):
    """A pre-activation residual block (StarGAN v2), optionally normalised, halving the size, and
    recording PONO moments after each convolution."""

    def __init__(
        self, dim_in: int, dim_out: int, *, normalize: bool = False, downsample: bool = False, use_pono: bool = False
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.downsample = downsample
        self.use_pono = use_pono
        self.conv1 = SnConv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = SnConv2d(dim_out, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_out, affine=True)
        if dim_in != dim_out:
            self.conv1x1 = SnConv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x: Tensor) -> Tensor:
        if hasattr(self, "conv1x1"):
            x = self.conv1x1(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def _residual(self, x: Tensor, moments: list[Moments]) -> Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(F.leaky_relu(x, 0.2))
        if self.use_pono:
            x, mean, std = positional_norm(x)
            moments.append((mean, std))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        x = self.conv2(F.leaky_relu(x, 0.2))
        if self.use_pono:
            x, mean, std = positional_norm(x)
            moments.append((mean, std))
        return x

    def forward_with_moments(self, x: Tensor) -> tuple[Tensor, list[Moments]]:
        moments: list[Moments] = []
        out = (self._shortcut(x) + self._residual(x, moments)) / _SQRT2  # unit variance
        return out, moments

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_moments(x)[0]


class SPAdaIN(nn.Module):
    """Instance norm modulated per pixel by the low-resolution image: ``w(y) * IN(x) + b(y)``."""

    def __init__(self, planes: int, condition_channels: int = 3) -> None:
        super().__init__()
        self.conv_weight = nn.Conv2d(condition_channels, planes, 1)
        self.conv_bias = nn.Conv2d(condition_channels, planes, 1)
        self.norm = nn.InstanceNorm2d(planes)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        return self.conv_weight(condition) * self.norm(x) + self.conv_bias(condition)


class MS(nn.Module):
    """A dynamic moment shortcut: a conv turns the encoder's (mu, sigma) into (beta, gamma)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = SnConv2d(2, 2, 3, 1, 1)

    def forward(self, x: Tensor, moments: Moments) -> Tensor:
        beta, gamma = self.conv(torch.cat(moments, dim=1)).split(1, dim=1)
        return x * gamma + beta


class SPAdaInResBlk(nn.Module):
    """A decoder block: SPAdaIN on the low-resolution target, optional 2x bilinear upsampling,
    and moment shortcuts from the encoder block of the same size."""

    def __init__(self, dim_in: int, dim_out: int, *, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv1 = SnConv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = SnConv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = SPAdaIN(dim_in)
        self.norm2 = SPAdaIN(dim_out)
        self.ms1 = MS()
        self.ms2 = MS()
        if dim_in != dim_out:
            self.conv1x1 = SnConv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def forward(self, x: Tensor, condition: Tensor, moments: list[Moments]) -> Tensor:
        shortcut = self.conv1x1(x) if hasattr(self, "conv1x1") else x
        if self.upsample:
            shortcut = bilinear(shortcut, 2)
        # The mirrored encoder block recorded [after conv1 (larger), after conv2 (smaller)]; this
        # block's conv1 runs at the smaller size and its conv2 at the larger one.
        h = self.conv1(F.leaky_relu(self.norm1(x, condition), 0.2))
        h = self.ms1(h, moments[1])
        if self.upsample:
            h = bilinear(h, 2)
            condition = bilinear(condition, 2)
        h = self.conv2(F.leaky_relu(self.norm2(h, condition), 0.2))
        h = self.ms2(h, moments[0])
        return (shortcut + h) / _SQRT2


def _encoder_widths(config: LRTranslatorConfig) -> list[int]:
    return [min(config.base_channels * 2 ** (i + 1), config.max_channels) for i in range(config.levels)]


def _decoder_widths(config: LRTranslatorConfig) -> list[int]:
    widths, width = [], _encoder_widths(config)[-1]
    for _ in range(config.levels):
        width = max(width // 2, config.base_channels)
        widths.append(width)
    return widths


class LRConditionedGenerator(nn.Module):
    """G(X, y): the U-shaped generator with PONO moment shortcuts and an SPAdaIN decoder."""

    def __init__(self, config: LRTranslatorConfig) -> None:
        super().__init__()
        self.config = config
        encoder = _encoder_widths(config)
        self.from_rgb = nn.Sequential(SnConv2d(3, config.base_channels, 3, 1, 1))
        blocks, width = [], config.base_channels
        for out in encoder:
            blocks.append(ResBlk(width, out, normalize=True, downsample=True, use_pono=True))
            width = out
        blocks.append(ResBlk(width, width, normalize=True, use_pono=True))
        self.down_block = nn.ModuleList(blocks)
        decoder = [SPAdaInResBlk(width, width)]
        for out in _decoder_widths(config):
            decoder.append(SPAdaInResBlk(width, out, upsample=True))
            width = out
        self.block = nn.ModuleList(decoder)
        self.to_rgb = nn.Sequential(
            nn.InstanceNorm2d(width, affine=True), nn.LeakyReLU(0.2), SnConv2d(width, 3, 1, 1, 0)
        )

    def forward(self, source: Tensor, target_lr: Tensor) -> Tensor:
        """``source`` [B,3,H,W] and ``target_lr`` [B,3,H/s,W/s] in [-1, 1], s = 2**levels."""
        scale = self.config.scale
        if source.shape[-2] != target_lr.shape[-2] * scale or source.shape[-1] != target_lr.shape[-1] * scale:
            raise ValueError(
                f"source {tuple(source.shape[-2:])} must be {scale}x the target {tuple(target_lr.shape[-2:])}"
            )
        h = self.from_rgb(source)
        recorded: list[list[Moments]] = []
        for block in self.down_block:
            h, moments = block.forward_with_moments(h)
            recorded.append(moments)
        recorded.reverse()
        for index, block in enumerate(self.block):
            # Block i starts at 2**(i-1) times the target's size (block 0 and 1 at its size). One
            # direct resize, not repeated doublings: aligned-corner resizes do not compose.
            h = block(h, bilinear(target_lr, 2 ** (index - 1)), recorded[index])
        return self.to_rgb(h)


class LRDifferenceDiscriminator(nn.Module):
    """StarGAN v2's discriminator without domain heads, with the low-resolution difference map
    concatenated once the features reach the target's size; a patch of logits out.

    ``head_halvings``, the head's downsampling blocks, follows the authors' rule by default
    (:func:`authors_head_halvings`); a network trained with another head, such as i2i's before it
    followed that rule, is rebuilt with its own (:func:`discriminator_head_halvings` reads it)."""

    def __init__(self, config: LRTranslatorConfig, *, head_halvings: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.head_halvings = authors_head_halvings(config.lr_size) if head_halvings is None else head_halvings
        width = config.discriminator_base
        blocks: list[nn.Module] = [SnConv2d(3, width, 3, 1, 1)]
        for _ in range(config.levels):
            out = min(width * 2, config.disc_max_channels)
            blocks.append(ResBlk(width, out, downsample=True))
            width = out
        self.main = nn.Sequential(*blocks)
        head_width = min(width * 2, config.disc_max_channels)
        head: list[nn.Module] = [ResBlk(width + 3, head_width)]
        head += [ResBlk(head_width, head_width, downsample=True) for _ in range(self.head_halvings)]
        head += [
            nn.LeakyReLU(0.2),
            SnConv2d(head_width, head_width, 4, 1, 0),
            nn.LeakyReLU(0.2),
            SnConv2d(head_width, 1, 1, 1, 0),
        ]
        self.last_block = nn.Sequential(*head)

    def forward(self, images: Tensor, difference: Tensor) -> Tensor:
        return self.last_block(torch.cat((self.main(images), difference), dim=1))


def difference_map(images: Tensor, target_lr: Tensor, quantum: float) -> Tensor:
    """|y - round(DS(G(X, y)))|: where the output misses its low-resolution target."""
    return (target_lr - round_straight_through(downscale(images, target_lr.shape[-2:]), quantum)).abs()


# --- reading configurations back from checkpoints -------------------------------------------------


def _shape(state_dict: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise KeyError(f"missing key {key}")
    return tuple(state_dict[key].shape)


def generator_layout(state_dict: Mapping[str, Tensor]) -> tuple[int, int, int]:
    """(levels, base_channels, max_channels) read from a generator state dict's shapes."""
    base = _shape(state_dict, "from_rgb.0.conv.weight_orig")[0]
    blocks = {int(key.split(".")[1]) for key in state_dict if key.startswith("down_block.")}
    if not blocks or blocks != set(range(len(blocks))) or len(blocks) < 2:
        raise KeyError("no encoder blocks (down_block.N) found")
    levels = len(blocks) - 1
    widest = _shape(state_dict, f"down_block.{levels}.conv1.conv.weight_orig")[0]
    return levels, base, widest


def authors_head_halvings(lr_size: int) -> int:
    """The discriminator head's downsampling blocks in the authors' code: int(log2(lr_size)) - 3,
    none below 8 (12: none, 20: one, 32: two)."""
    return max(lr_size.bit_length() - 1 - 3, 0)


def _former_head_halvings(lr_size: int) -> int:
    """The head's downsampling blocks in i2i's discriminators before they followed the authors'
    rule: halvings down to 8x8 or less, one more than the rule at sizes 9-15 and 18-31."""
    halvings = 0
    while lr_size > 8:
        lr_size //= 2
        halvings += 1
    return halvings


def discriminator_head_halvings(discriminator: Mapping[str, Tensor]) -> int:
    """How many downsampling blocks a discriminator state dict's head has (the residual blocks in
    ``last_block`` after the first, which takes the difference map)."""
    head = {int(key.split(".")[1]) for key in discriminator if key.startswith("last_block.") and ".conv1." in key}
    return max(len(head) - 1, 0)


def _training_size(discriminator: Mapping[str, Tensor], levels: int, disc_base: int) -> int:
    """The high-resolution size a discriminator was trained at. The authors' rule (first width
    2**14 // hr_size) is taken when the head's depth agrees with it; a run trained with another
    first width is sized by the head's depth alone, which cannot tell 4 from 8 (8 is assumed)."""
    halvings = discriminator_head_halvings(discriminator)
    # The rule rounds down, so the size is not 2**14 // disc_base itself unless that divides evenly
    # (a 384 px run has width 42, and 2**14 // 42 is 390): every size this generator can have is tried.
    candidates = []
    for lr_size in range(MIN_LR_SIZE, MAX_LR_SIZE + 1):
        hr_size = lr_size << levels
        authors_head = authors_head_halvings(lr_size) == halvings
        if max(2**14 // hr_size, 1) == disc_base and (authors_head or _former_head_halvings(lr_size) == halvings):
            # Where two sizes fit, the authors' head and then a power of two are the likelier.
            candidates.append((not authors_head, lr_size & (lr_size - 1) != 0, hr_size))
    if candidates:
        return min(candidates)[2]
    return (8 << halvings) << levels


def config_from_state_dicts(
    generator: Mapping[str, Tensor],
    discriminator: Mapping[str, Tensor] | None = None,
    *,
    hr_size: int | None = None,
) -> LRTranslatorConfig:
    """The configuration behind a checkpoint. The discriminator gives the training size (see
    ``_training_size``); without a discriminator, ``hr_size`` must be given."""
    levels, base, widest = generator_layout(generator)
    disc_base, disc_widest = 0, LRTranslatorConfig.disc_max_channels
    if discriminator is not None:
        disc_base = _shape(discriminator, "main.0.conv.weight_orig")[0]
        # The head is the widest layer; any larger cap builds the same network.
        disc_widest = _shape(discriminator, "last_block.0.conv1.conv.weight_orig")[0]
    if hr_size is None:
        if discriminator is None:
            raise KeyError("the training size is unknown: no discriminator and no stored configuration")
        hr_size = _training_size(discriminator, levels, disc_base)
    return LRTranslatorConfig(
        hr_size=hr_size,
        lr_size=hr_size >> levels,
        max_channels=widest,
        base_channels=base,
        disc_base_channels=disc_base,
        disc_max_channels=disc_widest,
    )
