"""The low-resolution-conditioned translator's configuration (see :mod:`i2icli.archs.lr_conditioned`).

It imports no PyTorch, so a training command refuses sizes the networks cannot take before the
seconds that import costs, and before it looks at the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MIN_LR_SIZE = 4
MAX_LR_SIZE = 32


@dataclass(frozen=True)
class LRTranslatorConfig:
    """Sizes and widths. The generator only depends on ``hr_size / lr_size`` (it is fully
    convolutional); the discriminator's layout depends on both sizes, as in the authors' code."""

    hr_size: int = 128
    lr_size: int = 8
    max_channels: int = 512  # the authors' ``dim_in``: widest encoder layer
    base_channels: int = 64  # first encoder width, and the decoder's narrowest
    disc_base_channels: int = 0  # 0: the authors' rule, 2**14 // hr_size
    disc_max_channels: int = 512

    def __post_init__(self) -> None:
        if not MIN_LR_SIZE <= self.lr_size <= MAX_LR_SIZE:
            raise ValueError(f"low-resolution size {self.lr_size} is outside {MIN_LR_SIZE}-{MAX_LR_SIZE}")
        ratio = self.hr_size // self.lr_size
        if self.hr_size % self.lr_size or ratio < 2 or ratio & (ratio - 1):
            raise ValueError(
                f"high-resolution size {self.hr_size} must be the low-resolution size {self.lr_size} "
                "times a power of two (at least 2)"
            )

    @property
    def levels(self) -> int:
        """How many times the encoder halves (and the decoder doubles) the size."""
        return int(math.log2(self.hr_size // self.lr_size))

    @property
    def scale(self) -> int:
        return self.hr_size // self.lr_size

    @property
    def discriminator_base(self) -> int:
        return self.disc_base_channels or max(2**14 // self.hr_size, 1)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
