"""Writing files atomically: a hidden temporary file beside the target, fsynced, renamed over it,
its folder fsynced; and the system's refusals (a full or read-only disk, no permission) named in
one line. Apart from the image encoders because text files (a run's scores) and checkpoints are
written the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from .errors import DiskFullError, I2IError, ReadOnlyDiskError


def write_new_file(target: Path, data: bytes) -> None:
    """``data`` written atomically as ``target``, its folders made; a failure named in one line."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)
    except OSError as e:
        blocking = next((folder for folder in target.parents if folder.is_file()), None)
        if blocking is not None:  # mkdir's "File exists" would not say which file is in the way
            raise I2IError(f"{target}: cannot write: {blocking} is a file, so the folder cannot be made",
                           "choose another output") from None
        # The error names the hidden temporary file, which the user never asked for: name the target.
        message, hint = f"{target}: cannot write: {e.strerror or e}", _WRITE_HINTS.get(e.errno)
        if e.errno in _DISK_FULL:  # a batch stops writing there
            raise DiskFullError(target, message, hint) from None
        if e.errno == errno.EROFS:  # so does it there
            raise ReadOnlyDiskError(target, message, hint) from None
        raise I2IError(message, hint) from None


# A full disk, or a full quota (where the system has quotas).
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
# What to do when the system refuses a write: its own words ("No space left on device") name the
# cause only.
_WRITE_HINTS = {
    **dict.fromkeys(_DISK_FULL, "free some space on that disk, or write the results to another one"),
    errno.EACCES: "choose an output folder you can write to",
    errno.EPERM: "choose an output folder you can write to",
    errno.EROFS: "the disk is read-only: choose another output folder",
}


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a small text file (a run's scores, say) the same atomic way images are written."""
    target = Path(path)
    write_new_file(target, text.encode("utf-8"))
    return target


def replace_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Have ``write`` create and fsync a hidden temp file beside ``target`` (exclusively: it must
    not exist yet), then rename it over ``target``: readers see the old file or the new one,
    never half of one."""
    # File systems limit a name to 255 bytes, not characters: 100 characters of Japanese or emoji
    # are 300-400 bytes, and a target name that fits would get a temp name that does not.
    stem = target.stem[:100]
    while len(os.fsencode(stem)) > 100:
        stem = stem[:-1]
    while True:
        temp = target.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
        if not temp.exists():
            break
    try:
        write(temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(target.parent)


def _atomic_write(target: Path, data: bytes) -> None:
    def write(temp: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(temp, flags, 0o666)  # the umask applies, unlike mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(target, write)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable too (POSIX only; best effort)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
