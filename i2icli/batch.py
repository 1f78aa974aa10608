"""Turning a command line's mix of files, folders and globs into a list of jobs with output paths."""

from __future__ import annotations

import dataclasses
import functools
import glob
import logging
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from i2icli.formats import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# From ``formats``, not ``imageio``: the command-line modules use this module and must not load OpenCV.
_READABLE_SUFFIXES = frozenset(IMAGE_SUFFIXES)

_GLOB_CHARS = set("*?[")
PATH_SEPARATORS = frozenset({"/", "\\", os.sep, os.altsep or "/"})
# The folders ``restore --save-faces`` writes beside each output, one OUTPUT-STEM_NN.png (or
# OUTPUT-NAME_NN.png) per face: a later run into the same folder must not take them for photos.
FACE_FOLDERS = ("cropped_faces", "restored_faces", "cmp")
_FACE_FILE = re.compile(r"(.+)_\d{2,}\.png", re.IGNORECASE)


@dataclass(frozen=True)
class Job:
    """One input file and the output it should produce; ``problem`` is set if it cannot run,
    and then ``output`` is None when no output was planned (a missing input, say)."""

    source: Path
    output: Path | None
    problem: str | None = None


def images_in(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    """The images in ``folder`` (hidden ones skipped, anything inside ``exclude`` left out), sorted."""
    return sorted(path for path in _named_as_images(folder, recursive, exclude) if _is_file(path))


def _named_as_images(folder: Path, recursive: bool, exclude: Path | None) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    named = []
    for path in folder.glob(pattern):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix.lower() in _READABLE_SUFFIXES and not (exclude and is_inside(path, exclude)):
            named.append(path)
    return named


def unreadable_link_reason(path: Path) -> str | None:
    """Why ``path``, a symbolic link, leads to no file, or None when it is no such link. A link to
    nothing (a photo on a drive that is not mounted, say) or one that leads back to itself, found
    in a folder or by a pattern, is a photo that cannot be read: a failure, not left out unsaid."""
    try:
        if not path.is_symlink():
            return None
    except OSError:  # below a folder that cannot be searched: not listable, as in _is_file
        return None
    kind = _kind(path)
    if kind == "too many levels of symbolic links":
        return _LOOPING_LINK
    if kind != "missing":
        return None
    try:
        target = os.readlink(path)
    except OSError:
        target = "a file"
    return f"a symbolic link to {target}, which does not exist; reconnect what it points to, or remove the link"


def images_and_unreadable_links(folder: Path, recursive: bool,
                                exclude: Path | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """From one walk of ``folder``: its images (as :func:`images_in`), and the links named as
    images there that lead to no file, each with its problem (see unreadable_link_reason), sorted."""
    named = _named_as_images(folder, recursive, exclude)
    links = sorted((path, problem) for path in named if not _is_file(path) and (problem := _link_problem(path)))
    return sorted(path for path in named if _is_file(path)), links


def _link_problem(path: Path) -> str | None:
    reason = unreadable_link_reason(path)
    return f"{path}: {reason}" if reason else None


_LOOPING_LINK = "a symbolic link that leads back to itself; point it at a file"


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
    extension = relative.suffix.lower() if ext.lower() == "auto" else "." + ext.lower().lstrip(".")
    return output_dir / relative.parent / f"{relative.stem}{suffix}{extension}"


# A file is written under a hidden temporary name first (see atomic_files.replace_atomically), at most
# this many bytes longer than its own: the path must leave room for that name too.
_TEMPORARY_NAME_EXTRA_BYTES = 14


def output_path_problem(path: Path, what: str = "its output") -> str | None:
    """Why no file can be made at ``path`` (which the job's message follows with its name): a
    file where one of its folders would be made (-r mirrors sub-folders), or a name or a path
    longer than its file system or the system allows (ENAMETOOLONG), with what to do; None when
    it is fine. Found while planning, not when writing after the work. For many outputs, use
    :class:`OutputPathChecks`."""
    return OutputPathChecks()(path, what)


class OutputPathChecks:
    """:func:`output_path_problem` for the outputs of a batch: what depends on an output's folder
    alone (a file in its way, its file system's limits) is looked up once per folder, not once per
    output: a batch of thousands lies in a few folders, and each look-up is several calls to the
    file system (slow on a network disk) for a folder not made yet."""

    def __init__(self) -> None:
        self._folders: dict[Path, tuple[Path | None, int, int]] = {}

    def __call__(self, path: Path, what: str = "its output") -> str | None:
        """``what`` names the file in the message (its output, one of its --save-faces files...)."""
        folder = path.parent
        if folder not in self._folders:
            self._folders[folder] = (_file_in_the_way(path), *_name_limits(folder))
        blocking, name_max, path_max = self._folders[folder]
        if blocking is not None:
            return (f"{what} {path} would be in {blocking}, which is a file, not a folder; move it aside, or "
                    "choose another output folder")
        longest = max(path.parts, key=lambda part: len(os.fsencode(part)), default="")
        if len(os.fsencode(longest)) > name_max:
            if longest == path.name:
                return (f"{what} {path} would have a name of {len(os.fsencode(longest))} bytes, over the "
                        f"{name_max} its file system allows; use shorter file names")
            return (f"{what} {path} would be in a folder named {longest}, of {len(os.fsencode(longest))} bytes, "
                    f"over the {name_max} its file system allows; use shorter folder names")
        length = len(os.fsencode(str(path)))
        room = path_max - 1 - _TEMPORARY_NAME_EXTRA_BYTES  # PATH_MAX counts the closing NUL byte
        if length > room:
            return (f"{what} {path} would be a path of {length} bytes, over the {room} an output may have here; "
                    "use an output folder with a shorter path, or fewer sub-folders")
        return None


def device_of(path: Path) -> int | None:
    """The file system ``path`` is on, or would be made on (that of its nearest existing folder)."""
    try:
        return _nearest_folder(path).stat().st_dev
    except OSError:
        return None


def mount_point(path: Path) -> Path:
    """The folder the disk that ``path`` is on (or would be made on) is mounted at."""
    folder = _nearest_folder(path).absolute()
    while folder != folder.parent and not os.path.ismount(folder):
        folder = folder.parent
    return folder


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is no folder, so that ``path`` cannot be made."""
    folder = path.parent
    while folder != folder.parent:
        kind = _kind(folder)
        if kind == "dir":
            return None
        if kind in ("file", "other"):
            return folder
        folder = folder.parent
    return None


def _nearest_folder(path: Path) -> Path:
    """The folder ``path`` will be made in, or its nearest ancestor that exists."""
    folder = path.parent
    while folder != folder.parent and _kind(folder) != "dir":
        folder = folder.parent
    return folder


@functools.lru_cache(maxsize=256)  # a batch's outputs lie in a few folders
def _name_limits(folder: Path) -> tuple[int, int]:
    """(longest name in bytes, longest path in bytes with its NUL) where ``folder`` is or will be
    made; Linux's usual 255 and 4096 where the file system does not say."""
    limits = []
    existing = folder if _kind(folder) == "dir" else _nearest_folder(folder)
    for name, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(os.pathconf(existing, name) or default)
        except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or a name it does not know
            limits.append(default)
    return limits[0], limits[1]


def _face_file_owner(path: Path) -> tuple[Path, str] | None:
    """(output folder as named, output stem or name) that ``path`` would be a --save-faces file of,
    or None."""
    match = _FACE_FILE.fullmatch(path.name)
    if match is None or path.parent.name not in FACE_FOLDERS:
        return None
    return path.parent.parent, match.group(1)


def face_file_name(stem: str, index: int) -> str:
    """The name --save-faces gives a photo's face number ``index`` (from 0), as GFPGAN names it."""
    return f"{stem}_{index:02d}.png"


_FaceFamily = tuple[str, str]


def _face_families() -> Callable[[Path, str], _FaceFamily]:
    """What the face files of an output in a folder, named after a stem, are known by (on a disk
    that ignores case too); each folder resolved once: a batch's thousands of outputs lie in a few."""
    folders: dict[Path, str] = {}

    def family(folder: Path, stem: str) -> _FaceFamily:
        if folder not in folders:
            try:
                folders[folder] = case_blind(folder.resolve())
            except (OSError, RuntimeError):  # a symlink loop: its name is all there is to compare
                folders[folder] = case_blind(folder.absolute())
        return folders[folder], case_blind(Path(stem))

    return family


def _face_family_of_file(path: Path, family: Callable[[Path, str], _FaceFamily]) -> _FaceFamily | None:
    """The face family that ``path`` could be a --save-faces file of, or None."""
    match = _FACE_FILE.fullmatch(path.name)
    if match is None or path.parent.name.casefold() not in FACE_FOLDERS:
        return None
    return family(path.parent.parent, match.group(1))


def refuse_face_file_clashes(jobs: list[Job], face_stem: Callable[[Path], str]) -> list[Job]:
    """With --save-faces, fail while planning (not after the work) each job whose face files
    (FOLDER/cropped_faces/STEM_NN.png, restored_faces/..., cmp/..., ``face_stem`` naming them
    after the output) cannot be made, or would replace a file of the batch: an output or an
    input that has the name of one of them (found with -r in an input's cropped_faces/, say),
    or another job's face files. How many faces a photo has is not known before detection, so a
    file named like any of them clashes, and the names are measured with the first index, which
    every photo with a face writes."""
    family = _face_families()
    families: dict[_FaceFamily, Job] = {}
    for job in jobs:
        if job.problem is None and job.output is not None:
            families.setdefault(family(job.output.parent, face_stem(job.output)), job)
    inputs = {of: job for job in jobs if (of := _face_family_of_file(job.source, family)) is not None}
    output_path_checks = OutputPathChecks()
    checked = []
    for job in jobs:
        if job.problem is None and job.output is not None:
            problem = _face_file_problem(job, job.output, face_stem(job.output), family, families, inputs,
                                         output_path_checks)
            if problem:
                job = dataclasses.replace(job, problem=f"{job.source}: {problem}")
        checked.append(job)
    return checked


def _face_file_problem(job: Job, output: Path, stem: str, family: Callable[[Path, str], _FaceFamily],
                       families: dict[_FaceFamily, Job], inputs: dict[_FaceFamily, Job],
                       output_path_checks: OutputPathChecks) -> str | None:
    looks_like = _face_family_of_file(output, family)
    owner = families.get(looks_like) if looks_like else None
    if owner is not None and owner is not job:
        return (f"its output {output} has the name of a face file --save-faces writes for {owner.source} (beside "
                f"its output {owner.output}), and one would replace the other; move {job.source} aside, or restore it "
                "in a separate run into another --output")
    own = family(output.parent, stem)
    if families.get(own, job) is not job:
        other = families[own]
        return (f"its face files ({output.parent / FACE_FOLDERS[0] / (stem + '_NN.png')} and the like) would be those "
                f"of {other.source} too; rename one of them, or restore them in separate runs into different --output "
                "folders")
    if (overwritten := inputs.get(own)) is not None:
        return (f"its face file {overwritten.source} (--save-faces) would overwrite an input of this run; move "
                "that input aside, or choose another output")
    for folder in FACE_FOLDERS:
        path = output.parent / folder / face_file_name(stem, 0)
        if problem := output_path_checks(path, "its --save-faces file"):
            return problem
        if is_folder(path):
            return f"its --save-faces file {path} is a folder; move it aside, or use another --output or a --suffix"
    return None


def case_blind(path: Path) -> str:
    """``path`` as a disk that ignores case takes it: two paths with one ``case_blind`` are one
    file there. The accented letters are decomposed too, as macOS's disks store them (they take
    "é" typed as one character or as "e" and an accent for one name)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", str(path)).casefold())


def case_clash(output: Path, other: Path, other_inputs: object) -> str:
    """Why ``output`` may not be written beside ``other``, the output of ``other_inputs``: their
    names differ only in case (or in how their accented letters are encoded), and on a disk that
    ignores case the second would replace the first without a word. Refused on every disk: where a
    folder not yet made will be cannot be known before it is, and results are often copied to such
    a disk later."""
    if str(output).casefold() != str(other).casefold():
        return (f"its output {output} differs from {other}, the output of {other_inputs}, only in how its accented "
                "letters are encoded (as one character or as a letter and an accent), and macOS's disks take them "
                "for one file")
    return (f"its output {output} differs only in case from {other}, the output of {other_inputs}, and a disk that "
            "ignores case (as macOS's, Windows' and most memory cards' do) takes them for one file")


def is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder (an output named like one fails before the work, not at its write)."""
    return _kind(path) == "dir"


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


def file_key(path: Path) -> object:
    """What makes two paths one file: the device and inode where it exists (a bind mount, a hard
    link or a case-insensitive file system reach one file by different paths), else the path."""
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        pass
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: its name is all there is to compare
        return path.absolute()


@dataclass
class _Expanded:
    """The inputs as named, expanded in order: the image files, and a job with a problem for each
    input that names none."""

    entries: list[tuple[Path, Path, bool]] = field(default_factory=list)  # (source, path relative to the output folder, named explicitly)
    entry_spec: list[int] = field(default_factory=list)  # which spec each entry came from
    jobs: list[tuple[int, Job]] = field(default_factory=list)  # with the spec each came from: reported in the order given
    # (folder input, output folder inside it, images in its sub-folders that only -r would take)
    folders: list[tuple[Path, Path | None, list[Path]]] = field(default_factory=list)


def _expand(specs: list[str], output_dir: Path, recursive: bool) -> _Expanded:
    """Each input in turn: a folder's images (leaving out the output folder when it lies inside),
    a file, a pattern's images, or a problem (missing, empty, unreadable, a symlink loop)."""
    expanded = _Expanded()
    entries, entry_spec, jobs, folders = expanded.entries, expanded.entry_spec, expanded.jobs, expanded.folders
    for index, spec in enumerate(specs):
        path = Path(spec).expanduser()
        kind = _kind(path)
        if kind == "dir":
            # Leave out earlier results when the output folder lies inside this one (and only
            # then: an output folder that is this folder or holds it would hide every input).
            inside = output_dir if is_inside(output_dir, path) and output_dir.resolve() != path.resolve() else None
            found, broken = images_and_unreadable_links(path, recursive, inside)
            jobs.extend((index, Job(link, None, problem)) for link, problem in broken)
            if not found and not broken:
                jobs.append((index, Job(path, None, _empty_folder_problem(path, recursive, output_dir))))
            below = sorted(set(images_in(path, True, inside)) - set(found)) if found and not recursive else []
            folders.append((path, inside, below))
            entries.extend((image, image.relative_to(path), False) for image in found)
            entry_spec.extend([index] * len(found))
        elif kind in ("file", "other"):
            entries.append((path, Path(path.name), True))
            entry_spec.append(index)
        elif kind == "missing" and _GLOB_CHARS & set(spec):
            found = sorted(Path(m) for m in glob.glob(str(path), recursive=recursive))
            files = [match for match in found if _is_file(match)]
            # As in a folder, what is not an image (a sidecar .xmp, a Thumbs.db) is no failed photo.
            matches = [match for match in files if match.suffix.lower() in _READABLE_SUFFIXES]
            others = [match for match in files if match.suffix.lower() not in _READABLE_SUFFIXES]
            broken = [(match, problem) for match in found
                      if match.suffix.lower() in _READABLE_SUFFIXES and (problem := _link_problem(match))]
            jobs.extend((index, Job(link, None, problem)) for link, problem in broken)
            if not files and not broken:
                jobs.append((index, Job(path, None, f"{spec}: no files match this pattern")))
            elif not matches and not broken:
                jobs.append((index, Job(path, None, f"{spec}: no image matches this pattern, only other files "
                                                     f"(e.g. {others[0].name}); i2i reads {', '.join(IMAGE_SUFFIXES)}")))
            elif others:
                log.warning("%s: %d matching file(s) that are not images left out (e.g. %s)", spec, len(others), others[0].name)
            entries.extend((match, Path(match.name), False) for match in matches)
            entry_spec.extend([index] * len(matches))
        elif kind == "missing":
            jobs.append((index, Job(path, None, _link_problem(path) or f"{spec}: no such file or folder")))
        elif kind == "too many levels of symbolic links":
            jobs.append((index, Job(path, None, f"{spec}: {_LOOPING_LINK}")))
        else:
            jobs.append((index, Job(path, None, f"{spec}: cannot be read ({kind}); check its permissions")))
    return expanded


def plan_jobs(specs: list[str], output_dir: Path, *, recursive: bool, ext: str = "auto", suffix: str = "") -> list[Job]:
    """Expand ``specs`` in order. A missing, unreadable or empty input becomes a job with a
    problem, not an exception; a file named twice is one job; no output may replace any input.

    A file found in a folder or by a glob that is the output another input would be written to is
    that input's earlier result (a re-run in place with ``--suffix``): it is left out, with a
    warning, rather than restored again; so are the face files ``--save-faces`` wrote beside such
    an output. A file named on the command line is always an input."""
    expanded = _expand(specs, output_dir, recursive)
    entries, entry_spec, jobs, folders = expanded.entries, expanded.entry_spec, expanded.jobs, expanded.folders
    targets = [output_path(relative, output_dir, ext=ext, suffix=suffix) for _, relative, _ in entries]
    sources = [file_key(source) for source, _, _ in entries]
    target_keys = [file_key(target) for target in targets]
    earlier_results = {key for key, source in zip(target_keys, sources) if key != source}
    # The outputs face files are named after: this run's, and those -r would add (for the count of
    # what it would add).
    would_be = [output_path(image.relative_to(folder), output_dir, ext=ext, suffix=suffix)
                for folder, _, below in folders for image in below]
    folders_resolved = {folder: folder.resolve() for folder in {target.parent for target in targets + would_be}}
    owners = {(folders_resolved[target.parent], name) for target in targets + would_be for name in (target.stem, target.name)}

    def is_face_file(path: Path) -> bool:
        if (owner := _face_file_owner(path)) is None:
            return False
        folder, stem = owner
        # Resolved once per folder, not once per file: an input folder holds many.
        if folder not in folders_resolved:
            folders_resolved[folder] = folder.resolve()
        return (folders_resolved[folder], stem) in owners

    for folder, inside, below in folders:
        _warn_of_left_out(folder, recursive, inside, [path for path in below if not is_face_file(path)])
    left_out = {key: source for (source, _, named), key in zip(entries, sources)
                if not named and (key in earlier_results or is_face_file(source))}
    if left_out:
        log.warning("%d file(s) left out as earlier results of this run's inputs (e.g. %s)", len(left_out),
                    next(iter(left_out.values())))
    inputs: dict[object, Path] = {}
    for (source, _, _), key in zip(entries, sources):
        inputs.setdefault(key, source)
    taken: dict[object, Path] = {}
    taken_in_any_case: dict[str, tuple[Path, Path]] = {}  # (output, input) by case_blind(output)
    planned: set[object] = set()
    output_path_checks = OutputPathChecks()
    for (source, _, named), target, key_source, key, index in zip(entries, targets, sources, target_keys, entry_spec):
        if key_source in planned or key_source in left_out:
            continue  # an earlier result, or the same file named twice (a folder and a glob, say)
        planned.add(key_source)
        if key == key_source:
            jobs.append((index, Job(source, target, f"{source}: the output would overwrite the input; use another "
                                                    "--output or a --suffix")))
        elif key in inputs and key not in left_out:
            jobs.append((index, Job(source, target, f"{source}: its output {target} is another input ({inputs[key]}), "
                                                    "which would be overwritten; use another --output or a --suffix")))
        elif key in taken:
            # A --suffix is added to both names alike, so it cannot part them.
            jobs.append((index, Job(source, target, f"{source}: output {target} is already written by {taken[key]}; "
                                                    "rename one of them, or restore them in separate runs into "
                                                    "different --output folders")))
        elif (folded := case_blind(target)) in taken_in_any_case:
            other, other_source = taken_in_any_case[folded]
            jobs.append((index, Job(source, target, f"{source}: {case_clash(target, other, other_source)}; rename "
                                                    "one of them, or restore them in separate runs into different "
                                                    "--output folders")))
        elif source.suffix.lower() not in _READABLE_SUFFIXES and _is_file(source):
            # Named on the command line (a folder or pattern gives images only): refused now, as
            # reading it would be, so --dry-run says so and no model is loaded for it.
            from i2icli.imageio import unreadable_file_reason

            jobs.append((index, Job(source, target, unreadable_file_reason(source))))
        elif too_long := output_path_checks(target):
            jobs.append((index, Job(source, target, f"{source}: {too_long}")))
        elif is_folder(target):  # else found only when writing, after the work (and --dry-run passed it)
            jobs.append((index, Job(source, target, f"{source}: its output {target} is a folder; move it aside, or use "
                                                    "another --output or a --suffix")))
        else:
            taken[key] = source
            taken_in_any_case[folded] = (target, source)
            jobs.append((index, Job(source, target)))
    return [job for _, job in sorted(jobs, key=lambda indexed: indexed[0])]  # stable: a folder's own order kept


def _warn_of_left_out(folder: Path, recursive: bool, output_inside: Path | None, below: list[Path]) -> None:
    """Images a folder input holds but the run will not take are counted, never dropped silently."""
    if output_inside is not None and recursive:
        held = len(images_in(output_inside, True)) if output_inside.is_dir() else 0
        if held:
            log.warning("%s: %d image(s) inside the output folder %s left out (taken for earlier results)",
                        folder, held, output_inside)
    if below:
        log.warning("%s: %d image(s) in sub-folders left out; add -r to include them", folder, len(below))
