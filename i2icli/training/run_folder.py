"""A run's folder as a whole: what its entries must be, whether a new run may start there, and
that only one run at a time uses it."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from i2icli.errors import I2IError

from .checkpoint_files import CheckpointFiles

__all__ = ["only_run_in", "refuse_a_new_run_in", "refuse_entries_of_the_wrong_kind"]


def refuse_a_new_run_in(out_dir: Path) -> None:
    """Refuse to start a new run in ``out_dir`` when it holds one: the new run's checkpoints would
    replace the old run's."""
    if CheckpointFiles(Path(out_dir) / "checkpoints").holds_a_run():
        raise I2IError(f"{out_dir} already holds a training run; pass --resume to continue it or choose another --out")


def refuse_entries_of_the_wrong_kind(out_dir: Path) -> None:
    """checkpoints/ and samples/ must be folders, metrics.csv a file: found out at the first save,
    the mistake would cost every step trained until then."""
    for name, folder, holding in (("checkpoints", True, "checkpoints"), ("samples", True, "sample grids"),
                                  ("metrics.csv", False, "losses")):
        path = out_dir / name
        if os.path.lexists(path) and path.is_dir() != folder:
            kind = "is not a folder" if folder else "is a folder, not a file"
            raise I2IError(f"{path}: {kind}, and the run keeps its {holding} there",
                           "move it aside, or choose another --out")


@contextlib.contextmanager
def only_run_in(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for this run: a second run into the same folder would interleave its
    metrics and checkpoints with this one's. (Advisory lock; where there is none, no check.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = os.open(out_dir, os.O_RDONLY)  # the folder itself is locked: no lock file is left behind
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise I2IError(f"{out_dir}: another training run is using this folder",
                               "wait for it to finish, or choose another --out") from None
            # A file system without locks (Lustre mounted without flock, NFS without its lock
            # service) says ENOSYS or ENOLCK: that is no other run, and runs there go unchecked.
        yield
    finally:
        os.close(folder)  # releases the lock

