"""Network chores every training method shares: seeded initialisation, the EMA copy, and
moving optimiser state with its parameters."""

from __future__ import annotations

from collections.abc import Iterable

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
