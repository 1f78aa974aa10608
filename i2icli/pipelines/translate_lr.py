"""The translate-lr pipeline: a high-resolution source and a tiny target give a high-resolution
image with the source's detail that downsamples (average pooling) to the target.

Sources are centre-cropped to a square (or aligned to the face template) and resized to the
working size, ``lr_size * scale`` where the generator fixes the scale. A target is either tiny
already (square, at most 32 px: used as it is) or a photo, prepared like a source and downscaled
by the method's operator. ``exact`` projects the output onto the images that downscale to the
target exactly (see ``project_to_target``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from i2icli import weights
from i2icli.archs.lr_conditioned import (
    MAX_LR_SIZE,
    MIN_LR_SIZE,
    LRConditionedGenerator,
    LRTranslatorConfig,
    config_from_state_dicts,
    downscale,
    generator_layout,
)
from i2icli.errors import InputError, WeightsError
from i2icli.faces.detect import FaceDetector, aligned_largest_face, build_retinaface
from i2icli.imageio import Picture
from i2icli.pipelines import memory_hints
from i2icli.pipelines.arguments import check_flag, check_picture, is_whole
from i2icli.pipelines.devices import AUTO, pick_device
from i2icli.pipelines.imagetensors import (
    EIGHT_BIT_LEVEL,
    square_resize,
    to_picture,
    to_tensor,
)
from i2icli.pipelines.loading import (
    DownloadProgress,
    instantiate,
    load_checkpoint,
    load_trained,
    timed,
)
from i2icli.pipelines.memory import reports_out_of_memory
from i2icli.pipelines.translate_lr_plan import METHOD_NAME

DEFAULT_DETECTOR = "retinaface-resnet50"
DEFAULT_LR_SIZE = 8  # for checkpoints that store no sizes (a bare generator)


@dataclass(frozen=True)
class LRTranslation:
    """One translation. Errors are mean |DS(output) - target| in 8-bit levels, measured on the
    8-bit output as saved; ``network_error`` is the generator's own, before any projection."""

    picture: Picture
    source: Picture  # the source as the generator saw it
    target: Picture  # the low-resolution target
    lr_error: float
    network_error: float
    exact: bool
    seconds: dict[str, float] = field(default_factory=dict)


# --- checkpoints ---------------------------------------------------------------------------------


def generator_from_checkpoint(content: Any, *, lr_size: int | None = None) -> tuple[LRConditionedGenerator, LRTranslatorConfig]:
    """Build the inference generator from any of the layouts a user may have:

    * an ``i2i train translate-lr`` checkpoint (its stored configuration; the EMA generator);
    * the authors' training file {'Gen', 'Dis', 'optG', 'optD', 'AverageG'} (sizes read from the
      networks' shapes; the EMA generator when present);
    * a bare generator state dict (the low-resolution size is then ``lr_size`` or 8).
    """
    if not isinstance(content, dict):
        raise TypeError("not a dictionary of networks")
    method = content.get("method")
    if method is not None and method != METHOD_NAME:
        raise WeightsError(f"this is a `{method}` checkpoint, not a {METHOD_NAME} one", "pass a checkpoint from `i2i train translate-lr`")
    if "Gen" in content or "AverageG" in content:
        generator_state = content.get("AverageG") or content["Gen"]
        stored = content.get("config", {}).get("model") if isinstance(content.get("config"), dict) else None
        if stored:
            config = LRTranslatorConfig(**stored)
        elif isinstance(content.get("Dis"), dict):
            config = config_from_state_dicts(generator_state, content["Dis"])
        else:
            config = _config_without_sizes(generator_state, lr_size)
    else:
        generator_state = weights.unwrap_state_dict(content)
        config = _config_without_sizes(generator_state, lr_size)
    generator = instantiate(lambda: LRConditionedGenerator(config), dict(generator_state))
    return generator.requires_grad_(False), config


def _config_without_sizes(state: dict[str, Tensor], lr_size: int | None) -> LRTranslatorConfig:
    levels = generator_layout(state)[0]
    return config_from_state_dicts(state, hr_size=(lr_size or DEFAULT_LR_SIZE) << levels)


def check_lr_size(lr_size: int) -> None:
    """ValueError for a low-resolution size the generator cannot work at."""
    if not is_whole(lr_size) or not MIN_LR_SIZE <= lr_size <= MAX_LR_SIZE:
        raise ValueError(f"--lr-size {lr_size} is not a whole number from {MIN_LR_SIZE} to {MAX_LR_SIZE}")


