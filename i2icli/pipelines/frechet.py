"""Single-image Fréchet distance between a candidate image and a reference image.

This is the *single-image* form of FID, not the dataset FID. The dataset FID fits one Gaussian
to the pooled 2048-d Inception vectors of many images per set; here each image is its own set:
every spatial position of a mid-level Inception feature map is one sample, and the Gaussians
fitted to the two images' position-wise features are compared with the Fréchet distance (as in
SIFID, Shaham et al., SinGAN 2019). The map is the FID Inception's output after its second
max-pool (pytorch-fid's block 1: 192 channels at 35x35, i.e. 1225 samples per image, for the
299x299 input it resizes every image to). SinGAN's reference SIFID uses the 64-channel map of
the first max-pool instead, so the numbers here are comparable neither with published FID nor
with published SIFID values; they rank candidates against one reference (lower is closer).

The Fréchet distance itself is pytorch-fid's ``calculate_frechet_distance`` (scipy's sqrtm in
float64), reused unchanged.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import torch
from torch import Tensor

from i2icli.archs.features import FIDInceptionFeatures

__all__ = ["spatial_statistics", "frechet_distance", "frechet_distance_of_samples", "single_image_frechet", "DEFAULT_CHUNK"]

# Candidates per forward pass: the Inception stem works at 299x299 whatever the input size,
# and its widest map (64 x 147 x 147 floats) is ~5.5 MB per image.
DEFAULT_CHUNK = 16


def spatial_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image mean and covariance of a (b, c, h, w) feature map over its h*w positions.

    Each spatial position is one c-dimensional sample (the single-image form of FID's
    statistics). Returns ``mean`` (b, c) and the unbiased covariance ``cov`` (b, c, c), as
    ``numpy.cov(..., rowvar=False)`` computes it, in float64 on the CPU: the Fréchet distance
    subtracts nearly equal traces, and float64 is not available on every accelerator.
    """
    if not isinstance(features, Tensor) or features.ndim != 4:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"spatial_statistics expects a (b, c, h, w) feature map, got {shape}.")
    b, c, h, w = features.shape
    if h * w < 2:
        raise ValueError(f"spatial_statistics needs at least two spatial positions, got a {h}x{w} map.")
    samples = features.detach().cpu().double().reshape(b, c, h * w)
    mean = samples.mean(dim=2)
    centred = samples - mean.unsqueeze(2)
    cov = centred @ centred.transpose(1, 2) / (h * w - 1)
    return mean, cov


