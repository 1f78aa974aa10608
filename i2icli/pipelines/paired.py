"""The paired pipeline (GRIT): a label map becomes a photo, as a reconstruction plus a GAN residual.

Label maps are read from their centred square and resized to the working size (nearest
neighbour for class maps), exactly as training read them. The style is the running mean of the
training photos' codes unless a style photo is given. Each sample draws its noise maps from its
own seed on the CPU, so a seed gives the same output on every device and for every batch order;
the reconstruction does not depend on the noise, so it is computed once per label map.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from i2icli.archs.grit import GRITConfig, GRITGenerator
from i2icli.errors import InputError, WeightsError
from i2icli.imageio import Picture
from i2icli.pipelines import memory_hints
from i2icli.pipelines.arguments import (
    check_flag,
    check_picture,
    check_seed,
    check_whole,
    is_whole,
)
from i2icli.pipelines.devices import AUTO, pick_device
from i2icli.pipelines.imagetensors import (
    EIGHT_BIT_LEVEL,
    square_resize,
    to_picture,
    to_tensor,
)
from i2icli.pipelines.loading import instantiate, load_trained, timed
from i2icli.pipelines.memory import reports_out_of_memory
from i2icli.pipelines.paired_plan import METHOD_NAME, sample_seed
from i2icli.semantics.labelmaps import (
    CLASS_0_AND_UNKNOWN,
    COLOUR_PALETTE,
    UNKNOWN_ONLY,
    jpeg_label_maps_note,
    misreading,
    square_label_channels,
)


@dataclass(frozen=True)
class PairedTranslation:
    """One label map's results. ``residuals[k]`` and ``outputs[k]`` belong to ``seeds[k]``."""

    reconstruction: Picture
    residuals: list[Picture]  # shown as 128 + 127.5 x residual
    outputs: list[Picture]
    seeds: list[int]
    std_map: np.ndarray | None = None  # (H, W) per-pixel std over the samples, in 8-bit levels
    tensors: dict[str, Tensor] = field(default_factory=dict)  # raw components, (N, 3, H, W)
    seconds: dict[str, float] = field(default_factory=dict)


def generator_from_checkpoint(content: Any) -> tuple[GRITGenerator, GRITConfig]:
    """The EMA generator of an ``i2i train paired`` checkpoint (the live one if there is no EMA)."""
    if not isinstance(content, dict):
        raise TypeError("not a dictionary of networks")
    method = content.get("method")
    if method != METHOD_NAME:
        what = f"a `{method}` checkpoint" if method else "not a checkpoint from `i2i train paired`"
        raise WeightsError(f"this is {what}", "pass a checkpoint (or run folder) from `i2i train paired`")
    config = GRITConfig(**content["config"]["model"])
    state = content.get("G_ema") or content["G"]
    generator = instantiate(lambda: GRITGenerator(config), dict(state))
    return generator.requires_grad_(False), config


def samples_per_pass(device: torch.device) -> int:
    """How many samples' residuals one pass computes. A GPU is faster with a batch; a CPU was
    measured slower with one (larger activations, same arithmetic; benchmarks/paired_cost.py)."""
    return 8 if device.type in ("cuda", "mps") else 1


