"""Training translation with low-resolution conditioning: losses, optimisers, EMA.

One step, as in the paper: with a batch split into halves X_a, X_b and their low-resolution
versions y = DS(X) (average pooling),

    X_ab = G(X_a, y_b)   X_a' = G(X_ab, y_a)   X_ba = G(X_b, y_a)   X_b' = G(X_ba, y_b)

(four generator passes). The discriminator sees each fake with its difference map
|y - round(DS(fake))| and the real images with a zero map; it is trained with the non-saturating
loss plus an R1 penalty on the real images. The generator gets the non-saturating loss on all four
fakes plus lambda_cyc * (|X_a - X_a'| + |X_b - X_b'|). Adam with the paper's settings; an EMA of
the generator's weights is what inference uses.

The checkpoint keys 'Gen', 'Dis', 'optG', 'optD', 'AverageG' are the authors' (Medabid1/I2I-LR),
so each side can read the other's networks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from i2icli.archs.lr_conditioned import (
    LRConditionedGenerator,
    LRDifferenceDiscriminator,
    LRTranslatorConfig,
    difference_map,
    discriminator_head_halvings,
    downscale,
)
from i2icli.pipelines.imagetensors import EIGHT_BIT_LEVEL
from i2icli.pipelines.translate_lr_plan import METHOD_NAME
from i2icli.training.nets import AdversarialTraining, initialise, update_average


@dataclass(frozen=True)
class LRTrainingOptions:
    cycle_weight: float = 1.0  # the paper: 1 at 128 px, 0.1 at 256 px
    r1_gamma: float = 10.0
    generator_lr: float = 1e-3
    discriminator_lr: float = 4e-3
    beta1: float = 0.0
    beta2: float = 0.99
    ema_decay: float = 0.999
    # Colour resolution of the difference map's straight-through rounding: one 8-bit level.
    # (The authors' code rounds at four levels, 127.5 / 4.)
    difference_quantum: float = EIGHT_BIT_LEVEL

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def default_cycle_weight(hr_size: int) -> float:
    """The paper's lambda_cyc: 1 at 128 px and below, 0.1 from 256 px."""
    return 1.0 if hr_size < 256 else 0.1


def _non_saturating(logits: Tensor, real: bool) -> Tensor:
    return F.softplus(-logits if real else logits).mean()


