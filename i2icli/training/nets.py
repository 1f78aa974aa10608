"""Network chores every training method shares: seeded initialisation, the EMA copy, and
moving optimiser state with its parameters."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def initialise(module: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal (fan-in) convolution and linear weights, zero biases, all drawn from ``generator``.

    Spectrally normalised layers keep their weight in ``weight_orig``, and their power
    iteration's starting vectors are redrawn from ``generator`` too: torch draws them from the
    global generator, which would make a run depend on whatever ran before it.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            weight = layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight
            with torch.no_grad():
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in", generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
                for name in ("weight_u", "weight_v"):
                    if hasattr(layer, name):
                        vector = getattr(layer, name)
                        vector.copy_(F.normalize(torch.randn(vector.shape, generator=generator), dim=0, eps=1e-12))


@torch.no_grad()
def update_average(average: nn.Module, current: nn.Module, decay: float) -> None:
    """EMA of the weights; buffers (spectral-norm vectors, running statistics) are copied, not
    averaged: they describe the live weights, which the averaged ones stay close to."""
    for kept, live in zip(average.parameters(), current.parameters()):
        kept.lerp_(live, 1 - decay)
    for kept, live in zip(average.buffers(), current.buffers()):
        kept.copy_(live)


def move_optimizers(optimizers: Iterable[torch.optim.Optimizer], device: torch.device) -> None:
    """Adam's moments follow their parameters to ``device`` (its step counts stay where they are)."""
    for optimizer in optimizers:
        for state in optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor) and key != "step":
                    state[key] = value.to(device)


class AdversarialTraining:
    """What every GAN method here keeps: a generator, a discriminator, their Adam optimisers and an
    EMA copy of the generator (what inference uses), saved under the keys a subclass names.

    A subclass builds and initialises its networks, then calls :meth:`adopt`; it provides
    ``name``, ``train_step`` and ``sample_grid`` for :class:`~i2icli.training.loop.TrainableMethod`.
    """

    generator_key, discriminator_key, average_key = "G", "D", "G_ema"

    def adopt(self, generator: nn.Module, discriminator: nn.Module, *, generator_lr: float, discriminator_lr: float,
              betas: tuple[float, float], model_config: Any, options: Any, data: dict[str, Any] | None) -> None:
        self.model_config, self.options, self.data = model_config, options, dict(data or {})
        self.netG, self.netD = generator, discriminator
        self.average = copy.deepcopy(generator).eval().requires_grad_(False)
        self.optG = torch.optim.Adam(generator.parameters(), lr=generator_lr, betas=betas)
        self.optD = torch.optim.Adam(discriminator.parameters(), lr=discriminator_lr, betas=betas)

    def config(self) -> dict[str, Any]:
        return {"model": self.model_config.to_dict(), "training": self.options.to_dict(), "data": self.data}

    def state_dict(self) -> dict[str, Any]:
        return {
            self.generator_key: self.netG.state_dict(),
            self.discriminator_key: self.netD.state_dict(),
            "optG": self.optG.state_dict(),
            "optD": self.optD.state_dict(),
            self.average_key: self.average.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.netG.load_state_dict(state[self.generator_key])
        self.netD.load_state_dict(state[self.discriminator_key])
        self.average.load_state_dict(state[self.average_key])
        self.optG.load_state_dict(state["optG"])
        self.optD.load_state_dict(state["optD"])

    def to(self, device: torch.device) -> None:
        for network in (self.netG, self.netD, self.average):
            network.to(device)
        move_optimizers((self.optG, self.optD), device)
