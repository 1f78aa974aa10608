"""Label maps as network input: class-index images to one-hot channels, edge images to values.

A class-index map is an 8-bit grey image whose pixel values are the classes, a palette image
whose palette indices are (as PASCAL VOC stores them), or a 1-bit image (a binary mask: classes
0 and 1); 255 marks
"unknown / don't care" (as in the datasets the official code ships) and becomes an all-zero
vector. Resizing always uses nearest neighbour, so no in-between class appears.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Iterable

import cv2
import numpy as np

from i2icli.errors import InputError
from i2icli.imageio import Picture, to_float

UNKNOWN_LABEL = 255
# JPEG's compression moves grey levels along every edge; in a class-index map those are other classes.
_LOSSY_SUFFIXES = (".jpg", ".jpeg")
_LOSSY_REASON = "JPEG compression changes the values along edges, and in a label map they are classes"
# A grey image whose values all lie below this (255 aside) is read as class indices, not edges.
_LARGEST_CLASS_SHOWN = 64

# How a model would misread a picture given as its label map (see ``misreading``).
UNKNOWN_ONLY = "unknown only"  # every pixel 255: a label model sees no class at all
CLASS_0_AND_UNKNOWN = "class 0 and unknown"  # a 0/255 mask or an edge image read as classes: class 0 alone
CLASS_INDICES = "class indices"  # small grey values given to an edge model: an almost black edge image
COLOUR_PALETTE = "colour palette"  # a palette-coloured class map given to an edge model


def jpeg_label_maps_note(paths: Iterable[Path | str]) -> str | None:
    """A warning for class-index maps stored as JPEG files, or None when there are none."""
    lossy = [path for path in paths if Path(path).suffix.lower() in _LOSSY_SUFFIXES]
    if not lossy:
        return None
    if len(lossy) == 1:
        return f"{lossy[0]}: is a JPEG label map; {_LOSSY_REASON}: save label maps as PNG"
    return f"{len(lossy)} label maps are JPEG files (e.g. {lossy[0]}); {_LOSSY_REASON}: save label maps as PNG"


def class_indices(picture: Picture, path: Path | str) -> np.ndarray:
    """(H, W) uint8 class indices of a label-map image: the palette indices of a file with a colour
    palette (as PASCAL VOC stores them, whatever colours the classes present happen to have), or
    the values of an 8-bit image that shows only greys. InputError for anything else."""
    if picture.palette_indices is not None:
        return picture.palette_indices
    rgb = picture.rgb
    shows_grey = picture.grayscale or bool((rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all())
    if not shows_grey or rgb.dtype != np.uint8:
        kind = "a colour image" if not shows_grey else f"a {picture.bit_depth}-bit image"
        raise InputError(path, f"is {kind}, but a label map must hold class indices: 8-bit grey values or "
                         "palette indices", "save it as a grayscale or palette PNG whose pixel values are the "
                         "classes (a colour-coded map must first be converted to class indices)")
    values = np.ascontiguousarray(picture.rgb[:, :, 0])
    if _stored_as_one_bit(picture, values):
        return (values > 0).astype(np.uint8)
    return values


def _stored_as_one_bit(picture: Picture, values: np.ndarray) -> bool:
    """Whether the picture comes from a 1-bit file (a binary mask, Pillow's mode "1"). Such a file
    stores 0 and 1, but is decoded as black and white, 0 and 255, and 255 means unknown: the mask's
    foreground would vanish. Only maps of those two values have their file looked at."""
    if picture.source is None or not picture.grayscale or not ((values == 0) | (values == UNKNOWN_LABEL)).all():
        return False
    return _is_one_bit_file(picture.source)


def _is_one_bit_file(file: Path | BinaryIO) -> bool:
    from PIL import Image

    try:
        with Image.open(file) as image:  # reads the header only
            return image.mode == "1"
    except (OSError, ValueError):
        return False


def piped_label_map(picture: Picture, data: bytes) -> Picture:
    """A label map decoded from ``data``, read from standard input: a 1-bit file there has no path
    to be looked at again, so its classes 0 and 1 are kept as palette indices, as
    :func:`class_indices` reads such a file by its path."""
    if picture.grayscale and picture.palette_indices is None and _is_one_bit_file(io.BytesIO(data)):
        return replace(picture, palette_indices=(picture.rgb[:, :, 0] > 0).astype(np.uint8))
    return picture


@dataclass(frozen=True)
class Misreading:
    """What a label-map picture looks like to a model that cannot read it as meant: ``kind`` is one
    of UNKNOWN_ONLY, CLASS_0_AND_UNKNOWN, CLASS_INDICES and COLOUR_PALETTE; ``largest`` is the
    largest value a CLASS_INDICES map shows (255 aside)."""

    kind: str
    largest: int = 0


def misreading(picture: Picture, path: Path | str, input_kind: str) -> Misreading | None:
    """How a model taking ``input_kind`` ("label" or "edge") would misread the picture, or None
    when it may be what such a model takes. For a label model, raises InputError as
    :func:`class_indices` does for a picture that cannot be a class-index map at all."""
    if input_kind == "label":
        values = np.unique(class_indices(picture, path))
        if UNKNOWN_LABEL not in values:
            return None
        if len(values) == 1:
            return Misreading(UNKNOWN_ONLY)
        return Misreading(CLASS_0_AND_UNKNOWN) if values.tolist() == [0, UNKNOWN_LABEL] else None
    rgb = picture.rgb
    shows_grey = bool((rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all())
    if picture.palette_indices is not None and not shows_grey:  # a black-and-white palette may hold edges
        return Misreading(COLOUR_PALETTE)
    if rgb.dtype != np.uint8 or not shows_grey:
        return None
    values = rgb[:, :, 0]
    largest = int(values[values != UNKNOWN_LABEL].max(initial=0))
    # Edge images use the whole grey range; class indices stay small (19 classes: 0-18).
    return Misreading(CLASS_INDICES, largest) if 0 < largest < _LARGEST_CLASS_SHOWN else None


def check_classes(labels: np.ndarray, label_nc: int, path: Path | str) -> None:
    """Refuse class indices the model does not know. Called on the map as read, before any
    resize, so that a stray pixel is found whatever the working size."""
    known = labels != UNKNOWN_LABEL
    if known.any() and int(labels[known].max()) >= label_nc:
        hint = "check the label map against the model's classes"
        if Path(path).suffix.lower() in _LOSSY_SUFFIXES:
            hint = f"{_LOSSY_REASON}: save it as a PNG"
        raise InputError(path, f"has class {int(labels[known].max())}, but the model knows {label_nc} classes (0-{label_nc - 1})",
                         hint)


def one_hot(labels: np.ndarray, label_nc: int, path: Path | str) -> np.ndarray:
    """(H, W) class indices -> (label_nc, H, W) float32 one-hot; 255 gives all zeros."""
    check_classes(labels, label_nc, path)
    known = labels != UNKNOWN_LABEL
    result = np.zeros((label_nc, *labels.shape), np.float32)
    rows, cols = np.nonzero(known)
    result[labels[rows, cols], rows, cols] = 1.0
    return result


def centre_square(array: np.ndarray) -> np.ndarray:
    """The centred square of an (H, W[, C]) array: the crop training and inference share."""
    height, width = array.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return array[top : top + side, left : left + side]


def square_label_channels(picture: Picture, path: Path | str, size: int, kind: str, channels: int) -> np.ndarray:
    """A label-map image as (channels, size, size) float32, from its centred square.

    ``kind`` "label": one-hot over ``channels`` classes, resized by nearest neighbour.
    ``kind`` "edge": values in [-1, 1] (white 1); a colour file for a one-channel model is made
    grey and a grey file for a three-channel model is repeated, since edge images are black and
    white either way; resized by area when shrinking, so thin lines fade rather than vanish.
    """
    if kind == "label":
        labels = centre_square(class_indices(picture, path))
        check_classes(labels, channels, path)
        labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
        return one_hot(labels, channels, path)
    values = to_float(picture).astype(np.float32)  # (H, W, 3) in [0, 1]
    if channels == 1:
        values = values.mean(axis=2, keepdims=True)
    square = centre_square(values)
    side = square.shape[0]
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        square = cv2.resize(square, (size, size), interpolation=interpolation)
        square = square[:, :, None] if square.ndim == 2 else square
    return np.ascontiguousarray(square.transpose(2, 0, 1) * 2 - 1, dtype=np.float32)


def label_colours(classes: int) -> np.ndarray:
    """(classes, 3) uint8: a fixed, well-spread palette for showing class maps (class 0 black)."""
    colours = np.zeros((max(classes, 1), 3), np.uint8)
    for index in range(1, classes):
        # The bit-interleaving palette of the PASCAL VOC tools: neighbours get distant colours.
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def show_label_channels(channels: np.ndarray, kind: str) -> np.ndarray:
    """(C, H, W) network input -> (H, W, 3) uint8 picture a person can read."""
    if kind == "label":
        palette = label_colours(channels.shape[0])
        indices = channels.argmax(axis=0)
        shown = palette[indices]
        shown[channels.max(axis=0) <= 0] = 128  # unknown pixels in grey
        return shown
    values = np.clip((channels + 1) * 127.5, 0, 255).round().astype(np.uint8)
    values = np.repeat(values, 3, axis=0) if values.shape[0] == 1 else values
    return np.ascontiguousarray(values.transpose(1, 2, 0))
