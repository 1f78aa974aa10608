"""Pictures to network tensors and back, and the square crops the GAN methods work on."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from i2icli.imageio import Picture
from i2icli.pixels import max_value

EIGHT_BIT_LEVEL = 2 / 255  # one 8-bit level in the [-1, 1] range the networks work in


def to_tensor(rgb: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """HxWx3 uint8/uint16 -> (1, 3, H, W) float32 in [-1, 1]."""
    peak = max_value(rgb.dtype)
    tensor = torch.from_numpy(rgb.astype(np.float32) / peak).permute(2, 0, 1)[None]
    return (tensor * 2 - 1).to(device)


def to_picture(image: Tensor) -> Picture:
    """(3, H, W) in [-1, 1] -> 8-bit Picture."""
    array = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Picture(rgb=np.ascontiguousarray(array))


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize (area when shrinking, cubic when growing)."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)
