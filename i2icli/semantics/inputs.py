"""Semantic inputs for exemplar translation: a pose file, a label map or an edge map, as channels.

Every input is laid out the way the official preprocessing lays out a photo: padded to a centred
square, then resized to the working size, so that the input, the exemplar and the output share one
frame. Pose files carry keypoints, not pixels, and are rendered straight at the working size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from i2icli.errors import InputError
from i2icli.imageio import DEFAULT_MAX_PIXELS, Picture, read_image, to_float
from i2icli.semantics.labelmaps import (
    check_classes,
    class_indices,
    jpeg_label_maps_note,
    one_hot,
)
from i2icli.semantics.pose import (
    Pose,
    pose_drawing,
    read_pose,
    render_pose_label,
    square_frame,
)

POSE_CHANNELS = 20


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


def load_semantics(
    path: Path | str,
    *,
    size: int,
    channels: int,
    frame: tuple[int, int],
    label_nc: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    picture: Picture | None = None,
) -> Semantics:
    """Read ``path`` into the ``channels`` the model expects.

    ``frame`` is the (width, height) of the photo a pose JSON's pixel coordinates refer to.
    An image is a label map when ``label_nc`` is given (one-hot encoded), else an edge map
    whose channel count must match the model. ``picture``, when given, is the map already read
    (from standard input, say), and ``path`` only names it in messages.
    """
    path = Path(path)
    if picture is None and is_pose_file(path):
        if channels != POSE_CHANNELS:
            raise InputError(path, f"is a pose, but this checkpoint takes {channels}-channel semantics, not a "
                             f"{POSE_CHANNELS}-channel pose label", "give a label or edge map image made for this model")
        pose = read_pose(path, frame)
        return Semantics(render_pose_label(pose, size), "pose", path, pose_drawing(pose, size), frame, pose)
    if picture is None:
        picture = read_image(path, max_pixels=max_pixels)
    own_frame = (picture.width, picture.height)
    if label_nc is not None:
        return Semantics(_one_hot(picture, path, size, channels, label_nc), "label", path, frame=own_frame)
    return Semantics(_edges(picture, path, size, channels), "edge", path, frame=own_frame)


def _resized_square(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` padded with 0 to a centred square, then resized to ``size`` by nearest neighbour,
    as the official code resizes every label: no new, in-between values.

    The pixels cv2.INTER_NEAREST would pick from the padded square, picked from ``array`` itself:
    a map 20000x300 padded first would be 20000x20000 (4.8 GB as float edges) to give 512x512."""
    height, width = array.shape[:2]
    side, left, top = square_frame(width, height)
    # cv2's own arithmetic for the source index, floor(x * (1 / (size / side))), to pick the same pixels.
    picked = np.minimum(np.floor(np.arange(size) * (1.0 / (size / side))).astype(np.int64), side - 1)
    rows, cols = picked - top, picked - left
    on_rows, on_cols = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    resized = np.zeros((size, size, *array.shape[2:]), dtype=array.dtype)
    resized[np.ix_(on_rows, on_cols)] = array[np.ix_(rows[on_rows], cols[on_cols])]
    return resized


def _one_hot(picture: Picture, path: Path, size: int, channels: int, label_nc: int) -> np.ndarray:
    if label_nc != channels:
        raise InputError(path, f"--label-nc {label_nc} does not match the checkpoint, which takes {channels} channels",
                         f"use --label-nc {channels}")
    labels = class_indices(picture, path)
    check_classes(labels, label_nc, path)
    note = jpeg_label_maps_note([path])
    if note:
        logging.getLogger(__name__).warning("%s", note)
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
