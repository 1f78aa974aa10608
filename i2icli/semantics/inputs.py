"""Semantic inputs for exemplar translation: a pose file, a label map or an edge map, as channels.

Every input is laid out the way the official preprocessing lays out a photo: padded to a centred
square, then resized to the working size, so that the input, the exemplar and the output share one
frame. Pose files carry keypoints, not pixels, and are rendered straight at the working size.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from i2icli.errors import InputError
from i2icli.imageio import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    Picture,
    read_image,
    to_float,
)
from i2icli.semantics.labelmaps import check_classes, class_indices, one_hot
from i2icli.semantics.pose import (
    Pose,
    pose_drawing,
    read_pose,
    render_pose_label,
    square_frame,
)

POSE_CHANNELS = 20
_ORIENTATION_TAG = 0x0112
# Containers whose size and EXIF orientation Pillow parses from the header alone. Anything else
# (TIFF's per-page sizes, a format i2i does not read) goes through read_image, which decides.
_HEADER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB"})


@dataclass(frozen=True)
class Semantics:
    """A semantic input at the working size: (C, S, S) float32 in [0, 1], and what it came from."""

    channels: np.ndarray
    kind: str  # "pose", "label" or "edge"
    source: Path
    drawing: np.ndarray | None = None  # (S, S, 3) uint8 skeleton, for poses
    # The (width, height) the structure is laid out in: a map image's own size, or the photo a
    # pose's pixel coordinates refer to. The result is cropped back to it.
    frame: tuple[int, int] | None = None
    pose: Pose | None = None  # the keypoints, for poses


def is_pose_file(path: Path | str) -> bool:
    """OpenPose JSON, or the official ``NAME_candidate.txt`` / ``NAME_subset.txt`` pair."""
    name = Path(path).name.lower()
    return name.endswith((".json", ".txt"))


def photo_frame(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of a photo as shown (EXIF orientation applied), read from its header: the
    frame a pose's pixel coordinates refer to. Only its size is needed, so its pixels are never
    decoded. A file whose header does not settle it (missing, empty, not an image, over
    ``max_pixels``, a format i2i does not read) goes to :func:`read_image`, which refuses it in
    one line exactly as it would refuse the photo itself."""
    path = Path(path)
    size = _header_size(path, max_pixels) if path.suffix.lower() in SUPPORTED_SUFFIXES else None
    if size is None:
        picture = read_image(path, max_pixels=max_pixels)
        return picture.width, picture.height
    return size


def _header_size(path: Path, max_pixels: int) -> tuple[int, int] | None:
    """The upright size from the header of a plain JPEG, PNG, WebP or BMP file within
    ``max_pixels``; None for anything else."""
    if not path.is_file():  # a folder, a missing file, or a pipe that would wait for a writer
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: --max-pixels decides
            with open(path, "rb") as file, Image.open(file) as image:
                width, height = image.size
                if image.format not in _HEADER_FORMATS or width <= 0 or height <= 0 or width * height > max_pixels:
                    return None
                orientation = _orientation(image, file)
    except Exception:  # Pillow raises a zoo of types for bad headers; read_image names the problem
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _orientation(image: Image.Image, file: BinaryIO) -> int:
    """EXIF orientation 1-8 as read_image applies it (1 when absent or unreadable)."""
    try:
        if image.format == "PNG" and "exif" not in image.info:
            # Pillow would decode the whole image to look for an eXIf chunk after the pixel data.
            raw = _png_exif_chunk(file)
            if raw is None:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = image.getexif()
        value = exif.get(_ORIENTATION_TAG)
    except Exception:  # bad metadata is not fatal: the photo is taken as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_exif_chunk(file: BinaryIO) -> bytes | None:
    """A PNG's eXIf chunk, found by reading chunk headers only and seeking over their data."""
    file.seek(8)
    while True:
        head = file.read(8)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I4s", head)
        if kind == b"eXIf":
            return file.read(length)
        if kind == b"IEND":
            return None
        file.seek(length + 4, 1)  # the chunk's data and its CRC


def pad_to_square(array: np.ndarray, value: float) -> np.ndarray:
    """Centre ``array`` (H, W[, C]) on a square canvas, as the official preprocessing does."""
    height, width = array.shape[:2]
    side, left, top = square_frame(width, height)
    if side == width == height:
        return array
    canvas = np.full((side, side, *array.shape[2:]), value, dtype=array.dtype)
    canvas[top : top + height, left : left + width] = array
    return canvas


def load_semantics(
    path: Path | str,
    *,
    size: int,
    channels: int,
    frame: tuple[int, int],
    label_nc: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Semantics:
    """Read ``path`` into the ``channels`` the model expects.

    ``frame`` is the (width, height) of the photo a pose JSON's pixel coordinates refer to.
    An image is a label map when ``label_nc`` is given (one-hot encoded), else an edge map
    whose channel count must match the model.
    """
    path = Path(path)
    if is_pose_file(path):
        if channels != POSE_CHANNELS:
            raise InputError(path, f"is a pose, but this checkpoint takes {channels}-channel semantics, not a "
                             f"{POSE_CHANNELS}-channel pose label", "give a label or edge map image made for this model")
        pose = read_pose(path, frame)
        return Semantics(render_pose_label(pose, size), "pose", path, pose_drawing(pose, size), frame, pose)
    picture = read_image(path, max_pixels=max_pixels)
    own_frame = (picture.width, picture.height)
    if label_nc is not None:
        return Semantics(_one_hot(picture, path, size, channels, label_nc), "label", path, frame=own_frame)
    return Semantics(_edges(picture, path, size, channels), "edge", path, frame=own_frame)


def _resized_square(array: np.ndarray, size: int) -> np.ndarray:
    # Nearest neighbour, as the official code resizes every label: no new, in-between values.
    square = pad_to_square(array, 0)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_NEAREST)


def _one_hot(picture: Picture, path: Path, size: int, channels: int, label_nc: int) -> np.ndarray:
    if label_nc != channels:
        raise InputError(path, f"--label-nc {label_nc} does not match the checkpoint, which takes {channels} channels",
                         f"use --label-nc {channels}")
    labels = class_indices(picture, path)
    check_classes(labels, label_nc, path)
    return one_hot(_resized_square(labels, size), label_nc, path)


def _edges(picture: Picture, path: Path, size: int, channels: int) -> np.ndarray:
    values = to_float(picture)
    have = 1 if picture.grayscale else 3
    if have != channels:
        if channels == POSE_CHANNELS:
            hint = ("this is a pose model: give an OpenPose .json or _candidate.txt/_subset.txt file here (a photo as "
                    "INPUT takes its pose with --input-pose)")
        elif channels in (1, 3):
            hint = f"this model takes {'grayscale' if channels == 1 else 'colour'} edge maps; for a label map pass --label-nc"
        else:
            hint = f"this model takes {channels}-channel semantics: for a label map pass --label-nc {channels}"
        raise InputError(path, f"gives {have} channel{'s' if have > 1 else ''}, but this checkpoint takes {channels}", hint)
    values = values[:, :, :1] if have == 1 else values
    resized = _resized_square(values, size)
    resized = resized[:, :, None] if resized.ndim == 2 else resized
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)
