"""What ``i2i translate-lr`` needs before its generator loads: the method a checkpoint must come from.

Apart from the pipeline so that the command can show its --dry-run, or name a run folder that is
not there, without importing PyTorch, which takes seconds.
"""

from __future__ import annotations

METHOD_NAME = "translate-lr"
