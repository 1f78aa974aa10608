"""GRIT's configuration: what fixes the networks' shapes (see :mod:`i2icli.archs.grit`).

It imports no PyTorch, so a training command refuses a shape the networks cannot take before the
seconds that import costs, and before it looks at the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

LABEL_INPUT = "label"  # one-hot classes from a class-index map
EDGE_INPUT = "edge"  # an edge (or sketch) image, used as it is
INPUT_KINDS = (LABEL_INPUT, EDGE_INPUT)


@dataclass(frozen=True)
class GRITConfig:
    """What fixes the networks' shapes, plus the training size they were made for."""

    input_channels: int = 19  # classes for label maps; 1 or 3 for edge images
    input_kind: str = LABEL_INPUT
    image_size: int = 256
    levels: int = 0  # times the content encoder halves the size; 0: down to 8 px (at most 6)
    base_channels: int = 64
    max_channels: int = 512
    style_dim: int = 8
    style_channels: int = 64  # the style encoder's first width (doubling up to 4x)
    mapping_dim: int = 256
    residual_channels: int = 0  # residual decoder width per scale; 0: half the reconstruction's
    disc_scales: int = 2
    disc_layers: int = 3
    disc_base_channels: int = 64
    disc_max_channels: int = 512

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input kind must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if self.input_channels < 1:
            raise ValueError("the label map needs at least one channel")
        if self.input_kind == EDGE_INPUT and self.input_channels not in (1, 3):
            raise ValueError(f"an edge image has 1 or 3 channels, not {self.input_channels}")
        if self.levels < 0 or self.levels > 8:
            raise ValueError(f"levels must be between 1 and 8 (0 for the default), got {self.levels}")
        if self.image_size % self.size_multiple or self.image_size // self.size_multiple < 2:
            raise ValueError(
                f"image size {self.image_size} must be a multiple of {self.size_multiple} (2^{self.depth}) "
                "and at least twice that"
            )
        for name in ("base_channels", "max_channels", "style_dim", "style_channels", "mapping_dim",
                     "disc_scales", "disc_layers", "disc_base_channels", "disc_max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def depth(self) -> int:
        """How many times the content encoder halves the size."""
        if self.levels:
            return self.levels
        return max(1, min(6, int(math.log2(max(self.image_size, 16))) - 3))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.depth

    @property
    def input_description(self) -> str:
        if self.input_kind == LABEL_INPUT:
            return f"{self.input_channels}-class label maps"
        return f"{self.input_channels}-channel edge images"

    def encoder_channels(self, level: int) -> int:
        return min(self.base_channels * 2**level, self.max_channels)

    def residual_width(self, level: int) -> int:
        return self.residual_channels or max(1, self.encoder_channels(level) // 2)

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)
