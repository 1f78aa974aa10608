"""The restore pipeline: detect and align faces, restore them with GFPGAN, upscale the rest with
Real-ESRGAN, paste the faces back. Inference only; models are loaded once and reused per image."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from i2icli.archs.gfpgan import GFPGANv1Clean, gfpgan_config_from_state_dict
from i2icli.errors import DeviceError, WeightsError
from i2icli.faces.align import FACE_SIZE, alignment_matrix, crop_face, paste_matrix
from i2icli.faces.detect import (
    DetectedFace,
    FaceDetector,
    build_retinaface,
    select_faces,
)
from i2icli.faces.paste import parse_masks, paste_face
from i2icli.formats import UPSCALE_MAX, UPSCALE_MIN
from i2icli.imageio import Picture
from i2icli.pipelines import memory_hints
from i2icli.pipelines.arguments import (
    check_between,
    check_flag,
    check_fraction,
    check_not_negative,
    check_picture,
    check_whole,
)
from i2icli.pipelines.devices import (
    AUTO,
    cpu_has_native_bf16,
    explicit_dtype,
    pick_device,
    release_cached_memory,
)
from i2icli.pipelines.loading import (
    DownloadProgress,
    instantiate,
    load_checkpoint,
    timed,
)
from i2icli.pipelines.memory import (
    GIB,
    HEADROOM,
    DeviceMemory,
    budget_bytes,
    is_out_of_memory,
    limit_mps_memory,
    reports_out_of_memory,
)
from i2icli.pipelines.restore_models import (
    DEFAULT_DETECTOR,
    DEFAULT_FACE_MODEL,
    DEFAULT_PARSER,
    background_model_for,
)
from i2icli.pipelines.tuning import use_channels_last
from i2icli.pipelines.upscale import BackgroundUpscaler, build_sr_model, scaled_size
from i2icli.pixels import max_value, quantize

MOST_PER_BATCH = 16  # faces or tiles per network call: more does not keep a GPU any busier

log = logging.getLogger(__name__)


@dataclass
class RestoreSettings:
    """Per-run knobs of the restore pipeline (the CLI's options, minus I/O)."""

    upscale: float = 2.0
    strength: float = 1.0  # 1: the restored face; 0: the original face, aligned and pasted back
    threshold: float = 0.97
    min_face_size: float = 16.0
    only_center_face: bool = False
    detect_max_side: int = 1280
    aligned: bool = False
    face_batch: int = 0  # 0: chosen from free memory
    keep_faces: bool = False  # return each face's crop and restoration (e.g. to save them)

    def __post_init__(self) -> None:
        # The bounds of the command's options, so that a script and the command refuse alike (a
        # factor of 0 or NaN would otherwise fail deep in OpenCV's resize, after every model has loaded).
        check_between("upscale", self.upscale, UPSCALE_MIN, UPSCALE_MAX)
        check_fraction("strength", self.strength)
        check_fraction("threshold", self.threshold)
        check_not_negative("min_face_size", self.min_face_size)
        check_whole("detect_max_side", self.detect_max_side, 0, " (0: full size)")
        check_whole("face_batch", self.face_batch, 0, " (0: chosen from free memory)")
        for flag in ("only_center_face", "aligned", "keep_faces"):
            check_flag(flag, getattr(self, flag))


@dataclass
class RestoredFace:
    """A face as found (crop) and as restored, both 512x512 RGB float32 in [0, 1]."""

    crop: np.ndarray
    restored: np.ndarray
    detection: DetectedFace | None


@dataclass
class RestoreResult:
    """The restored photo (RGB, the input's dtype), how many faces were restored, and the time of each stage."""

    picture: Picture
    face_count: int
    faces: list[RestoredFace] = field(default_factory=list)  # filled with settings.keep_faces
    seconds: dict[str, float] = field(default_factory=dict)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the networks run in; the face detector always stays fp32 (landmark accuracy).

    ``auto`` is fp16 on CUDA, as Real-ESRGAN and GFPGAN users run it, and bf16 on CPUs with
    native bf16 (AVX512-BF16/AMX), where it roughly halves the time of every network: measured on
    a 2-core AVX512-BF16 CPU, RRDBNet x2 9.28 -> 4.10 s per 420 px tile, GFPGAN 2.76 -> 1.61 s and
    ParseNet 3.16 -> 1.46 s per face, for 0.36-0.40 levels of mean output difference. bf16 has
    fp32's exponent range, so unlike fp16 it cannot overflow. Elsewhere ``auto`` is fp32.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return explicit_dtype(precision, device)


def build_face_model(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    if "stylegan_decoder.constant_input.weight" not in state_dict:
        raise WeightsError("not a GFPGAN v1.3/v1.4 (GFPGANv1Clean) checkpoint",
                           "pass a GFPGAN v1.3/v1.4 checkpoint, or a name from `i2i weights list`")
    config = gfpgan_config_from_state_dict(state_dict)
    if config["out_size"] != FACE_SIZE:  # faces are aligned, parsed and pasted at 512 px
        raise WeightsError(f"a GFPGAN model for {config['out_size']} px faces; i2i restores {FACE_SIZE} px ones",
                           "use gfpgan-1.4, gfpgan-1.3 or another 512 px GFPGANv1Clean checkpoint")
    return instantiate(lambda: GFPGANv1Clean(**config), state_dict)


def build_parser(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    import i2icli._compat  # noqa: F401  (before facexlib, which imports basicsr)

    # isort: split
    from facexlib.parsing.parsenet import ParseNet

    return instantiate(lambda: ParseNet(in_size=512, out_size=512, parsing_ch=19), state_dict)


class RestorePipeline:
    """Face restoration for whole photos (or pre-aligned faces); see ``restore``."""

    def __init__(
        self,
        face_model: torch.nn.Module,
        *,
        detector: FaceDetector | None,
        parser: torch.nn.Module | None,
        upscaler: BackgroundUpscaler | None,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        settings: RestoreSettings | None = None,
    ):
        self.device = device
        self.dtype = dtype
        self.face_model = face_model.to(device=device, dtype=dtype).eval()
        self.detector = detector
        self.parser = parser.to(device=device, dtype=dtype).eval() if parser is not None else None
        self.upscaler = upscaler
        self.settings = settings or RestoreSettings()
        self.memory: DeviceMemory | None = None  # set by fit_memory on CUDA
        self.face_cost = self.tile_cost = 0  # bytes one face / one background tile allocates

    @classmethod
    @reports_out_of_memory(memory_hints.LOAD)
    def load(
        cls,
        *,
        model: str = DEFAULT_FACE_MODEL,
        bg_model: str | None = AUTO,
        detector: str = DEFAULT_DETECTOR,
        parser: str | None = DEFAULT_PARSER,
        device: torch.device | str = AUTO,
        precision: str = "auto",
        tile: int = 400,
        max_memory: float | None = None,
        settings: RestoreSettings | None = None,
        progress: DownloadProgress | None = None,
    ) -> "RestorePipeline":
        """Resolve, verify and load every model once. ``bg_model``/``parser`` None means none;
        ``max_memory`` is a GPU budget in GB (None: the GPU's free memory; not used on a CPU,
        where ``tile`` alone bounds memory); ``progress`` hears about checkpoint downloads."""
        # Refused before any model loads: True would be a 1 px tile, or a 1 GB budget.
        check_whole("tile", tile, 0, " (0: the whole image at once)")
        if max_memory is not None:
            check_not_negative("max_memory", max_memory)
        settings = settings or RestoreSettings()
        device = device if isinstance(device, torch.device) else pick_device(device)
        dtype = pick_dtype(precision, device)

        face_model = load_checkpoint(model, "GFPGAN", build_face_model, progress)
        face_detector = None
        upscaler = None
        face_parser = None
        if not settings.aligned:
            detector_model = use_channels_last(load_checkpoint(detector, "RetinaFace", build_retinaface, progress), device)
            face_detector = FaceDetector(detector_model, device, max_side=settings.detect_max_side)
            face_parser = use_channels_last(load_checkpoint(parser, "ParseNet", build_parser, progress), device) if parser else None
            if bg_model:
                spec = background_model_for(settings.upscale) if bg_model == AUTO else bg_model
                sr_model, native_scale = load_checkpoint(spec, "Real-ESRGAN", build_sr_model, progress)
                upscaler = BackgroundUpscaler(
                    model=use_channels_last(sr_model, device).to(device=device, dtype=dtype),
                    scale=native_scale,
                    device=device,
                    dtype=dtype,
                    tile=tile,
                    pre_pad=0,  # as GFPGAN's own inference script sets up its background upsampler
                    # A CPU is no faster with batched tiles and holds more; on CUDA the batch
                    # is sized per photo from free memory (fit_memory).
                    tile_batch=1,
                )
        pipeline = cls(
            face_model,
            detector=face_detector,
            parser=face_parser,
            upscaler=upscaler,
            device=device,
            dtype=dtype,
            settings=settings,
        )
        if device.type == "cuda":
            pipeline.fit_memory(DeviceMemory(device, budget_bytes(max_memory)))
        elif device.type == "mps" and max_memory:
            limit_mps_memory(budget_bytes(max_memory))
        return pipeline

    @torch.inference_mode()
    def fit_memory(self, memory: DeviceMemory) -> None:
        """Measure what one face and one background tile allocate on this device, and shrink the
        tile until one fits in the memory available (the budget, or what the GPU has free)."""
        self.memory = memory
        room = memory.available()
        try:
            # Each cost includes the input, as a real batch's does.
            self.face_cost = memory.cost(lambda: self.face_model(self._blank(FACE_SIZE, like_faces=True)))
            if self.parser is not None:
                self.face_cost = max(self.face_cost, memory.cost(
                    lambda: parse_masks(self.parser, self._blank(FACE_SIZE, like_faces=True))))
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            raise DeviceError(
                f"one face does not fit in the {room / GIB:.2f} GB of GPU memory available",
                "raise --max-memory, close other GPU programs, or use --device cpu",
            ) from None
        upscaler = self.upscaler
        if upscaler is None or upscaler.tile <= 0:
            return  # whole-image passes: nothing to size ahead of the photo
        while True:
            side = upscaler.input_side(upscaler.tile)
            try:
                self.tile_cost = memory.cost(lambda: upscaler.model(self._blank(side)))
                fits = self.tile_cost <= room * (1 - HEADROOM)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                self.tile_cost, fits = 0, False
            if not fits:  # outside the handler, whose traceback holds the probe's tensors
                torch.cuda.empty_cache()
            smaller = upscaler.smaller_tile(upscaler.tile)
            if fits or smaller is None:
                return  # what still does not fit is left to the upscaler's retries
            log.warning("a %d px background tile does not fit in %.2f GB of GPU memory; using %d px tiles",
                        upscaler.tile, room / GIB, smaller)
            upscaler.tile = smaller

    def _blank(self, side: int, *, like_faces: bool = False) -> torch.Tensor:
        """A probe input laid out as the real ones: face batches are NHWC arrays permuted to NCHW
        (so channels-last strided, which cuDNN runs with other kernels and workspaces), tiles NCHW."""
        blank = torch.zeros(1, 3, side, side, device=self.device, dtype=self.dtype)
        return blank.contiguous(memory_format=torch.channels_last) if like_faces else blank

    # -- stages -------------------------------------------------------------------------------

    def _batch_size(self) -> int:
        if self.settings.face_batch > 0:
            return self.settings.face_batch
        if self.memory is not None:
            return self.memory.fits(self.face_cost, MOST_PER_BATCH)
        # On a CPU a batch is no faster per face (GFPGAN 2.88 vs 2.89 s, ParseNet 4.14 vs 4.04 s
        # per face, batch of 2-4 vs 1, 2 cores) and holds every face's activations at once.
        return 1

    def _in_batches(self, count: int, run: Callable[[int, int], None]) -> None:
        """``run(start, stop)`` over ``range(count)`` in batches; out of device memory, the
        batch is halved and retried, down to one face at a time."""
        step, start = self._batch_size(), 0
        while start < count:
            stop = min(start + step, count)
            try:
                run(start, stop)
            except RuntimeError as error:
                if not is_out_of_memory(error) or stop - start == 1:
                    raise
                step = max((stop - start) // 2, 1)
                log.warning("out of device memory with %d faces at once; retrying with %d", stop - start, step)
            else:
                start = stop
                continue
            release_cached_memory(self.device)  # outside the handler, whose traceback holds the batch

    @torch.inference_mode()
    def restore_faces(self, crops: np.ndarray) -> np.ndarray:
        """Nx512x512x3 float32 RGB in [0,1] -> restored faces, same layout, in batches."""
        restored = np.empty_like(crops)

        def run(start: int, stop: int) -> None:
            batch = torch.from_numpy(crops[start:stop]).permute(0, 3, 1, 2)
            batch = (batch.to(self.device, self.dtype) - 0.5) / 0.5
            output = self.face_model(batch).float().clamp_(-1, 1)
            output = (output + 1) / 2
            restored[start:stop] = output.permute(0, 2, 3, 1).cpu().numpy()

        self._in_batches(len(crops), run)
        strength = float(np.clip(self.settings.strength, 0.0, 1.0))
        if strength < 1.0:
            restored = strength * restored + (1.0 - strength) * crops
        return restored

    def _face_masks(self, restored: np.ndarray) -> list[np.ndarray | None]:
        if self.parser is None or len(restored) == 0:
            return [None] * len(restored)
        faces = torch.from_numpy(restored).permute(0, 3, 1, 2).to(self.device)
        masks: list[np.ndarray | None] = [None] * len(restored)

        def run(start: int, stop: int) -> None:
            masks[start:stop] = parse_masks(self.parser, (faces[start:stop] - 0.5) / 0.5)

        self._in_batches(len(restored), run)
        return masks

    def _upscale_background(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if self.upscaler is not None:
            batch = self.memory.fits(self.tile_cost, MOST_PER_BATCH) if self.memory and self.tile_cost else None
            upscaled = self.upscaler.upscale(image, outscale=self.settings.upscale, tile_batch=batch)
        else:
            upscaled = image
        if upscaled.shape[1::-1] != size:
            upscaled = cv2.resize(upscaled, size, interpolation=cv2.INTER_LANCZOS4)
        return upscaled

    # -- public -------------------------------------------------------------------------------

    # Reached only once smaller tile batches, tiles and face batches have all failed too.
    @reports_out_of_memory(memory_hints.RESTORE, even=" even with the smallest tiles and one face at a time")
    def restore(self, picture: Picture) -> RestoreResult:
        """Restore every face of ``picture`` and upscale it by ``settings.upscale``."""
        check_picture(picture, "RestorePipeline.restore()")
        return self._restore(picture)

    def output_size(self, picture: Picture) -> tuple[int, int]:
        """(width, height) of what ``restore`` makes of ``picture``."""
        check_picture(picture, "RestorePipeline.output_size()")
        if self.settings.aligned:
            return FACE_SIZE, FACE_SIZE
        height, width = scaled_size(picture.height, picture.width, self.settings.upscale)
        return width, height

    def _restore(self, picture: Picture) -> RestoreResult:
        seconds: dict[str, float] = {}
        if self.settings.aligned:
            return self._restore_aligned(picture, seconds)
        settings = self.settings
        peak = max_value(picture.rgb.dtype)

        with timed(seconds, "detect"):
            found = self.detector.detect(picture.rgb, threshold=settings.threshold)
            found = select_faces(
                found, picture.rgb.shape, min_size=settings.min_face_size, only_center=settings.only_center_face
            )
        with timed(seconds, "background"):
            height, width = picture.rgb.shape[:2]
            out_height, out_width = scaled_size(height, width, settings.upscale)
            source = picture.rgb if picture.alpha is None else np.dstack([picture.rgb, picture.alpha])
            canvas = self._upscale_background(source, (out_width, out_height))
            if canvas is picture.rgb:  # (at 1x with no background model) faces are pasted into the
                canvas = canvas.copy()  # canvas, but cut from the photo as it was

        # Faces go through align -> restore -> mask -> paste one batch at a time, so memory does
        # not grow with the number of faces in a crowd (each float32 crop is 3 MB).
        kept: list[RestoredFace] = []
        count = 0
        step = self._batch_size()
        for start in range(0, len(found), step):
            with timed(seconds, "align"):
                detections, matrices, crops = [], [], []
                for face in found[start : start + step]:
                    try:
                        matrix = alignment_matrix(face.landmarks)
                    except ValueError:  # degenerate landmarks: leave that face to the background
                        continue
                    detections.append(face)
                    matrices.append(matrix)
                    crops.append(crop_face(picture.rgb, matrix).astype(np.float32) / peak)
            if not crops:
                continue
            crops_array = np.stack(crops)
            with timed(seconds, "faces"):
                restored = self.restore_faces(crops_array)
            with timed(seconds, "parse"):
                masks = self._face_masks(restored)
            with timed(seconds, "paste"):
                for face, matrix, mask in zip(restored, matrices, masks):
                    paste_face(canvas, face * peak, paste_matrix(matrix, settings.upscale), mask=mask, upscale=settings.upscale)
            count += len(crops)
            if settings.keep_faces:
                kept.extend(RestoredFace(c, r, d) for c, r, d in zip(crops_array, restored, detections))

        result = Picture(
            rgb=np.ascontiguousarray(canvas[:, :, :3]),
            alpha=np.ascontiguousarray(canvas[:, :, 3]) if canvas.shape[2] == 4 else None,
            grayscale=picture.grayscale,
            source=picture.source,  # so that writing never replaces the file it came from
            icc_profile=picture.icc_profile,  # the pixels stay in the photo's colour space
            lossless_webp=picture.lossless_webp,
            exif=picture.exif,  # the same photo, restored: when and where it was taken still holds
            xmp=picture.xmp,  # and so do its rating, keywords and captions
            iptc=picture.iptc,
        )
        return RestoreResult(result, count, kept, seconds)

    def _restore_aligned(self, picture: Picture, seconds: dict[str, float]) -> RestoreResult:
        peak = max_value(picture.rgb.dtype)
        face = picture.rgb
        if face.shape[:2] != (FACE_SIZE, FACE_SIZE):
            # As GFPGAN's --aligned does; a crop of another shape is distorted, so say so.
            log.warning("%s: %dx%d is not an aligned %d x %d face crop; it is resized to that",
                        picture.source or "input", picture.width, picture.height, FACE_SIZE, FACE_SIZE)
            face = cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
        crop = face.astype(np.float32)[None] / peak
        with timed(seconds, "faces"):
            restored = self.restore_faces(crop)
        pixels = quantize(restored[0], picture.rgb.dtype)
        result = Picture(rgb=pixels, alpha=None, grayscale=picture.grayscale, source=picture.source,
                         icc_profile=picture.icc_profile, lossless_webp=picture.lossless_webp, exif=picture.exif,
                         xmp=picture.xmp, iptc=picture.iptc)
        return RestoreResult(result, 1, [RestoredFace(crop[0], restored[0], None)], seconds)
