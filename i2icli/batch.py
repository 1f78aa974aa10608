"""Turning a command line's mix of files, folders and globs into a list of jobs with output paths."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from i2icli.imageio import SUPPORTED_SUFFIXES

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Job:
    """One input file and the output it should produce; ``problem`` is set if it cannot run."""

    source: Path
    output: Path
    problem: str | None = None


def images_in(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    """The images in ``folder`` (hidden ones skipped, anything inside ``exclude`` left out), sorted."""
    pattern = "**/*" if recursive else "*"
    found = []
    for path in folder.glob(pattern):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES and not (exclude and _inside(path, exclude)):
            found.append(path)
    return sorted(found)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def output_path(relative: Path, output_dir: Path, *, ext: str, suffix: str) -> Path:
    extension = relative.suffix.lower() if ext == "auto" else "." + ext.lower().lstrip(".")
    return output_dir / relative.parent / f"{relative.stem}{suffix}{extension}"


def plan_jobs(specs: list[str], output_dir: Path, *, recursive: bool, ext: str = "auto", suffix: str = "") -> list[Job]:
    """Expand ``specs`` in order; a missing path becomes a job with a problem, not an exception."""
    entries: list[tuple[Path, Path]] = []  # (source, path relative to the output folder)
    jobs: list[Job] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            entries.extend((found, found.relative_to(path)) for found in images_in(path, recursive, output_dir))
        elif path.is_file():
            entries.append((path, Path(path.name)))
        elif _GLOB_CHARS & set(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=recursive) if Path(m).is_file())
            if not matches:
                jobs.append(Job(path, path, f"{spec}: no files match this pattern"))
            entries.extend((match, Path(match.name)) for match in matches)
        else:
            jobs.append(Job(path, path, f"{spec}: no such file or folder"))

    taken: dict[Path, Path] = {}
    for source, relative in entries:
        target = output_path(relative, output_dir, ext=ext, suffix=suffix)
        key = target.resolve()
        if key == source.resolve():
            jobs.append(Job(source, target, f"{source}: the output would overwrite the input; use another --output or a --suffix"))
        elif key in taken:
            jobs.append(Job(source, target, f"{source}: output {target} is already written by {taken[key]}; use --suffix or separate runs"))
        else:
            taken[key] = source
            jobs.append(Job(source, target))
    return jobs
