"""Turning a command line's mix of files, folders and globs into a list of jobs with output paths."""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from i2icli.imageio import SUPPORTED_SUFFIXES

_GLOB_CHARS = set("*?[")
PATH_SEPARATORS = frozenset({"/", "\\", os.sep, os.altsep or "/"})


@dataclass(frozen=True)
class Job:
    """One input file and the output it should produce; ``problem`` is set if it cannot run,
    and then ``output`` is None when no output was planned (a missing input, say)."""

    source: Path
    output: Path | None
    problem: str | None = None


def images_in(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    """The images in ``folder`` (hidden ones skipped, anything inside ``exclude`` left out), sorted."""
    pattern = "**/*" if recursive else "*"
    found = []
    for path in folder.glob(pattern):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix.lower() in SUPPORTED_SUFFIXES and _is_file(path) and not (exclude and is_inside(path, exclude)):
            found.append(path)
    return sorted(found)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a path below a folder that cannot be searched: not listable, so not listed
        return False


def is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def output_path(relative: Path, output_dir: Path, *, ext: str, suffix: str) -> Path:
    if PATH_SEPARATORS & set(suffix):
        # A suffix with a separator would place outputs outside the output folder.
        raise ValueError(f"a file-name suffix cannot contain a path separator: {suffix!r}")
    extension = relative.suffix.lower() if ext == "auto" else "." + ext.lower().lstrip(".")
    return output_dir / relative.parent / f"{relative.stem}{suffix}{extension}"


def _kind(path: Path) -> str:
    """'dir', 'file', 'missing', 'other', or why it cannot be looked at."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as error:
        return (error.strerror or type(error).__name__).lower()
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _empty_folder_problem(folder: Path, recursive: bool, output_dir: Path) -> str:
    if not os.access(folder, os.R_OK | os.X_OK):
        return f"{folder}: this folder cannot be read (permission denied)"
    if not recursive and images_in(folder, True, output_dir):
        return f"{folder}: no images in this folder, only in its sub-folders; add -r to include them"
    return f"{folder}: no images in this folder"


def plan_jobs(specs: list[str], output_dir: Path, *, recursive: bool, ext: str = "auto", suffix: str = "") -> list[Job]:
    """Expand ``specs`` in order. A missing, unreadable or empty input becomes a job with a
    problem, not an exception; a file named twice is one job; no output may replace any input."""
    entries: list[tuple[Path, Path]] = []  # (source, path relative to the output folder)
    jobs: list[Job] = []
    for spec in specs:
        path = Path(spec).expanduser()
        kind = _kind(path)
        if kind == "dir":
            # Leave out earlier results when the output folder lies inside this one (and only
            # then: an output folder that is this folder or holds it would hide every input).
            inside = output_dir if is_inside(output_dir, path) and output_dir.resolve() != path.resolve() else None
            found = images_in(path, recursive, inside)
            if not found:
                jobs.append(Job(path, None, _empty_folder_problem(path, recursive, output_dir)))
            entries.extend((image, image.relative_to(path)) for image in found)
        elif kind in ("file", "other"):
            entries.append((path, Path(path.name)))
        elif kind == "missing" and _GLOB_CHARS & set(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=recursive) if _is_file(Path(m)))
            if not matches:
                jobs.append(Job(path, None, f"{spec}: no files match this pattern"))
            entries.extend((match, Path(match.name)) for match in matches)
        elif kind == "missing":
            jobs.append(Job(path, None, f"{spec}: no such file or folder"))
        else:
            jobs.append(Job(path, None, f"{spec}: cannot be read ({kind}); check its permissions"))

    inputs: dict[Path, Path] = {}
    for source, relative in entries:
        inputs.setdefault(source.resolve(), source)
    taken: dict[Path, Path] = {}
    planned: set[Path] = set()
    for source, relative in entries:
        key_source = source.resolve()
        if key_source in planned:
            continue  # the same file named twice (a folder and a glob, say): once is enough
        planned.add(key_source)
        target = output_path(relative, output_dir, ext=ext, suffix=suffix)
        key = target.resolve()
        if key == key_source:
            jobs.append(Job(source, target, f"{source}: the output would overwrite the input; use another --output or a --suffix"))
        elif key in inputs:
            jobs.append(Job(source, target, f"{source}: its output {target} is another input ({inputs[key]}), which "
                                            "would be overwritten; use another --output or a --suffix"))
        elif key in taken:
            jobs.append(Job(source, target, f"{source}: output {target} is already written by {taken[key]}; use --suffix or separate runs"))
        else:
            taken[key] = source
            jobs.append(Job(source, target))
    return jobs
