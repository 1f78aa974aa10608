"""Training GRIT: the reconstruction learns from L1, the GAN residual from the discriminator alone.

One step on a batch of (label map, photo) pairs:

* the style code is encoded from the photo itself, and the generator gives the reconstruction
  and the GAN residual (noise drawn from the step's generator);
* the multi-scale discriminator, conditioned on the label map, is trained with the hinge loss
  on the photo against the detached sum;
* the generator gets the hinge loss on the sum, plus ``l1_weight`` x L1(reconstruction, photo)
  and, optionally, ``vgg_weight`` x a VGG-19 perceptual distance on the reconstruction. Neither
  pixel term depends on the residual decoder, so the residual is never pushed toward
  pixel-matching (see :mod:`i2icli.archs.grit`).

Adam with the two-timescale rates of SPADE (G 1e-4, D 4e-4, betas 0 and 0.9); an EMA of the
generator (with a warm-up) is what inference uses. The running mean of the style codes (the default style at
inference) is updated from each batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from i2icli.archs.grit import GRITConfig, GRITGenerator, MultiScaleDiscriminator
from i2icli.pipelines.paired_plan import METHOD_NAME
from i2icli.training.nets import AdversarialTraining, initialise, update_average

# The five VGG-19 layers of pix2pixHD's perceptual loss and its weights for them.
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


@dataclass(frozen=True)
class PairedTrainingOptions:
    l1_weight: float = 10.0
    vgg_weight: float = 0.0  # off by default, as in the paper
    generator_lr: float = 1e-4
    discriminator_lr: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    ema_decay: float = 0.999
    style_mean_decay: float = 0.99

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def hinge_discriminator_loss(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Mean over scales of E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_generator_loss(fake: list[Tensor]) -> Tensor:
    return torch.stack([-f.mean() for f in fake]).mean()


class PairedTraining(AdversarialTraining):
    """The trainable method: generator (with its style encoder), discriminator, optimisers, EMA."""

    name = METHOD_NAME

    def __init__(
        self,
        model: GRITConfig,
        options: PairedTrainingOptions,
        *,
        seed: int = 0,
        data: dict[str, Any] | None = None,
        vgg: Callable[[Tensor], dict[str, Tensor]] | None = None,
    ) -> None:
        if options.vgg_weight > 0 and vgg is None:
            raise ValueError("a VGG perceptual weight needs the VGG-19 network")
        self.vgg = vgg
        generator = torch.Generator().manual_seed(seed)
        netG, netD = GRITGenerator(model), MultiScaleDiscriminator(model)
        initialise(netG, generator)
        initialise(netD, generator)
        # The residual head starts at zero: training begins from the reconstruction alone, and
        # the residual grows as the discriminator asks for detail.
        torch.nn.init.zeros_(netG.to_residual.weight)
        self.adopt(netG, netD, generator_lr=options.generator_lr, discriminator_lr=options.discriminator_lr,
                   betas=(options.beta1, options.beta2), model_config=model, options=options, data=data)
        self.ema_updates = 0

    # --- what the training loop needs, beyond AdversarialTraining ---------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema_updates": self.ema_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema_updates = int(state["ema_updates"])

    def to(self, device: torch.device) -> None:
        super().to(device)
        if isinstance(self.vgg, torch.nn.Module):
            self.vgg.to(device)

    def train_step(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, float]:
        label, photo = batch["label"], batch["photo"]
        options = self.options
        self.netG.train()
        style = self.netG.encode_style(photo)
        output = self.netG(label, style, generator)
        fake = output.image

        self.netD.train().requires_grad_(True)
        d_real = self.netD(label, photo)
        d_fake = self.netD(label, fake.detach())
        d_loss = hinge_discriminator_loss(d_real, d_fake)
        self.optD.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optD.step()

        # The generator step scores against the updated discriminator, without power iteration.
        self.netD.eval().requires_grad_(False)
        adversarial = hinge_generator_loss(self.netD(label, fake))
        l1 = F.l1_loss(output.reconstruction, photo)
        g_loss = adversarial + options.l1_weight * l1
        perceptual = None
        if options.vgg_weight > 0:
            perceptual = self.perceptual_distance(output.reconstruction, photo)
            g_loss = g_loss + options.vgg_weight * perceptual
        self.optG.zero_grad(set_to_none=True)
        g_loss.backward()
        self.optG.step()
        with torch.no_grad():
            self.netG.style_mean.lerp_(style.detach().mean(0), 1 - options.style_mean_decay)
        # Warm-up: early on the average follows the live weights closely, so that the samples of
        # a young run show what it has learnt rather than the random start.
        self.ema_updates += 1
        update_average(self.average, self.netG, min(options.ema_decay, (1 + self.ema_updates) / (10 + self.ema_updates)))

        losses = {
            "d_loss": float(d_loss.detach()),
            "g_loss": float(g_loss.detach()),
            "g_adv": float(adversarial.detach()),
            "l1": float(l1.detach()),
            "residual_abs": float(output.residual.detach().abs().mean()),
        }
        if perceptual is not None:
            losses["vgg"] = float(perceptual.detach())
        return losses

    def perceptual_distance(self, images: Tensor, references: Tensor) -> Tensor:
        assert self.vgg is not None
        ours = self.vgg(images)
        with torch.no_grad():  # the targets' features need no graph
            theirs = self.vgg(references)
        return sum(weight * F.l1_loss(ours[name], theirs[name])
                   for name, weight in zip(VGG_LAYERS, VGG_LAYER_WEIGHTS))  # type: ignore[return-value]

    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Tensor]) -> Tensor:
        """Rows of held-out examples: label map, photo, reconstruction, residual, and the output
        for two noise draws (style from the photo). [3, H, W] in [-1, 1]."""
        from i2icli.semantics.labelmaps import show_label_channels

        label, photo = batch["label"][:4], batch["photo"][:4]
        self.average.eval()
        style = self.average.encode_style(photo)
        cells = []
        reconstruction, guide = self.average.reconstruct(label, style)
        first_residual = self.average.residual(guide, torch.Generator().manual_seed(1))
        second_residual = self.average.residual(guide, torch.Generator().manual_seed(2))
        kind = self.model_config.input_kind
        for index in range(len(label)):
            shown = show_label_channels(label[index].cpu().numpy(), kind)
            shown_label = torch.from_numpy(shown.astype(np.float32) / 127.5 - 1).permute(2, 0, 1).to(photo.device)
            row = [shown_label, photo[index], reconstruction[index], first_residual[index],
                   reconstruction[index] + first_residual[index], reconstruction[index] + second_residual[index]]
            cells.append(torch.cat([cell.clamp(-1, 1) for cell in row], dim=2))
        return torch.cat(cells, dim=1)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class ImageScores:
    """Agreement of generated images with their ground-truth photos (8-bit images)."""

    l1: float  # mean |a - b| with pixels in [0, 1]
    psnr: float  # dB, peak 255
    ssim: float  # Wang et al.'s SSIM: Gaussian window, sigma 1.5, on RGB


@dataclass(frozen=True)
class PairedEvaluation:
    """The paper's table entries on held-out pairs: the output, and its reconstruction alone."""

    images: int
    output: ImageScores
    reconstruction: ImageScores
    lpips: float | None = None  # output against ground truth
    fid: float | None = None  # outputs against the held-out photos
    spectra: dict[str, np.ndarray] | None = None  # radially averaged power spectra
    notes: tuple[str, ...] = ()


