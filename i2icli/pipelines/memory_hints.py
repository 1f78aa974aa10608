"""What each command can do with less device memory: the hint of the ``DeviceError`` a pipeline
raises when the device runs out, and of the command's own report for what runs outside a
pipeline's call, so that both say the same. Free of torch: command modules import it on load."""

from __future__ import annotations

# The models alone do not fit, whatever the options.
LOAD = "close other programs that use the GPU, or use --device cpu"
# The pipeline has already retried with the smallest tiles and one face at a time.
RESTORE = "close other GPU programs, lower --upscale, or use --device cpu"
EXEMPLAR = "use a smaller --size or --fp16, or --device cpu"
INVERT = "use --one-by-one, fewer --codes or a smaller --size, or --device cpu"
# One pair at the checkpoint's own size: there is nothing smaller to ask for.
TRANSLATE_LR = "close other programs that use the GPU, or use --device cpu"
PAIRED = "use a smaller --size, or --device cpu"
