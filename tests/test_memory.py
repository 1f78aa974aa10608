"""GPU memory budgets: the arithmetic, and how the restore pipeline sizes its batches and tiles from
it and recovers from running out. CUDA itself is replaced by stand-ins, so this runs on a CPU."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS
from i2icli.errors import DeviceError
from i2icli.imageio import read_image
from i2icli.pipelines.memory import GIB, DeviceMemory, budget_bytes, fitting, is_out_of_memory, limit_mps_memory
from i2icli.pipelines.restore import RestorePipeline, RestoreSettings

CUDA = torch.device("cuda")


class FakeCuda:
    """The torch.cuda calls DeviceMemory makes, on a pretend 80 GB card."""

    def __init__(self, monkeypatch, *, free: int, allocated: int, reserved: int, total: int = 80 * GIB):
        self.free, self.allocated, self.reserved, self.total = free, allocated, reserved, total
        self.fraction = None
        self.peak = allocated
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": total})())
        monkeypatch.setattr(cuda, "set_per_process_memory_fraction", self._set_fraction)
        monkeypatch.setattr(cuda, "mem_get_info", lambda device: (self.free, self.total))
        monkeypatch.setattr(cuda, "memory_allocated", lambda device: self.allocated)
        monkeypatch.setattr(cuda, "memory_reserved", lambda device: self.reserved)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda device: self.peak)
        monkeypatch.setattr(cuda, "reset_peak_memory_stats", self._reset_peak)
        monkeypatch.setattr(cuda, "synchronize", lambda device: None)
        monkeypatch.setattr(cuda, "current_device", lambda: 0)

    def _set_fraction(self, fraction, device):
        # As torch's own: a device without an index is refused, not taken as the current one.
        if not isinstance(device, int) and torch.device(device).index is None:
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
        self.fraction = fraction

    def _reset_peak(self, device):
        self.peak = self.allocated


def test_free_memory_counts_the_allocators_own_cache(monkeypatch):
    FakeCuda(monkeypatch, free=10 * GIB, allocated=2 * GIB, reserved=5 * GIB)
    # 10 GB free on the card, plus 3 GB this process's allocator holds but does not use.
    assert DeviceMemory(CUDA).available() == 13 * GIB


def test_a_budget_caps_the_allocator_and_what_is_available(monkeypatch):
    cuda = FakeCuda(monkeypatch, free=70 * GIB, allocated=1 * GIB, reserved=1 * GIB)
    memory = DeviceMemory(CUDA, budget=8 * GIB)
    assert cuda.fraction == pytest.approx(8 / 80)
    assert memory.available() == 7 * GIB
    cuda.allocated = 9 * GIB  # over the budget (another stage's tensors): nothing left, not negative
    assert memory.available() == 0


def test_a_budget_below_what_is_already_used_is_refused(monkeypatch):
    FakeCuda(monkeypatch, free=70 * GIB, allocated=3 * GIB, reserved=3 * GIB)
    with pytest.raises(DeviceError, match="--max-memory 2 GB is less than the 3.00 GB already in use"):
        DeviceMemory(CUDA, budget=2 * GIB)


def test_cost_is_the_peak_above_what_was_allocated(monkeypatch):
    cuda = FakeCuda(monkeypatch, free=70 * GIB, allocated=1 * GIB, reserved=1 * GIB)
    cuda.peak = 50 * GIB  # an earlier peak must not count

    def forward():
        cuda.peak = cuda.allocated + 300 * 2**20

    assert DeviceMemory(CUDA).cost(forward) == 300 * 2**20


def test_an_mps_budget_is_the_limit_it_names(monkeypatch):
    # The MPS limit is a multiple of Metal's recommended size, 1.7 by default and up to 2: a budget
    # above the recommended size must not be cut down to it (below the limit with no budget at all).
    fractions = []
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 10 * GIB)
    monkeypatch.setattr(torch.mps, "set_per_process_memory_fraction", fractions.append)
    for gigabytes in (4, 12, 50):
        limit_mps_memory(budget_bytes(gigabytes))
    assert fractions == [pytest.approx(0.4), pytest.approx(1.2), 2.0]
    assert all(isinstance(fraction, float) for fraction in fractions)  # torch refuses anything else


def test_library_allocation_failures_count_as_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    # cuBLAS/cuDNN allocate outside PyTorch's allocator and fail with their own status.
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [64, 3, 3, 3], expected input[1, 4, 8, 8]"))
    assert not is_out_of_memory(ValueError("CUDA error: out of memory"))


def test_fitting_keeps_headroom_and_bounds():
    assert fitting(1000, 100, 16) == 8  # 20 % kept back
    assert fitting(10**9, 100, 16) == 16
    assert fitting(50, 100, 16) == 1  # never zero: the retry on out-of-memory takes it from there
    assert budget_bytes(None) is None and budget_bytes(0) is None
    assert budget_bytes(8) == 8 * GIB
    with pytest.raises(DeviceError):
        budget_bytes(-1)


class FakeMemory:
    """DeviceMemory's interface with chosen numbers: each cost() runs the probe and returns the next cost."""

    def __init__(self, available: int, costs: list[int]):
        self.room, self.costs, self.probes = available, list(costs), 0

    def available(self) -> int:
        return self.room

    def cost(self, run) -> int:
        self.probes += 1
        run()
        cost = self.costs.pop(0)
        if cost < 0:
            raise torch.OutOfMemoryError("probe ran out of memory")
        return cost

    def fits(self, cost: int, most: int) -> int:
        return fitting(self.room, cost, most)


