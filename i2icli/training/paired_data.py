"""Paired training data: label maps and their photos, checked before a run and loaded together.

The data of ``i2i train paired``; the pairs themselves are found (and held out) by
:mod:`i2icli.training.files`, and what every training dataset shares (replacing an unreadable
example) is in :mod:`i2icli.training.data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from i2icli.errors import I2IError, InputError
from i2icli.imageio import read_image

from .data import TrainingDataset, load_training_image, read_training_file

__all__ = [
    "LABEL_MAPS_CHECKED",
    "PairedDataset",
    "label_map_notes",
]


# --------------------------------------------------------------------------- checking the label maps


# How many training label maps are looked at before a run starts (see label_map_notes).
LABEL_MAPS_CHECKED = 32


def _spread_sample(files: list[Path], count: int) -> list[Path]:
    """Up to ``count`` of ``files``, evenly spread over the list (the first among them)."""
    taken = min(count, len(files))
    return [files[index * len(files) // taken] for index in range(taken)]


@dataclass
class _LabelMapSample:
    """The misread maps among a sample of the training label maps, by kind of misreading (see
    :func:`i2icli.semantics.labelmaps.misreading`), each with its largest value; ``checked`` of
    the ``total`` maps were read."""

    found: dict[str, list[tuple[Path, int]]]
    checked: int
    total: int

    @property
    def sampled(self) -> str:
        return f" (spread over all {self.total})" if self.checked < self.total else ""

    def count(self, *kinds: str) -> int:
        return sum(len(self.found.get(kind, ())) for kind in kinds)

    def share(self, kind: str) -> tuple[str, bool]:
        """The count of ``kind`` among the maps checked, as words, and whether it takes a plural verb."""
        count = len(self.found[kind])
        sampled = self.sampled
        of = f"{self.checked} training label maps checked{sampled}" if sampled else f"the {self.checked} training label maps"
        return f"{count} of {of}", count > 1

    def example(self, kind: str) -> Path:
        return self.found[kind][0][0]

    def largest(self, kind: str) -> int:
        return max(value for _, value in self.found[kind])


def _read_label_map_sample(label_maps: list[Path], input_kind: str) -> _LabelMapSample:
    from i2icli.semantics.labelmaps import misreading

    checked = 0
    found: dict[str, list[tuple[Path, int]]] = {}
    for path in _spread_sample(label_maps, LABEL_MAPS_CHECKED):
        try:
            misread = misreading(read_image(path), path, input_kind)
        except I2IError:
            continue
        checked += 1
        if misread is not None:
            found.setdefault(misread.kind, []).append((path, misread.largest))
    return _LabelMapSample(found, checked, len(label_maps))


def _refuse_label_maps_no_run_can_use(sample: _LabelMapSample, root: Path, input_kind: str,
                                      input_channels: int) -> None:
    """Refuse where no map checked can be what was meant, since such a run would spend its hours
    learning nothing the user wants; the hint names the option that reads the maps as meant.

    Maps of "unknown" alone teach no class; with two classes or more, maps that never show a class
    but 0 are masks or edges saved as 0/255; and an edge image whose every value lies below a
    quarter of white shows no white line. Where only some maps are misread (a crop may show
    background alone), or the data could be meant (a colour-coded map as an edge model's input is
    how pix2pix reads its facades; a model of one class, 0, may well take 255 for the rest), it is
    a warning; and a resumed run has already been trained on its data, so it is warned, not stopped.
    """
    from i2icli.semantics.labelmaps import (
        CLASS_0_AND_UNKNOWN,
        CLASS_INDICES,
        UNKNOWN_ONLY,
    )

    checked, sampled = sample.checked, sample.sampled
    every = f"all {checked} training label maps{' checked' + sampled if sampled else ''}" if checked > 1 \
        else "the only training label map checked"
    holds, are = ("hold", "are") if checked > 1 else ("holds", "is")
    if input_kind == "label" and sample.count(UNKNOWN_ONLY) == checked:
        raise InputError(root, f"{every} {are} 255 (unknown) at every pixel (e.g. {sample.example(UNKNOWN_ONLY)}), "
                         "so the model would learn no class", "check that --labels names the label maps")
    misread_as_class_0 = sample.count(UNKNOWN_ONLY, CLASS_0_AND_UNKNOWN)
    if input_kind == "label" and input_channels >= 2 and misread_as_class_0 == checked:
        raise InputError(root, f"{every} {holds} only class 0 and 255, which means unknown (e.g. "
                         f"{sample.example(CLASS_0_AND_UNKNOWN)}), so a model of --label-nc {input_channels} classes "
                         "would learn class 0 alone",
                         "store a mask's classes as 0 and 1, or train on edge images with --edges")
    if input_kind == "edge" and sample.count(CLASS_INDICES) == checked:
        raise InputError(root, f"{every} {holds} only the values 0-{sample.largest(CLASS_INDICES)}, as class-index label "
                         f"maps do (e.g. {sample.example(CLASS_INDICES)}), but --edges trains on edge images (white "
                         "lines on black)", "train on class-index maps with --label-nc N, N the number of classes")


def _misreading_notes(sample: _LabelMapSample) -> list[str]:
    """One warning per kind of misreading found, with its share of the maps and an example."""
    from i2icli.semantics.labelmaps import (
        CLASS_0_AND_UNKNOWN,
        CLASS_INDICES,
        COLOUR_PALETTE,
        UNKNOWN_ONLY,
    )

    notes = []
    for kind in (UNKNOWN_ONLY, CLASS_0_AND_UNKNOWN, COLOUR_PALETTE, CLASS_INDICES):
        if kind not in sample.found:
            continue
        which, plural = sample.share(kind)
        example = sample.example(kind)
        if kind == UNKNOWN_ONLY:
            notes.append(f"{which} {'are' if plural else 'is'} 255 (unknown) at every pixel (e.g. {example}), so "
                         f"{'their photos follow' if plural else 'its photo follows'} no class; check that "
                         f"{'they are the label maps' if plural else 'it is the label map'} meant")
        elif kind == CLASS_0_AND_UNKNOWN:
            notes.append(f"{which} {'hold' if plural else 'holds'} only class 0 and 255, which means unknown (e.g. "
                         f"{example}), so the model learns class 0 alone from them; store a mask's classes as 0 "
                         "and 1, and train on edge images with --edges")
        elif kind == COLOUR_PALETTE:
            notes.append(f"{which} {'are' if plural else 'is a'} colour palette image{'s' if plural else ''}, as "
                         f"class-index label maps are stored (e.g. {example}), but --edges trains on edge images; "
                         "train on label maps with --label-nc N")
        else:
            notes.append(f"{which} {'hold' if plural else 'holds'} only the values 0-{sample.largest(kind)}, as "
                         f"class-index label maps do (e.g. {example}), but --edges trains on edge images (white "
                         "lines on black); train on label maps with --label-nc N")
    return notes


def label_map_notes(label_maps: list[Path], root: Path, input_kind: str, input_channels: int, *,
                    may_refuse: bool) -> list[str]:
    """Warnings for training label maps that a model of ``input_kind`` ("label" or "edge") would not
    read as meant (see :func:`i2icli.semantics.labelmaps.misreading`): one per kind of misreading,
    with a count and an example. With ``may_refuse``, raises InputError (naming ``root``, the label
    maps' folder) when no map checked can be what was meant.

    Only a sample is read: these mistakes come from how a dataset was made (masks saved as 0/255,
    edge images where label maps were meant, or the other option), so they show in its maps alike,
    and a sample spread over the sorted list also reaches each sub-folder of a folder gathered from
    several sources. Reading all 30,000 maps of a large dataset before step 1 would cost minutes,
    and the loader reads them anyway. A map that cannot be read is left to the dataset, which
    reports it when it meets it.
    """
    sample = _read_label_map_sample(label_maps, input_kind)
    if not sample.found:
        return []
    if may_refuse:
        _refuse_label_maps_no_run_can_use(sample, root, input_kind, input_channels)
    return _misreading_notes(sample)


# --------------------------------------------------------------------------- loading pairs


class PairedDataset(TrainingDataset):
    """(label map, photo) pairs as ``{"label": [C, S, S], "photo": [3, S, S] in [-1, 1]}``.

    Both come from the same centred square, so they stay aligned, and are flipped together.
    ``kind`` and ``channels`` say how the label map becomes channels (see
    :func:`i2icli.semantics.labelmaps.square_label_channels`).
    """

    def __init__(self, pairs: list[tuple[Path, Path]], size: int, kind: str, channels: int):
        super().__init__()
        if not pairs:
            raise ValueError("PairedDataset needs at least one pair")
        self.pairs = [(Path(label), Path(photo)) for label, photo in pairs]
        self.size, self.kind, self.channels = size, kind, channels

    def __len__(self) -> int:
        return len(self.pairs)

    def paths(self, index: int) -> Sequence[Path]:
        return self.pairs[index]

    def load_example(self, index: int) -> dict[str, torch.Tensor]:
        from i2icli.semantics.labelmaps import square_label_channels

        label_path, photo_path = self.pairs[index]
        channels = square_label_channels(read_training_file(label_path), label_path, self.size, self.kind, self.channels)
        return {"label": torch.from_numpy(channels), "photo": load_training_image(photo_path, self.size)}

