"""Make examples/old_photo.jpg: the public-domain astronaut portrait, aged and damaged.

The source is scikit-image's bundled ``astronaut`` image (Eileen Collins, NASA, public domain).
Run with ``uv run python examples/make_old_photo.py``; the result is deterministic.
"""

from pathlib import Path

import cv2
import numpy as np
from skimage import data


def age(rgb: np.ndarray, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    height, width = rgb.shape[:2]
    # Lose detail: shrink, blur, and enlarge back, as a small print scanned at low quality would.
    small = cv2.resize(rgb, (width // 3, height // 3), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0.8)
    image = cv2.resize(small, (width * 2 // 3, height * 2 // 3), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    height, width = image.shape[:2]

    # Faded sepia toning and lifted blacks.
    gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sepia = np.stack([gray * 1.07, gray * 0.93, gray * 0.72], axis=-1)
    image = 0.8 * sepia + 0.2 * image
    image = 0.12 + 0.78 * image

    # Film grain and a vignette.
    image += rng.normal(0, 0.035, image.shape[:2])[..., None].astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.hypot((xx - width / 2) / width, (yy - height / 2) / height)
    image *= (1 - 0.55 * radius**2)[..., None]

    # Scratches and dust.
    scratches = np.zeros((height, width), np.float32)
    for _ in range(6):
        x0 = int(rng.integers(0, width))
        x1 = int(np.clip(x0 + rng.integers(-40, 40), 0, width - 1))
        cv2.line(scratches, (x0, 0), (x1, height - 1), float(rng.uniform(0.2, 0.5)), 1)
    for _ in range(60):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(scratches, centre, int(rng.integers(1, 3)), float(rng.uniform(0.3, 0.9)), -1)
    image = image + scratches[..., None] * (0.9 - image)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def main() -> None:
    target = Path(__file__).with_name("old_photo.jpg")
    aged = age(data.astronaut())
    cv2.imwrite(str(target), cv2.cvtColor(aged, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 55])
    print(f"wrote {target} ({aged.shape[1]}x{aged.shape[0]})")


if __name__ == "__main__":
    main()