def _pipeline(tile: int = 64, *, faces_only: bool = False, parser: bool = True, **settings) -> RestorePipeline:
    """The tiny pipeline; ``faces_only`` leaves out the face parser (the one network that is full
    size even here) and the background network, for tests about face batches alone, and
    ``parser=False`` the parser alone, for tests about tiles."""
    models = {"parser": None, "bg_model": None} if faces_only else {} if parser else {"parser": None}
    return RestorePipeline.load(device="cpu", precision="fp32", tile=tile, settings=RestoreSettings(**settings), **models)


def _six_faces(landmarks_detector) -> None:
    shifts = [np.array([dx, dy], np.float32) for dx in (-60, 0, 60) for dy in (-30, 30)]
    landmarks_detector([OLD_PHOTO_LANDMARKS + shift for shift in shifts])


def _count_faces(pipeline: RestorePipeline, fail_above: int | None = None,
                 error: Exception = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) -> list[int]:
    sizes = []
    forward = pipeline.face_model.forward

    def counted(x):
        sizes.append(len(x))
        if fail_above is not None and len(x) > fail_above:
            raise error
        return forward(x)

    pipeline.face_model.forward = counted
    return sizes


def test_face_and_tile_batches_are_sized_from_the_memory_available(tiny_env, landmarks_detector):
    _six_faces(landmarks_detector)
    pipeline = _pipeline(keep_faces=False)
    pipeline.fit_memory(FakeMemory(available=1000, costs=[120, 150, 90]))
    assert (pipeline.face_cost, pipeline.tile_cost, pipeline.upscaler.tile) == (150, 90, 64)  # the larger face probe
    pipeline.parser = None  # probed above; the batches below do not depend on it, and it is the slow network
    sizes = _count_faces(pipeline)
    batches = []
    upscale = pipeline.upscaler.upscale
    pipeline.upscaler.upscale = lambda image, **kw: batches.append(kw["tile_batch"]) or upscale(image, **kw)
    result = pipeline.restore(read_image(EXAMPLES / "old_photo.jpg"))
    assert sizes == [5, 1] and result.face_count == 6  # 800 // 150 faces per call
    assert batches == [8]  # 800 // 90 tiles per call


