"""Blending restored faces back into the (upscaled) photo.

Each face is warped only into the bounding box it covers, in float32: the reference helper
warps every face and its mask over the whole upscaled image in float64, which for a
24-megapixel output is hundreds of megabytes and most of the paste time per face.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

# ParseNet's 19 classes; 1 marks the face (skin, brows, eyes, nose, mouth, ...), 0 marks
# background, hair, hat, neck, cloth, and earrings. Same choice as facexlib's paste.
_FACE_CLASSES = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=np.float32)
_MASK_BORDER = 10


def parse_masks(parser: torch.nn.Module, faces: torch.Tensor) -> np.ndarray:
    """Soft face masks (Nx512x512 float32 in [0,1]) from ParseNet on restored faces in [-1,1]."""
    dtype = next(parser.parameters()).dtype
    with torch.inference_mode():
        logits = parser(faces.to(dtype))[0]
    labels = logits.argmax(dim=1).cpu().numpy()
    masks = []
    for label in labels:
        mask = _FACE_CLASSES[label] * 255.0
        # Two wide blurs give the soft falloff at the hairline and jaw.
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask[:_MASK_BORDER, :] = 0
        mask[-_MASK_BORDER:, :] = 0
        mask[:, :_MASK_BORDER] = 0
        mask[:, -_MASK_BORDER:] = 0
        masks.append(mask / 255.0)
    return np.stack(masks).astype(np.float32)


@dataclass(frozen=True)
class Region:
    """A window of the canvas: rows y0:y1, columns x0:x1."""

    x0: int
    y0: int
    x1: int
    y1: int


def covered_region(inverse: np.ndarray, face_size: int, canvas_shape: tuple[int, ...], margin: int = 2) -> Region | None:
    """Bounding box of the face square once warped onto the canvas, clipped; None if off-canvas."""
    corners = np.array([[0, 0, 1], [face_size, 0, 1], [0, face_size, 1], [face_size, face_size, 1]], dtype=np.float64)
    warped = corners @ inverse.T
    height, width = canvas_shape[:2]
    x0 = max(int(np.floor(warped[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(warped[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(warped[:, 0].max())) + margin, width)
    y1 = min(int(np.ceil(warped[:, 1].max())) + margin, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return Region(x0, y0, x1, y1)


def _square_mask(inverse: np.ndarray, face_size: int, size: tuple[int, int], upscale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mask without a parser: the warped square, eroded, with edges blurred in proportion to the face."""
    inside = cv2.warpAffine(np.ones((face_size, face_size), np.float32), inverse, size)
    kernel = max(int(2 * upscale), 1)
    inside = cv2.erode(inside, np.ones((kernel, kernel), np.uint8))
    edge = int(float(inside.sum()) ** 0.5) // 20
    centre = cv2.erode(inside, np.ones((edge * 2, edge * 2), np.uint8)) if edge > 0 else inside
    soft = cv2.GaussianBlur(centre, (edge * 2 + 1, edge * 2 + 1), 0)
    return soft, inside


def paste_face(
    canvas: np.ndarray,
    face: np.ndarray,
    inverse: np.ndarray,
    *,
    mask: np.ndarray | None,
    upscale: float,
) -> None:
    """Blend ``face`` (SxSx3 float32, same value range as ``canvas``) into ``canvas`` in place.

    ``inverse`` maps face pixels to canvas pixels (see ``align.paste_matrix``); ``mask`` is a
    SxS soft mask from ``parse_masks``, or None for the square fallback.
    """
    face_size = face.shape[0]
    region = covered_region(inverse, face_size, canvas.shape)
    if region is None:
        return
    shifted = inverse.copy()
    shifted[0, 2] -= region.x0
    shifted[1, 2] -= region.y0
    size = (region.x1 - region.x0, region.y1 - region.y0)

    warped_face = cv2.warpAffine(face, shifted, size)
    if mask is not None:
        soft = cv2.warpAffine(mask, shifted, size, flags=cv2.INTER_AREA)
    else:
        soft, inside = _square_mask(shifted, face_size, size, upscale)
        warped_face *= inside[:, :, None]
    soft = soft[:, :, None]

    window = canvas[region.y0 : region.y1, region.x0 : region.x1, :3]
    blended = soft * warped_face + (1.0 - soft) * window.astype(np.float32)
    if np.issubdtype(canvas.dtype, np.integer):
        limit = np.iinfo(canvas.dtype).max
        blended = np.clip(np.rint(blended), 0, limit)
    window[...] = blended.astype(canvas.dtype)
