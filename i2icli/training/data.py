"""Training data: images loaded as tensors, from the files :mod:`i2icli.training.files` finds and holds out.

Datasets here are addressed by ``(index, flip)`` rather than by index alone: the training
loop decides every random choice from its seed and step (see ``loop.batch_plan``), so a
resumed run sees exactly the batches an uninterrupted one would have.

One unreadable file must not end a run that has been going for hours. A dataset that
meets one uses the next readable example instead and says so in the item it returns
(``"skipped"``); the collate functions gather those notes per batch, and the loop warns once
per file. The note travels with the data because DataLoader workers are separate
processes with their own copies of the dataset: nothing they remember reaches the loop.
What reading a file logs (a damaged JPEG, a TIFF's extra pages) travels the same way, as a
:class:`ReadingNote`, rather than being printed each time an epoch reads the file again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from i2icli.errors import I2IError, InputError
from i2icli.imageio import ImageOverPixelLimit, Picture, read_image
from i2icli.pipelines.imagetensors import square_resize, to_tensor

__all__ = [
    "load_training_image",
    "read_training_file",
    "ReadingNote",
    "TrainingDataset",
    "ImageFolderDataset",
    "collate_examples",
    "collate_images",
    "fixed_batch",
    "readable_examples",
]


# --------------------------------------------------------------------------- loading


def load_training_image(path: Path, size: int) -> torch.Tensor:
    """An image as float32 [3, size, size] in [-1, 1]: the centred square, resized to ``size``.

    Reading goes through :func:`i2icli.imageio.read_image`, so EXIF orientation, 16-bit
    samples and grayscale files are handled there; alpha is dropped. Raises
    :class:`~i2icli.errors.InputImageError` for a file that cannot be read.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    # The same centre square and resize as translation at inference, so a model sees what it learnt on.
    return to_tensor(square_resize(read_training_file(path).rgb, size))[0]


def read_training_file(path: Path) -> Picture:
    """``read_image`` for training, whose commands have no --max-pixels: an image over the
    limit is named with what can be done about it here."""
    try:
        return read_image(path)
    except ImageOverPixelLimit as error:
        raise error.with_hint("shrink it below the limit, or move it out of the training folder") from None


# --------------------------------------------------------------------------- datasets


class ReadingNote(str):
    """A warning logged while a file was read: the file is used, unlike one skipped."""


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _logged_while_reading() -> Iterator[list[str]]:
    """The package's warnings logged inside the block, kept instead of shown: a file is read once
    an epoch, and its warning would come back as often."""
    logger = logging.getLogger("i2icli")
    collected = _Collected()
    handlers, propagate = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [collected], False
    try:
        yield collected.messages
    finally:
        logger.handlers, logger.propagate = handlers, propagate


class TrainingDataset(Dataset):
    """Base for training datasets: items are ``(index, flip)``, unreadable examples are replaced.

    A subclass says which files make up example ``index`` (:meth:`paths`) and loads them
    as a dict of tensors (:meth:`load_example`), unflipped; this class flips every tensor
    in the dict together (so a label map and its photo stay aligned). If loading raises
    :class:`~i2icli.errors.InputError`, the next example (``index + 1``, wrapping) is used
    instead, the bad file joins :attr:`unreadable`, and the item's ``"skipped"`` list carries
    one message per file skipped on its way.
    """

    # What the examples are, for messages: "training", or "held-out" for the sample-grid set.
    role = "training"

    def __init__(self) -> None:
        self.unreadable: set[Path] = set()
        self._problems: dict[Path, str] = {}

    def __len__(self) -> int:
        raise NotImplementedError

    def paths(self, index: int) -> Sequence[Path]:
        """The files example ``index`` is made from."""
        raise NotImplementedError

    def load_example(self, index: int) -> dict[str, torch.Tensor]:
        """Example ``index`` as named CHW tensors, unflipped; raise InputError if a file is unreadable."""
        raise NotImplementedError

    def __getitem__(self, item: tuple[int, bool] | int) -> dict[str, Any]:
        index, flip = (item, False) if isinstance(item, int) else item
        index, total = int(index), len(self)
        skipped: list[str] = []
        for attempt in range(total):
            candidate = (index + attempt) % total
            known_bad = [path for path in self.paths(candidate) if path in self.unreadable]
            if known_bad:
                skipped.extend(self._problems[path] for path in known_bad)
                continue
            try:
                with _logged_while_reading() as notes:
                    example = self.load_example(candidate)
            except InputError as error:
                self.unreadable.add(error.path)
                self._problems[error.path] = str(error)
                skipped.append(str(error))
                continue
            if flip:
                example = {key: value.flip(-1) for key, value in example.items()}
            return {**example, "skipped": [*skipped, *map(ReadingNote, notes)]}
        raise I2IError(
            f"none of the {total} {self.role} examples can be read (first problem: {skipped[0] if skipped else 'unknown'})",
            self._unreadable_hint(),
        )

    def _unreadable_hint(self) -> str:
        """What to do when no example can be read: which files to fix or remove."""
        bad = list(dict.fromkeys(path for index in range(len(self)) for path in self.paths(index)
                                 if path in self.unreadable))
        if not bad:
            return "check the training folder"
        kind = f"unreadable {self.role} file"
        others = {1: "", 2: f" and the other {kind}"}.get(len(bad), f" and the {len(bad) - 1} other {kind}s")
        if self.role != "held-out":
            return f"fix or remove {bad[0]}{others}, or train on another folder"
        # A resumed run keeps the held-out list it recorded: a removed file is not replaced by another.
        return (f"fix or remove {bad[0]}{others}; a resumed run holds out only the files it recorded, so none "
                "takes their place, and with none left its sample grids show training images")


