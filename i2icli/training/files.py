"""Finding training files: the images of a folder, (label map, photo) pairs matched by name, and
which of them a run holds out.

Apart from the datasets (:mod:`i2icli.training.data`, :mod:`i2icli.training.paired_data`) so
that a training command can refuse a data folder that is missing, empty or unpaired without
importing PyTorch, which takes seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from i2icli.errors import I2IError, InputError
from i2icli.exif import ORIENTATION_TAG
from i2icli.formats import IMAGE_SUFFIXES

__all__ = [
    "find_images",
    "find_pairs",
    "pairs_of_other_shapes",
    "relative_name",
    "relative_names",
    "split_as_recorded",
    "split_held_out",
]


# --------------------------------------------------------------------------- finding files


def find_images(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every image under ``root`` (recursively, hidden files and folders skipped, and the folder
    ``exclude``: a run folder inside the data, whose sample grids are no training images), sorted
    by relative path."""
    root = Path(root)
    skipped = os.path.realpath(exclude) if exclude is not None else None
    if not root.exists():
        raise InputError(root, "no such folder", "check the path to the training images")
    if not root.is_dir():
        raise InputError(root, "is a file, not a folder of training images", "pass the folder that holds the images")
    found: list[tuple[str, Path]] = []
    visited: set[tuple[int, int]] = set()
    # Symlinked folders are followed (datasets are often linked in); the visited set stops loops.
    for folder, dirs, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        dirs[:] = [name for name in dirs
                   if not name.startswith(".") and os.path.realpath(os.path.join(folder, name)) != skipped]
        runs = [name for name in dirs if _holds_a_run(os.path.join(folder, name))]
        for name in runs:
            # Not only this run's --out: an earlier run kept in the data folder has sample grids too.
            logging.getLogger(__name__).warning("%s: holds a training run; its sample grids are left out of the "
                                                "training images", os.path.join(folder, name))
            dirs.remove(name)
        for name in files:
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(folder) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    if not found:
        listed = ", ".join(IMAGE_SUFFIXES)
        raise InputError(
            root,
            f"holds no training images (looked for {listed} in all subfolders; hidden files are skipped)",
            "put the training images in this folder or pass another one",
        )
    return [path for _, path in sorted(found)]


def _holds_a_run(folder: str) -> bool:
    """Whether ``folder`` is a training run's: its samples/ beside its checkpoints/ or metrics.csv."""
    return os.path.isdir(os.path.join(folder, "samples")) and (
        os.path.isdir(os.path.join(folder, "checkpoints")) or os.path.isfile(os.path.join(folder, "metrics.csv")))


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX), or all of it when it is not below ``root``."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def split_held_out(
    files: list[Path], root: Path, held_out: float | int, seed: int, noun: str = "training image"
) -> tuple[list[Path], list[Path]]:
    """Split ``files`` into (train, held out); ``held_out`` is a fraction in [0, 1) or a count;
    ``noun`` names what a file stands for in messages ("pair").

    Each file is ranked by a hash of the seed and its path relative to ``root``, and the
    lowest-ranked ones are held out. So the split does not depend on the order of
    ``files``, and adding files to the folder never moves an old training file into the
    held-out set unless the count grows. Both lists keep the order of ``files``.
    """
    root = Path(root)
    total = len(files)
    counted = f"{total} {noun}" if total == 1 else f"{total} {noun}s"
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)):
        raise TypeError(f"held_out must be a float fraction or an int count, got {held_out!r}")
    if isinstance(held_out, float):
        if not 0.0 <= held_out < 1.0:
            raise I2IError(
                f"cannot hold out {held_out} of the images: a fraction must be at least 0 and below 1",
                "give a fraction such as 0.05, or a whole number of images",
            )
        count = int(held_out * total + 0.5)
        if held_out > 0 and total >= 2:
            count = max(1, count)
        # A fraction is a wish, not a promise: it never takes the last training image.
        count = min(count, max(total - 1, 0))
        if held_out > 0 and count == 0:
            raise InputError(
                root,
                f"has only {counted}: none can be held out for sample grids and still leave one to train on",
                f"add more {noun}s, or hold none out (--held-out 0)",
            )
    else:
        count = held_out
        if count < 0:
            raise I2IError(f"cannot hold out {count} images", "give 0 or more")
        if count > 0 and count >= total:
            raise InputError(
                root,
                f"has {counted}: holding out {count} would leave none to train on",
                f"hold out fewer than {total}, or add more {noun}s",
            )
    # A name that is not UTF-8 (a file from an old archive) is hashed as the bytes it has on disk;
    # every other name hashes as before, so existing splits do not move.
    ranked = sorted(
        files,
        key=lambda path: hashlib.sha256(f"{seed}:{relative_name(path, root)}".encode("utf-8", "surrogateescape")).hexdigest(),
    )
    chosen = set(ranked[:count])
    train = [path for path in files if path not in chosen]
    held = [path for path in files if path in chosen]
    return train, held


