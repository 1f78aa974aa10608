"""Every pipeline on CUDA and MPS: the same answers as on the CPU, the precisions each device
uses by default, and, on CUDA, the memory budget against the real allocator.

These run only where such a device is present (they are skipped elsewhere, CI included).
``I2I_TEST_DEVICES=cuda:1`` (comma-separated) picks the devices instead of all that are found;
``cpu`` is accepted too, which checks these tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS, CommandRunner
from i2icli.cli.app import app
from i2icli.errors import DeviceError
from i2icli.imageio import Picture, read_image
from i2icli.pipelines.devices import indexed
from i2icli.pipelines.memory import GIB
from i2icli.pipelines.restore import RestorePipeline, RestoreSettings

CPU = torch.device("cpu")
runner = CommandRunner()


def _devices() -> list[str]:
    chosen = os.environ.get("I2I_TEST_DEVICES", "").strip()
    if chosen:
        return [name.strip() for name in chosen.split(",") if name.strip()]
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


DEVICES = _devices()
pytestmark = pytest.mark.skipif(not DEVICES, reason="no CUDA or MPS device (set I2I_TEST_DEVICES to choose one)")
on_each_device = pytest.mark.parametrize("device", DEVICES or ["none"])
CUDA_DEVICES = [name for name in DEVICES if name.startswith("cuda")]
on_cuda = pytest.mark.parametrize(
    "device", CUDA_DEVICES or [pytest.param("none", marks=pytest.mark.skip(reason="no CUDA device"))]
)


@pytest.fixture(autouse=True)
def _release_the_device():
    """No test's budget or cached blocks reach the next one."""
    yield
    for name in CUDA_DEVICES:
        torch.cuda.set_per_process_memory_fraction(1.0, indexed(torch.device(name)))
        torch.cuda.empty_cache()
    if any(torch.device(name).type == "mps" for name in DEVICES):
        # `restore --max-memory` lowers the MPS allocator's limit for the whole process: back to the
        # limit it starts with (its high watermark ratio, 1.7 unless the environment sets one).
        torch.mps.set_per_process_memory_fraction(float(os.environ.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "1.7")))
        torch.mps.empty_cache()