def test_tiles_shrink_until_one_fits(tiny_env, caplog):
    pipeline = _pipeline(tile=256, parser=False)
    upscaler = pipeline.upscaler
    # The face probe; then 256 px runs out of memory, 128 px needs more than 800 (1000 less the
    # headroom), 64 px fits.
    memory = FakeMemory(available=1000, costs=[100, -1, 900, 700])
    with caplog.at_level(logging.WARNING):
        pipeline.fit_memory(memory)
    assert upscaler.tile == 64 and pipeline.tile_cost == 700 and memory.probes == 4
    assert "256 px background tile does not fit" in caplog.text and "128 px background tile does not fit" in caplog.text
    assert upscaler.smaller_tile(64) is None  # min_tile: a tile that still does not fit is left to the retries


def test_a_face_that_cannot_fit_is_one_clear_error(tiny_env):
    pipeline = _pipeline()
    with pytest.raises(DeviceError, match="one face does not fit in the 0.00 GB of GPU memory available"):
        pipeline.fit_memory(FakeMemory(available=1000, costs=[-1]))


def test_out_of_memory_halves_the_face_batch_and_gives_the_same_faces(tiny_env, landmarks_detector, caplog):
    _six_faces(landmarks_detector)
    photo = read_image(EXAMPLES / "old_photo.jpg")
    one_by_one = _pipeline(face_batch=1, keep_faces=True, faces_only=True).restore(photo)
    pipeline = _pipeline(face_batch=4, keep_faces=True, faces_only=True)
    sizes = _count_faces(pipeline, fail_above=2)
    with caplog.at_level(logging.WARNING):
        retried = pipeline.restore(photo)
    assert sizes == [4, 2, 2, 2]  # the first batch of 4 fails and runs as 2 + 2; then the last 2 faces
    assert "retrying with 2" in caplog.text
    for a, b in zip(retried.faces, one_by_one.faces):
        np.testing.assert_allclose(a.restored, b.restored, atol=1e-5)
    difference = np.abs(retried.picture.rgb.astype(int) - one_by_one.picture.rgb.astype(int))
    assert difference.max() <= 1


def test_a_cublas_allocation_failure_is_retried_and_other_errors_are_not(tiny_env, landmarks_detector):
    _six_faces(landmarks_detector)
    pipeline = _pipeline(face_batch=4, faces_only=True)
    sizes = _count_faces(pipeline, fail_above=2, error=RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED"))
    assert pipeline.restore(read_image(EXAMPLES / "old_photo.jpg")).face_count == 6
    assert sizes == [4, 2, 2, 2]
    broken = _pipeline(face_batch=4, faces_only=True)
    sizes = _count_faces(broken, fail_above=2, error=RuntimeError("expected input[4, 4, 512, 512] to have 3 channels"))
    with pytest.raises(RuntimeError, match="to have 3 channels"):  # a bug, not memory: never retried or renamed
        broken.restore(read_image(EXAMPLES / "old_photo.jpg"))
    assert sizes == [4]


def test_out_of_memory_with_one_face_is_a_device_error(tiny_env, landmarks_detector):
    _six_faces(landmarks_detector)
    pipeline = _pipeline(face_batch=2)
    _count_faces(pipeline, fail_above=0)
    with pytest.raises(DeviceError, match="the device cpu ran out of memory even with the smallest tiles and one face at a time"):
        pipeline.restore(read_image(EXAMPLES / "old_photo.jpg"))


def test_cached_blocks_are_handed_back_on_cuda_and_mps(monkeypatch):
    """After running out of memory, the retry needs the failed attempt's blocks back: MPS's
    allocator keeps them cached as CUDA's does, and only CUDA's were released."""
    from i2icli.pipelines.devices import release_cached_memory

    released = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: released.append("cuda"))
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: released.append("mps"))
    for name in ("cpu", "cuda:1", "mps"):
        release_cached_memory(torch.device(name))
    assert released == ["cuda", "mps"]


def test_channels_last_is_not_used_on_mps():
    """MPS convolutions have returned wrong results, without an error, on channels-last views
    (pytorch/pytorch#180984), and nothing was gained there: the weights keep their layout."""
    from torch import nn

    from i2icli.pipelines.tuning import use_channels_last

    for name, expected in (("cpu", True), ("cuda", True), ("mps", False)):
        conv = use_channels_last(nn.Sequential(nn.Conv2d(3, 8, 3)), torch.device(name))[0]
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected
