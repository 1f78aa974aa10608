"""OpenPose keypoints read from disk and rendered into CoCosNet v2's 20-channel DeepFashionHD label."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from i2icli.errors import InputError

CANVAS = 1024  # the official poses live on the 1024x1024 padded-and-resized DeepFashion photo
KEYPOINTS = 18  # OpenPose COCO-18 order
PAD_VALUE = 232  # grey the official preprocessing pads the photo with to make it square

# The official OpenPose drawing convention (CoCosNet v2 data/deepfashionHD_dataset.py, from OpenPose's
# util.draw_bodypose). Limb pairs are 1-based exactly as written there, so they compare line by line;
# only the first LIMBS_DRAWN pairs are drawn (the last two, ear-shoulder, never are).
LIMB_SEQ = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
    (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18),
)  # fmt: skip
LIMBS_DRAWN = 17
# Written into a canvas that is then read as BGR, so (255, 0, 0) ends up blue in the RGB label.
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
CIRCLE_RADIUS = 20
STICK_WIDTH = 20

# BODY_25 has MidHip at 8 and six foot points at 19-24; the rest is COCO-18 in the same order.
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
# Far enough outside the canvas to be meaningless, small enough that cv2's int32 points never overflow.
_COORD_LIMIT = 16 * CANVAS
_PAIR_HINT = "the official pose format is two files, NAME_candidate.txt and NAME_subset.txt"


@dataclass(frozen=True, eq=False)
class Pose:
    """One person's 18 COCO keypoints in 1024x1024 canvas pixels; missing ones are not present."""

    points: np.ndarray  # (18, 2) float64 x, y
    present: np.ndarray  # (18,) bool

    def __post_init__(self) -> None:
        points = np.array(self.points, dtype=np.float64)
        present = np.array(self.present, dtype=bool)
        if points.shape != (KEYPOINTS, 2) or present.shape != (KEYPOINTS,):
            raise ValueError(f"Pose needs points (18, 2) and present (18,), got {points.shape} and {present.shape}")
        points.setflags(write=False)  # frozen means the arrays too
        present.setflags(write=False)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "present", present)