class ImageFolderDataset(TrainingDataset):
    """Single images, each as ``{"image": [3, size, size] in [-1, 1]}``; see :class:`TrainingDataset`."""

    def __init__(self, files: list[Path], size: int):
        super().__init__()
        if not files:
            raise ValueError("ImageFolderDataset needs at least one file")
        self.files = [Path(path) for path in files]
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def paths(self, index: int) -> Sequence[Path]:
        return (self.files[index],)

    def load_example(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": load_training_image(self.files[index], self.size)}


def collate_examples(items: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Stack the items' tensors by name; gather their ``"skipped"`` messages (each once).

    Returns ``(batch, skipped)``, the shape every collate function given to ``loop.train`` must return.
    """
    skipped: list[str] = []
    for item in items:
        for message in item["skipped"]:
            if message not in skipped:
                skipped.append(message)
    names = [name for name in items[0] if name != "skipped"]
    return {name: torch.stack([item[name] for item in items]) for name in names}, skipped


def collate_images(items: list[dict[str, Any]]) -> tuple[torch.Tensor, list[str]]:
    """For :class:`ImageFolderDataset`: ``([B, 3, H, W] tensor, skipped messages)``."""
    batch, skipped = collate_examples(items)
    return batch["image"], skipped


def readable_examples(dataset: TrainingDataset, count: int | None = None) -> list[dict[str, Any]]:
    """The first ``count`` (default: all) readable examples, unflipped, each once.

    An unreadable example's stand-in (the next one) is not taken in its place, as the next one
    comes in its own turn: a sample grid or a held-out score must not count an image twice.
    The messages about the files left out are kept on the first item, so they are still reported.
    """
    items: list[dict[str, Any]] = []
    left_out: list[str] = []
    for index in range(len(dataset)):
        if count is not None and len(items) == count:
            break
        item = dataset[(index, False)]
        if any(path in dataset.unreadable for path in dataset.paths(index)):
            left_out += [message for message in item["skipped"] if message not in left_out]
        else:
            items.append(item)
    if items:
        items[0] = {**items[0], "skipped": [*left_out, *(m for m in items[0]["skipped"] if m not in left_out)]}
    return items


def fixed_batch(
    dataset: TrainingDataset,
    count: int,
    collate_fn: Callable[[list[dict[str, Any]]], tuple[Any, list[str]]] = collate_images,
) -> Any:
    """The first ``count`` readable examples as one batch: the held-out batch sample grids are made from.
    A file left out of it is named in a warning (training names the files it skips as it meets them)."""
    batch, skipped = collate_fn(readable_examples(dataset, count))
    for message in skipped:
        if isinstance(message, ReadingNote):
            logging.getLogger(__name__).warning("%s", message)
        else:
            logging.getLogger(__name__).warning("%s; left out of the sample grids", message)
    return batch
