"""Sample values of image arrays: the full intensity of a dtype, float [0, 1] quantized back to
8 or 16 bits, 16-bit narrowed to 8. They take arrays, not a :class:`~i2icli.imageio.Picture`, so the
decoders and encoders use them without importing the module that reads and writes files.
"""

from __future__ import annotations

import cv2
import numpy as np


def max_value(dtype: np.dtype) -> float:
    """The value of full intensity for an image dtype: 255 or 65535."""
    return 65535.0 if dtype == np.uint16 else 255.0


def quantize(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float [0, 1] values as ``dtype`` (uint8 or uint16): scaled, NaN to 0, clipped, rounded."""
    scaled = np.multiply(values, np.float32(max_value(dtype)), dtype=np.float32)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0.0, max_value(dtype), out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(dtype)


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as round(v / 257) (exact for all 65536 values), no float copy."""
    if arr.dtype == np.uint8:
        return arr
    return cv2.convertScaleAbs(arr, alpha=1.0 / 257.0)
