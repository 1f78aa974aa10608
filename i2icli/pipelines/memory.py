"""How much GPU memory a run may use, and how many faces or tiles fit in it at once.

A budget (``--max-memory``) is enforced by the CUDA caching allocator itself
(``set_per_process_memory_fraction``): going over it raises the ``OutOfMemoryError`` that the
pipelines answer with smaller batches and tiles, exactly as a full card would. Batch sizes come
from what one item was measured to allocate on this device, in this dtype, when the models were
loaded, not from a table of guesses.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

from i2icli.errors import DeviceError, first_line
from i2icli.pipelines import memory_hints
from i2icli.pipelines.devices import indexed

GIB = 2**30
# Keep this share of the memory that is free back: the allocator's blocks are rounded up and
# fragment, and the caller's own tensors around a batch are not part of the measured cost.
HEADROOM = 0.2


# cuBLAS and cuDNN allocate their handles and workspaces outside PyTorch's caching allocator: on a
# full card they fail with a RuntimeError naming their status, not with torch.OutOfMemoryError.
_OUT_OF_MEMORY_MESSAGES = (
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDA error: out of memory",
    "MPS backend out of memory",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` means the device ran out of memory (and a smaller batch may fit)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(message in str(error) for message in _OUT_OF_MEMORY_MESSAGES)
    )


def out_of_memory_error(error: BaseException, device: torch.device | str | None, hint: memory_hints.MemoryHint,
                        *, even: str = "") -> DeviceError | None:
    """The one-line ``DeviceError`` for ``error`` if it means the device ran out of memory, else
    None. Every pipeline and the command line word it alike: the device (``None``: not known
    here), what was tried already (``even``), the first line of the library's message, and
    ``hint.device``, what uses less. The computer running out of its own memory is said as the
    command line says it, with ``hint.ram``."""
    if memory_hints.is_out_of_ram(error):
        return DeviceError(memory_hints.OUT_OF_RAM, hint.ram)
    if not is_out_of_memory(error):
        return None
    subject = "the device" if device is None else f"the device {device}"
    return DeviceError(f"{subject} ran out of memory{even} ({first_line(error, 100)})", hint.device)


Method = TypeVar("Method", bound=Callable[..., Any])


def reports_out_of_memory(hint: memory_hints.MemoryHint, *, even: str = "") -> Callable[[Method], Method]:
    """For a pipeline's public call: the device, or the computer, running out of memory raises
    ``DeviceError`` naming the pipeline's ``device`` and ``hint`` (see ``out_of_memory_error``),
    not the library's own error, which a script would have to know to catch. Under ``classmethod`` (``load``), where
    no device is chosen yet, the error names none."""

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except DeviceError as error:
                # Already reported by a call inside this one (translate calling translate_tensors):
                # passed on as it is, less the frames it came through, which hold this call's tensors.
                report = error.with_traceback(None)
            except (RuntimeError, MemoryError) as error:
                report = out_of_memory_error(error, getattr(self, "device", None), hint, even=even)
                if report is None:
                    raise
            # Raised outside the handler: the failed call's traceback holds its tensors, and a
            # script that catches this and goes on (on the CPU, say) needs that memory back. The
            # arguments go too: this frame stays in the new traceback.
            del args, kwargs
            raise report

        return call  # type: ignore[return-value]

    return decorate


class DeviceMemory:
    """Free memory and allocation costs on one CUDA device, within an optional budget in bytes."""

    def __init__(self, device: torch.device, budget: int | None = None):
        if device.type != "cuda":
            raise ValueError(f"DeviceMemory measures CUDA devices, not {device}")
        self.device = device = indexed(device)
        self.budget = budget
        if budget is not None:
            in_use = torch.cuda.memory_allocated(device)
            if budget < in_use:
                raise DeviceError(
                    f"--max-memory {budget / GIB:g} GB is less than the {in_use / GIB:.2f} GB already in use on the GPU",
                    "raise --max-memory",
                )
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), device)

    def available(self) -> int:
        """Bytes this process can still allocate: the device's free memory plus what its own
        allocator holds unused, capped by the budget."""
        free, _ = torch.cuda.mem_get_info(self.device)
        allocated = torch.cuda.memory_allocated(self.device)
        free += torch.cuda.memory_reserved(self.device) - allocated
        if self.budget is not None:
            free = min(free, self.budget - allocated)
        return max(int(free), 0)

    def cost(self, run: Callable[[], object]) -> int:
        """Bytes allocated at the peak of ``run()`` beyond what was allocated before it.

        Resets the device's peak-memory counter, so it is meant for load time, before any
        photo has been processed."""
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        run()
        torch.cuda.synchronize(self.device)
        return max(int(torch.cuda.max_memory_allocated(self.device) - before), 1)

    def fits(self, cost: int, most: int) -> int:
        """How many items of ``cost`` bytes fit in what is available now: 1 to ``most``."""
        return fitting(self.available(), cost, most)


# The MPS allocator's limit is a multiple of Metal's recommended working-set size: 1.7 unless set
# otherwise, and at most 2 (unified memory lets a process go past the recommended size).
MPS_MOST_FRACTION = 2.0


def limit_mps_memory(budget: int) -> None:
    """Let this process allocate at most ``budget`` bytes on MPS (there is no allocation data to
    size batches from there, but the cap holds). Unlike CUDA's fraction of the whole card, 1 is
    not the most MPS allows: capping there would lower a large budget below the default limit."""
    fraction = min(MPS_MOST_FRACTION, budget / torch.mps.recommended_max_memory())
    torch.mps.set_per_process_memory_fraction(float(fraction))


def fitting(available: int, cost: int, most: int) -> int:
    """Items of ``cost`` bytes that fit in ``available`` bytes less the headroom, 1 to ``most``."""
    return int(max(1, min(most, available * (1 - HEADROOM) // max(cost, 1))))


def budget_bytes(gigabytes: float | None) -> int | None:
    """``--max-memory`` in bytes; None or 0 means no budget beyond the device's free memory."""
    if not gigabytes:
        return None
    if gigabytes < 0:
        raise DeviceError(f"--max-memory {gigabytes:g} GB is negative", "give a size in GB, e.g. --max-memory 8")
    return int(gigabytes * GIB)