class PairedTranslator:
    """A GRIT generator loaded once for a batch of label maps."""

    def __init__(self, generator: GRITGenerator, config: GRITConfig, *, device: torch.device, size: int | None = None,
                 per_pass: int | None = None) -> None:
        self.generator = generator.to(device).eval()
        self.per_pass = per_pass or samples_per_pass(device)
        self.config = config
        self.device = device
        self.size = config.image_size if size is None else size  # 0 is refused, not the default
        multiple = config.size_multiple
        if not is_whole(self.size) or self.size % multiple or self.size < 2 * multiple:
            raise ValueError(f"--size {self.size}: this model needs a multiple of {multiple} of at least {2 * multiple}")

    @classmethod
    @reports_out_of_memory(memory_hints.LOAD)
    def load(cls, checkpoint: str | os.PathLike[str], *, size: int | None = None,
             device: torch.device | str = AUTO) -> PairedTranslator:
        """Load the generator of an `i2i train paired` checkpoint file or run folder (its latest
        checkpoint); ``size`` is the working size (default: the training size)."""
        device = device if isinstance(device, torch.device) else pick_device(device)
        generator, config = load_trained(checkpoint, METHOD_NAME, generator_from_checkpoint)
        return cls(generator, config, device=device, size=size)

    def prepare_label(self, picture: Picture) -> Tensor:
        """(1, C, S, S): the label map's centred square as the network's input channels."""
        source = picture.source or "label map"
        channels = square_label_channels(picture, source, self.size, self.config.input_kind, self.config.input_channels)
        notes = [jpeg_label_maps_note([source]) if self.config.input_kind == "label" else None,
                 _misread_note(picture, source, self.config.input_kind)]
        for note in filter(None, notes):
            logging.getLogger(__name__).warning("%s", note)
        return torch.from_numpy(channels)[None].to(self.device)

    @reports_out_of_memory(memory_hints.PAIRED)
    def style_code(self, style: Picture | None) -> Tensor:
        """(1, style_dim): the style photo's code, or the training photos' mean."""
        check_picture(style, "PairedTranslator.style_code()", "style photo", optional=True)
        if style is None:
            return self.generator.mean_style(1)
        if min(style.rgb.shape[:2]) < 16:
            raise InputError(style.source or "style", f"the style photo is {style.width}x{style.height} px, too small",
                             "use a photo of at least 16x16 px")
        photo = to_tensor(square_resize(style.rgb, self.config.image_size), self.device)
        return self.generator.encode_style(photo)

    @reports_out_of_memory(memory_hints.PAIRED)
    @torch.no_grad()
    def translate(self, label: Picture, *, style: Tensor | Picture | None = None, samples: int = 1, seed: int = 0,
                  std_map: bool = False) -> PairedTranslation:
        """``samples`` photos of ``label`` (a class-index label map or an edge image, as the model was
        trained on), sample k from noise seed ``seed + k``. ``style``: an RGB photo whose style to
        use (or its ``style_code``), else the training photos' mean; ``std_map``: also the per-pixel
        spread over the samples."""
        check_picture(label, "PairedTranslator.translate()", "label map")
        if not isinstance(style, Tensor):
            check_picture(style, "PairedTranslator.translate()", "style photo", optional=True)
        check_flag("std_map", std_map)
        check_whole("samples", samples, 1)
        check_seed(seed, count=samples)  # sample k uses seed + k
        if std_map and samples < 2:  # refused before the work, not after it
            raise ValueError("a standard-deviation map needs at least two samples")
        seconds: dict[str, float] = {}
        with timed(seconds, "prepare"):
            channels = self.prepare_label(label)
            code = style if isinstance(style, Tensor) else self.style_code(style)
        seeds = [sample_seed(seed, k) for k in range(samples)]
        with timed(seconds, "generate"):
            # The reconstruction and the residual decoder's inputs do not depend on the noise:
            # computed once, then only the residual decoder runs for each sample.
            reconstruction, guide = self.generator.reconstruct(channels, code)
            _, _, height, width = channels.shape
            per_pass = self.per_pass
            parts = []
            for start in range(0, samples, per_pass):
                chunk = seeds[start : start + per_pass]
                # Each sample's maps come from its own seed, so a seed gives the same image in any chunk.
                drawn = [self.generator.draw_noise(1, height, width, torch.Generator().manual_seed(s)) for s in chunk]
                maps = [torch.cat(layer) for layer in zip(*drawn)]
                parts.append(self.generator.residual(guide.repeat(len(chunk)), maps))
            residual = torch.cat(parts)
            output = reconstruction + residual
        spread = None
        if std_map:
            spread = (output.clamp(-1, 1).std(dim=0, unbiased=False).mean(dim=0) / EIGHT_BIT_LEVEL).cpu().numpy()
        return PairedTranslation(
            reconstruction=to_picture(reconstruction[0]),
            residuals=[to_picture(r) for r in residual],
            outputs=[to_picture(o) for o in output],
            seeds=seeds,
            std_map=spread,
            tensors={"reconstruction": reconstruction.cpu(), "residual": residual.cpu(), "output": output.cpu()},
            seconds=seconds,
        )


def _misread_note(picture: Picture, source: Path | str, input_kind: str) -> str | None:
    """A warning for a label map this model cannot read as meant; None for one it may."""
    found = misreading(picture, source, input_kind)
    if found is None:
        return None
    if found.kind == UNKNOWN_ONLY:
        return f"{source}: every pixel is 255 (unknown), so the output follows no class; check that it is the label map meant"
    if found.kind == CLASS_0_AND_UNKNOWN:
        return (f"{source}: holds only class 0 and 255, which means unknown, so the output shows class 0 alone; "
                "store a mask's classes as 0 and 1, and translate an edge image with a model trained with --edges")
    if found.kind == COLOUR_PALETTE:
        return (f"{source}: is a colour palette image, as class-index label maps are stored, but this model takes "
                "edge images; translate label maps with a model trained with --label-nc")
    return (f"{source}: holds only the values 0-{found.largest}, as a class-index label map does, but this model takes edge "
            "images (white lines on black); translate label maps with a model trained with --label-nc")


def std_heatmap(std: np.ndarray, top: float | None = None) -> Picture:
    """A per-pixel standard deviation as a colour picture (inferno: black 0, yellow ``top``)."""
    import cv2

    top = float(std.max()) if top is None else top
    scaled = np.zeros_like(std) if top <= 0 else np.clip(std / top, 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).round().astype(np.uint8), cv2.COLORMAP_INFERNO)
    return Picture(rgb=np.ascontiguousarray(bgr[:, :, ::-1]))
