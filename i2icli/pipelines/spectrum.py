"""Radially averaged power spectra, and the plot that compares them (GRIT's figure 10).

The spectrum of an image is |FFT|^2 of its luminance, averaged over rings of equal spatial
frequency. Comparing the spectra of the reconstruction, the GAN residual and their sum shows
which component carries the fine detail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from i2icli.atomic_files import replace_atomically

# Drawing order and colours of the curves a GRIT plot may hold.
_STYLES = {
    "photo": ("ground truth", "#444444", "--"),
    "reconstruction": ("reconstruction", "#2ca02c", "-"),
    "residual": ("GAN residual", "#d62728", "-"),
    "output": ("output (sum)", "#1f77b4", "-"),
}


def frequencies(size: int) -> np.ndarray:
    """The ring centres of :func:`radial_power_spectrum` for ``size``-pixel images, in cycles per pixel."""
    return np.arange(size // 2 + 1) / size


def radial_power_spectrum(images: Tensor) -> np.ndarray:
    """Mean power per ring of spatial frequency, averaged over a batch.

    ``images``: (N, C, H, W), any range (the colour channels are averaged first). Ring ``k``
    holds the frequencies whose radius, in cycles per pixel, rounds to ``k / min(H, W)``; rings
    run from 0 (the mean) to the Nyquist frequency, 1/2 cycle per pixel.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    luminance = images.detach().cpu().double().mean(dim=1)  # float64 on the CPU: MPS has none
    height, width = luminance.shape[-2:]
    power = torch.fft.fft2(luminance).abs().pow(2).mean(dim=0).numpy() / (height * width)
    side = min(height, width)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    rings = np.rint(np.sqrt(fy**2 + fx**2) * side).astype(np.int64)
    count = side // 2 + 1
    inside = rings < count
    totals = np.bincount(rings[inside], weights=power[inside], minlength=count)
    members = np.bincount(rings[inside], minlength=count)
    return totals / np.maximum(members, 1)


def high_frequency_share(spectrum: np.ndarray, cutoff: float = 0.25) -> float:
    """The share of a spectrum's power (the mean left out) above ``cutoff`` cycles per pixel.
    The default is half the Nyquist frequency."""
    size = 2 * (len(spectrum) - 1)
    rings = frequencies(size)
    ac = spectrum[1:].sum()
    return float(spectrum[rings > cutoff].sum() / ac) if ac > 0 else 0.0


def plot_spectra(spectra: dict[str, np.ndarray], path: Path, *, title: str = "Radially averaged power spectrum") -> Path:
    """Log-power against frequency, one curve per component; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    axes = figure.add_subplot()
    names = [name for name in _STYLES if name in spectra] + [name for name in spectra if name not in _STYLES]
    for name in names:
        spectrum = spectra[name]
        rings = frequencies(2 * (len(spectrum) - 1))
        label, colour, line = _STYLES.get(name, (name, None, "-"))
        # The mean (ring 0) is left out: it says nothing about detail and dwarfs the rest.
        axes.semilogy(rings[1:], np.maximum(spectrum[1:], 1e-20), line, color=colour, label=label, linewidth=1.6)
    axes.set_xlabel("spatial frequency (cycles per pixel)")
    axes.set_ylabel("power")
    axes.set_xlim(0, 0.5)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.25)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda temp: figure.savefig(temp, format="png"))
    return path
