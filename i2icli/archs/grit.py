"""GRIT (Suri, Meshry, Davis, Shrivastava): paired translation as a reconstruction plus a GAN residual.

The generator turns a label map (one-hot classes, or an edge image) and a style code into two
images whose sum is the output:

* a content encoder (the down half of a U-Net) over the label map;
* a style encoder: strided convolutions, global average pooling and a linear layer, without
  normalisation (which would remove the very statistics the code should carry), giving a small
  latent; a mapping MLP turns it into what every AdaIN layer reads;
* a reconstruction decoder (the up half of the U-Net, skips from the encoder, AdaIN after each
  convolution) ending in the *reconstruction* image;
* a residual decoder of upsampling blocks that read the reconstruction decoder's features at
  each scale, add per-pixel noise maps with learned per-channel strength (as StyleGAN does) and
  are modulated by the same style code through their own AdaIN layers; it ends in the *GAN
  residual* image.

Noise only enters the residual decoder, so the reconstruction is a deterministic function of
the label map and the style, and no parameter of the residual decoder takes part in computing the
reconstruction: an L1 loss on the reconstruction cannot move it (the tests check the gradients).
The adversarial loss sees the sum, so it reaches everything.

The discriminator is a multi-scale patch discriminator (pix2pixHD's layout, with spectral norm),
conditioned on the label map by concatenation.

No public code or weights exist for this method; the module and parameter names are our own.
Nothing here touches files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

# The configuration needs no PyTorch, so that commands can check it before importing it.
from i2icli.archs.grit_config import GRITConfig

_NEGATIVE_SLOPE = 0.2


class ResidualGuide(NamedTuple):
    """What the residual decoder reads from the rest of the generator: the reconstruction
    decoder's features at each scale (coarsest first) and the mapped style."""

    features: tuple[Tensor, ...]
    mapped_style: Tensor

    def repeat(self, count: int) -> ResidualGuide:
        """The same guide for ``count`` samples (from a batch of one)."""
        return ResidualGuide(tuple(f.expand(count, -1, -1, -1) for f in self.features),
                             self.mapped_style.expand(count, -1))


class GRITOutput(NamedTuple):
    """The two components; the output image is their sum (``image``)."""

    reconstruction: Tensor
    residual: Tensor

    @property
    def image(self) -> Tensor:
        return self.reconstruction + self.residual


# --------------------------------------------------------------------------- building blocks


class AdaIN(nn.Module):
    """Instance norm whose per-channel scale and shift come from the mapped style code."""

    def __init__(self, channels: int, mapping_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(mapping_dim, 2 * channels)

    def forward(self, x: Tensor, mapped_style: Tensor) -> Tensor:
        scale, shift = self.affine(mapped_style)[:, :, None, None].chunk(2, dim=1)
        # 1 + scale: an untrained layer starts as plain instance norm.
        return self.norm(x) * (1 + scale) + shift


class NoiseInjection(nn.Module):
    """Adds a per-pixel noise map (one channel, broadcast) times a learned per-channel strength.
    The strength starts at zero, as StyleGAN's: training decides how much variation to use."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.strength * noise


class DownBlock(nn.Module):
    """Content encoder step: a stride-2 convolution, then a 3x3 one, instance norm and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)
        self.norm1 = nn.InstanceNorm2d(out_channels, affine=True)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.norm1(self.down(x)), _NEGATIVE_SLOPE)
        return F.leaky_relu(self.norm2(self.conv(x)), _NEGATIVE_SLOPE)