def image_scores(images: Tensor, references: Tensor) -> ImageScores:
    """L1, PSNR and SSIM of 8-bit versions of ``images`` against ``references`` (both in [-1, 1])."""
    from skimage.metrics import structural_similarity

    def to_8bit(batch: Tensor) -> np.ndarray:
        return ((batch.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    ours, theirs = to_8bit(images), to_8bit(references)
    l1, psnr, ssim = [], [], []
    for a, b in zip(ours.astype(np.float64), theirs.astype(np.float64)):
        l1.append(np.abs(a - b).mean() / 255)
        mse = ((a - b) ** 2).mean()
        psnr.append(float("inf") if mse == 0 else 10 * np.log10(255**2 / mse))
        # The settings of Wang et al. (2004), which the papers' SSIM figures use.
        ssim.append(structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False))
    return ImageScores(l1=float(np.mean(l1)), psnr=float(np.mean(psnr)), ssim=float(np.mean(ssim)))


@torch.no_grad()
def evaluate(
    generator: GRITGenerator,
    labels: Tensor,
    photos: Tensor,
    *,
    style: str = "photo",
    seed: int = 0,
    fid_features: Callable[[Tensor], Tensor] | None = None,
    lpips_distance: Callable[[Tensor, Tensor], Tensor] | None = None,
    batch: int = 8,
) -> PairedEvaluation:
    """Generate every held-out label map once (noise from ``seed``) and score the outputs.

    ``style`` "photo" encodes each ground-truth photo's style (how the paper scores
    reconstruction); "mean" uses the mean style.
    """
    from i2icli.pipelines.spectrum import radial_power_spectrum
    from i2icli.training.metrics import fid

    if style not in ("photo", "mean"):
        raise ValueError(f"style must be 'photo' or 'mean', got {style!r}")
    device = next(generator.parameters()).device
    noise = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {"reconstruction": [], "residual": [], "output": []}
    for start in range(0, len(labels), batch):
        label = labels[start : start + batch].to(device)
        photo = photos[start : start + batch].to(device)
        code = generator.encode_style(photo) if style == "photo" else generator.mean_style(len(label))
        result = generator(label, code, noise)
        parts["reconstruction"].append(result.reconstruction.cpu())
        parts["residual"].append(result.residual.cpu())
        parts["output"].append(result.image.cpu())
    generated = {name: torch.cat(tensors) for name, tensors in parts.items()}
    output = generated["output"].clamp(-1, 1)
    notes: list[str] = []
    fid_value = None
    if fid_features is not None:
        if len(photos) >= 2:
            fid_value = fid(fid_features(photos), fid_features(output))
            if len(photos) < 2048:
                notes.append(f"FID over {len(photos)} images (biased high below a few thousand)")
        else:
            notes.append("FID needs at least two held-out images")
    lpips_value = None
    if lpips_distance is not None:
        # A batch at a time, as the images were generated: the whole held-out set in one call
        # holds every image's VGG features on the device at once, more than a GPU has.
        distances = [lpips_distance(output[start : start + batch], photos[start : start + batch])
                     for start in range(0, len(photos), batch)]
        lpips_value = float(torch.cat(distances).mean())
    spectra = {name: radial_power_spectrum(images) for name, images in generated.items()}
    spectra["photo"] = radial_power_spectrum(photos)
    return PairedEvaluation(
        images=len(labels),
        output=image_scores(output, photos),
        reconstruction=image_scores(generated["reconstruction"], photos),
        lpips=lpips_value,
        fid=fid_value,
        spectra=spectra,
        notes=tuple(notes),
    )