def at_lr_size(config: LRTranslatorConfig, lr_size: int) -> LRTranslatorConfig:
    """The same generator worked at another low-resolution size (it is fully convolutional)."""
    check_lr_size(lr_size)
    return LRTranslatorConfig(**{**config.to_dict(), "lr_size": lr_size, "hr_size": lr_size * config.scale})


# --- the exact projection ------------------------------------------------------------------------


def project_to_target(images: Tensor, target: Tensor, *, iterations: int = 20) -> Tensor:
    """The nearest-looking image to ``images`` that downscales exactly to ``target``.

    The residual r = target - DS(x) is added back as U(r) = B(r) + N(r - DS(B(r))), B bilinear and
    N block replication: DS(N(v)) = v, so DS(x + U(r)) = target exactly, and the correction is
    smooth except for what bilinear upsampling cannot explain. Clipping to [-1, 1] can undo part
    of it, so projection and clipping alternate (projections onto convex sets) until they agree.
    """
    scale = images.shape[-1] // target.shape[-1]
    result = images
    for _ in range(iterations):
        residual = target - downscale(result, target.shape[-2:])
        if residual.abs().max() < EIGHT_BIT_LEVEL / 64:
            break
        smooth = F.interpolate(residual, scale_factor=scale, mode="bilinear", align_corners=False)
        blocks = residual - downscale(smooth, target.shape[-2:])
        result = (result + smooth + F.interpolate(blocks, scale_factor=scale, mode="nearest")).clamp(-1, 1)
    return result


def lr_error_levels(images: Tensor, target: Tensor) -> Tensor:
    """Mean |DS(image) - target| per image, in 8-bit levels."""
    return (downscale(images, target.shape[-2:]) - target).abs().flatten(1).mean(1) / EIGHT_BIT_LEVEL


