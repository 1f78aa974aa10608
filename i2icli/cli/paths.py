"""Paths checked before any work: the images in a folder, outputs that can be written and that replace no input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from i2icli.batch import file_key
from i2icli.cli.error_handling import usage_error
from i2icli.cli.stderr import warn
from i2icli.errors import InputError
from i2icli.formats import IMAGE_SUFFIXES

# Image formats i2i does not write: `-o out.gif` is refused, rather than made a folder named out.gif.
_UNWRITTEN_IMAGE_SUFFIXES = frozenset({
    ".gif", ".jxl", ".jp2", ".j2k", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".exr",
    ".hdr", ".ico", ".svg", ".psd", ".dng", ".raw", ".pdf",
})

# Files that are no images at all: `-o result.txt` is a mistake, not a folder to make. Names such as
# results.v2 or 2024.06 stay folders.
_NON_IMAGE_SUFFIXES = frozenset({
    ".txt", ".json", ".jsonl", ".csv", ".tsv", ".xml", ".yaml", ".yml", ".toml", ".ini", ".log", ".md", ".html",
    ".htm", ".doc", ".docx", ".odt", ".rtf", ".xls", ".xlsx", ".ppt", ".pptx", ".zip", ".tar", ".gz", ".tgz",
    ".bz2", ".xz", ".7z", ".rar", ".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mp3", ".wav", ".flac",
    ".py", ".sh", ".npy", ".npz", ".pt", ".pth", ".ckpt", ".onnx", ".safetensors",
})


def names_image_file(output: str | Path) -> bool:
    """Whether -o/--output names an image file (by its extension) rather than a folder. An existing
    folder, or a name ending in a slash, is a folder whatever its name; an image format i2i cannot
    write, or a file that is no image (out.txt), is a usage error."""
    path = Path(output).expanduser()
    suffix = path.suffix.lower()
    if os.path.isdir(path) or str(output).endswith(("/", os.sep)):  # "new.png/" is a folder to make
        return False
    if suffix in IMAGE_SUFFIXES:
        return True
    formats = f"{', '.join(IMAGE_SUFFIXES[:-1])} or {IMAGE_SUFFIXES[-1]}"
    if suffix in _UNWRITTEN_IMAGE_SUFFIXES:
        raise usage_error(f"-o {output}: i2i cannot write {suffix} files; name a {formats} file or a folder")
    if suffix in _NON_IMAGE_SUFFIXES:
        raise usage_error(f"-o {output}: an output file must be a {formats} file; any other name is taken as a "
                          f"folder, but {suffix} is a file's (end it with a / to make a folder of that name)")
    return False


def image_files(path: Path, role: str, output: Path | None = None) -> list[Path]:
    """An image argument: the file itself, or the images in a folder (not its sub-folders, whose
    images are counted as left out, so that none is missed silently; the command's ``output``
    folder, wherever it lies, is not counted)."""
    from i2icli.batch import images_and_unreadable_links

    path = path.expanduser()
    if path.is_dir():
        output = output.expanduser() if output is not None else None
        skip = output if output is not None and output.resolve() != path.resolve() else None
        everything, links = images_and_unreadable_links(path, recursive=True, exclude=skip)  # one walk for all
        own = [image for image in everything if image.parent == path]
        below = len(everything) - len(own)
        # A link to nothing is kept: reading it fails for that image alone, naming the link.
        found = sorted(own + [link for link, _ in links if link.parent == path])
        if not found:
            hint = (f"its {below} image{'s are' if below > 1 else ' is'} in sub-folders, which are not searched: pass "
                    "a sub-folder" if below else "pass an image file or a folder of images")
            raise InputError(path, f"no images in this {role} folder", hint)
        if below:
            warn(f"{path}: {below} image{'s' if below > 1 else ''} in sub-folders left out (only the folder's own "
                 "images are used)")
        return found
    if not path.exists():
        raise InputError(path, "no such file or folder", f"check the {role} path")
    return [path]


def check_output_folder(folder: Path, option: str = "-o/--output") -> None:
    """Fail before any work when results could not be written into ``folder`` (created if missing):
    a batch that finds out only at its first write may have spent an hour on it."""
    folder = folder.expanduser()
    try:
        if folder.exists() and not folder.is_dir():
            raise InputError(folder, "is a file, not a folder", f"choose another {option}")
        existing = folder.absolute()
        while not existing.exists():
            existing = existing.parent
    except OSError as error:
        raise InputError(folder, f"cannot be used as the output folder ({error.strerror or error})",
                         f"choose another {option}") from None
    if not existing.is_dir():
        raise InputError(folder, f"{existing} is a file, so this folder cannot be made", f"choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        # On a disk mounted read-only no change of permissions would help: say which it is.
        why = f"{existing} is on a read-only disk" if _mounted_read_only(existing) else f"{existing}: permission denied"
        raise InputError(folder, f"cannot be written ({why})", f"choose another {option}")


def _mounted_read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def check_extra_output(path: Path, option: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Path:
    """A file named by an option other than -o (--grid, --spectrum), checked before any work: a
    format that cannot be written, or a folder that cannot be made, would fail only at the end."""
    path = path.expanduser()
    if path.suffix.lower() not in suffixes:
        raise usage_error(f"{option} {path}: name a {', '.join(suffixes)} file")
    if path.is_dir():
        raise InputError(path, "is a folder", f"choose another {option}")
    check_output_folder(path.parent, option)
    return path


def refuse_overwrite(target: Path, inputs: Iterable[Path], outputs: Iterable[Path] = ()) -> None:
    """Raise InputError if writing ``target`` would replace one of ``inputs``, or one of the
    command's own ``outputs`` (a plot written over the image it summarises, say)."""
    # By file, not by name: on a case-insensitive disk (macOS, Windows) a.png's output A.png is a.png.
    key = file_key(target.expanduser())
    if key in {file_key(p.expanduser()) for p in inputs}:
        raise InputError(target, "the output would overwrite an input", "choose another output")
    if key in {file_key(p.expanduser()) for p in outputs}:
        raise InputError(target, "this file is also one of the command's outputs", "choose another name for it")