class ReconstructionBlock(nn.Module):
    """U-Net decoder step: upsample, concatenate the encoder's skip, two convolutions with AdaIN."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, mapping_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1)
        self.adain1 = AdaIN(out_channels, mapping_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.adain2 = AdaIN(out_channels, mapping_dim)

    def forward(self, x: Tensor, skip: Tensor, mapped_style: Tensor) -> Tensor:
        x = torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], dim=1)
        x = F.leaky_relu(self.adain1(self.conv1(x), mapped_style), _NEGATIVE_SLOPE)
        return F.leaky_relu(self.adain2(self.conv2(x), mapped_style), _NEGATIVE_SLOPE)


class ResidualBlock(nn.Module):
    """Residual decoder step: upsample the previous residual features, concatenate the
    reconstruction decoder's features at this scale, then two convolutions each followed by
    noise, AdaIN and a leaky ReLU (StyleGAN's order: noise before the normalisation's modulation)."""

    def __init__(self, in_channels: int, guide_channels: int, out_channels: int, mapping_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + guide_channels, out_channels, 3, padding=1)
        self.noise1 = NoiseInjection(out_channels)
        self.adain1 = AdaIN(out_channels, mapping_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.noise2 = NoiseInjection(out_channels)
        self.adain2 = AdaIN(out_channels, mapping_dim)

    def forward(self, x: Tensor | None, guide: Tensor, mapped_style: Tensor, noise: Sequence[Tensor]) -> Tensor:
        if x is not None:
            guide = torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), guide], dim=1)
        x = self.adain1(self.noise1(self.conv1(guide), noise[0]), mapped_style)
        x = F.leaky_relu(x, _NEGATIVE_SLOPE)
        x = self.adain2(self.noise2(self.conv2(x), noise[1]), mapped_style)
        return F.leaky_relu(x, _NEGATIVE_SLOPE)


class StyleEncoder(nn.Module):
    """Photo -> style code (B, style_dim): strided convolutions, global average pooling, linear."""

    def __init__(self, config: GRITConfig) -> None:
        super().__init__()
        width = config.style_channels
        layers: list[nn.Module] = [nn.Conv2d(3, width, 7, padding=3), nn.LeakyReLU(_NEGATIVE_SLOPE)]
        for step in range(4):
            wider = config.style_channels * min(2 ** (step + 1), 4)
            layers += [nn.Conv2d(width, wider, 4, stride=2, padding=1), nn.LeakyReLU(_NEGATIVE_SLOPE)]
            width = wider
        self.features = nn.Sequential(*layers)
        self.to_code = nn.Linear(width, config.style_dim)

    def forward(self, photo: Tensor) -> Tensor:
        return self.to_code(self.features(photo).mean(dim=(2, 3)))


# --------------------------------------------------------------------------- the generator


class GRITGenerator(nn.Module):
    """(label map, style code, noise) -> :class:`GRITOutput` (reconstruction, GAN residual).

    Label maps are (B, input_channels, H, W): one-hot for class maps, [-1, 1] for edge images;
    H and W must be multiples of ``config.size_multiple``. The network is fully convolutional, so
    any such size works; it was trained at ``config.image_size``.

    ``style_mean`` is a running mean of the style codes of the training photos (updated by the
    training step), the code used when no style image is given.
    """

    def __init__(self, config: GRITConfig) -> None:
        super().__init__()
        self.config = config
        depth = config.depth
        width = config.encoder_channels
        self.stem = nn.Conv2d(config.input_channels, width(0), 3, padding=1)
        self.down = nn.ModuleList(DownBlock(width(level), width(level + 1)) for level in range(depth))
        self.style_encoder = StyleEncoder(config)
        self.mapping = nn.Sequential(
            nn.Linear(config.style_dim, config.mapping_dim), nn.LeakyReLU(_NEGATIVE_SLOPE),
            nn.Linear(config.mapping_dim, config.mapping_dim), nn.LeakyReLU(_NEGATIVE_SLOPE),
        )
        self.bottleneck = nn.Conv2d(width(depth), width(depth), 3, padding=1)
        self.bottleneck_adain = AdaIN(width(depth), config.mapping_dim)
        # up[i] produces the features at level depth-1-i (level 0 = full size).
        self.up = nn.ModuleList(
            ReconstructionBlock(width(level + 1), width(level), width(level), config.mapping_dim)
            for level in reversed(range(depth))
        )
        self.to_reconstruction = nn.Conv2d(width(0), 3, 1)
        residual = config.residual_width
        # The residual decoder starts at the bottleneck, guided by its features, then follows
        # the reconstruction decoder up scale by scale.
        blocks = [ResidualBlock(0, width(depth), residual(depth), config.mapping_dim)]
        blocks += [ResidualBlock(residual(level + 1), width(level), residual(level), config.mapping_dim)
                   for level in reversed(range(depth))]
        self.residual_blocks = nn.ModuleList(blocks)
        self.to_residual = nn.Conv2d(residual(0), 3, 1)
        self.register_buffer("style_mean", torch.zeros(config.style_dim))

    # --- pieces callers use on their own ---------------------------------------------------------

    def encode_style(self, photo: Tensor) -> Tensor:
        return self.style_encoder(photo)

    def mean_style(self, batch: int = 1) -> Tensor:
        return self.style_mean.expand(batch, -1)

    def noise_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The shape of each noise map, in the order :meth:`forward` consumes them (two per block)."""
        depth = self.config.depth
        shapes = []
        for level in [depth, *reversed(range(depth))]:
            shape = (batch, 1, height >> level, width >> level)
            shapes += [shape, shape]
        return shapes

    def draw_noise(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """Standard normal noise maps. They are drawn on the CPU (where ``generator`` must live)
        and then moved, so a seed gives the same variation on every device."""
        device = self.to_residual.weight.device
        return [torch.randn(shape, generator=generator).to(device) for shape in self.noise_shapes(batch, height, width)]

    # --- forward ---------------------------------------------------------------------------------

    def forward(
        self,
        label: Tensor,
        style: Tensor,
        noise: Sequence[Tensor] | torch.Generator | None = None,
    ) -> GRITOutput:
        """``noise``: the maps themselves, a CPU generator to draw them from, or None for no
        noise (the deterministic centre of the variations)."""
        reconstruction, guide = self.reconstruct(label, style)
        return GRITOutput(reconstruction, self.residual(guide, noise))

    def reconstruct(self, label: Tensor, style: Tensor) -> tuple[Tensor, ResidualGuide]:
        """The reconstruction, and what the residual decoder reads. Neither depends on noise, so
        variations of one label map need this once and :meth:`residual` once per sample."""
        batch, _, height, width = label.shape
        multiple = self.config.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(f"label maps must have sides that are multiples of {multiple}, got {width}x{height}")
        if style.shape != (batch, self.config.style_dim):
            raise ValueError(f"style codes must be ({batch}, {self.config.style_dim}), got {tuple(style.shape)}")
        mapped = self.mapping(style)
        skips = [F.leaky_relu(self.stem(label), _NEGATIVE_SLOPE)]
        for block in self.down:
            skips.append(block(skips[-1]))
        x = F.leaky_relu(self.bottleneck_adain(self.bottleneck(skips[-1]), mapped), _NEGATIVE_SLOPE)
        features = [x]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(x, skip, mapped)
            features.append(x)
        # A linear head, not tanh: once a tanh saturates, the L1 gradient through it vanishes, and
        # training was seen to stall that way (L1 flat, the residual doing all the work) at 2e-4.
        return self.to_reconstruction(x), ResidualGuide(tuple(features), mapped)

    def residual(self, guide: ResidualGuide, noise: Sequence[Tensor] | torch.Generator | None = None) -> Tensor:
        """The GAN residual for the features of :meth:`reconstruct` (see :meth:`forward` for ``noise``)."""
        full_size = guide.features[-1]
        batch, _, height, width = full_size.shape
        if noise is None:
            maps = [full_size.new_zeros(shape) for shape in self.noise_shapes(batch, height, width)]
        elif isinstance(noise, torch.Generator):
            maps = self.draw_noise(batch, height, width, noise)
        else:
            maps = list(noise)
        r: Tensor | None = None
        for index, (block, features) in enumerate(zip(self.residual_blocks, guide.features)):
            r = block(r, features, guide.mapped_style, maps[2 * index : 2 * index + 2])
        assert r is not None
        return self.to_residual(r)

    def reconstruction_parameters(self) -> list[nn.Parameter]:
        """Parameters the reconstruction depends on (all but the residual decoder's)."""
        residual = {id(p) for p in self.residual_parameters()}
        return [p for p in self.parameters() if id(p) not in residual]

    def residual_parameters(self) -> list[nn.Parameter]:
        """The residual decoder's parameters: trained by the adversarial loss alone."""
        return [*self.residual_blocks.parameters(), *self.to_residual.parameters()]


# --------------------------------------------------------------------------- the discriminator


class PatchDiscriminator(nn.Module):
    """pix2pixHD's N-layer patch discriminator with spectral norm instead of instance norm."""

    def __init__(self, in_channels: int, layers: int, base: int, widest: int) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width = in_channels
        for index in range(layers + 1):
            wider = min(base * 2**index, widest)
            stride = 2 if index < layers else 1
            modules += [spectral_norm(nn.Conv2d(width, wider, 4, stride=stride, padding=2)), nn.LeakyReLU(_NEGATIVE_SLOPE)]
            width = wider
        modules.append(spectral_norm(nn.Conv2d(width, 1, 4, padding=2)))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MultiScaleDiscriminator(nn.Module):
    """Patch discriminators on the (label, image) pair at full size, half size, ...: a list of
    logit maps, finest first."""

    def __init__(self, config: GRITConfig) -> None:
        super().__init__()
        channels = config.input_channels + 3
        self.scales = nn.ModuleList(
            PatchDiscriminator(channels, config.disc_layers, config.disc_base_channels, config.disc_max_channels)
            for _ in range(config.disc_scales)
        )

    def forward(self, label: Tensor, image: Tensor) -> list[Tensor]:
        x = torch.cat([label, image], dim=1)
        logits = []
        for index, discriminator in enumerate(self.scales):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            logits.append(discriminator(x))
        return logits