@pytest.fixture(autouse=True)
def _float32_means_float32():
    """Comparisons with the CPU at float32 tolerances need float32 arithmetic: without this,
    cuDNN convolutions run in TF32 on Ampere and later (unless an --fp32 pipeline earlier in the
    run happened to turn it off, which would make the result depend on test order)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _levels(a: Picture, b: Picture) -> np.ndarray:
    return np.abs(a.rgb.astype(np.int32) - b.rgb.astype(np.int32))


# --------------------------------------------------------------------------- restore


def _restore(device: str, precision: str = "fp32", **load) -> RestorePipeline:
    return RestorePipeline.load(device=device, precision=precision, settings=RestoreSettings(keep_faces=True), **load)


@on_each_device
def test_restore_gives_the_cpu_result(tiny_env, landmarks_detector, device):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    photo = read_image(EXAMPLES / "old_photo.jpg")
    expected = _restore("cpu").restore(photo)
    result = _restore(device).restore(photo)
    assert result.face_count == expected.face_count == 1
    # fp32 turns TF32 off, so what differs is the order of float32 sums in other kernels.
    np.testing.assert_allclose(result.faces[0].restored, expected.faces[0].restored, atol=1e-2)
    difference = _levels(result.picture, expected.picture)
    print(f"{device} fp32 vs cpu: max {difference.max()} mean {difference.mean():.3f} levels")
    assert difference.mean() < 0.5


@on_each_device
def test_restore_in_the_devices_default_precision_stays_within_a_level(tiny_env, landmarks_detector, device):
    landmarks_detector([OLD_PHOTO_LANDMARKS])
    photo = read_image(EXAMPLES / "old_photo.jpg")
    exact = _restore(device).restore(photo)
    fast_pipeline = _restore(device, precision="auto")
    if torch.device(device).type == "cuda":
        assert fast_pipeline.dtype == torch.float16 and fast_pipeline.upscaler.dtype == torch.float16
    if fast_pipeline.dtype == torch.float32:
        pytest.skip(f"{device}'s default precision is fp32: nothing to compare")
    difference = _levels(fast_pipeline.restore(photo).picture, exact.picture)
    print(f"{device} {fast_pipeline.dtype} vs fp32: max {difference.max()} mean {difference.mean():.3f} levels")
    assert difference.mean() < 1.0


@on_each_device
def test_restore_command_runs_a_folder_on_the_device(tiny_env, tmp_path, device):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        (photos / f"p{index}.jpg").write_bytes((EXAMPLES / "old_photo.jpg").read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    result = runner.invoke(app, ["restore", str(photos), "-o", str(tmp_path / "out"), "--device", device,
                                 "--max-memory", "4", "--json"])
    assert result.exit_code == 1  # the broken file, and only it, failed
    summary = json.loads(result.stdout)
    status = {Path(record["input"]).name: record["status"] for record in summary["results"]}
    assert status == {"broken.jpg": "failed", "p0.jpg": "ok", "p1.jpg": "ok", "p2.jpg": "ok"}
    for index in range(3):
        assert read_image(tmp_path / "out" / f"p{index}.jpg").width == 682


@on_cuda
def test_load_measures_what_one_face_and_one_tile_allocate(tiny_env, device):
    pipeline = _restore(device, tile=128)
    face_input = 3 * 512 * 512 * 4  # the probe's own input is part of its cost, as a real batch's is
    assert pipeline.memory is not None and pipeline.face_cost > face_input
    side = pipeline.upscaler.input_side(128)
    assert pipeline.tile_cost > 3 * side * side * 4
    print(f"one face {pipeline.face_cost / 2**20:.1f} MB, one 128 px tile {pipeline.tile_cost / 2**20:.1f} MB")


@on_cuda
def test_a_budget_is_enforced_by_the_allocator(tiny_env, device):
    torch.cuda.empty_cache()
    in_use = torch.cuda.memory_allocated(torch.device(device))
    budget = (in_use + 512 * 2**20) / GIB
    pipeline = _restore(device, max_memory=budget)
    assert pipeline.memory.available() <= 512 * 2**20
    with pytest.raises(torch.OutOfMemoryError):
        torch.empty(2 * GIB, dtype=torch.uint8, device=device)


@on_cuda
def test_a_budget_below_what_is_in_use_is_refused(tiny_env, device):
    held = torch.zeros(64 * 2**20, dtype=torch.uint8, device=device)  # 64 MB in use during the load
    with pytest.raises(DeviceError, match="is less than the .* GB already in use"):
        _restore(device, max_memory=0.01)
    del held


@on_cuda
def test_a_real_out_of_memory_retries_with_smaller_tiles(tiny_env, landmarks_detector, device, caplog):
    """A whole-image background pass of a 2048 px photo needs well over 1 GB even with the tiny
    network; a 256 MB budget makes the allocator refuse it, and the tiles shrink until one fits."""
    landmarks_detector([])
    rng = np.random.default_rng(0)
    photo = Picture(np.repeat(np.repeat(rng.integers(0, 256, (128, 128, 3), np.uint8), 16, 0), 16, 1))
    unlimited = _restore(device, tile=0, parser=None).restore(photo).picture
    torch.cuda.empty_cache()
    budget = (torch.cuda.memory_allocated(torch.device(device)) + 256 * 2**20) / GIB
    pipeline = _restore(device, tile=0, parser=None, max_memory=budget)
    with caplog.at_level(logging.WARNING):
        result = pipeline.restore(photo).picture
    assert "out of device memory with the whole image in one pass; retrying with tile" in caplog.text
    assert (result.width, result.height) == (unlimited.width, unlimited.height) == (4096, 4096)
    difference = _levels(result, unlimited)
    print(f"tiled after out-of-memory vs one pass: max {difference.max()} mean {difference.mean():.3f} levels")
    assert difference.mean() < 0.05 and difference.max() <= 2  # the tiny network's context fits in tile_pad


# --------------------------------------------------------------------------- exemplar


@on_each_device
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_correspondence_finds_the_identity_in_each_precision(device, precision):
    """The same image as input and exemplar warps to itself at every level on the device too,
    with matching kept in fp32 under fp16/bf16 autocast."""
    from test_cocosnet import TWINS, _matching_twins

    from i2icli.archs.cocosnet2 import propagation_orders
    from i2icli.pipelines.exemplar import pick_exemplar_dtype

    try:
        dtype = pick_exemplar_dtype(precision, torch.device(device))
    except DeviceError as error:
        pytest.skip(error.message)
    corr = _matching_twins(TWINS).to(device)
    g = torch.Generator().manual_seed(3)
    semantic = torch.rand(1, 20, 64, 64, generator=g).to(device)
    photo = (torch.rand(1, 3, 64, 64, generator=g) * 2 - 1).to(device)
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        result = corr(semantic, photo, semantic, propagation_orders(0, TWINS.iterations))
    for warp in result.warps:
        factor = 64 // warp.shape[-1]
        pooled = torch.nn.functional.avg_pool2d(photo, factor) if factor > 1 else photo
        assert warp.dtype == torch.float32
        torch.testing.assert_close(warp, pooled, rtol=0, atol=5e-3)
    assert torch.equal(result.indices[-1][0, :, 0].cpu(), torch.arange(64 * 64))


@on_each_device
def test_exemplar_pipeline_on_the_device_is_close_to_the_cpu(device):
    from cocosnet_checkpoints import official_state_dicts

    from i2icli.pipelines.exemplar import ExemplarPipeline, ExemplarSettings, build_cocosnet
    from i2icli.semantics.inputs import Semantics

    corr_state, gen_state = official_state_dicts()
    settings = ExemplarSettings(size=64, iterations=2)
    rng = np.random.default_rng(1)
    exemplar = Picture(rng.integers(0, 256, (96, 64, 3), np.uint8))
    channels = rng.random((20, 64, 64), dtype=np.float32)
    semantic = Semantics(channels=channels, kind="label", source=Path("label.png"))
    outputs = {}
    for name in ("cpu", device):
        corr, gen = build_cocosnet(corr_state, gen_state, iterations=2)
        pipeline = ExemplarPipeline(corr, gen, device=torch.device(name), settings=settings)
        outputs[name] = pipeline.translate(semantic, exemplar, semantic)
    coarse = _levels(outputs[device].warps[0], outputs["cpu"].warps[0])
    assert coarse.max() <= 1  # the dense coarsest level has no top-k to flip
    difference = _levels(outputs[device].picture, outputs["cpu"].picture)
    print(f"exemplar {device} vs cpu: max {difference.max()} mean {difference.mean():.3f} levels")
    # Finer levels keep the top 16 of near-tied random-weight scores, which other summation
    # orders may reorder; most of the image must still agree.
    assert (difference <= 2).mean() > 0.95


# --------------------------------------------------------------------------- paired and translate-lr


@on_each_device
def test_paired_and_translate_lr_generators_give_the_cpu_result(device):
    from test_paired import TINY as GRIT_TINY
    from test_paired import label_batch, randomised
    from test_translate_lr import TINY as LR_TINY
    from test_translate_lr import smooth_images

    from i2icli.archs.lr_conditioned import LRConditionedGenerator

    grit = randomised(GRIT_TINY)
    labels = label_batch(2)
    style = grit.mean_style(2)
    expected = grit(labels, style, torch.Generator().manual_seed(5)).image
    with torch.no_grad():
        on_device = grit.to(device)(labels.to(device), style.to(device), torch.Generator().manual_seed(5)).image
    torch.testing.assert_close(on_device.cpu(), expected.detach(), atol=1e-4, rtol=1e-4)

    torch.manual_seed(0)
    lr_generator = LRConditionedGenerator(LR_TINY).eval()
    sources, targets = smooth_images(2, 32, 0), torch.nn.functional.avg_pool2d(smooth_images(2, 32, 1), 4)
    with torch.no_grad():
        expected = lr_generator(sources, targets)
        on_device = lr_generator.to(device)(sources.to(device), targets.to(device))
    torch.testing.assert_close(on_device.cpu(), expected, atol=1e-4, rtol=1e-4)


@on_each_device
def test_batches_reach_the_device_intact(device):
    """The training loop lets each CPU batch go as soon as it is moved: the copy must not read it
    afterwards (an asynchronous copy to MPS does, and gets whatever took the memory's place)."""
    from i2icli.training.loop import move_to

    expected = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(k)) for k in range(8)]
    moved = [move_to({"photo": batch.clone()}, torch.device(device))["photo"] for batch in expected]
    for got, want in zip(moved, expected):
        assert torch.equal(got.cpu(), want)


