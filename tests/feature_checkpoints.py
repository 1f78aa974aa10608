"""Random state dicts in the official layouts of the feature networks' files.

* torchvision's VGG-16 / VGG-19 ImageNet files (``vgg16-397923af.pth``, ``vgg19-dcbb9e9d.pth``):
  ``features.N.weight/bias`` and ``classifier.{0,3,6}.weight/bias``;
* pytorch-fid's FID Inception-v3 (``pt_inception-2015-12-05-6726825d.pth``): torchvision's
  Inception-v3 layout with a 1008-way ``fc`` and no ``AuxLogits``, BatchNorm running stats
  included;
* torchvision's own ImageNet Inception-v3 layout, for tests that must reject it.

Key names and shapes come from torchvision's constructors built on the meta device (no
allocation, no download), not from i2icli, so the package's loaders are checked against an
independent description of the files. Values are seeded and deterministic; they are scaled so
that activations stay of order one through the networks (He-style convolution weights,
BatchNorm running variances near one), which keeps feature statistics well conditioned.

VGG's classifier holds 120M of its 140M parameters and the feature trunks never read it. To
keep these dicts (and files written from them) small, each classifier weight is a broadcast
view of one random column (stride 0 along the input axis): the shapes and dtypes are the
official ones, only the storage is compact. ``torch.save`` stores just that column and
``torch.load(weights_only=True)`` restores the same view. Pass ``compact=False`` to get
fully materialised tensors instead.
"""

from __future__ import annotations

import math

import torch
import torchvision

VGG_FILES = {16: "vgg16-397923af.pth", 19: "vgg19-dcbb9e9d.pth"}
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _layout(build) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return build().state_dict()


def _random_like(key: str, meta: torch.Tensor, rng: torch.Generator, compact: bool) -> torch.Tensor:
    shape = meta.shape
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.long)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=rng) + 0.5
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=rng) * 0.1
    if key.endswith(".bias"):
        return torch.randn(shape, generator=rng) * 0.05
    if len(shape) == 1:  # BatchNorm scale
        return 1.0 + torch.randn(shape, generator=rng) * 0.1
    fan_in = math.prod(shape[1:])
    std = math.sqrt(2.0 / fan_in)
    if len(shape) == 2 and compact:
        return (torch.randn(shape[0], 1, generator=rng) * std).expand(shape)
    return torch.randn(shape, generator=rng) * std


def _fill(layout: dict[str, torch.Tensor], seed: int, compact: bool) -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    return {key: _random_like(key, meta, rng, compact) for key, meta in layout.items()}


def random_vgg_state_dict(depth: int, seed: int = 0, *, compact: bool = True) -> dict[str, torch.Tensor]:
    """torchvision ``vgg{depth}`` (16 or 19) ImageNet state dict with seeded random values."""
    build = {16: torchvision.models.vgg16, 19: torchvision.models.vgg19}[depth]
    return _fill(_layout(lambda: build(weights=None)), seed, compact)


def random_fid_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception-v3 state dict with seeded random values.

    pytorch-fid patches only the forward passes of some Mixed blocks, so its layout is
    torchvision's Inception-v3 with 1008 classes and no auxiliary classifier.
    """
    layout = _layout(lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False))
    return _fill(layout, seed, compact=False)


def random_torchvision_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet Inception-v3 layout (1000 classes, AuxLogits): not the FID network."""
    layout = _layout(lambda: torchvision.models.inception_v3(weights=None, aux_logits=True, num_classes=1000, init_weights=False))
    return _fill(layout, seed, compact=False)