def _numpy(value: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def frechet_distance(
    mu1: Tensor | np.ndarray, sigma1: Tensor | np.ndarray, mu2: Tensor | np.ndarray, sigma2: Tensor | np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), via pytorch-fid.

    ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))``, computed by
    ``pytorch_fid.fid_score.calculate_frechet_distance`` on float64 arrays. Mathematically
    non-negative; the rounding noise that can make it slightly negative for (near-)identical
    statistics is clipped to 0.
    """
    from pytorch_fid.fid_score import calculate_frechet_distance
    from scipy.linalg import LinAlgWarning

    statistics = [_numpy(value) for value in (mu1, sigma1, mu2, sigma2)]
    if not all(np.isfinite(value).all() for value in statistics):
        # A diverged image (NaN or inf pixels) is no distribution at all: it is as far from
        # anything as can be, and SciPy's matrix root would fail on it.
        return math.inf
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        # pytorch-fid still passes sqrtm's `disp` argument, which SciPy deprecates; the
        # result is unaffected.
        warnings.filterwarnings("ignore", message=r".*`disp` argument is deprecated", category=DeprecationWarning)
        # Single-image covariances are often singular (flat regions, channels that never fire),
        # and sqrtm warns about every singular product. The distance only needs the trace of
        # the root (the sum of the square roots of the product's non-negative eigenvalues),
        # which stays well defined, and pytorch-fid checks for real failures itself (a
        # non-finite root, a significant imaginary part), so the warning is noise here.
        warnings.filterwarnings("ignore", category=LinAlgWarning)
        # It also print()s when it has to regularise a singular product; that must not land on
        # stdout (the CLI may be writing JSON there), so it is turned into a warning below.
        try:
            distance = float(calculate_frechet_distance(*statistics))
        except ValueError:
            # "Imaginary component": sqrtm of a product of singular covariances with a wide range
            # of scales (channels that never fire next to strong ones) can come back complex from
            # rounding alone. The same trace from a symmetric matrix has real eigenvalues.
            distance = _frechet_distance_symmetric(*statistics)
    if printed.getvalue().strip():
        warnings.warn(f"Fréchet distance: {printed.getvalue().strip()}", RuntimeWarning, stacklevel=2)
    return max(distance, 0.0)


def _frechet_distance_symmetric(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance with ``Tr sqrt(sigma1 sigma2)`` taken as ``Tr sqrt(R sigma2 R)``, R the
    symmetric root of sigma1: the two matrices are similar (same eigenvalues), and the second is
    symmetric positive semi-definite, so its eigenvalues are real; rounding below 0 is clipped."""
    def eigenvalues(matrix: np.ndarray) -> np.ndarray:
        return np.clip(np.linalg.eigvalsh((matrix + matrix.T) / 2), 0, None)

    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    trace_root = np.sqrt(eigenvalues(root @ sigma2 @ root)).sum()
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def frechet_distance_of_samples(first: Tensor | np.ndarray, second: Tensor | np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two sets of feature vectors, (n1, d) and (n2, d).

    With fewer samples than dimensions (a held-out split of a few dozen images against FID's
    2048 features), each covariance is X^T X for its centred, scaled samples X, of rank below
    n. The non-zero eigenvalues of sigma1 sigma2 = X1^T X1 X2^T X2 are then those of M M^T for
    the small cross product M = X1 X2^T (n1, n2), so Tr sqrt(sigma1 sigma2) is the sum of M's
    singular values: exact, and milliseconds instead of a 2048x2048 matrix root (about 15 s on
    a CPU) that works on a singular product. With more samples than dimensions the covariances
    go to :func:`frechet_distance` (pytorch-fid) as usual.
    """
    first, second = _numpy(first), _numpy(second)
    if first.ndim != 2 or second.ndim != 2 or first.shape[1] != second.shape[1]:
        raise ValueError(f"expected two (n, d) sets of the same d, got {first.shape} and {second.shape}")
    if min(len(first), len(second)) < 2:
        raise ValueError("a covariance needs at least two samples in each set")
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        return math.inf
    means = first.mean(axis=0), second.mean(axis=0)
    if min(len(first), len(second)) > first.shape[1]:
        return frechet_distance(means[0], np.cov(first, rowvar=False), means[1], np.cov(second, rowvar=False))
    scaled = [(samples - mean) / math.sqrt(len(samples) - 1) for samples, mean in zip((first, second), means)]
    trace_of_root = np.linalg.svd(scaled[0] @ scaled[1].T, compute_uv=False).sum()
    distance = float(((means[0] - means[1]) ** 2).sum() + (scaled[0] ** 2).sum() + (scaled[1] ** 2).sum() - 2 * trace_of_root)
    return max(distance, 0.0)


def _features(network: FIDInceptionFeatures, images: Tensor) -> Tensor:
    parameter = next(network.parameters())
    return network(images.to(device=parameter.device, dtype=parameter.dtype))


def single_image_frechet(
    network: FIDInceptionFeatures,
    candidates: Tensor,
    reference: Tensor,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> list[float]:
    """Single-image Fréchet distance (SIFID-style, *not* dataset FID) of each candidate to a reference.

    ``candidates`` (n, 3, h, w) and ``reference`` (1, 3, h', w') are images in [-1, 1]; both are
    resized to 299x299 by the network, so their sizes may differ. Each image's statistics are
    taken over the 35x35 positions of the FID Inception's 192-channel block-1 map (see
    :func:`spatial_statistics`), and each candidate's Gaussian is compared with the
    reference's. Candidates go through the network together, ``chunk`` at a time, without
    autograd. Returns one score per candidate, in order; lower means closer to the reference.
    """
    for name, images in (("candidates", candidates), ("reference", reference)):
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"single_image_frechet expects {name} shaped (n, 3, h, w) in [-1, 1], got {shape}.")
    if reference.shape[0] != 1:
        raise ValueError(f"single_image_frechet compares against one reference image, got {reference.shape[0]}.")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}.")
    scores: list[float] = []
    with torch.no_grad():
        ref_mean, ref_cov = spatial_statistics(_features(network, reference))
        for start in range(0, candidates.shape[0], chunk):
            means, covs = spatial_statistics(_features(network, candidates[start : start + chunk]))
            scores.extend(frechet_distance(mean, cov, ref_mean[0], ref_cov[0]) for mean, cov in zip(means, covs, strict=True))
    return scores