@on_each_device
def test_training_on_the_device_gives_checkpoints_the_cpu_loads(tmp_path, device):
    from test_paired import TINY_ARGS as GRIT_ARGS
    from test_paired import write_pairs
    from test_translate_lr import TINY_ARGS as LR_ARGS
    from test_translate_lr import write_photos

    write_pairs(tmp_path / "pairs", 6)
    write_photos(tmp_path / "photos", 6)
    common = ["--steps", "2", "--batch-size", "2", "--held-out", "2", "--workers", "0", "--device", device]
    paired = runner.invoke(app, ["train", "paired", str(tmp_path / "pairs"), "--out", str(tmp_path / "grit"),
                                 *GRIT_ARGS, *common])
    assert paired.exit_code == 0, paired.output
    lr = runner.invoke(app, ["train", "translate-lr", str(tmp_path / "photos"), "--out", str(tmp_path / "lr"),
                             *LR_ARGS, *common])
    assert lr.exit_code == 0, lr.output
    label = sorted((tmp_path / "pairs" / "labels").iterdir())[0]
    translated = runner.invoke(app, ["paired", str(label), "-c", str(tmp_path / "grit"), "-o", str(tmp_path / "g.png"),
                                     "--device", "cpu"])
    assert translated.exit_code == 0, translated.output
    photos = sorted((tmp_path / "photos").iterdir())
    translated = runner.invoke(app, ["translate-lr", str(photos[0]), str(photos[1]), "-c", str(tmp_path / "lr"),
                                     "-o", str(tmp_path / "t.png"), "--device", "cpu"])
    assert translated.exit_code == 0, translated.output
