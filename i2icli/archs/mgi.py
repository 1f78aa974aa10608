"""Multi-code StyleGAN2 inversion (mGANprior) with several composing layers in one batch.

mGANprior ("Image Processing Using Multi-Code GAN Prior", Gu et al.) inverts an image with N
latent codes instead of one: each code runs through the generator up to a *composing layer* l,
the N feature maps are blended with learned per-channel importance weights, and the rest of the
generator renders the blend. Multiple GAN Inversion (MGI) runs one such inversion per composing
layer and keeps the best; here all those hypotheses are one module whose forward pass runs every
hypothesis in the same batch, layer by layer.

How the published method (written for PGGAN, whose only input is z) maps onto StyleGAN2:

* A code is one W-space vector used by every layer before the composing layer (W-space
  codes optimise far better than z through the 8-layer mapping MLP).
* The layers after the composing layer need styles too. Each hypothesis owns a W+ latent for
  them, initialised to the mean of its codes and optimised with everything else.
* StyleGAN2 carries two tensors between layers: the features and the RGB image accumulated by
  the ``to_rgb`` skips. Both are composed: features with (N, C) importance weights, the RGB
  skip with (N, 3) weights.
* The blend is ``sum_n alpha_n * F_n`` with alpha initialised to 1/N, so it starts as the mean
  feature map (mGANprior also divides that sum by N; after StyleGAN2's demodulated convs the
  scale of the input matters, so the extra 1/N is left out).

The layer numbering is the generator's style convolutions: composing layer l means that each
code runs the first l style convs (with their to_rgb skips) on its own. With a 1024 px StyleGAN2
there are 17 of them, with a 512 px one 15.

This module only holds parameters and computes images: no files, no optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from i2icli.archs.stylegan2 import StyleGAN2Generator

__all__ = ["MultiCodeInversion", "composing_layer_range", "initial_codes"]


def composing_layer_range(generator: StyleGAN2Generator) -> range:
    """Valid composing layers: at least one style conv before, at least one after."""
    return range(1, generator.num_convs)


class MultiCodeInversion(nn.Module):
    """H hypotheses x N codes of multi-code inversion, rendered in one batch per layer.

    Args:
        generator: A frozen StyleGAN2 generator (its parameters are not optimised here).
        layers: One composing layer per hypothesis (see module docstring), e.g. (4, 5, 6, 7, 8).
        initial_codes: (H, N, d) W-space starting codes, one set per hypothesis.

    The trainable parameters are ``codes`` (H, N, d), ``feature_weights`` (one (N, C_l)
    tensor per hypothesis), ``skip_weights`` (H, N, 3) and ``rest_latents`` (H, L, d).
    Hypotheses share nothing, so optimising the sum of their losses optimises each one
    exactly as if it ran alone (Adam is per-element).
    """

    def __init__(self, generator: StyleGAN2Generator, layers: Sequence[int], initial_codes: Tensor) -> None:
        super().__init__()
        valid = composing_layer_range(generator)
        if not layers:
            raise ValueError("at least one composing layer is needed")
        for layer in layers:
            if layer not in valid:
                raise ValueError(
                    f"composing layer {layer} is outside {valid.start}-{valid.stop - 1} for a "
                    f"{generator.out_size} px generator"
                )
        hypotheses, count, dim = initial_codes.shape
        if hypotheses != len(layers) or dim != generator.num_style_feat:
            raise ValueError(
                f"initial codes have shape {tuple(initial_codes.shape)}, expected "
                f"({len(layers)}, N, {generator.num_style_feat})"
            )
        # Kept out of the module tree: the generator is shared, frozen and not ours to save.
        self._generator = (generator,)
        self.layers = tuple(int(layer) for layer in layers)
        self.num_codes = count

        self.codes = nn.Parameter(initial_codes.detach().clone())
        self.feature_weights = nn.ParameterList(
            nn.Parameter(initial_codes.new_full((count, generator.step_channels(layer - 1)), 1.0 / count))
            for layer in self.layers
        )
        self.skip_weights = nn.Parameter(initial_codes.new_full((hypotheses, count, 3), 1.0 / count))
        rest = initial_codes.detach().mean(dim=1, keepdim=True).expand(-1, generator.num_latent, -1)
        self.rest_latents = nn.Parameter(rest.clone())

    @property
    def generator(self) -> StyleGAN2Generator:
        return self._generator[0]

    def hypothesis(self, index: int) -> MultiCodeInversion:
        """A one-hypothesis copy of hypothesis ``index`` (same parameters, detached)."""
        single = MultiCodeInversion(self.generator, [self.layers[index]], self.codes[index : index + 1])
        with torch.no_grad():
            single.feature_weights[0].copy_(self.feature_weights[index])
            single.skip_weights.copy_(self.skip_weights[index : index + 1])
            single.rest_latents.copy_(self.rest_latents[index : index + 1])
        return single

    def forward(self) -> Tensor:
        """Render every hypothesis: (H, 3, out_size, out_size), roughly in [-1, 1]."""
        generator = self.generator
        num_latent = generator.num_latent
        # Per hypothesis, the W+ rows of its samples before composing: each code everywhere.
        code_latents = self.codes.unsqueeze(2).expand(-1, -1, num_latent, -1)  # (H, N, L, d)

        # The batch holds hypothesis h's N codes until its composing layer, then its one blend,
        # in hypothesis order. It is only split and re-joined at the (few) steps where some
        # hypothesis composes, so the large activations are not copied at every layer.
        composed = [False] * len(self.layers)
        out: Tensor | None = None
        skip: Tensor | None = None
        for step in range(generator.num_convs):
            latent = torch.cat([
                self.rest_latents[h : h + 1] if done else code_latents[h] for h, done in enumerate(composed)
            ])
            out, skip = generator.synthesis_step(step, out, skip, latent)
            if step + 1 not in self.layers:
                continue
            sizes = [1 if done else self.num_codes for done in composed]
            outs, skips = list(out.split(sizes)), list(skip.split(sizes))  # type: ignore[union-attr]
            for h, layer in enumerate(self.layers):
                if layer == step + 1:  # the codes of hypothesis h have just run their last own layer
                    outs[h] = (outs[h] * self.feature_weights[h][:, :, None, None]).sum(dim=0, keepdim=True)
                    skips[h] = (skips[h] * self.skip_weights[h][:, :, None, None]).sum(dim=0, keepdim=True)
                    composed[h] = True
            out, skip = torch.cat(outs), torch.cat(skips)
        return skip  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"layers={self.layers}, codes={self.num_codes}"


def initial_codes(
    generator: StyleGAN2Generator, layers: Sequence[int], count: int, seed: int
) -> Tensor:
    """Starting W codes for each hypothesis: mapped Gaussian z, seeded per composing layer.

    Seeding by (seed, layer) rather than by position makes a hypothesis start from the same
    codes whether it runs alone or alongside others.
    """
    parameter = next(generator.parameters())
    codes = []
    for layer in layers:
        # Wrapped into the generator's 64-bit seed range: any --seed up to 2**63 - 1 works, and
        # small seeds keep the codes they always had.
        rng = torch.Generator().manual_seed((seed * 1000 + int(layer)) % 2**64)
        z = torch.randn(count, generator.num_style_feat, generator=rng)
        with torch.no_grad():
            codes.append(generator.mapping(z.to(parameter.device, parameter.dtype)))
    return torch.stack(codes)
