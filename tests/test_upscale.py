"""Background upsampler: architecture detection, and parity with realesrgan.RealESRGANer."""

from __future__ import annotations

import copy
import sys

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import i2icli._compat  # noqa: F401  (before basicsr / realesrgan)
from basicsr.archs.rrdbnet_arch import RRDBNet
from realesrgan import RealESRGANer
from realesrgan.archs.srvgg_arch import SRVGGNetCompact

from i2icli.errors import I2IError
from i2icli.pipelines.upscale import BackgroundUpscaler, build_sr_model

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------ helpers


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Variance-preserving random weights, so a tiny untrained net paints a varied image.

    (basicsr's own init scales RRDB convs by 0.1, which makes the output nearly constant
    and a parity test nearly vacuous.)
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 4:
                p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[1] * 9) ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            else:  # PReLU slopes
                p.copy_(0.25 + torch.randn(p.shape, generator=gen) * 0.05)
        if isinstance(model, RRDBNet):
            model.conv_last.bias.fill_(0.5)
    return model.eval()


def tiny_rrdb(scale: int = 4, num_block: int = 1, seed: int = 0) -> RRDBNet:
    net = RRDBNet(3, 3, scale=scale, num_feat=8, num_block=num_block, num_grow_ch=4)
    return _randomise(net, seed)


def tiny_srvgg(scale: int = 4, seed: int = 0, act_type: str = "prelu") -> SRVGGNetCompact:
    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=2, upscale=scale, act_type=act_type)
    return _randomise(net, seed)


