"""What each command can do with less memory, the device's or the computer's own: the hint of the
``DeviceError`` a pipeline raises when either runs out, and of the command's own report for what
runs outside a pipeline's call, so that both say the same. Free of torch: command modules import
it on load."""

from __future__ import annotations

from dataclasses import dataclass

# For a command with nothing of its own to name for the computer's memory.
RAM = "close other programs that use much memory, or use smaller images"


@dataclass(frozen=True)
class MemoryHint:
    """What a command can do when the device runs out of memory (``device``), and when the
    computer itself does (``ram``)."""

    device: str
    ram: str = RAM


# For a command that names none of its own.
DEFAULT = MemoryHint("use a smaller --size, or --device cpu")

# The models alone do not fit, whatever the options.
LOAD = MemoryHint("close other programs that use the GPU, or use --device cpu",
                  ram="close other programs that use much memory")
# The pipeline has already retried with the smallest tiles and one face at a time.
RESTORE = MemoryHint("close other GPU programs, lower --upscale, or use --device cpu",
                     ram="use a smaller --tile, --face-batch 1 or a lower --upscale, or close other programs")
EXEMPLAR = MemoryHint("use a smaller --size or --fp16, or --device cpu",
                      ram="use a smaller --size, or close other programs")
INVERT = MemoryHint("use --one-by-one, fewer --codes or a smaller --size, or --device cpu",
                    ram="use --one-by-one, fewer --codes or a smaller --size, or close other programs")
# One pair at the checkpoint's own size: there is nothing smaller to ask for.
TRANSLATE_LR = MemoryHint("close other programs that use the GPU, or use --device cpu")
PAIRED = MemoryHint("use a smaller --size, or --device cpu", ram="use a smaller --size, or close other programs")
TRAIN = MemoryHint("use a smaller --batch-size, or --device cpu",
                   ram="use a smaller --batch-size or fewer --workers, or close other programs")
TRAIN_PAIRED = MemoryHint("use a smaller --batch-size or --size, or --device cpu",
                          ram="use a smaller --batch-size or --size, or fewer --workers")

OUT_OF_RAM = "the computer ran out of memory"
# PyTorch's CPU allocator reports running out as a RuntimeError, not Python's MemoryError:
# "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..." where malloc fails,
# "not enough memory: you tried to allocate ..." on Windows.
_OUT_OF_RAM_MESSAGES = ("can't allocate memory", "not enough memory: you tried to allocate")


def is_out_of_ram(error: BaseException) -> bool:
    """Whether ``error`` means the computer ran out of memory."""
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and any(message in str(error) for message in _OUT_OF_RAM_MESSAGES)
    )