def quantise(images: Tensor) -> Tensor:
    """What an 8-bit file stores, back in [-1, 1]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


# --- the pipeline --------------------------------------------------------------------------------


class LRTranslator:
    """The generator and (optionally) the face aligner, loaded once for a batch."""

    def __init__(
        self,
        generator: LRConditionedGenerator,
        config: LRTranslatorConfig,
        *,
        device: torch.device,
        detector: FaceDetector | None = None,
    ) -> None:
        self.generator = generator.to(device).eval()
        self.config = config
        self.device = device
        self.detector = detector

    @classmethod
    @reports_out_of_memory(memory_hints.LOAD)
    def load(
        cls,
        checkpoint: str | os.PathLike[str],
        *,
        lr_size: int | None = None,
        device: torch.device | str = AUTO,
        align_faces: bool = False,
        detector: str | os.PathLike[str] = DEFAULT_DETECTOR,
        progress: DownloadProgress | None = None,
    ) -> LRTranslator:
        """Load the generator of ``checkpoint``: an `i2i train translate-lr` checkpoint file or run
        folder (its latest checkpoint), or the authors' training file. ``lr_size`` works at another
        low-resolution size than the checkpoint's; ``align_faces`` loads ``detector`` to align faces."""
        if lr_size is not None:  # before the checkpoint is read: a bare generator's sizes come from it
            check_lr_size(lr_size)
        check_flag("align_faces", align_faces)
        device = device if isinstance(device, torch.device) else pick_device(device)
        generator, config = load_trained(
            checkpoint, METHOD_NAME, lambda content: generator_from_checkpoint(content, lr_size=lr_size)
        )
        if lr_size is not None and lr_size != config.lr_size:
            config = at_lr_size(config, lr_size)
        face_detector = None
        if align_faces:
            face_detector = FaceDetector(load_checkpoint(detector, "RetinaFace", build_retinaface, progress), device)
        return cls(generator, config, device=device, detector=face_detector)

    @property
    def hr_size(self) -> int:
        return self.config.hr_size

    @reports_out_of_memory(memory_hints.TRANSLATE_LR)
    def prepare_source(self, picture: Picture, role: str = "source") -> Tensor:
        """(1, 3, hr, hr) in [-1, 1]: the aligned face or the centred square, at the working size."""
        rgb = picture.rgb
        if min(rgb.shape[:2]) < self.config.lr_size * 2:
            raise InputError(
                picture.source or role,
                f"the {role} is {rgb.shape[1]}x{rgb.shape[0]} px, too small to translate at "
                f"{self.hr_size} px",
                "use a larger photo (tiny images can only be targets)" if role == "source"
                else f"crop the target square at {self.config.lr_size}x{self.config.lr_size} px, or use a larger photo",
            )
        if self.detector is not None:
            rgb = aligned_largest_face(self.detector, picture, role, "leave out --align-faces")
        return to_tensor(square_resize(rgb, self.hr_size), self.device)

    def is_tiny(self, picture: Picture) -> bool:
        """Already a low-resolution target: at most 32 px, and smaller than the working size."""
        side = max(picture.rgb.shape[:2])
        return side <= MAX_LR_SIZE and side < self.hr_size

    @reports_out_of_memory(memory_hints.TRANSLATE_LR)
    def prepare_target(self, picture: Picture) -> Tensor:
        """(1, 3, lr, lr) in [-1, 1]. A tiny image is the target itself; a photo is prepared like a
        source and downscaled by the method's operator (average pooling)."""
        height, width = picture.rgb.shape[:2]
        if self.is_tiny(picture):
            if height != width:
                raise InputError(picture.source or "target", f"a tiny target must be square, this one is {width}x{height} px",
                                 "crop it square, or pass the full-size image")
            if height != self.config.lr_size:
                lr = self.config.lr_size
                workable = MIN_LR_SIZE <= width <= MAX_LR_SIZE  # only then can --lr-size match it
                raise InputError(picture.source or "target", f"the target is {width}x{height} px but the model works at "
                                 f"{lr}x{lr} here",
                                 f"pass --lr-size {width}, or a target of {lr}x{lr}" if workable
                                 else f"pass a target of {lr}x{lr} (or {MIN_LR_SIZE}-{MAX_LR_SIZE} px with --lr-size), "
                                 "or the full-size image")
            return to_tensor(picture.rgb, self.device)
        return downscale(self.prepare_source(picture, "target"), self.config.lr_size)

    @reports_out_of_memory(memory_hints.TRANSLATE_LR)
    @torch.no_grad()
    def translate_tensors(self, sources: Tensor, targets: Tensor, *, exact: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(outputs quantised to 8 bits, their LR errors, the network's own LR errors)."""
        raw = self.generator(sources, targets).clamp(-1, 1)
        network_error = lr_error_levels(quantise(raw), targets)
        output = quantise(project_to_target(raw, targets) if exact else raw)
        return output, lr_error_levels(output, targets), network_error

    @reports_out_of_memory(memory_hints.TRANSLATE_LR)
    def translate(self, source: Picture, target: Picture, *, exact: bool = False) -> LRTranslation:
        """``source``'s detail fitted to ``target`` (both RGB pictures; a square target of at most
        32 px is used as it is, a larger one is downscaled); ``exact`` corrects the output so that
        it downsamples exactly to the target."""
        check_picture(source, "LRTranslator.translate()", "source")
        check_picture(target, "LRTranslator.translate()", "target")
        check_flag("exact", exact)
        seconds: dict[str, float] = {}
        with timed(seconds, "prepare"):
            source_tensor = self.prepare_source(source)
            target_tensor = self.prepare_target(target)
        with timed(seconds, "generate"):
            output, error, network_error = self.translate_tensors(source_tensor, target_tensor, exact=exact)
        return LRTranslation(
            picture=to_picture(output[0]),
            source=to_picture(source_tensor[0]),
            target=to_picture(target_tensor[0]),
            lr_error=float(error[0]),
            network_error=float(network_error[0]),
            exact=exact,
            seconds=seconds,
        )


def translation_grid(sources: list[Picture], targets: list[Picture], outputs: list[list[Picture]]) -> Picture:
    """The paper's figure layout: targets (block-upsampled) across the top, sources down the left,
    output[i][j] = source i translated to target j."""
    size = sources[0].rgb.shape[0]

    def tile(picture: Picture) -> np.ndarray:
        rgb = picture.rgb
        if rgb.shape[0] != size:  # a tiny target: show its pixels as blocks
            rgb = np.repeat(np.repeat(rgb, size // rgb.shape[0], axis=0), size // rgb.shape[1], axis=1)
        return rgb

    blank = np.full((size, size, 3), 255, dtype=np.uint8)
    rows = [np.concatenate([blank, *(tile(t) for t in targets)], axis=1)]
    for source, row in zip(sources, outputs):
        rows.append(np.concatenate([tile(source), *(tile(o) for o in row)], axis=1))
    return Picture(rgb=np.ascontiguousarray(np.concatenate(rows, axis=0)))