def square_frame(width: int, height: int) -> tuple[int, int, int]:
    """(side, left, top) of the official pad-to-square: the odd pixel of padding goes right/bottom."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame must be positive, got {width}x{height}")
    side = max(width, height)
    return side, (side - width) // 2, (side - height) // 2


def read_pose(path: Path | str, frame: tuple[int, int] | None = None) -> Pose:
    """Pose from OpenPose JSON (needs the photo's (width, height) as frame) or the official txt pair."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        if frame is None:
            raise ValueError("an OpenPose JSON pose needs frame=(width, height) of the photo it was estimated on")
        return _read_json(path, frame)
    return _read_pair(*official_pair_files(path))


def official_pair_files(path: Path) -> tuple[Path, Path]:
    """The candidate and subset files named by either one of them or by the official NAME_{}.txt pattern.

    The names are matched in any case, as copies made on Windows may upper-case them; the partner
    file is looked for in the case the given name uses, then in whatever case it has on disk."""
    name = path.name
    lowered = name.lower()
    if "{}" in name:
        prefix, word, extension = name[: name.index("{}")], "", name[name.index("{}") + 2 :]
    elif lowered.endswith(("_candidate.txt", "_subset.txt")):
        word_length = len("candidate") if lowered.endswith("_candidate.txt") else len("subset")
        prefix, extension = name[: -word_length - len(".txt")], name[-len(".txt") :]
        word = name[len(prefix) : -len(extension)]
    else:
        hint = "use OpenPose JSON (.json) or the pair NAME_candidate.txt, NAME_subset.txt"
        raise InputError(path, "not a pose file", hint)
    files = []
    for partner in ("candidate", "subset"):
        if word.lower() == partner:
            files.append(path)
        else:
            files.append(_on_disk(path.with_name(prefix + _cased_like(partner, word) + extension)))
    return files[0], files[1]


def _cased_like(word: str, model: str) -> str:
    """``word`` in the case ``model`` is written in: all upper, capitalised, or else lower."""
    if model.isupper():
        return word.upper()
    if model[:1].isupper() and model[1:].islower():
        return word.capitalize()
    return word


def _on_disk(path: Path) -> Path:
    """``path``, or the one file in its folder whose name differs from it only in case (else ``path``,
    so that a missing file is named as expected)."""
    if path.exists():
        return path
    try:
        matches = sorted(entry for entry in path.parent.iterdir() if entry.name.lower() == path.name.lower())
    except OSError:
        return path
    return matches[0] if matches else path


def _load_table(path: Path, columns: int, what: str) -> np.ndarray:
    """Rows of ``columns`` finite numbers from a whitespace-separated text file (may be empty)."""
    if not path.is_file():
        raise InputError(path, "pose file not found", _PAIR_HINT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns on an empty file; we check below
            # A byte-order mark, as a Windows editor writes at the start of a file, is no number.
            lines = path.read_text(encoding="utf-8-sig").splitlines()
            table = np.loadtxt(lines, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InputError(path, f"cannot read numbers: {str(exc).splitlines()[0]}", f"expected rows of {what}") from None
    if table.size == 0:
        return np.zeros((0, columns))
    if table.shape[1] != columns:
        raise InputError(path, f"rows have {table.shape[1]} numbers, expected {columns}", f"expected rows of {what}")
    if not np.isfinite(table).all():
        raise InputError(path, "contains nan or inf", f"expected rows of {what}")
    return table


def _read_pair(candidate_path: Path, subset_path: Path) -> Pose:
    """The official pair; with several people in the subset, the one with the highest score (column 18)."""
    candidate = _load_table(candidate_path, 4, "'x y score id'")
    subset = _load_table(subset_path, KEYPOINTS + 2, "18 candidate indices (-1 = missing), score, count")
    if len(subset) == 0:
        raise InputError(subset_path, "no person in the pose file", "run the pose estimator on a photo with a person")
    row = subset[int(np.argmax(subset[:, KEYPOINTS]))][:KEYPOINTS]
    bad = (row != np.round(row)) | (row < -1) | (row >= len(candidate))
    if bad.any():
        index = int(np.argmax(bad))
        rows = f"{candidate_path.name} has {len(candidate)} rows"
        raise InputError(
            subset_path,
            f"keypoint {index} refers to candidate row {row[index]:g}, but {rows}",
            "the subset and candidate files must come from the same OpenPose run",
        )
    present = row >= 0
    points = np.zeros((KEYPOINTS, 2))
    points[present] = candidate[row[present].astype(int), :2]
    return _checked_pose(subset_path, points, present)


def _read_json(path: Path, frame: tuple[int, int]) -> Pose:
    """OpenPose JSON (COCO-18 or BODY_25), the most confident person, mapped from the photo to the canvas."""
    people = _json_people(path)
    if not people:
        raise InputError(path, "no person in the pose file", "run the pose estimator on a photo with a person")
    # Sum over the 18 keypoints the label uses, so BODY_25 feet do not decide who is picked.
    best = max(people, key=lambda keypoints: float(keypoints[:, 2].sum()))
    _refuse_normalised(path, best, frame)
    side, left, top = square_frame(*frame)
    with np.errstate(over="ignore"):  # keypoints near float64's limit become inf: refused as far outside
        points = (best[:, :2] + (left, top)) * (CANVAS / side)  # the same pad-then-resize the photo goes through
    present = best[:, 2] > 0  # OpenPose writes 0 0 0 for a keypoint it did not find
    return _checked_pose(path, np.where(present[:, None], points, 0.0), present)


def _refuse_normalised(path: Path, keypoints: np.ndarray, frame: tuple[int, int]) -> None:
    """OpenPose's --keypoint_scale 3 and 4 write coordinates in 0…1 or -1…1 of the photo instead
    of pixels: read as pixels, the whole person would be drawn as one blob in the photo's corner."""
    found = keypoints[keypoints[:, 2] > 0, :2]
    if len(found) > 1 and max(frame) > 2 and np.abs(found).max() <= 1:
        width, height = frame
        raise InputError(path, f"its keypoints all lie between -1 and 1, not across the {width}x{height} photo: they "
                         "are normalised (OpenPose --keypoint_scale 3 or 4), not pixels",
                         "write the pose in pixels, OpenPose's default (--keypoint_scale 0)")


def _json_people(path: Path) -> list[np.ndarray]:
    """Every person's keypoints in an OpenPose JSON file as (18, 3) x, y, confidence in COCO-18 order."""
    hint = 'expected OpenPose JSON: {"people": [{"pose_keypoints_2d": [x, y, c, ...]}]} with 18 or 25 keypoints'
    if not path.is_file():
        raise InputError(path, "pose file not found", hint)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark, as some editors write
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; arrays nested thousands deep exhaust the recursion limit.
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(path, f"cannot read JSON: {str(exc).splitlines()[0]}", hint) from None
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise InputError(path, "no 'people' list", hint)
    return [_json_person(path, person, number, hint) for number, person in enumerate(data["people"])]


def _json_person(path: Path, person: object, number: int, hint: str) -> np.ndarray:
    """One person's pose_keypoints_2d as (18, 3) COCO-18, checked."""
    # OpenPose before 1.2 wrote the same list as "pose_keypoints".
    key = next((key for key in ("pose_keypoints_2d", "pose_keypoints") if isinstance(person, dict) and key in person), None)
    if key is None:
        others = [name for name in person if "keypoints" in str(name)] if isinstance(person, dict) else []
        having = f" (only {', '.join(map(str, others[:3]))})" if others else ""
        raise InputError(path, f"person {number} has no pose_keypoints_2d{having}", hint)
    try:
        keypoints = np.array(person[key], dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise InputError(path, f"person {number} has keypoint numbers beyond any coordinate", hint) from None
    except (TypeError, ValueError):
        keypoints = np.zeros((0, 0))  # reported as not a list of numbers just below
    if keypoints.ndim != 1:
        raise InputError(path, f"person {number}: {key} is not a flat list of numbers (x, y, confidence, ...)", hint)
    if keypoints.size not in (KEYPOINTS * 3, 25 * 3):
        raise InputError(path, f"person {number} has {keypoints.size} keypoint numbers, expected 54 or 75", hint)
    if not np.isfinite(keypoints).all():
        raise InputError(path, f"person {number} has nan or inf keypoints", hint)
    keypoints = keypoints.reshape(-1, 3)
    return keypoints if len(keypoints) == KEYPOINTS else keypoints[list(BODY25_TO_COCO18)]


def _checked_pose(path: Path, points: np.ndarray, present: np.ndarray) -> Pose:
    """A Pose, once it has a keypoint and none is absurdly far outside the canvas."""
    if not present.any():
        raise InputError(path, "no keypoint found in the pose", "run the pose estimator on a photo with a person")
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 scaled to the canvas: inf, refused just below
        beyond = not np.abs(points[present]).max() <= _COORD_LIMIT
    if beyond:
        raise InputError(path, "keypoints lie far outside the photo", "check that the pose belongs to this photo")
    return Pose(points, present)


def keypoints_outside(pose: Pose, frame: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """The span (left, top, right, bottom) of the keypoints, in pixels of the (width, height)
    photo they are placed on, when some lie outside it; None when all lie on it. A pose estimator
    finds keypoints on the photo, so one well outside means the pose was found on another photo,
    or on this one at another size: the person is drawn cut off or out of place."""
    side, left, top = square_frame(*frame)
    points = pose.points[pose.present] * (side / CANVAS) - (left, top)  # canvas back to photo pixels
    low, high = points.min(axis=0), points.max(axis=0)
    slack = 1 + 0.01 * side  # rounding, and a keypoint found at the very edge
    width, height = frame
    if (low >= -slack).all() and high[0] <= width + slack and high[1] <= height + slack:
        return None
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def render_pose_label(pose: Pose, size: int = 512) -> np.ndarray:
    """The official 20-channel label (float32, size x size, in [0, 1]): RGB skeleton, 17 limb distances."""
    canvas, joints = _draw(pose)
    drawing = _resize_drawing(canvas, size).transpose(2, 0, 1)
    channels = [drawing] + [_distance_channel(joint, size)[None] for joint in joints]
    # ToTensor: uint8 / 255 in float32
    return np.concatenate(channels).astype(np.float32) / np.float32(255)


def pose_drawing(pose: Pose, size: int = 512) -> np.ndarray:
    """The skeleton drawing of the label (uint8 RGB, size x size), i.e. its first 3 channels."""
    return _resize_drawing(_draw(pose)[0], size)


def _draw(pose: Pose) -> tuple[np.ndarray, list[np.ndarray]]:
    """The official 1024x1024 canvas (BGR-ordered colours) and one 0/255 mask per drawn limb."""
    canvas = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
    for i in np.flatnonzero(pose.present):
        x, y = pose.points[i]
        cv2.circle(canvas, (int(x), int(y)), CIRCLE_RADIUS, COLORS[i], thickness=-1)
    joints = []
    for i, (a, b) in enumerate(LIMB_SEQ[:LIMBS_DRAWN]):
        joint = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
        if pose.present[a - 1] and pose.present[b - 1]:
            polygon = _limb_polygon(pose.points[a - 1], pose.points[b - 1])
            overlay = canvas.copy()
            cv2.fillConvexPoly(overlay, polygon, COLORS[i])
            canvas = cv2.addWeighted(canvas, 0.4, overlay, 0.6, 0)  # limbs are translucent over earlier strokes
            # (the official blends the mask with itself at 0.4 + 0.6, which leaves it unchanged)
            cv2.fillConvexPoly(joint, polygon, 255)
        joints.append(joint)
    return canvas, joints


def _limb_polygon(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The official limb ellipse: centre and angle truncated to integers, as the official int() calls do."""
    dx, dy = start - end
    centre = (int((start[0] + end[0]) / 2), int((start[1] + end[1]) / 2))
    length = (dx**2 + dy**2) ** 0.5  # not math.hypot: the last bit can move int(length / 2)
    angle = int(math.degrees(math.atan2(dy, dx)))
    return cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), angle, 0, 360, 1)


def _resize_drawing(canvas: np.ndarray, size: int) -> np.ndarray:
    """Canvas read as BGR, to RGB, nearest-neighbour to size (the transform's second resize is a no-op)."""
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return np.asarray(Image.fromarray(rgb).resize((size, size), resample=Image.Resampling.NEAREST))


def _distance_channel(joint: np.ndarray, size: int) -> np.ndarray:
    """L1 distance to the limb in thirds of a pixel, saturated at 255, bilinear to size (uint8).

    A limb that is not drawn has no zero pixel: cv2 then returns FLT_MAX everywhere, which
    saturates to 255, so the channel is constant 1.0 in the label ("infinitely far").
    """
    distance = cv2.distanceTransform(255 - joint, cv2.DIST_L1, 3)
    saturated = np.clip(distance / 3, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(saturated).resize((size, size), resample=Image.Resampling.BILINEAR))
