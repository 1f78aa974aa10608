"""Background upsampler of the restore pipeline: Real-ESRGAN super-resolution of a whole photo.

The networks are the libraries' own (``basicsr``'s ``RRDBNet`` for RealESRGAN_x4plus /
RealESRGAN_x2plus, ``realesrgan``'s ``SRVGGNetCompact`` for realesr-general-x4v3);
:func:`build_sr_model` picks one and its hyper-parameters from a checkpoint's key names and
tensor shapes, the way spandrel does.

:class:`BackgroundUpscaler` reproduces ``realesrgan.RealESRGANer.enhance`` (realesrgan 0.3.0):
reflect pre-padding on the bottom/right, reflect mod-padding for x2 / x1 models, the same tile
grid and crop maths, the alpha channel run through the network as a 3-channel gray image and
folded back with the RGB->gray weights, grayscale input replicated to RGB and folded back the
same way, 16-bit input scaled by 65535, clamp-then-round quantisation, and a cv2 LANCZOS4 resize
of the result for a non-native ``outscale``. On the same weights and image the outputs are
bit-identical with ``tile_batch=1``; batching tiles selects other conv kernels, whose float noise
flips the odd value by one level (the tests check both against ``RealESRGANer`` itself).

Defaults: ``tile=0, tile_pad=10, pre_pad=10`` are ``RealESRGANer``'s constructor defaults.
GFPGAN's ``inference_gfpgan.py`` builds its background upsampler differently --
``RealESRGANer(scale=2, model=RRDBNet(..., scale=2), model_path=RealESRGAN_x2plus.pth,
tile=args.bg_tile (default 400), tile_pad=10, pre_pad=0, half=True)`` -- so a caller that wants
GFPGAN's behaviour passes ``tile=400, pre_pad=0, dtype=torch.float16``.

Deliberate differences from ``RealESRGANer`` (apart from that batching noise, only the last two
can change the result of a run that ``RealESRGANer`` completes):

* Tiles are cut from the image on the CPU and sent to the device in batches; the whole image is
  never moved to the device (``RealESRGANer`` puts the full padded image *and* a full-size float
  output canvas on the GPU, which is what runs out of memory on big photos even with tiling).
  Each output tile is quantised straight into a preallocated CPU array of the output dtype, so
  no full-size float canvas exists anywhere for tiled runs.
* A failing tile raises. ``RealESRGANer.tile_process`` catches ``RuntimeError`` (CUDA OOM
  included), prints it, and carries on: on the first tile it then crashes on an unbound name,
  on later ones it pastes the *previous* tile's output in its place (or fails on a shape
  mismatch), a wrong patch in the photo that nobody is told about.
* Tiles lying entirely in the pre/mod padding (which is cut off afterwards) are not run.
* x2 / x1 models: ``tile`` is rounded down and ``tile_pad`` up to a multiple of 2 / 4 (the
  pixel-unshuffle factor); ``RealESRGANer`` crashes on a grid with other values.
* On ``torch.OutOfMemoryError`` the whole image is retried with a smaller batch, then with
  halved tiles down to ``min_tile``; after that the ``OutOfMemoryError`` itself propagates.
* The bit depth comes from the dtype (uint16 -> 65535), not from ``np.max(img) > 256``, which
  turns a dark 16-bit image into a clipped 8-bit one.
* The size for a non-native ``outscale`` is ``int(H * outscale)`` as in RealESRGANer and GFPGAN's
  paste-back (so both agree on the canvas), but with a tolerance for float error: 10 px at
  ``outscale=3 * 0.7`` (2.0999999999999996) give 21 px, not 20. See ``scaled_size``.

The class keeps no per-image state on ``self``, so one instance can serve several threads.
"""

from __future__ import annotations

import logging
import math
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import nn

import i2icli._compat  # noqa: F401  (before anything from basicsr / realesrgan)
from i2icli.errors import I2IError, WeightsError
from i2icli.pipelines.devices import release_cached_memory
from i2icli.pipelines.memory import is_out_of_memory

__all__ = ["BackgroundUpscaler", "build_sr_model"]

log = logging.getLogger(__name__)

# RealESRGANer pads x2 models to a multiple of 2 and x1 models to a multiple of 4, because
# RRDBNet pixel-unshuffles their input by that factor.
_MOD_SCALE = {2: 2, 1: 4}

