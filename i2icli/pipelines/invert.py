"""The invert pipeline (Multiple GAN Inversion): a source face gives the structure, an exemplar the
style, and a pretrained StyleGAN2 makes the result realistic at its own resolution.

1. Both faces are aligned to the FFHQ-style template (as ``restore`` aligns faces) and resized to
   the working size.
2. The exemplar is warped onto the source through VGG-19 feature correspondence.
3. Multi-code inversion (mGANprior) fits the generator to the warped exemplar, once per composing
   layer, all layers in the same batch: the render is downsampled to the working size and
   compared by pixel MSE plus a VGG-16 perceptual loss.
4. Each layer's result is scored by the single-image Fréchet distance to the exemplar on FID
   Inception features, and the lowest score wins.

No training: every network is pretrained and frozen; only codes and blending weights are fitted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from i2icli.archs.features import FIDInceptionFeatures, VGGFeatures
from i2icli.archs.mgi import MultiCodeInversion, composing_layer_range, initial_codes
from i2icli.archs.stylegan2 import (
    StyleGAN2Generator,
    convert_fused_state_dict,
    is_fused_layout,
    stylegan2_config_from_state_dict,
)
from i2icli.errors import DeviceError, I2IError
from i2icli.faces.detect import FaceDetector, aligned_largest_face, build_retinaface
from i2icli.imageio import Picture
from i2icli.pipelines import memory_hints
from i2icli.pipelines.arguments import check_picture
from i2icli.pipelines.correspondence import (
    correspondence_features,
    soft_warp,
)
from i2icli.pipelines.devices import AUTO, explicit_dtype, pick_device
from i2icli.pipelines.frechet import single_image_frechet
from i2icli.pipelines.imagetensors import square_resize, to_picture, to_tensor
from i2icli.pipelines.invert_settings import (
    DEFAULT_LAYERS,
    InvertSettings,
    check_face_crop,
    parse_layers,
)
from i2icli.pipelines.loading import DownloadProgress, load_checkpoint, timed
from i2icli.pipelines.memory import reports_out_of_memory
from i2icli.pixels import to_8bit

DEFAULT_GENERATOR = "stylegan2-ffhq-512"
DEFAULT_CORRESPONDENCE = "vgg19-imagenet"
DEFAULT_PERCEPTUAL = "vgg16-imagenet"
DEFAULT_SCORER = "fid-inception"
DEFAULT_DETECTOR = "retinaface-resnet50"

# mGANprior's perceptual term: VGG-16 up to relu3_3, L1, scaled by 1e-3 (its losses.py).
PERCEPTUAL_LAYER = "relu3_3"
PERCEPTUAL_SCALE = 1e-3


@dataclass
class Hypothesis:
    """One composing layer's result: its render, final loss and Fréchet score (lower is better)."""

    layer: int
    picture: Picture
    loss: float
    score: float


@dataclass
class InvertResult:
    """The chosen render (at the generator's resolution), every hypothesis, and the warp."""

    picture: Picture
    layer: int
    hypotheses: list[Hypothesis]
    warped: Picture
    source_face: Picture
    exemplar_face: Picture
    seconds: dict[str, float] = field(default_factory=dict)


# (step, steps, one loss per hypothesis in the order of settings.layers)
StepCallback = Callable[[int, int, Sequence[float]], None]


def build_generator(state_dict: dict[str, Tensor]) -> StyleGAN2Generator:
    """A StyleGAN2 from a checkpoint in either the original (fused-op) or the clean layout.

    Checkpoints saved from the original module keep its upsampling (transposed conv + FIR
    blur, in plain PyTorch) so that they render exactly as they were trained.
    """
    if is_fused_layout(state_dict):
        config = stylegan2_config_from_state_dict(state_dict)
        state_dict = convert_fused_state_dict(state_dict)
        resample = "fir"
    else:
        config = stylegan2_config_from_state_dict(state_dict)
        resample = "bilinear"
    # Built for real rather than on the meta device (as other pipelines do): the FIR kernels are
    # constants outside the state dict, and loading would leave them unmaterialised.
    generator = StyleGAN2Generator(**config, resample=resample)
    generator.load_state_dict(state_dict, strict=True)
    # Inversion runs batches of many codes with different styles and differentiates through
    # them: scaling activations beats building per-sample kernels there.
    return generator.scale_activations().eval().requires_grad_(False)