def relative_names(files: list[Path], root: Path) -> list[str]:
    """``files`` as paths relative to ``root`` (POSIX): what a run records of its held-out files."""
    return [relative_name(path, root) for path in files]


def split_as_recorded(files: list[Path], root: Path, held_out_names: list[str]) -> tuple[list[Path], list[Path], list[str]]:
    """(train, held out, missing): a run's own split, from the held-out files it recorded when it
    started (paths relative to ``root``, see :func:`relative_names`).

    :func:`split_held_out` on a folder that has grown since would hold out other files (a
    fraction grows with the folder), some of which the run trained on; a recorded split does
    not move. Files added since are training files; ``missing`` names recorded held-out files
    that are no longer there. Both lists keep the order of ``files``.
    """
    recorded = set(held_out_names)
    present = set()
    train, held = [], []
    for path, name in zip(files, relative_names(files, root)):
        if name in recorded:
            held.append(path)
            present.add(name)
        else:
            train.append(path)
    return train, held, [name for name in held_out_names if name not in present]


# --------------------------------------------------------------------------- pairing files


def _name(path: Path, root: Path) -> str:
    """What pairs a file: its path below ``root`` without the suffix."""
    return Path(relative_name(path, root)).with_suffix("").as_posix()


def _by_name(files: list[Path], root: Path) -> tuple[dict[str, Path], list[Path]]:
    """``files`` by :func:`_name`, and those left out because another file has the same name
    (labels/000.png and labels/000.bmp). Of such files the one whose suffix sorts last is kept
    (.png over .bmp and .jpg): the choice does not depend on the order the folder lists them in."""
    chosen: dict[str, Path] = {}
    for path in sorted(files, key=lambda path: relative_name(path, root)):
        chosen[_name(path, root)] = path  # a later suffix replaces an earlier one
    kept = set(chosen.values())
    return chosen, [path for path in files if path not in kept]


def find_pairs(labels_root: Path, photos_root: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(label map, photo) pairs whose paths below their folders match without the suffix
    (``labels/12.png`` with ``photos/12.jpg``), sorted; and notes on files left out: those without
    a partner, and those whose name another file of the same folder has with another suffix (see
    :func:`_by_name`).

    Raises InputError when nothing pairs up, naming both folders and an example of each side.
    """
    labels, dropped_labels = _by_name(find_images(labels_root), labels_root)
    photos, dropped_photos = _by_name(find_images(photos_root), photos_root)
    shared = sorted(set(labels) & set(photos))
    if not shared:
        raise InputError(
            labels_root,
            f"no label map here has a photo of the same name in {photos_root} "
            f"(e.g. {next(iter(labels))} here, {next(iter(photos))} there)",
            "name each label map like its photo (labels/12.png for photos/12.jpg)",
        )
    notes = []
    left_out = [f"{root.name}/{relative_name(path, root)} ({chosen[_name(path, root)].name} is used)"
                for root, chosen, dropped in ((labels_root, labels, dropped_labels), (photos_root, photos, dropped_photos))
                for path in dropped]
    if left_out:
        more = f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        notes.append(f"{len(left_out)} file{'s' if len(left_out) > 1 else ''} left out, each for a file of the same name "
                     f"whose suffix sorts later: {', '.join(left_out[:3])}{more}")
    for side, names, root in (("label maps", labels, labels_root), ("photos", photos, photos_root)):
        alone = sorted(set(names) - set(shared))
        if alone:
            one = len(alone) == 1
            notes.append(f"{len(alone)} {side[:-1] if one else side} in {root} {'has' if one else 'have'} no partner "
                         f"and {'is' if one else 'are'} not used (e.g. {alone[0]})")
    return [(labels[name], photos[name]) for name in shared], notes


def _upright_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image as shown (EXIF orientation applied), from its header only; None
    for a file that cannot be read (the dataset reports it when it comes to load it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            quarter_turn = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
    except (OSError, ValueError, SyntaxError):  # Pillow's header parsers raise all three
        return None
    return (height, width) if quarter_turn else (width, height)


def pairs_of_other_shapes(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path, tuple[int, int], tuple[int, int]]]:
    """The pairs whose label map and photo have different aspect ratios (beyond 1%, which a pixel
    of rounding makes), with both sizes. Each is cropped to its centred square, so such a pair
    shows different parts of the scene on its two sides."""
    found = []
    for label, photo in pairs:
        label_size, photo_size = _upright_size(label), _upright_size(photo)
        if label_size is None or photo_size is None:
            continue
        label_ratio, photo_ratio = label_size[0] / label_size[1], photo_size[0] / photo_size[1]
        if abs(label_ratio - photo_ratio) > 0.01 * photo_ratio:
            found.append((label, photo, label_size, photo_size))
    return found
