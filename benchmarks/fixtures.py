"""What the benchmarks share: checkpoints of the official sizes, and group photos with known faces.

The checkpoints are randomly initialised with the official architectures and shapes
(GFPGAN v1.4, RealESRGAN_x2plus, RetinaFace-ResNet50, ParseNet), so the compute is the real
one. Random detector weights find no faces, so benchmarks replace the detector's output by the
known landmarks of the photos made here (the detector network itself still runs and is timed).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402  (the tests' checkpoint factories)

CHECKPOINT_FILES = {
    "model": "GFPGANv1.4.pth",
    "bg_model": "RealESRGAN_x2plus.pth",
    "detector": "detection_Resnet50_Final.pth",
    "parser": "parsing_parsenet.pth",
}


def official_size_checkpoints(folder: Path) -> dict[str, Path]:
    """Write the four checkpoints `i2i restore` uses by default, in their official formats."""
    import i2icli._compat  # noqa: F401
    from basicsr.archs.rrdbnet_arch import RRDBNet

    from i2icli.archs.gfpgan import GFPGANv1Clean

    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / name for key, name in CHECKPOINT_FILES.items()}
    if all(path.is_file() for path in paths.values()):
        return paths
    torch.manual_seed(0)
    contents = {
        "model": {"params_ema": GFPGANv1Clean().state_dict()},
        "bg_model": {"params_ema": RRDBNet(3, 3, scale=2, num_feat=64, num_block=23, num_grow_ch=32).state_dict()},
        "detector": conftest.retinaface_state_dict("resnet50"),
        "parser": conftest.parsenet_state_dict(),
    }
    for key, content in contents.items():
        torch.save(content, paths[key])
    return paths


def group_photo(megapixels: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """An RGB photo of about ``megapixels`` holding a grid of copies of the example portrait
    (2x2 below 4 MP, 3x4 above), and the five landmarks of every face in it."""
    from i2icli.imageio import read_image

    portrait = read_image(ROOT / "examples" / "old_photo.jpg").rgb
    rows, cols = (2, 2) if megapixels < 4 else (3, 4)
    tile = int(round(math.sqrt(megapixels * 1e6 / (rows * cols))))
    scale = tile / portrait.shape[1]
    cell = cv2.resize(portrait, (tile, tile), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    image = np.tile(cell, (rows, cols, 1))
    landmarks = [
        conftest.OLD_PHOTO_LANDMARKS * scale + np.array([c * tile, r * tile], np.float32)
        for r in range(rows)
        for c in range(cols)
    ]
    return np.ascontiguousarray(image), landmarks


def device_or_exit(spec: str) -> torch.device:
    """The device ``spec`` names, or an exit with one line saying why it cannot be had (no CUDA
    GPU on this machine, say), before anything slow is built."""
    from i2icli.errors import I2IError
    from i2icli.pipelines.devices import pick_device

    try:
        return pick_device(spec)
    except I2IError as error:
        raise SystemExit(str(error)) from None


def check_precisions(precisions: list[str], device: torch.device, option: str = "--precisions") -> None:
    """Exit with one line for a precision ``device`` cannot run (fp16 on a CPU, say), before the
    workers start; "auto" always has one."""
    from i2icli.errors import I2IError
    from i2icli.pipelines.devices import AUTO, explicit_dtype

    for precision in precisions:
        if precision == AUTO:
            continue
        try:
            explicit_dtype(precision, device)
        except I2IError as error:
            raise SystemExit(f"{option} {precision}: {error.message}") from None


def write_jpeg(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path