_BODY_INDEX = re.compile(r"^body\.(\d+)\.")


# --------------------------------------------------------------------------------------------
# Architecture detection
# --------------------------------------------------------------------------------------------


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """Size of an image scaled by ``factor``: truncated like the reference tools, but a product
    that float error put a hair below an integer (2.0999999999999996 * 10) still counts as it."""
    return int(height * factor + 1e-6), int(width * factor + 1e-6)


def build_sr_model(state_dict: Mapping[str, torch.Tensor]) -> tuple[nn.Module, int]:
    """Build the Real-ESRGAN network that ``state_dict`` belongs to and load it (strict).

    Recognises basicsr's ``RRDBNet`` (RealESRGAN_x4plus, RealESRGAN_x2plus, x1 variants) and
    realesrgan's ``SRVGGNetCompact`` with PReLU activations (realesr-general-x4v3,
    realesr-animevideov3). A checkpoint still wrapped as ``{'params_ema': ...}`` /
    ``{'params': ...}`` is unwrapped (``params_ema`` preferred, as RealESRGANer does), and a
    ``module.`` prefix from DataParallel is dropped.

    Returns ``(model, scale)``: the model in eval mode on the CPU, and its native scale.
    Raises :class:`~i2icli.errors.WeightsError` (an ``I2IError``) for anything else.
    """
    sd = _unwrap_state_dict(state_dict)
    if "conv_first.weight" in sd:
        name = "RRDBNet"
        model, scale = _build_rrdbnet(sd)
    elif "body.0.weight" in sd:
        name = "SRVGGNetCompact"
        model, scale = _build_srvgg(sd)
    else:
        sample = ", ".join(list(sd)[:4]) or "no keys"
        raise WeightsError(
            f"unrecognised super-resolution checkpoint (keys: {sample}, ...)",
            hint="expected Real-ESRGAN weights: RRDBNet (RealESRGAN_x4plus / x2plus) "
            "or SRVGGNetCompact (realesr-general-x4v3)",
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()
        raise WeightsError(
            f"checkpoint looks like {name} x{scale} but does not fit it: "
            f"{' '.join(line.strip() for line in detail[:3])}"
        ) from err
    return model.eval(), scale


def _unwrap_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    from i2icli.weights import unwrap_state_dict

    try:
        return unwrap_state_dict(state_dict)
    except ValueError:
        raise WeightsError(f"checkpoint is a {type(state_dict).__name__} holding no tensors, not a state dict") from None


def _shape(sd: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    tensor = sd.get(key)
    if tensor is None:
        raise WeightsError(f"super-resolution checkpoint lacks {key!r}")
    if tensor.ndim != ndim:
        raise WeightsError(f"{key!r} has shape {tuple(tensor.shape)}, expected {ndim} dimensions")
    return tuple(tensor.shape)


def _body_indices(sd: Mapping[str, torch.Tensor]) -> list[int]:
    return sorted({int(m.group(1)) for k in sd if (m := _BODY_INDEX.match(k))})


def _build_rrdbnet(sd: Mapping[str, torch.Tensor]) -> tuple[nn.Module, int]:
    # basicsr / realesrgan are imported only when a model is built: they import torchvision
    # and (realesrgan) their whole packages, seconds that the upscaler itself does not need.
    from basicsr.archs.rrdbnet_arch import RRDBNet

    num_feat, in_ch = _shape(sd, "conv_first.weight", 4)[:2]
    # x2 / x1 models pixel-unshuffle the RGB input by 2 / 4 before conv_first.
    scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
    if scale is None:
        raise WeightsError(
            f"RRDBNet checkpoint takes {in_ch} input channels; only RGB models "
            "(3, or 12 / 48 after pixel-unshuffle for x2 / x1) are supported"
        )
    blocks = _body_indices(sd)
    if not blocks or blocks != list(range(len(blocks))):
        raise WeightsError("RRDBNet checkpoint has no contiguous body.N RRDB blocks")
    num_grow_ch = _shape(sd, "body.0.rdb1.conv1.weight", 4)[0]
    out_ch = _shape(sd, "conv_last.weight", 4)[0]
    if out_ch != 3:
        raise WeightsError(f"RRDBNet checkpoint has {out_ch} output channels, expected 3 (RGB)")
    model = RRDBNet(
        num_in_ch=3,
        num_out_ch=3,
        scale=scale,
        num_feat=num_feat,
        num_block=len(blocks),
        num_grow_ch=num_grow_ch,
    )
    return model, scale


def _build_srvgg(sd: Mapping[str, torch.Tensor]) -> tuple[nn.Module, int]:
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    indices = _body_indices(sd)
    weights = {i: sd.get(f"body.{i}.weight") for i in indices}
    convs = [i for i, w in weights.items() if w is not None and w.ndim == 4]
    prelus = [i for i, w in weights.items() if w is not None and w.ndim == 1]
    if len(convs) < 2:
        raise WeightsError("SRVGGNetCompact checkpoint needs at least a first and a last conv")
    if not prelus:
        # relu / leakyrelu have no parameters, so the activation cannot be told from the
        # weights; guessing would load fine and produce wrong images.
        raise WeightsError(
            "SRVGGNetCompact checkpoint without PReLU weights: its activation cannot be inferred",
            hint="only PReLU models such as realesr-general-x4v3 are supported",
        )
    num_feat, in_ch = _shape(sd, f"body.{convs[0]}.weight", 4)[:2]
    if in_ch != 3:
        raise WeightsError(f"SRVGGNetCompact checkpoint takes {in_ch} input channels, expected 3")
    last_out = _shape(sd, f"body.{convs[-1]}.weight", 4)[0]
    scale = math.isqrt(last_out // 3)
    if scale < 1 or 3 * scale * scale != last_out:
        raise WeightsError(
            f"SRVGGNetCompact last conv has {last_out} output channels, not 3 * scale^2"
        )
    model = SRVGGNetCompact(
        num_in_ch=3,
        num_out_ch=3,
        num_feat=num_feat,
        num_conv=len(convs) - 2,
        upscale=scale,
        act_type="prelu",
    )
    return model, scale


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------


class _Tile(NamedTuple):
    number: int  # 1-based, row-major, as RealESRGANer counts them
    src_y: slice  # region of the padded input fed to the network (tile plus tile_pad context)
    src_x: slice
    crop_y: slice  # part of the network's output that is kept
    crop_x: slice
    dst_y: slice  # where that part lands in the output image
    dst_x: slice


def _plan_tiles(
    h: int, w: int, tile: int, tile_pad: int, scale: int, out_h: int, out_w: int
) -> tuple[list[_Tile], int]:
    """RealESRGANer.tile_process's grid over the padded (h, w) input; tile <= 0: one tile.

    Output coordinates are clipped to (out_h, out_w), the unpadded output size, which is what
    RealESRGANer's post_process crops to (its pads are only ever on the bottom / right).
    Returns the tiles that reach the output and the grid size (for messages).
    """
    if tile <= 0:
        tile, tile_pad = max(h, w), 0
    tiles_x, tiles_y = math.ceil(w / tile), math.ceil(h / tile)
    plan = []
    covered = 0
    for y in range(tiles_y):
        for x in range(tiles_x):
            in_y0, in_x0 = y * tile, x * tile
            in_y1, in_x1 = min(in_y0 + tile, h), min(in_x0 + tile, w)
            pad_y0, pad_x0 = max(in_y0 - tile_pad, 0), max(in_x0 - tile_pad, 0)
            pad_y1, pad_x1 = min(in_y1 + tile_pad, h), min(in_x1 + tile_pad, w)
            dst_y0, dst_x0 = in_y0 * scale, in_x0 * scale
            dst_y1, dst_x1 = min(in_y1 * scale, out_h), min(in_x1 * scale, out_w)
            if dst_y0 >= dst_y1 or dst_x0 >= dst_x1:
                continue  # only pre/mod padding, which is cut off anyway
            crop_y0, crop_x0 = (in_y0 - pad_y0) * scale, (in_x0 - pad_x0) * scale
            plan.append(
                _Tile(
                    number=y * tiles_x + x + 1,
                    src_y=slice(pad_y0, pad_y1),
                    src_x=slice(pad_x0, pad_x1),
                    crop_y=slice(crop_y0, crop_y0 + dst_y1 - dst_y0),
                    crop_x=slice(crop_x0, crop_x0 + dst_x1 - dst_x0),
                    dst_y=slice(dst_y0, dst_y1),
                    dst_x=slice(dst_x0, dst_x1),
                )
            )
            covered += (dst_y1 - dst_y0) * (dst_x1 - dst_x0)
    # The tiles partition the output exactly: no hole, no overlap.
    assert covered == out_h * out_w, (covered, out_h, out_w)
    return plan, tiles_x * tiles_y


class _Plane(NamedTuple):
    """One 3-channel network input (RGB, or a gray image replicated) and where it lands."""

    pixels: np.ndarray  # padded input, native dtype, H x W x 3 or H x W x 1 (broadcast to 3)
    target: np.ndarray  # view into the output array: H x W x 3, or H x W for a folded gray
    to_gray: bool  # fold the network's RGB output to one channel (gray image, alpha)


def _batches(plan: list[_Tile], n_planes: int, batch: int) -> list[list[tuple[int, _Tile]]]:
    """Jobs (plane, tile) grouped by input shape, in chunks of at most ``batch``.

    Only equally sized tiles can share a batch; interior tiles all have one shape, the edge
    rows / columns a few others. The alpha plane's tiles batch with the RGB ones.
    """
    groups: dict[tuple[int, int], list[tuple[int, _Tile]]] = {}
    for t in plan:
        shape = (t.src_y.stop - t.src_y.start, t.src_x.stop - t.src_x.start)
        groups.setdefault(shape, []).extend((p, t) for p in range(n_planes))
    return [jobs[i : i + batch] for jobs in groups.values() for i in range(0, len(jobs), batch)]


def _add_note(err: BaseException, note: str) -> None:
    if hasattr(err, "add_note"):  # Python >= 3.11
        err.add_note(note)


# --------------------------------------------------------------------------------------------
# The upscaler
# --------------------------------------------------------------------------------------------


@dataclass
class BackgroundUpscaler:
    """Real-ESRGAN over a whole photo, tile by tile; see the module docstring.

    ``model`` is moved to ``device`` / ``dtype`` and put in eval mode on construction.
    ``tile`` is in input pixels (0: the whole image in one pass); ``tile_pad`` pixels of
    context are added on each side of a tile and cropped off its output; ``pre_pad`` pixels
    of reflection are added on the bottom / right of the image and cropped off the result.
    ``tile_batch`` equally sized tiles go through the network at once. With ``oom_retry``, a
    ``torch.OutOfMemoryError`` restarts the image with a smaller batch, then with halved tiles
    down to ``min_tile``, before the error is let through.
    """

    model: nn.Module
    scale: int
    device: torch.device
    dtype: torch.dtype = torch.float32
    tile: int = 0
    tile_pad: int = 10
    pre_pad: int = 10
    tile_batch: int = 4
    oom_retry: bool = True
    min_tile: int = 64

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise I2IError(
                f"unsupported model dtype {self.dtype}; use float32, float16 or bfloat16"
            )
        if int(self.scale) != self.scale or self.scale < 1:
            raise I2IError(f"upscaler scale must be a positive integer, not {self.scale!r}")
        for name in ("tile", "tile_pad", "pre_pad", "min_tile"):
            if getattr(self, name) < 0:
                raise I2IError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.tile_batch < 1:
            raise I2IError(f"tile_batch must be >= 1, not {self.tile_batch}")
        self.scale = int(self.scale)
        self.model = self.model.to(device=self.device, dtype=self.dtype).eval()
        self.model.requires_grad_(False)

    # ---------------------------------------------------------------------------------------

    def upscale(
        self,
        image: np.ndarray,
        outscale: float | None = None,
        *,
        tile_batch: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Super-resolve an RGB photo.

        ``image``: H x W x 3 RGB, H x W x 4 RGBA, H x W or H x W x 1 gray; uint8 or uint16.
        Returns the same layout and dtype, ``scaled_size(H, W, outscale)``
        (``outscale`` defaults to the model's native scale; any other value resizes the
        network's output with cv2 LANCZOS4, as RealESRGANer does). ``progress(done, total)``
        is called after each batch of tiles. ``tile_batch`` overrides the instance's for this
        image (e.g. sized from the memory free now).
        """
        if not isinstance(image, np.ndarray):
            raise I2IError(f"expected a numpy image, got {type(image).__name__}")
        if image.dtype == np.uint8:
            max_range = 255
        elif image.dtype == np.uint16:
            max_range = 65535
        else:
            raise I2IError(f"unsupported image dtype {image.dtype}; expected uint8 or uint16")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
            pass
        else:
            raise I2IError(
                f"unsupported image shape {image.shape}; expected HxW, HxWx1, HxWx3 or HxWx4"
            )
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            raise I2IError(f"empty image ({h}x{w})")
        s = self.scale
        if outscale is None:
            outscale = float(s)
        if not (isinstance(outscale, (int, float)) and math.isfinite(outscale) and outscale > 0):
            raise I2IError(f"outscale must be a positive number, not {outscale!r}")
        final_h, final_w = scaled_size(h, w, outscale)
        if final_h < 1 or final_w < 1:
            raise I2IError(f"outscale {outscale} shrinks the {w}x{h} image to nothing")

        # Network inputs, in the native dtype (normalised per tile, later): RGB, or the gray
        # image, plus the alpha channel; each padded like RealESRGANer.pre_process.
        channels = 1 if image.ndim == 2 else image.shape[2]
        color = image.reshape(h, w, 1) if channels == 1 else image[:, :, :3]
        sources = [self._pad(color)]
        if channels == 4:
            sources.append(self._pad(image[:, :, 3:4]))
        pad_h, pad_w = sources[0].shape[:2]

        mod = _MOD_SCALE.get(s, 1)
        tile, tile_pad = self._tiling(self.tile, mod), self._tile_pad(mod)
        batch = self.tile_batch if tile_batch is None else max(int(tile_batch), 1)
        while True:
            plan, grid = _plan_tiles(pad_h, pad_w, tile, tile_pad, s, h * s, w * s)
            batches = _batches(plan, len(sources), batch)
            try:
                out = self._render(sources, image, batches, grid, max_range, progress)
                break
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
                smaller = self._smaller(tile, batch, batches, pad_h, pad_w)
                if not self.oom_retry or smaller is None:
                    _add_note(err, f"i2i: out of device memory with {self._describe(tile, batch)}")
                    raise
                log.warning(
                    "out of device memory with %s; retrying with %s",
                    self._describe(tile, batch),
                    self._describe(*smaller),
                )
                # Drop the failed attempt's tensors (held by the traceback) before retrying.
                traceback.clear_frames(err.__traceback__)
            release_cached_memory(self.device)
            tile, batch = smaller

        if (final_h, final_w) != (h * s, w * s):
            layout = out.shape
            out = cv2.resize(out, (final_w, final_h), interpolation=cv2.INTER_LANCZOS4)
            if len(layout) == 3 and out.ndim == 2:  # cv2 drops a single channel axis
                out = out[:, :, None]
        return out

    # ---------------------------------------------------------------------------------------

    def _pad(self, pixels: np.ndarray) -> np.ndarray:
        """RealESRGANer.pre_process: reflect pre_pad, then reflect up to a multiple of mod.

        Done in the native dtype on the CPU (padding copies values, so it commutes with
        RealESRGANer's float conversion); the two pads are applied one after the other as
        there, which is not the same as one reflect pad of the sum.
        """
        if self.pre_pad:
            pixels = np.pad(pixels, ((0, self.pre_pad), (0, self.pre_pad), (0, 0)), mode="reflect")
        mod = _MOD_SCALE.get(self.scale)
        if mod:
            h, w = pixels.shape[:2]
            mod_h, mod_w = -h % mod, -w % mod
            if mod_h or mod_w:
                pixels = np.pad(pixels, ((0, mod_h), (0, mod_w), (0, 0)), mode="reflect")
        return pixels

    def input_side(self, tile: int) -> int:
        """Side of the network input for a full ``tile`` (tile plus its context on both sides)."""
        mod = _MOD_SCALE.get(self.scale, 1)
        return self._tiling(tile, mod) + 2 * self._tile_pad(mod)

    def smaller_tile(self, tile: int) -> int | None:
        """Half of ``tile`` as the grid allows it, or None below ``min_tile``."""
        mod = _MOD_SCALE.get(self.scale, 1)
        smaller = self._tiling(tile // 2, mod)
        if smaller < max(self.min_tile, mod, 1) or smaller >= tile:
            return None
        return smaller

    def _tile_pad(self, mod: int) -> int:
        return self.tile_pad + (-self.tile_pad % mod)

    @staticmethod
    def _tiling(tile: int, mod: int) -> int:
        # x2 / x1 RRDBNet pixel-unshuffles every tile, so tiles (and tile_pad) must be
        # multiples of 2 / 4; RealESRGANer would crash on other values, so rounding them
        # changes no run that works there.
        if tile <= 0:
            return 0
        return max(tile - tile % mod, mod)

    def _smaller(
        self,
        tile: int,
        batch: int,
        batches: list[list[tuple[int, _Tile]]],
        pad_h: int,
        pad_w: int,
    ) -> tuple[int, int] | None:
        """The next configuration to try after running out of memory, or None."""
        # A smaller batch first: unlike a smaller tile, it keeps the tile grid, so the output
        # stays the same (up to float noise from other conv kernels).
        if max(len(b) for b in batches) > 1:
            return tile, max(batch // 2, 1)
        # A tile larger than the image is the whole image: halve from what was really run.
        current = min(tile, max(pad_h, pad_w)) if tile > 0 else max(pad_h, pad_w)
        smaller = self.smaller_tile(current)
        return None if smaller is None else (smaller, batch)

    @staticmethod
    def _describe(tile: int, batch: int) -> str:
        return f"tile {tile}, batch {batch}" if tile > 0 else "the whole image in one pass"

    @torch.inference_mode()
    def _render(
        self,
        sources: list[np.ndarray],
        image: np.ndarray,
        batches: list[list[tuple[int, _Tile]]],
        grid: int,
        max_range: int,
        progress: Callable[[int, int], None] | None,
    ) -> np.ndarray:
        h, w = image.shape[:2]
        s = self.scale
        out = np.zeros((h * s, w * s) + image.shape[2:], dtype=image.dtype)
        if image.ndim == 2:
            planes = [_Plane(sources[0], out, True)]
        elif image.shape[2] == 1:
            planes = [_Plane(sources[0], out[:, :, 0], True)]
        else:
            planes = [_Plane(sources[0], out[:, :, :3], False)]
            if image.shape[2] == 4:
                planes.append(_Plane(sources[1], out[:, :, 3], True))

        scale_to = np.float32(max_range)
        total = sum(len(b) for b in batches)
        done = 0
        for jobs in batches:
            first = jobs[0][1]
            th, tw = first.src_y.stop - first.src_y.start, first.src_x.stop - first.src_x.start
            # Cut and normalise on the CPU (as RealESRGANer: float32, then / max_range), and
            # move only this batch to the device.
            x = np.empty((len(jobs), 3, th, tw), dtype=np.float32)
            for i, (p, t) in enumerate(jobs):
                x[i] = planes[p].pixels[t.src_y, t.src_x].transpose(2, 0, 1)  # 1 -> 3 channels
            np.divide(x, max_range, out=x)
            try:
                y = self.model(torch.from_numpy(x).to(device=self.device, dtype=self.dtype))
                if tuple(y.shape) != (len(jobs), 3, th * s, tw * s):
                    raise I2IError(
                        f"upscaler model turned a {tw}x{th} tile into {tuple(y.shape)}, "
                        f"expected {tw * s}x{th * s} RGB",
                        hint="the model's scale does not match the upscaler's",
                    )
                y = y.detach().to("cpu")  # still in the model's dtype: half the transfer for fp16
            except BaseException as err:
                # Never a silent hole: whatever a tile raises, the image fails with it.
                numbers = sorted({t.number for _, t in jobs})
                _add_note(err, f"i2i: while upscaling tile(s) {numbers} of {grid}")
                raise
            for i, (p, t) in enumerate(jobs):
                o = y[i, :, t.crop_y, t.crop_x].float().clamp_(0, 1).numpy().transpose(1, 2, 0)
                if planes[p].to_gray:
                    # BGR2GRAY on the flipped tile, as RealESRGANer does it: cv2's float
                    # RGB2GRAY sums in another order and differs by an ulp on ~1/6 of pixels.
                    o = cv2.cvtColor(np.ascontiguousarray(o[:, :, ::-1]), cv2.COLOR_BGR2GRAY)
                o = o * scale_to
                planes[p].target[t.dst_y, t.dst_x] = np.rint(o, out=o)
            del y
            done += len(jobs)
            if progress is not None:
                progress(done, total)
        return out