def photo(h: int = 40, w: int = 56, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth-ish random image (blurred noise), RGB / RGBA / gray."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    shape = (h, w) if channels == 0 else (h, w, channels)
    noise = rng.random(shape, dtype=np.float32)
    img = cv2.GaussianBlur(noise, (5, 5), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * top).astype(dtype)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A); gray unchanged. Its own inverse."""
    if img.ndim == 2:
        return img.copy()
    order = [2, 1, 0, 3][: img.shape[2]]
    return np.ascontiguousarray(img[:, :, order])


def reference(tmp_path, model: nn.Module, scale: int, image: np.ndarray, outscale=None, **options):
    """RealESRGANer.enhance on the BGR version of ``image``, flipped back to RGB."""
    path = tmp_path / f"ref_{id(model)}.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    upsampler = RealESRGANer(
        scale=scale,
        model_path=str(path),
        model=copy.deepcopy(model),
        half=False,
        device=CPU,
        **options,
    )
    out, _mode = upsampler.enhance(to_bgr(image), outscale=outscale)
    return to_bgr(out)


def assert_close(ours: np.ndarray, ref: np.ndarray, label: str, exact: bool = False) -> None:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
    diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
    level = 0 if exact else 257 if ours.dtype == np.uint16 else 1  # one 8-bit level
    print(f"\n[parity] {label}: max diff {diff.max()}, mean diff {diff.mean():.4g} "
          f"({np.count_nonzero(diff)} of {diff.size} values differ)")
    assert diff.max() <= level, f"{label}: max diff {diff.max()} > {level}"
    assert len(np.unique(ref)) > 20, "reference output too flat to prove anything"


# ------------------------------------------------------------------------------ build_sr_model


@pytest.mark.parametrize(
    "net, scale, cls",
    [
        (tiny_rrdb(4, num_block=2), 4, RRDBNet),
        (tiny_rrdb(2), 2, RRDBNet),
        (tiny_rrdb(1), 1, RRDBNet),
        (tiny_srvgg(4), 4, SRVGGNetCompact),
        (tiny_srvgg(2), 2, SRVGGNetCompact),
    ],
    ids=["rrdb-x4", "rrdb-x2", "rrdb-x1", "srvgg-x4", "srvgg-x2"],
)
def test_build_sr_model_detects_architecture(net, scale, cls):
    sd = net.state_dict()
    model, got_scale = build_sr_model(sd)
    assert type(model) is cls
    assert got_scale == scale
    assert not model.training
    got = model.state_dict()
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in sd.items()}
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    x = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


def test_build_sr_model_infers_hyper_parameters():
    net = RRDBNet(3, 3, scale=4, num_feat=12, num_block=3, num_grow_ch=6)
    model, _ = build_sr_model(net.state_dict())
    assert len(model.body) == 3
    assert model.conv_first.out_channels == 12
    assert model.body[0].rdb1.conv1.out_channels == 6
    srvgg, scale = build_sr_model(
        SRVGGNetCompact(3, 3, num_feat=10, num_conv=5, upscale=3).state_dict()
    )
    assert (srvgg.num_feat, srvgg.num_conv, srvgg.upscale, scale) == (10, 5, 3, 3)


def test_build_sr_model_unwraps_checkpoints():
    net = tiny_rrdb(2)
    wrapped = {"params": {}, "params_ema": net.state_dict()}
    assert build_sr_model(wrapped)[1] == 2
    prefixed = {f"module.{k}": v for k, v in net.state_dict().items()}
    assert build_sr_model(prefixed)[1] == 2


@pytest.mark.parametrize(
    "state_dict",
    [
        {},
        {"foo.weight": torch.zeros(3, 3)},
        [1, 2, 3],
        {"conv_first.weight": "not a tensor"},
        {"conv_first.weight": torch.zeros(8, 5, 3, 3)},  # 5 input channels
        {k: v for k, v in tiny_rrdb().state_dict().items() if k != "conv_last.weight"},
        {k: v for k, v in tiny_rrdb().state_dict().items() if k != "conv_hr.bias"},
        tiny_srvgg(act_type="relu").state_dict(),  # activation not inferable
        {"body.0.weight": torch.zeros(8, 3, 3, 3), "body.0.bias": torch.zeros(8)},
    ],
    ids=["empty", "foreign", "list", "non-tensor", "in-ch", "no-last", "missing-key",
         "srvgg-relu", "srvgg-short"],
)
def test_build_sr_model_rejects_garbage(state_dict):
    with pytest.raises(I2IError):
        build_sr_model(state_dict)


# ------------------------------------------------------------------------------ parity


PARITY_CASES = {
    # label: (net factory, image factory, upscaler / RealESRGANer options, outscale)
    "rrdb-x4 untiled": (lambda: tiny_rrdb(4), lambda: photo(), {}, None),
    "rrdb-x4 tiled 16 (5x4 grid, ragged)": (
        lambda: tiny_rrdb(4),
        lambda: photo(),
        {"tile": 16},
        None,
    ),
    "srvgg-x4 tiled 24 pad 6": (
        lambda: tiny_srvgg(4),
        lambda: photo(),
        {"tile": 24, "tile_pad": 6},
        None,
    ),
    "rrdb-x2 untiled 41x57 (mod pad)": (lambda: tiny_rrdb(2), lambda: photo(41, 57), {}, None),
    "rrdb-x2 tiled 16 41x57 pre_pad 0": (
        lambda: tiny_rrdb(2),
        lambda: photo(41, 57),
        {"tile": 16, "pre_pad": 0},
        None,
    ),
    "rrdb-x1 tiled 20 pad 8 (mod 4)": (
        lambda: tiny_rrdb(1),
        lambda: photo(41, 57),
        {"tile": 20, "tile_pad": 8},
        None,
    ),
    "srvgg-x4 RGBA": (lambda: tiny_srvgg(4), lambda: photo(channels=4), {}, None),
    "rrdb-x4 RGBA tiled 16": (lambda: tiny_rrdb(4), lambda: photo(channels=4), {"tile": 16}, None),
    "rrdb-x4 gray": (lambda: tiny_rrdb(4), lambda: photo(channels=0), {}, None),
    "rrdb-x4 16-bit RGB": (lambda: tiny_rrdb(4), lambda: photo(dtype=np.uint16), {}, None),
    "srvgg-x4 16-bit RGBA tiled": (
        lambda: tiny_srvgg(4),
        lambda: photo(channels=4, dtype=np.uint16),
        {"tile": 16},
        None,
    ),
    "rrdb-x4 outscale 1.5": (lambda: tiny_rrdb(4), lambda: photo(), {}, 1.5),
    "rrdb-x2 gray 16-bit outscale 3.5": (
        lambda: tiny_rrdb(2),
        lambda: photo(channels=0, dtype=np.uint16),
        {"tile": 16},
        3.5,
    ),
}


@pytest.mark.parametrize("label", list(PARITY_CASES))
def test_parity_with_realesrganer(tmp_path, label):
    make_net, make_image, options, outscale = PARITY_CASES[label]
    net = make_net()
    image = make_image()
    model, scale = build_sr_model(copy.deepcopy(net).state_dict())
    ours = BackgroundUpscaler(model, scale, CPU, **options).upscale(image, outscale)
    ref = reference(tmp_path, net, scale, image, outscale, **options)
    h, w = image.shape[:2]
    factor = scale if outscale is None else outscale
    assert ours.shape[:2] == (int(h * factor + 1e-6), int(w * factor + 1e-6))
    assert ours.shape[2:] == image.shape[2:]
    assert ours.dtype == image.dtype
    assert_close(ours, ref, label)
    # One tile per network call, as RealESRGANer runs them: the very same float maths, so
    # bit-exact. (Batched tiles hit other conv kernels: float noise, the odd rounding flip.)
    single = BackgroundUpscaler(model, scale, CPU, tile_batch=1, **options).upscale(image, outscale)
    assert_close(single, ref, label + " [tile_batch=1]", exact=True)


def test_tile_batch_does_not_change_pixels():
    model, scale = build_sr_model(tiny_rrdb(4).state_dict())
    image = photo()
    one = BackgroundUpscaler(model, scale, CPU, tile=16, tile_batch=1).upscale(image)
    many = BackgroundUpscaler(model, scale, CPU, tile=16, tile_batch=16).upscale(image)
    assert np.abs(one.astype(int) - many).max() <= 1


def test_single_channel_axis_kept():
    model, scale = build_sr_model(tiny_srvgg(4).state_dict())
    upscaler = BackgroundUpscaler(model, scale, CPU)
    gray = photo(channels=0)
    out = upscaler.upscale(gray[:, :, None], outscale=2)
    assert out.shape == (80, 112, 1)
    np.testing.assert_array_equal(out[:, :, 0], upscaler.upscale(gray, outscale=2))


def test_dark_16_bit_image_stays_16_bit():
    # RealESRGANer decides the bit depth from np.max(img) > 256; we go by the dtype.
    model, scale = build_sr_model(tiny_srvgg(4).state_dict())
    dark = (photo().astype(np.uint16) // 2).astype(np.uint16)  # max 127
    out = BackgroundUpscaler(model, scale, CPU).upscale(dark)
    assert out.dtype == np.uint16 and out.shape == (160, 224, 3)


def test_bfloat16_model_runs_and_stays_close():
    model, scale = build_sr_model(tiny_srvgg(4).state_dict())
    image = photo()
    full = BackgroundUpscaler(copy.deepcopy(model), scale, CPU, tile=16).upscale(image)
    low = BackgroundUpscaler(model, scale, CPU, dtype=torch.bfloat16, tile=16).upscale(image)
    assert low.dtype == np.uint8 and low.shape == full.shape
    assert np.abs(low.astype(int) - full).mean() < 3


def test_rejects_bad_input():
    model, scale = build_sr_model(tiny_srvgg(4).state_dict())
    upscaler = BackgroundUpscaler(model, scale, CPU)
    with pytest.raises(I2IError):
        upscaler.upscale(photo().astype(np.float32))
    with pytest.raises(I2IError):
        upscaler.upscale(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(I2IError):
        upscaler.upscale(photo(), outscale=-1)
    with pytest.raises(I2IError):
        BackgroundUpscaler(model, scale, CPU, tile_batch=0)


def test_no_per_image_state_on_self():
    model, scale = build_sr_model(tiny_srvgg(4).state_dict())
    upscaler = BackgroundUpscaler(model, scale, CPU, tile=16)
    before = dict(vars(upscaler))
    upscaler.upscale(photo(channels=4))
    assert vars(upscaler) == before


# ------------------------------------------------------------------------------ failures


class _Flaky(nn.Module):
    """Wraps a net; raises ``error`` on call number ``fail_on`` (1-based)."""

    def __init__(self, net: nn.Module, fail_on: int, error: BaseException):
        super().__init__()
        self.net, self.fail_on, self.error, self.calls = net, fail_on, error, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_on:
            raise self.error
        return self.net(x)


def test_tile_failure_propagates():
    net, scale = build_sr_model(tiny_rrdb(4).state_dict())
    flaky = _Flaky(net, fail_on=2, error=RuntimeError("cuDNN exploded"))
    upscaler = BackgroundUpscaler(flaky, scale, CPU, tile=16, tile_batch=1)
    with pytest.raises(RuntimeError, match="cuDNN exploded") as info:
        upscaler.upscale(photo())
    assert flaky.calls == 2
    if sys.version_info >= (3, 11):  # exception notes
        assert any("tile" in note for note in info.value.__notes__)


class _SmallMemory(nn.Module):
    """Pretends to be a GPU that fits one tile of at most ``limit`` pixels a side."""

    def __init__(self, net: nn.Module, limit: int, error: Exception | None = None):
        super().__init__()
        self.net, self.limit, self.shapes = net, limit, []
        self.error = error or torch.OutOfMemoryError("CUDA out of memory (simulated)")

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        if x.shape[0] > 1 or max(x.shape[2:]) > self.limit:
            raise self.error
        return self.net(x)


@pytest.mark.parametrize("error", [None, RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")])
def test_oom_retries_with_smaller_batch_then_tiles(error):
    net, scale = build_sr_model(tiny_rrdb(4).state_dict())
    image = photo()  # padded to 50x66: whole image -> tile 32 -> tile 16 (36 px with pad)
    small = _SmallMemory(net, limit=40, error=error)
    out = BackgroundUpscaler(small, scale, CPU, tile=0, tile_batch=4, min_tile=8).upscale(image)
    # whole image, then tile 32 (first tile 42 px), then tile 16 in batches of 4, 2, then 1.
    assert small.shapes[0] == (1, 3, 50, 66)
    assert small.shapes[-1][0] == 1
    expected = BackgroundUpscaler(net, scale, CPU, tile=16, tile_batch=1).upscale(image)
    np.testing.assert_array_equal(out, expected)


def test_oom_propagates_below_min_tile():
    net, scale = build_sr_model(tiny_rrdb(4).state_dict())
    small = _SmallMemory(net, limit=40)
    upscaler = BackgroundUpscaler(small, scale, CPU, tile=0, min_tile=32)
    with pytest.raises(torch.OutOfMemoryError):
        upscaler.upscale(photo())
    no_retry = BackgroundUpscaler(small, scale, CPU, tile=0, oom_retry=False)
    small.shapes.clear()
    with pytest.raises(torch.OutOfMemoryError):
        no_retry.upscale(photo())
    assert len(small.shapes) == 1


def test_tiles_rounded_for_pixel_unshuffle():
    # x1 RRDBNet pixel-unshuffles by 4: RealESRGANer crashes on tile_pad=10 (tiles of odd
    # multiples of 2); we round tile_pad up to 12 and tile down to a multiple of 4.
    model, scale = build_sr_model(tiny_rrdb(1).state_dict())
    image = photo(41, 57)
    odd = BackgroundUpscaler(model, scale, CPU, tile=22, tile_pad=10).upscale(image)
    even = BackgroundUpscaler(model, scale, CPU, tile=20, tile_pad=12).upscale(image)
    np.testing.assert_array_equal(odd, even)