class TranslateLRTraining(AdversarialTraining):
    """The trainable method: generator, discriminator, their optimisers and the EMA generator."""

    name = METHOD_NAME
    generator_key, discriminator_key, average_key = "Gen", "Dis", "AverageG"  # the authors' names

    def __init__(
        self, model: LRTranslatorConfig, options: LRTrainingOptions, *, seed: int = 0, data: dict[str, Any] | None = None
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        netG, netD = LRConditionedGenerator(model), LRDifferenceDiscriminator(model)
        initialise(netG, generator)
        initialise(netD, generator)
        self.adopt(netG, netD, generator_lr=options.generator_lr, discriminator_lr=options.discriminator_lr,
                   betas=(options.beta1, options.beta2), model_config=model, options=options, data=data)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._take_the_stored_discriminator_head(state[self.discriminator_key])
        super().load_state_dict(state)

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        if batch.shape[0] < 2 or batch.shape[0] % 2:
            raise ValueError(f"a batch of {batch.shape[0]} images cannot be split into two halves")
        options, lr_size = self.options, self.model_config.lr_size
        source_a, source_b = batch.chunk(2)
        target_a, target_b = downscale(source_a, lr_size), downscale(source_b, lr_size)

        self.netG.train()
        a_to_b = self.netG(source_a, target_b)
        a_back = self.netG(a_to_b, target_a)
        b_to_a = self.netG(source_b, target_a)
        b_back = self.netG(b_to_a, target_b)
        fakes = [(a_to_b, target_b), (b_to_a, target_a), (a_back, target_a), (b_back, target_b)]

        # Discriminator. Each real image is scored once and counted twice: the authors' loss
        # scores it once per fake it is paired with, at twice the cost for the same value.
        self.netD.train().requires_grad_(True)
        real_loss, r1 = batch.new_zeros(()), batch.new_zeros(())
        for real, target in ((source_a, target_a), (source_b, target_b)):
            real = real.detach().requires_grad_(True)
            logits = self.netD(real, torch.zeros_like(target))
            real_loss = real_loss + 2 * _non_saturating(logits, real=True)
            r1 = r1 + 2 * self._r1_penalty(logits, real)
        fake_loss = sum(
            _non_saturating(self.netD(fake.detach(), difference_map(fake.detach(), target, options.difference_quantum)), real=False)
            for fake, target in fakes
        )
        d_loss = real_loss + fake_loss + r1
        self.optD.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optD.step()

        # Generator, against the updated discriminator (not trained here: no power iteration).
        self.netD.eval().requires_grad_(False)
        adversarial = sum(
            _non_saturating(self.netD(fake, difference_map(fake, target, options.difference_quantum)), real=True)
            for fake, target in fakes
        )
        cycle = F.l1_loss(a_back, source_a) + F.l1_loss(b_back, source_b)
        g_loss = adversarial + options.cycle_weight * cycle
        self.optG.zero_grad(set_to_none=True)
        g_loss.backward()
        self.optG.step()
        update_average(self.average, self.netG, options.ema_decay)

        with torch.no_grad():
            consistency = torch.stack(
                [(downscale(fake, lr_size) - target).abs().mean() for fake, target in fakes[:2]]
            ).mean()
        return {
            "d_loss": float(d_loss.detach()),
            "d_real": float(real_loss.detach()),
            "d_fake": float(fake_loss.detach()),
            "r1": float(r1.detach()),
            "g_loss": float(g_loss.detach()),
            "g_adv": float(adversarial.detach()),
            "cycle": float(cycle.detach()),
            "lr_error_levels": float(consistency) / EIGHT_BIT_LEVEL,
        }

    def sample_grid(self, batch: Tensor) -> Tensor:
        """The paper's figure layout: LR targets across the top, sources down the side, and
        G_ema(source, target) in each cell. [3, H, W] in [-1, 1]."""
        from i2icli.pipelines.imagetensors import to_picture, to_tensor
        from i2icli.pipelines.translate_lr import translation_grid

        self.average.eval()
        sources = batch[:4]
        targets = downscale(sources, self.model_config.lr_size)
        outputs = [[to_picture(image) for image in self.average(source.expand(len(sources), -1, -1, -1), targets)]
                   for source in sources]
        grid = translation_grid([to_picture(s) for s in sources], [to_picture(t) for t in targets], outputs)
        return to_tensor(grid.rgb, batch.device)[0]

    # --- internals ------------------------------------------------------------------------------

    def _take_the_stored_discriminator_head(self, stored: dict[str, Tensor]) -> None:
        """A run trained before i2i's discriminator followed the authors' head rule has one more
        downsampling block in the head at sizes 9-15 and 18-31: it goes on with the head it was
        trained with, so that its discriminator and optimiser state load."""
        halvings = discriminator_head_halvings(stored)
        if halvings == self.netD.head_halvings:
            return
        device = next(self.netD.parameters()).device
        self.netD = LRDifferenceDiscriminator(self.model_config, head_halvings=halvings).to(device)
        self.optD = torch.optim.Adam(self.netD.parameters(), **self.optD.defaults)

    def _r1_penalty(self, logits: Tensor, real: Tensor) -> Tensor:
        """R1 (Mescheder et al.): gamma/2 * E ||grad_x D(x)||^2, on each image's mean patch logit."""
        (gradient,) = torch.autograd.grad(logits.flatten(1).mean(1).sum(), real, create_graph=True)
        return 0.5 * self.options.r1_gamma * gradient.pow(2).flatten(1).sum(1).mean()



@dataclass(frozen=True)
class LREvaluation:
    """The paper's table entries on held-out images. Errors are in 8-bit levels."""

    images: int
    translations: int
    lr_error: float  # mean |DS(output) - target|, output as an 8-bit file stores it
    lr_error_exact: float  # the same after the --exact projection
    fid: float | None = None  # outputs against the held-out photos
    lpips_diversity: float | None = None  # mean pairwise LPIPS of one source's outputs for different targets
    notes: tuple[str, ...] = ()


@torch.no_grad()
def evaluate(
    generator: nn.Module,
    lr_size: int,
    images: Tensor,
    *,
    targets_per_source: int = 4,
    fid_features: Any = None,
    lpips_distance: Any = None,
    batch: int = 16,
) -> LREvaluation:
    """Translate each held-out image to the low-resolution versions of the next
    ``targets_per_source`` held-out images (a fixed, seed-free pairing) and score the outputs.

    ``fid_features(images) -> (N, 2048)`` and ``lpips_distance(a, b) -> (N,)`` are optional.
    """
    from i2icli.pipelines.translate_lr import (
        lr_error_levels,
        project_to_target,
        quantise,
    )
    from i2icli.training.metrics import fid

    count = len(images)
    if count < 2:
        raise ValueError("evaluation needs at least two held-out images")
    per_source = min(targets_per_source, count - 1)
    device = next(generator.parameters()).device
    targets_all = downscale(images, lr_size)
    outputs, errors, exact_errors = [], [], []
    pairs = [(i, (i + k) % count) for i in range(count) for k in range(1, per_source + 1)]
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        sources = images[[i for i, _ in chunk]].to(device)
        targets = targets_all[[j for _, j in chunk]].to(device)
        raw = generator(sources, targets).clamp(-1, 1)
        errors.append(lr_error_levels(quantise(raw), targets).cpu())
        exact_errors.append(lr_error_levels(quantise(project_to_target(raw, targets)), targets).cpu())
        outputs.append(quantise(raw).cpu())
    fakes = torch.cat(outputs)
    notes: list[str] = []
    fid_value = None
    if fid_features is not None:
        fid_value = fid(fid_features(images), fid_features(fakes))
        if count < 2048:
            notes.append(f"FID over {count} real and {len(fakes)} generated images (biased high below a few thousand)")
    diversity = None
    if lpips_distance is not None and per_source < 2:
        notes.append("LPIPS diversity compares one source's outputs for different targets: it needs "
                     "--eval-targets 2 or more and at least 3 held-out images")
    if lpips_distance is not None and per_source >= 2:
        grouped = fakes.view(count, per_source, *fakes.shape[1:])
        first, second = torch.triu_indices(per_source, per_source, offset=1)
        scores = [lpips_distance(group[first], group[second]).mean() for group in grouped]
        diversity = float(torch.stack(scores).mean())
    return LREvaluation(
        images=count,
        translations=len(fakes),
        lr_error=float(torch.cat(errors).mean()),
        lr_error_exact=float(torch.cat(exact_errors).mean()),
        fid=fid_value,
        lpips_diversity=diversity,
        notes=tuple(notes),
    )