def build_vgg(depth: int) -> Callable[[dict[str, Tensor]], VGGFeatures]:
    layers = ("relu3_4", "relu4_4") if depth == 19 else (PERCEPTUAL_LAYER,)

    def build(state_dict: dict[str, Tensor]) -> VGGFeatures:
        network = VGGFeatures(depth, layers)
        network.load_torchvision_state_dict(state_dict)
        return network.eval().requires_grad_(False)

    return build


def build_scorer(state_dict: dict[str, Tensor]) -> FIDInceptionFeatures:
    network = FIDInceptionFeatures()
    network.load_fid_state_dict(state_dict)
    return network.eval().requires_grad_(False)


def _downsample(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size:
        return images
    if images.shape[-1] % size == 0:
        return F.avg_pool2d(images, images.shape[-1] // size)  # area average: exact for whole factors
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def check_settings(generator: StyleGAN2Generator, settings: InvertSettings) -> None:
    """Refuse layers and sizes ``generator`` cannot do, in terms of the CLI's options."""
    valid = composing_layer_range(generator)
    outside = [layer for layer in settings.layers if layer not in valid]
    if outside:
        raise ValueError(
            f"--layers {','.join(map(str, outside))} outside {valid.start}-{valid.stop - 1}, the composing layers "
            f"of this {generator.out_size} px generator ({generator.num_convs} style convs)"
        )
    if settings.size > generator.out_size:
        raise ValueError(f"--size {settings.size} is larger than the generator's {generator.out_size} px output")


def _check_precision(settings: InvertSettings, device: torch.device) -> None:
    """Refuse a precision ``device`` cannot honour, and set it up as every command's ``--fp32`` and
    ``--bf16`` do: fp32 on CUDA turns TF32 off, so that the fit and the scores are float32 arithmetic
    (cuDNN would otherwise run the convolutions with a 10-bit mantissa on Ampere and later GPUs)."""
    try:
        explicit_dtype(settings.precision, device)  # a clear error where bf16 would be emulated or missing
    except DeviceError as error:  # its hint names --fp32/--fp16, which this command does not have
        raise DeviceError(error.message, "leave out --bf16") from None


class InvertPipeline:
    """Multiple GAN Inversion with every network loaded once; see ``invert``."""

    def __init__(
        self,
        generator: StyleGAN2Generator,
        correspondence: VGGFeatures,
        perceptual: VGGFeatures | None,
        scorer: FIDInceptionFeatures,
        *,
        detector: FaceDetector | None,
        device: torch.device,
        settings: InvertSettings | None = None,
    ) -> None:
        self.device = device
        self.generator = generator.to(device).eval()
        self.correspondence = correspondence.to(device).eval()
        self.perceptual = perceptual.to(device).eval() if perceptual is not None else None
        self.scorer = scorer.to(device).eval()
        self.detector = detector
        self.settings = settings or InvertSettings()
        if self.perceptual is None and self.settings.perceptual_weight:
            raise ValueError("a perceptual network is needed unless perceptual_weight is 0")
        check_settings(self.generator, self.settings)
        _check_precision(self.settings, device)

    @classmethod
    @reports_out_of_memory(memory_hints.LOAD)
    def load(
        cls,
        *,
        generator: str | os.PathLike[str] = DEFAULT_GENERATOR,
        correspondence: str | os.PathLike[str] = DEFAULT_CORRESPONDENCE,
        perceptual: str | os.PathLike[str] = DEFAULT_PERCEPTUAL,
        scorer: str | os.PathLike[str] = DEFAULT_SCORER,
        detector: str | os.PathLike[str] = DEFAULT_DETECTOR,
        device: torch.device | str = AUTO,
        settings: InvertSettings | None = None,
        progress: DownloadProgress | None = None,
    ) -> InvertPipeline:
        """Resolve each network (a name from weights.toml, or a file), download and verify it, and
        load it once. The StyleGAN2 generator is a manual download (see `i2i weights list`); the
        detector is not loaded with ``settings.aligned``, nor VGG-16 with ``perceptual_weight`` 0.
        ``progress(file, bytes_done, bytes_total)`` hears about downloads."""
        settings = settings or InvertSettings()
        device = device if isinstance(device, torch.device) else pick_device(device)
        _check_precision(settings, device)
        # The generator first: it is the one manual download, so a machine without it learns that
        # before anything else is fetched, and options it cannot do are refused before the rest is.
        generator_model = load_checkpoint(generator, "StyleGAN2 generator", build_generator, progress)
        check_settings(generator_model, settings)
        face_detector = None
        if not settings.aligned:
            face_detector = FaceDetector(load_checkpoint(detector, "RetinaFace", build_retinaface, progress), device)
        return cls(
            generator_model,
            load_checkpoint(correspondence, "VGG-19", build_vgg(19), progress),
            # Not loaded (nor downloaded) where the perceptual term is switched off.
            load_checkpoint(perceptual, "VGG-16", build_vgg(16), progress) if settings.perceptual_weight else None,
            load_checkpoint(scorer, "FID Inception", build_scorer, progress),
            detector=face_detector,
            device=device,
            settings=settings,
        )

    # -- stages -------------------------------------------------------------------------------

    def face(self, picture: Picture, role: str) -> np.ndarray:
        """The picture's largest face aligned to the 512 template (or, with --aligned, the picture
        itself cropped square), at full resolution."""
        if self.detector is None:
            check_face_crop(picture, role)
            return square_resize(picture.rgb, min(picture.rgb.shape[:2]))
        return aligned_largest_face(self.detector, picture, role, "pass --aligned for face crops that are already aligned")

    @torch.no_grad()
    def warp(self, source: Tensor, exemplar: Tensor) -> Tensor:
        """The exemplar warped to the source's layout, (1, 3, size, size) in [-1, 1]."""
        both = correspondence_features(self.correspondence, torch.cat([source, exemplar]))
        return soft_warp(both[:1], both[1:], exemplar, temperature=self.settings.temperature)

    def batches_hypotheses(self) -> bool:
        """Whether every hypothesis is fitted in one batch (see ``InvertSettings.batch_hypotheses``)."""
        if self.settings.batch_hypotheses is not None:
            return self.settings.batch_hypotheses
        return self.device.type != "cpu"

    def fit(self, target: Tensor, *, on_step: StepCallback | None = None) -> tuple[Tensor, list[float]]:
        """Multi-code inversion of every composing layer; returns (renders, final losses).

        Hypotheses share nothing, so fitting them in one batch or one after another gives the
        same result; ``settings.batch_hypotheses`` picks which (see there).
        """
        settings = self.settings
        layers = list(settings.layers)
        groups = [layers] if self.batches_hypotheses() else [[layer] for layer in layers]
        target_features = self._perceptual_features(target).detach() if settings.perceptual_weight else None
        total = settings.steps * len(groups)
        losses = [float("nan")] * len(layers)
        renders: list[Tensor] = []
        first = 0
        for number, group in enumerate(groups):
            def report(step: int, group_losses: list[float], offset: int = first, done: int = number) -> None:
                losses[offset : offset + len(group_losses)] = group_losses
                if on_step is not None:
                    on_step(done * settings.steps + step, total, list(losses))

            group_renders, group_losses = self._fit_group(group, target, target_features, report)
            renders.append(group_renders)
            losses[first : first + len(group)] = group_losses
            first += len(group)
        return torch.cat(renders), losses

    def _fit_group(
        self,
        layers: list[int],
        target: Tensor,
        target_features: Tensor | None,
        report: Callable[[int, list[float]], None],
    ) -> tuple[Tensor, list[float]]:
        settings = self.settings
        codes = initial_codes(self.generator, layers, settings.codes, settings.seed)
        model = MultiCodeInversion(self.generator, layers, codes).to(self.device)
        optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
        for step in range(settings.steps):
            optimiser.zero_grad(set_to_none=True)
            with self._autocast():
                renders = model()
            per_hypothesis = self._losses(renders, target, target_features)
            if step == 0:
                self._check_start(renders, per_hypothesis)
            # Summed: each hypothesis's parameters only see their own loss (and Adam is per element).
            per_hypothesis.sum().backward()
            optimiser.step()
            report(step + 1, per_hypothesis.detach().cpu().tolist())
        with torch.no_grad():
            renders = model()
            losses = self._losses(renders, target, target_features).cpu().tolist()
        return renders, losses

    def _check_start(self, renders: Tensor, losses: Tensor) -> None:
        """Refuse a loss that is not finite before any Adam step: no learning rate caused it, and
        fitting on would end, after every step, in a "diverged" pointing at --lr."""
        if bool(torch.isfinite(losses).all()):
            return
        if self.settings.perceptual_weight and bool(torch.isfinite(renders).all()):
            raise I2IError(f"--perceptual-weight {self.settings.perceptual_weight:g} is too large: the loss overflows "
                           "before the first step", "use a smaller --perceptual-weight (the default is 1)")
        raise I2IError("the generator renders non-finite values from its starting codes",
                       "check the --generator checkpoint: it may be damaged")

    def _autocast(self) -> torch.autocast:
        enabled = self.settings.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _perceptual_features(self, images: Tensor) -> Tensor:
        assert self.perceptual is not None  # only called with a non-zero perceptual weight
        with self._autocast():
            features = self.perceptual(images)[PERCEPTUAL_LAYER]
        return features.float()

    def _losses(self, renders: Tensor, target: Tensor, target_features: Tensor | None) -> Tensor:
        """Per-hypothesis loss of the downsampled renders against the warped exemplar."""
        small = _downsample(renders.float(), target.shape[-1])
        loss = (small - target).pow(2).mean(dim=(1, 2, 3))
        if target_features is not None:
            features = self._perceptual_features(small)
            perceptual = (features - target_features).abs().mean(dim=(1, 2, 3))
            loss = loss + self.settings.perceptual_weight * PERCEPTUAL_SCALE * perceptual
        return loss

    @reports_out_of_memory(memory_hints.INVERT)
    def invert(self, source: Picture, exemplar: Picture, *, on_step: StepCallback | None = None) -> InvertResult:
        """Translate ``source``'s face into the style of ``exemplar``'s (both RGB pictures; whole
        photos, or aligned face crops with ``settings.aligned``); see the module docstring.
        ``on_step(step, steps, losses)`` is called after each Adam step."""
        check_picture(source, "InvertPipeline.invert()", "source")
        check_picture(exemplar, "InvertPipeline.invert()", "exemplar")
        seconds: dict[str, float] = {}
        size = self.settings.size
        with timed(seconds, "align"):
            source_face = to_8bit(self.face(source, "source"))
            exemplar_face = to_8bit(self.face(exemplar, "exemplar"))
        source_tensor = to_tensor(square_resize(source_face, size), self.device)
        exemplar_tensor = to_tensor(square_resize(exemplar_face, size), self.device)
        with timed(seconds, "warp"):
            warped = self.warp(source_tensor, exemplar_tensor)
            # Inside the stage: reading the result waits for a GPU's queued warp, which would
            # otherwise be timed as part of the inversion.
            finite = bool(torch.isfinite(warped).all())
        if not finite:  # found now, not as "diverged" after hours of fitting
            raise I2IError(f"--temperature {self.settings.temperature:g} is too large: the warped exemplar is not "
                           "finite", "use a smaller --temperature (the default is 100)")
        with timed(seconds, "invert"):
            renders, losses = self.fit(warped, on_step=on_step)
        with timed(seconds, "score"):
            # The reference is the exemplar face at its own resolution, not the working-size copy:
            # the network resizes both to its 299 px input, so a sharp render is not compared with
            # an upsampled, blurred exemplar. A face larger than the renders (an --aligned crop of
            # a large photo) is first brought to their size: the network's bilinear resize does not
            # filter, so it would alias a large face's fine detail, and the renders' not.
            side = self.generator.out_size
            reference = to_tensor(square_resize(exemplar_face, min(side, len(exemplar_face))), self.device)
            # Scored as saved, within [-1, 1]: the raw render's overshoot is not in the picture.
            scores = single_image_frechet(self.scorer, renders.detach().clamp(-1, 1), reference)
        hypotheses = [
            Hypothesis(layer, to_picture(render), loss, score)
            for layer, render, loss, score in zip(self.settings.layers, renders, losses, scores)
        ]
        # A diverged render scores infinity (see frechet_distance); its loss may be NaN as well.
        finite = [hypothesis for hypothesis in hypotheses if math.isfinite(hypothesis.score)]
        if not finite:
            raise I2IError("the inversion diverged: every layer's render ended with non-finite values",
                           "use a lower --lr (the default is 0.05)")
        best = min(finite, key=lambda hypothesis: hypothesis.score)
        warped_picture = to_picture(warped[0])
        for shown in (*(hypothesis.picture for hypothesis in hypotheses), warped_picture):
            # Their colours are the exemplar's, in its colour space (as `i2i exemplar` tags its results).
            # Its EXIF is not carried: a render is a new picture, which no camera took then and there.
            shown.icc_profile = exemplar.icc_profile
        return InvertResult(
            picture=best.picture,
            layer=best.layer,
            hypotheses=hypotheses,
            warped=warped_picture,
            source_face=Picture(rgb=source_face, icc_profile=source.icc_profile),
            exemplar_face=Picture(rgb=exemplar_face, icc_profile=exemplar.icc_profile),
            seconds=seconds,
        )


__all__ = [
    "DEFAULT_GENERATOR",
    "DEFAULT_LAYERS",
    "Hypothesis",
    "InvertPipeline",
    "InvertResult",
    "InvertSettings",
    "build_generator",
    "check_face_crop",
    "parse_layers",
]
