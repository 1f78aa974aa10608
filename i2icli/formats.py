"""The image formats i2i reads and writes, and the limits of what it takes (image size, seeds,
the restore factor).

Kept apart from ``imageio`` (which loads OpenCV and Pillow) so that the command-line modules,
which must start fast, can share these values instead of repeating them.
"""

from __future__ import annotations

# What i2i reads and writes, in the order messages list them.
# HEIC/HEIF and AVIF are what phones store photos as (iPhones HEIC by default).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif", ".avif", ".tif", ".tiff",
                                   ".bmp")

# The outputs written through libheif, whose build may lack an encoder (see image_encoding).
HEIF_SUFFIXES: frozenset[str] = frozenset({".heic", ".heif"})

# Larger inputs are refused before decoding: a 200-megapixel RGB image is already 600 MB.
DEFAULT_MAX_PIXELS = 200_000_000

# Seeds reach torch and NumPy as signed 64-bit integers.
SEED_MAX = 2**63 - 1

# `i2i restore --upscale` and RestoreSettings.upscale: the final size factor.
UPSCALE_MIN, UPSCALE_MAX = 1.0, 8.0
