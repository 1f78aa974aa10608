"""Similarity alignment of a face to GFPGAN's 512x512 template, and the inverse for pasting back."""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 512

# Five-point template (eyes, nose, mouth corners) that GFPGAN was trained on, in 512x512 pixels.
FACE_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

# Grey that fills the crop outside the photo, in RGB (GFPGAN's training crops used it).
BORDER_RGB = (132, 133, 135)


def alignment_matrix(landmarks: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """2x3 similarity transform taking image landmarks onto the template (least median of squares)."""
    template = FACE_TEMPLATE_512 * (face_size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all points on a line)
        raise ValueError("landmarks do not define a similarity transform")
    return matrix


def crop_face(image: np.ndarray, matrix: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """Warp ``image`` (HxWx3, uint8 or uint16 RGB) into an aligned face crop of the same dtype."""
    peak = 65535 / 255 if image.dtype == np.uint16 else 1.0
    border = tuple(float(round(value * peak)) for value in BORDER_RGB)
    return cv2.warpAffine(image, matrix, (face_size, face_size), borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def paste_matrix(matrix: np.ndarray, upscale: float) -> np.ndarray:
    """Inverse of ``matrix`` in the coordinates of the image upscaled by ``upscale``.

    The half-pixel shift for upscales above 1 accounts for pixel centres moving when an image is
    enlarged; it is what facexlib applies, so faces land where GFPGAN users expect them.
    """
    inverse = cv2.invertAffineTransform(matrix) * upscale
    if upscale > 1:
        inverse[:, 2] += 0.5 * upscale
    return inverse
