"""What the invert pipeline takes and checks before any network: its settings, the --layers
syntax, and the smallest face crop it accepts.

Apart from the pipeline so that the command can refuse a bad option, or show its --dry-run,
without importing PyTorch, which takes seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from i2icli.errors import InputError
from i2icli.pipelines.arguments import check_flag, check_seed, is_number, is_whole

if TYPE_CHECKING:
    from i2icli.imageio import Picture

# The warp's features lie on a grid 1/4 of the image side (see correspondence.py).
FEATURE_STRIDE = 4
DEFAULT_LAYERS = (4, 5, 6, 7, 8)

# The warp's features are on a stride-4 grid and VGG-19's relu4_4 is at stride 8.
SIZE_MULTIPLE = 2 * FEATURE_STRIDE
MIN_SIZE = 32


@dataclass(frozen=True)
class InvertSettings:
    """Knobs of one inversion. ``size`` is the working size of the warp (the paper: 256)."""

    layers: tuple[int, ...] = DEFAULT_LAYERS
    codes: int = 20
    steps: int = 1000
    lr: float = 0.05
    size: int = 256
    seed: int = 0
    temperature: float = 100.0
    perceptual_weight: float = 1.0
    aligned: bool = False
    # Run every hypothesis in one batch (True), one after another (False), or decide by device
    # (None): one batch on a GPU; one after another on a CPU, where one batch measured slower
    # (35.1 vs 30.4 s per step for layers 4-8, 512 px generator, 2 cores). Results are the same.
    batch_hypotheses: bool | None = None
    # "fp32", or "bf16": the generator's and VGG's passes under bf16 autocast (codes, blend
    # weights, Adam and the losses stay fp32). On a 2-core AVX512-BF16 CPU a forward+backward
    # of the 512 px generator with 20 codes took 2.73 s instead of 5.57 s.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if not is_whole(self.size) or self.size < MIN_SIZE or self.size % SIZE_MULTIPLE:
            raise ValueError(f"--size must be a multiple of {SIZE_MULTIPLE}, at least {MIN_SIZE}; got {self.size}")
        # True would be taken as layer 1 (it equals 1), and a string's characters as layers.
        if (isinstance(self.layers, str) or not self.layers or not all(map(is_whole, self.layers))
                or len(set(self.layers)) != len(self.layers)):
            raise ValueError(f"--layers must name distinct composing layers; got {self.layers}")
        if not (is_whole(self.codes) and is_whole(self.steps)) or self.codes < 1 or self.steps < 0:
            raise ValueError("--codes must be at least 1 and --steps at least 0")
        check_seed(self.seed, "--seed")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16; got {self.precision!r}")
        numbers = (self.lr, self.temperature, self.perceptual_weight)
        if not (all(map(is_number, numbers)) and 0 < self.lr < math.inf and 0 < self.temperature < math.inf
                and 0 <= self.perceptual_weight < math.inf):
            raise ValueError("--lr and --temperature must be positive, --perceptual-weight not negative, all finite")
        check_flag("aligned", self.aligned)
        if self.batch_hypotheses is not None:  # None: decided by the device
            check_flag("batch_hypotheses", self.batch_hypotheses)


MIN_FACE_CROP = 16  # px a side, for --aligned inputs


def check_face_crop(picture: Picture, role: str) -> None:
    """Refuse an --aligned input too small to be a face crop: blown up to the working size it would
    be a smear, with no face to invert and no style to take. Cheap, so callers run it before
    loading (or downloading) any network."""
    if min(picture.rgb.shape[:2]) < MIN_FACE_CROP:
        raise InputError(picture.source or role, f"the {role} is {picture.width}x{picture.height} px, too small "
                         f"for a face crop (at least {MIN_FACE_CROP} px a side)", "use a larger face crop")


# A 1024 px StyleGAN2 has 17 style layers; any --layers beyond this is a typo, not a network.
MOST_LAYERS = 32


def parse_layers(text: str) -> tuple[int, ...]:
    """'4-8' -> (4, 5, 6, 7, 8); '3,5,9' -> (3, 5, 9); '6' -> (6,)."""
    layers: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                low, high = (int(value) for value in part.split("-", 1))
                if high < low:
                    raise ValueError
                if high > MOST_LAYERS:  # checked before the range is spelled out: 1-300000000 is one line
                    raise ValueError(f"--layers {part}: a StyleGAN2 has at most {MOST_LAYERS} composing layers")
                layers.extend(range(low, high + 1))
            else:
                layers.append(int(part))
    except ValueError as error:
        if str(error).startswith("--layers"):
            raise
        raise ValueError(f"--layers takes numbers and ranges like 4-8 or 3,5,7; got {text[:40]!r}") from None
    if not layers or len(set(layers)) != len(layers) or min(layers) < 1 or max(layers) > MOST_LAYERS:
        raise ValueError(f"--layers must list distinct layers from 1 to {MOST_LAYERS}; got {text[:40]!r}")
    return tuple(layers)
