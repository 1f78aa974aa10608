"""Evaluation metrics shared by the training commands: FID and LPIPS, as the papers' tables report.

FID uses pytorch-fid's Inception network (pool3, 2048 features) with the weights from our
registry (sha256-checked), and its Fréchet distance; for fewer images than features, the same
distance is computed exactly from the images' cross products (see ``frechet_distance_of_samples``). LPIPS uses the `lpips` package (the authors'
reference implementation) when it is installed: its calibrated linear heads ship inside the
package, and its VGG-16 backbone is loaded from our registry rather than downloaded by torchvision.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from i2icli.archs.features import FIDInceptionFeatures
from i2icli.errors import WeightsError
from i2icli.pipelines.frechet import frechet_distance_of_samples
from i2icli.pipelines.loading import DownloadProgress, load_checkpoint
from i2icli.weights import load_state_dict

DEFAULT_FID_MODEL = "fid-inception"
DEFAULT_LPIPS_BACKBONE = "vgg16-imagenet"

# lpips' VGG-16 wrapper keeps torchvision's layer indices inside five slices.
_LPIPS_VGG_SLICES = ((1, range(4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)), (5, range(23, 30)))


def load_fid_network(spec: str = DEFAULT_FID_MODEL, device: torch.device | str = "cpu",
                     progress: DownloadProgress | None = None) -> FIDInceptionFeatures:
    def build(state_dict: dict[str, Tensor]) -> FIDInceptionFeatures:
        network = FIDInceptionFeatures(pooled=True)
        network.load_fid_state_dict(state_dict)
        return network

    return load_checkpoint(spec, "FID Inception", build, progress).to(device).eval()


@torch.no_grad()
def inception_features(network: FIDInceptionFeatures, images: Tensor, batch: int = 32) -> Tensor:
    """(N, 2048) pool3 features of images in [-1, 1], computed a batch at a time."""
    parameter = next(network.parameters())
    parts = [network(images[i : i + batch].to(parameter.device, parameter.dtype)).cpu() for i in range(0, len(images), batch)]
    return torch.cat(parts).double()


def fid(real: Tensor, fake: Tensor) -> float:
    """FID between two sets of pool3 features (N, 2048); needs at least two of each."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least two images in each set")
    return frechet_distance_of_samples(real, fake)


def lpips_available() -> bool:
    try:
        import lpips  # noqa: F401
    except ImportError:
        return False
    return True


def load_lpips(backbone: str = DEFAULT_LPIPS_BACKBONE, device: torch.device | str = "cpu",
               progress: DownloadProgress | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS (VGG variant, v0.1) as ``distance(a, b) -> (N,)`` for images in [-1, 1]."""
    import lpips

    def build(state_dict: dict[str, Tensor]) -> Any:
        # pnet_rand: do not let torchvision download the backbone; it is loaded below instead.
        # pretrained=False: lpips would unpickle its linear heads with whatever torch.load
        # defaults to; they are read here through the one safe loader instead.
        with warnings.catch_warnings():
            # lpips still passes torchvision the `pretrained=` flag torchvision deprecates; the
            # backbone is built without weights either way, so the warning says nothing to a user.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.")
            model = lpips.LPIPS(net="vgg", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
        heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        heads = load_state_dict(heads_file)
        missing, unexpected = model.load_state_dict(heads, strict=False)
        # "lins.N" is a list holding the same "linN" modules: those keys are loaded through "linN".
        if unexpected or any(key.startswith("lin") and not key.startswith("lins.") for key in missing):
            raise WeightsError(f"{heads_file}: not the lpips VGG heads", "reinstall the lpips package")
        renamed = {}
        for slice_number, indices in _LPIPS_VGG_SLICES:
            for index in indices:
                for kind in ("weight", "bias"):
                    key = f"features.{index}.{kind}"
                    if key in state_dict:
                        renamed[f"slice{slice_number}.{index}.{kind}"] = state_dict[key]
        model.net.load_state_dict(renamed, strict=True)
        return model.eval().requires_grad_(False)

    model = load_checkpoint(backbone, "VGG-16", build, progress).to(device)

    @torch.no_grad()
    def distance(a: Tensor, b: Tensor) -> Tensor:
        return model(a.to(device), b.to(device), normalize=False).flatten().cpu()

    return distance
