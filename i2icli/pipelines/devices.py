"""Which device and dtype a pipeline runs on; shared by every pipeline."""

from __future__ import annotations

import torch

from i2icli.errors import DeviceError

AUTO = "auto"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(spec: str = AUTO) -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU; an unavailable request is an error.
    A CUDA device always comes with its index (see :func:`indexed`)."""
    if spec == AUTO:
        if torch.cuda.is_available():
            return indexed(torch.device("cuda"))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"unknown device {spec!r}", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {spec} was asked for but no CUDA GPU is available", "use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0",
                          "use --device cuda or another number")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps was asked for but MPS is not available", "use --device cpu")
    return indexed(device)


def indexed(device: torch.device) -> torch.device:
    """``cuda`` as ``cuda:N`` for the current GPU: some torch.cuda calls
    (``set_per_process_memory_fraction``) refuse a device without an index, and others would
    silently take GPU 0 for it."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device``: CUDA and MPS run it after the call that queued it
    returns, so a clock read without this measures the queueing, not the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def release_cached_memory(device: torch.device) -> None:
    """Hand the allocator's cached blocks back, so that a retry after running out of memory starts
    from what the device really has free (CUDA and MPS both keep freed blocks for reuse)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def cpu_has_native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def explicit_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for a precision the user named; a request this device cannot honour is an error.
    fp32 on CUDA also turns TF32 off, so that it is float32 arithmetic throughout."""
    if precision not in PRECISIONS or precision == AUTO:
        raise DeviceError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError("--fp16 needs a CUDA GPU", "use --bf16 or --fp32 on this device")
    if precision == "fp32" and device.type == "cuda":
        # fp32 means float32 arithmetic: PyTorch otherwise lets cuDNN run convolutions in TF32
        # (a 10-bit mantissa) on Ampere and later GPUs. Process-wide, as the whole run is fp32.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise DeviceError("--bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); this one would emulate it slowly",
                          "use --fp32")
    if precision == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        # torch.cuda.is_bf16_supported() says yes to these too: it counts emulation.
        raise DeviceError(f"--bf16 needs an Ampere or later GPU (compute capability 8.0); {device} is "
                          f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))} and would emulate it slowly",
                          "use --fp16")
    return _DTYPES[precision]
