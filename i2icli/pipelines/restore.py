"""The restore pipeline: detect and align faces, restore them with GFPGAN, upscale the rest with
Real-ESRGAN, paste the faces back. Inference only; models are loaded once and reused per image."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from i2icli.archs.gfpgan import GFPGANv1Clean, gfpgan_config_from_state_dict
from i2icli.errors import WeightsError
from i2icli.faces.align import FACE_SIZE, alignment_matrix, crop_face, paste_matrix
from i2icli.faces.detect import (
    DetectedFace,
    FaceDetector,
    build_retinaface,
    select_faces,
)
from i2icli.faces.paste import parse_masks, paste_face
from i2icli.imageio import Picture, max_value
from i2icli.pipelines.devices import (
    AUTO,
    cpu_has_native_bf16,
    explicit_dtype,
    pick_device,
)
from i2icli.pipelines.loading import (
    DownloadProgress,
    instantiate,
    load_checkpoint,
    timed,
)
from i2icli.pipelines.tuning import use_channels_last
from i2icli.pipelines.upscale import BackgroundUpscaler, build_sr_model, scaled_size

DEFAULT_FACE_MODEL = "gfpgan-1.4"
DEFAULT_DETECTOR = "retinaface-resnet50"
DEFAULT_PARSER = "parsenet"


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


@dataclass
class RestoredFace:
    """A face as found (crop) and as restored, both 512x512 RGB float32 in [0, 1]."""

    crop: np.ndarray
    restored: np.ndarray
    detection: DetectedFace | None


@dataclass
class RestoreResult:
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


def background_model_for(upscale: float) -> str:
    """Real-ESRGAN x2plus up to 2x, x4plus above; other factors are reached by resizing after."""
    return "realesrgan-x2plus" if upscale <= 2 else "realesrgan-x4plus"


def build_face_model(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    if "stylegan_decoder.constant_input.weight" not in state_dict:
        raise WeightsError("not a GFPGAN v1.3/v1.4 (GFPGANv1Clean) checkpoint")
    config = gfpgan_config_from_state_dict(state_dict)
    return instantiate(lambda: GFPGANv1Clean(**config), state_dict)


def build_parser(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    from facexlib.parsing.parsenet import ParseNet

    import i2icli._compat  # noqa: F401

    return instantiate(lambda: ParseNet(in_size=512, out_size=512, parsing_ch=19), state_dict)


def _cuda_face_batch(device: torch.device, dtype: torch.dtype) -> int:
    # A 512x512 GFPGAN forward pass peaks near 0.6 GB per face in fp32, half that in fp16.
    free, _ = torch.cuda.mem_get_info(device)
    per_face = (0.6 if dtype == torch.float32 else 0.3) * 2**30
    return int(max(1, min(16, free * 0.5 // per_face)))


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

    @classmethod
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
        settings: RestoreSettings | None = None,
        progress: DownloadProgress | None = None,
    ) -> "RestorePipeline":
        """Resolve, verify and load every model once. ``bg_model``/``parser`` None means none;
        ``progress`` hears about checkpoint downloads."""
        settings = settings or RestoreSettings()
        device = device if isinstance(device, torch.device) else pick_device(device)
        dtype = pick_dtype(precision, device)

        face_model = load_checkpoint(model, "GFPGAN", build_face_model, progress)
        face_detector = None
        upscaler = None
        face_parser = None
        if not settings.aligned:
            detector_model = use_channels_last(load_checkpoint(detector, "RetinaFace", build_retinaface, progress))
            face_detector = FaceDetector(detector_model, device, max_side=settings.detect_max_side)
            face_parser = use_channels_last(load_checkpoint(parser, "ParseNet", build_parser, progress)) if parser else None
            if bg_model:
                spec = background_model_for(settings.upscale) if bg_model == AUTO else bg_model
                sr_model, native_scale = load_checkpoint(spec, "Real-ESRGAN", build_sr_model, progress)
                upscaler = BackgroundUpscaler(
                    model=use_channels_last(sr_model).to(device=device, dtype=dtype),
                    scale=native_scale,
                    device=device,
                    dtype=dtype,
                    tile=tile,
                    pre_pad=0,  # as GFPGAN's own inference script sets up its background upsampler
                    # Batched tiles keep a GPU busy; a CPU is no faster with them and holds more.
                    tile_batch=4 if device.type == "cuda" else 1,
                )
        return cls(
            face_model,
            detector=face_detector,
            parser=face_parser,
            upscaler=upscaler,
            device=device,
            dtype=dtype,
            settings=settings,
        )

    # -- stages -------------------------------------------------------------------------------

    def _batch_size(self) -> int:
        if self.settings.face_batch > 0:
            return self.settings.face_batch
        if self.device.type == "cuda":
            return _cuda_face_batch(self.device, self.dtype)
        # On a CPU a batch is no faster per face (GFPGAN 2.88 vs 2.89 s, ParseNet 4.14 vs 4.04 s
        # per face, batch of 2-4 vs 1, 2 cores) and holds every face's activations at once.
        return 1

    @torch.inference_mode()
    def restore_faces(self, crops: np.ndarray) -> np.ndarray:
        """Nx512x512x3 float32 RGB in [0,1] -> restored faces, same layout, in batches."""
        restored = np.empty_like(crops)
        step = self._batch_size()
        for start in range(0, len(crops), step):
            batch = torch.from_numpy(crops[start : start + step]).permute(0, 3, 1, 2)
            batch = (batch.to(self.device, self.dtype) - 0.5) / 0.5
            output = self.face_model(batch).float().clamp_(-1, 1)
            output = (output + 1) / 2
            restored[start : start + step] = output.permute(0, 2, 3, 1).cpu().numpy()
        strength = float(np.clip(self.settings.strength, 0.0, 1.0))
        if strength < 1.0:
            restored = strength * restored + (1.0 - strength) * crops
        return restored

    def _face_masks(self, restored: np.ndarray) -> list[np.ndarray | None]:
        if self.parser is None or len(restored) == 0:
            return [None] * len(restored)
        faces = torch.from_numpy(restored).permute(0, 3, 1, 2).to(self.device)
        masks = []
        step = self._batch_size()
        for start in range(0, len(faces), step):
            masks.extend(parse_masks(self.parser, (faces[start : start + step] - 0.5) / 0.5))
        return masks

    def _upscale_background(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if self.upscaler is not None:
            upscaled = self.upscaler.upscale(image, outscale=self.settings.upscale)
        else:
            upscaled = image
        if upscaled.shape[1::-1] != size:
            upscaled = cv2.resize(upscaled, size, interpolation=cv2.INTER_LANCZOS4)
        return upscaled

    # -- public -------------------------------------------------------------------------------

    def restore(self, picture: Picture) -> RestoreResult:
        """Restore every face of ``picture`` and upscale it by ``settings.upscale``."""
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
            source=None,
        )
        return RestoreResult(result, count, kept, seconds)

    def _restore_aligned(self, picture: Picture, seconds: dict[str, float]) -> RestoreResult:
        peak = max_value(picture.rgb.dtype)
        face = picture.rgb
        if face.shape[:2] != (FACE_SIZE, FACE_SIZE):
            face = cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
        crop = face.astype(np.float32)[None] / peak
        with timed(seconds, "faces"):
            restored = self.restore_faces(crop)
        pixels = np.clip(np.rint(restored[0] * peak), 0, peak).astype(picture.rgb.dtype)
        result = Picture(rgb=pixels, alpha=None, grayscale=picture.grayscale, source=None)
        return RestoreResult(result, 1, [RestoredFace(crop[0], restored[0], None)], seconds)
