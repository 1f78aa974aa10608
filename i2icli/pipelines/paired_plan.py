"""What ``i2i paired`` needs before its generator loads: the method a checkpoint must come from,
and the noise seed of each sample.

Apart from the pipeline so that the command can plan its outputs and show its --dry-run, or
name a run folder that is not there, without importing PyTorch, which takes seconds.
"""

from __future__ import annotations

METHOD_NAME = "paired"


def sample_seed(seed: int, sample: int) -> int:
    """Sample k of a run with --seed s uses noise seed s + k: sample 0 of --seed 5 is sample 5 of --seed 0."""
    return seed + sample
