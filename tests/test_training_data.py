"""Tests for i2icli.training.data: finding, splitting and loading training images. All images are made here."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from i2icli.errors import I2IError, InputError
from i2icli.training import paired_data
from i2icli.training.data import (
    ImageFolderDataset,
    collate_images,
    fixed_batch,
    load_training_image,
    readable_examples,
)
from i2icli.training.files import find_images, relative_names, split_as_recorded, split_held_out
from i2icli.training.paired_data import label_map_notes


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if rgb.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)
    return path


def gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    return np.clip(base + np.stack([x * 4, y * 4, (x + y) * 2], -1), 0, 255).astype(np.uint8)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_rgb(root / "b.png", gradient(20, 28))
    write_rgb(root / "A.PNG", gradient(20, 28, 1))
    write_rgb(root / "sub" / "c.jpg", gradient(28, 20, 2))
    write_rgb(root / "sub" / "deeper" / "d.webp", gradient(16, 16, 3))
    write_rgb(root / ".hidden.png", gradient(8, 8))
    write_rgb(root / ".cache" / "e.png", gradient(8, 8))
    (root / "notes.txt").write_text("not an image")
    (root / "folder.png").mkdir()  # a folder named like an image is not one
    return root


# --------------------------------------------------------------------------- find_images


def test_find_images_recurses_skips_hidden_and_sorts_by_relative_path(image_tree: Path):
    found = find_images(image_tree)
    assert [p.relative_to(image_tree).as_posix() for p in found] == ["A.PNG", "b.png", "sub/c.jpg", "sub/deeper/d.webp"]
    assert all(p.is_file() for p in found)


def test_find_images_leaves_out_every_training_run_in_the_data(image_tree: Path, caplog: pytest.LogCaptureFixture):
    """Only the run's own --out was left out: an earlier run kept in the data folder had its sample
    grids trained on."""
    old_run = image_tree / "runs" / "old"
    write_rgb(old_run / "samples" / "step-0000100.png", gradient(8, 8))
    (old_run / "checkpoints").mkdir()
    (old_run / "metrics.csv").write_text("step\n")
    started = image_tree / "started"  # a run cut short before its first checkpoint
    write_rgb(started / "samples" / "step-0000010.png", gradient(8, 8))
    (started / "metrics.csv").write_text("step\n")
    write_rgb(image_tree / "samples" / "f.png", gradient(8, 8))  # a data folder that is only called samples
    found = find_images(image_tree)
    assert [p.relative_to(image_tree).as_posix() for p in found] == [
        "A.PNG", "b.png", "samples/f.png", "sub/c.jpg", "sub/deeper/d.webp"]
    warned = [record.getMessage() for record in caplog.records]
    assert any(f"{old_run}: holds a training run" in message for message in warned)
    assert any(f"{started}: holds a training run" in message for message in warned)


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_find_images_errors_name_the_folder(tmp_path: Path, kind: str):
    root = tmp_path / "data"
    if kind == "file":
        root.write_bytes(b"x")
    elif kind == "empty":
        (root / ".hidden").mkdir(parents=True)
        write_rgb(root / ".hidden" / "x.png", gradient(8, 8))
        (root / "readme.md").write_text("hi")
    with pytest.raises(InputError) as caught:
        find_images(root)
    assert caught.value.path == root
    assert caught.value.hint
    expected = {"missing": "no such folder", "file": "is a file", "empty": "holds no training images"}[kind]
    assert expected in str(caught.value)


# --------------------------------------------------------------------------- split_held_out


def fake_files(root: Path, count: int) -> list[Path]:
    return [root / f"dir{i % 3}" / f"img{i:03d}.png" for i in range(count)]


def test_split_is_deterministic_disjoint_and_keeps_order(tmp_path: Path):
    files = fake_files(tmp_path, 40)
    train, held = split_held_out(files, tmp_path, 0.25, seed=7)
    again_train, again_held = split_held_out(files, tmp_path, 0.25, seed=7)
    assert (train, held) == (again_train, again_held)
    assert len(held) == 10 and len(train) == 30
    assert set(train).isdisjoint(held) and set(train) | set(held) == set(files)
    assert train == [p for p in files if p in set(train)] and held == [p for p in files if p in set(held)]
    # The order of the input list does not change which files are held out.
    _, held_shuffled = split_held_out(files[::-1], tmp_path, 0.25, seed=7)
    assert set(held_shuffled) == set(held)
    # Another seed picks another set.
    assert set(split_held_out(files, tmp_path, 0.25, seed=8)[1]) != set(held)


def test_split_is_stable_when_a_file_is_added(tmp_path: Path):
    files = fake_files(tmp_path, 30)
    _, held = split_held_out(files, tmp_path, 5, seed=0)
    newcomer = tmp_path / "new.png"
    train_after, held_after = split_held_out(sorted(files + [newcomer]), tmp_path, 5, seed=0)
    assert len(held_after) == 5
    # Old training files stay training files; at most the newcomer displaces one held-out file.
    assert set(held_after) <= set(held) | {newcomer}
    assert set(files) - set(held) <= set(train_after)


def test_a_recorded_split_holds_out_the_same_files_however_the_folder_grows(tmp_path: Path):
    files = fake_files(tmp_path, 20)
    _, held = split_held_out(files, tmp_path, 0.25, seed=0)
    recorded = relative_names(held, tmp_path)
    assert recorded == [path.relative_to(tmp_path).as_posix() for path in held]
    grown = sorted(files + fake_files(tmp_path / "more", 20))
    assert len(split_held_out(grown, tmp_path, 0.25, seed=0)[1]) == 10  # a fraction grows with the folder
    train, held_again, missing = split_as_recorded(grown, tmp_path, recorded)
    assert held_again == sorted(held) and missing == []
    assert set(train) == set(grown) - set(held)
    # A held-out file that is gone is named, not replaced by a training file.
    train, held_now, missing = split_as_recorded([p for p in grown if p != held[0]], tmp_path, recorded)
    assert missing == [recorded[0]] and len(held_now) == len(held) - 1 and held[0] not in train


def test_split_takes_a_file_name_that_is_not_utf8(tmp_path: Path):
    # Names from an old archive can hold bytes that are not UTF-8; Python gives them as surrogates.
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")
    files = sorted(fake_files(tmp_path, 9) + [odd])
    train, held = split_held_out(files, tmp_path, 5, seed=0)
    assert sorted(train + held) == files and len(held) == 5
    # The other names are ranked as they always were, so an older run's split is made again unchanged.
    def rank(path: Path) -> str:
        return hashlib.sha256(f"0:{path.relative_to(tmp_path).as_posix()}".encode()).hexdigest()
    plain = [path for path in files if path != odd]
    assert [path for path in held if path != odd] == sorted(sorted(plain, key=rank)[: len(held) - (odd in held)])


def test_split_counts_and_fractions(tmp_path: Path):
    files = fake_files(tmp_path, 10)
    assert len(split_held_out(files, tmp_path, 3, seed=0)[1]) == 3
    assert len(split_held_out(files, tmp_path, 0.3, seed=0)[1]) == 3
    assert len(split_held_out(files, tmp_path, 0.01, seed=0)[1]) == 1  # a positive fraction holds out at least one
    assert len(split_held_out(files, tmp_path, 0.99, seed=0)[0]) == 1  # ...and never the last training file
    train, held = split_held_out(files, tmp_path, 0, seed=0)
    assert (train, held) == (files, [])
    assert split_held_out(files, tmp_path, 0.0, seed=0) == (files, [])


def test_split_errors(tmp_path: Path):
    one = fake_files(tmp_path, 1)
    with pytest.raises(InputError, match="only 1 training image"):
        split_held_out(one, tmp_path, 0.1, seed=0)
    with pytest.raises(InputError, match="leave none to train on"):
        split_held_out(one, tmp_path, 1, seed=0)
    with pytest.raises(InputError, match="leave none to train on"):
        split_held_out(fake_files(tmp_path, 4), tmp_path, 4, seed=0)
    with pytest.raises(I2IError, match="below 1"):
        split_held_out(fake_files(tmp_path, 4), tmp_path, 1.5, seed=0)
    with pytest.raises(I2IError):
        split_held_out(fake_files(tmp_path, 4), tmp_path, -1, seed=0)
    assert split_held_out(one, tmp_path, 0, seed=0) == (one, [])
    with pytest.raises(InputError, match="has 2 pairs: holding out 2 would leave none .* or add more pairs"):
        split_held_out(fake_files(tmp_path, 2), tmp_path, 2, seed=0, noun="pair")


# --------------------------------------------------------------------------- load_training_image


def test_load_crops_the_centre_of_a_wide_image(tmp_path: Path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    rgb[:, 10:30] = (0, 255, 0)
    rgb[:, 30:] = (0, 0, 255)
    image = load_training_image(write_rgb(tmp_path / "wide.png", rgb), 20)
    assert image.dtype == torch.float32 and image.shape == (3, 20, 20)
    expected = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 20, 20)
    assert torch.equal(image, expected)


def test_load_crops_the_centre_of_a_tall_image_after_shrinking(tmp_path: Path):
    rgb = np.zeros((80, 40, 3), np.uint8)
    rgb[:20] = 255  # top and bottom quarters white: cut off by the crop
    rgb[60:] = 255
    rgb[20:60] = 128
    image = load_training_image(write_rgb(tmp_path / "tall.png", rgb), 20)  # 80x40 -> 40x20 -> centre 20x20
    assert image.shape == (3, 20, 20)
    assert torch.allclose(image, torch.full_like(image, 128 / 255 * 2 - 1), atol=1e-6)


@pytest.mark.parametrize("shape", [(20, 28), (8, 12), (28, 20)])
def test_load_shape_and_range(tmp_path: Path, shape: tuple[int, int]):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)  # noise: cubic enlarging overshoots
    image = load_training_image(write_rgb(tmp_path / "x.png", rgb), 16)
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert image.std() > 0.1


def test_load_gray_gives_three_equal_channels(tmp_path: Path):
    gray = gradient(20, 28)[..., 0]
    image = load_training_image(write_rgb(tmp_path / "gray.png", gray), 16)
    assert image.shape == (3, 16, 16)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_load_keeps_16bit_precision_and_drops_alpha(tmp_path: Path):
    deep = np.full((16, 16, 3), 1000, np.uint16)
    image = load_training_image(write_rgb(tmp_path / "deep.png", deep), 16)
    assert torch.allclose(image, torch.full_like(image, 1000 / 65535 * 2 - 1), atol=1e-6)  # not rounded to 8 bits

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0  # fully transparent: the colour is still what trains
    image = load_training_image(write_rgb(tmp_path / "rgba.png", rgba), 8)
    assert image.shape == (3, 8, 8)
    assert torch.allclose(image, torch.full_like(image, 200 / 255 * 2 - 1), atol=1e-6)


def test_load_raises_input_error_for_a_corrupt_file(tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InputError):
        load_training_image(bad, 8)


# --------------------------------------------------------------------------- datasets


def test_dataset_flips_and_collates(image_tree: Path):
    files = find_images(image_tree)
    dataset = ImageFolderDataset(files, 12)
    assert len(dataset) == 4
    plain, flipped = dataset[(1, False)], dataset[(1, True)]
    assert plain["skipped"] == [] and torch.equal(flipped["image"], plain["image"].flip(-1))
    assert not torch.equal(flipped["image"], plain["image"])
    batch, skipped = collate_images([dataset[(i, i % 2 == 0)] for i in range(4)])
    assert batch.shape == (4, 3, 12, 12) and skipped == []
    held = fixed_batch(dataset, 2)
    assert torch.equal(held[1], dataset[(1, False)]["image"])
    assert fixed_batch(dataset, 10).shape[0] == 4


def test_dataset_replaces_an_unreadable_file_with_the_next(tmp_path: Path):
    good = [write_rgb(tmp_path / f"{i}.png", gradient(12, 12, i)) for i in range(3)]
    bad = tmp_path / "1b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    files = [good[0], bad, good[1], good[2]]
    dataset = ImageFolderDataset(files, 8)
    item = dataset[(1, False)]
    assert torch.equal(item["image"], load_training_image(good[1], 8))
    assert len(item["skipped"]) == 1 and str(bad) in item["skipped"][0]
    assert dataset.unreadable == {bad}
    # Known now: skipped without reading again, still reported so every worker's batches say so.
    again = dataset[(1, True)]
    assert torch.equal(again["image"], load_training_image(good[1], 8).flip(-1)) and again["skipped"] == item["skipped"]
    batch, skipped = collate_images([dataset[(1, False)], dataset[(0, False)], dataset[(1, False)]])
    assert batch.shape == (3, 3, 8, 8) and skipped == item["skipped"]


def test_readable_examples_count_each_image_once(tmp_path: Path):
    """Held-out scores and grids: an unreadable file is left out, not replaced by a second copy
    of its neighbour, and the items still say which file was left out."""
    good = [write_rgb(tmp_path / f"{i}.png", gradient(12, 12, i)) for i in range(3)]
    bad = tmp_path / "0b.png"
    bad.write_bytes(b"junk")
    dataset = ImageFolderDataset([good[0], bad, good[1], good[2]], 8)
    items = readable_examples(dataset)
    assert len(items) == 3
    for item, expected in zip(items, good):
        assert torch.equal(item["image"], load_training_image(expected, 8))
    batch, skipped = collate_images(items)
    assert batch.shape[0] == 3 and len(skipped) == 1 and str(bad) in skipped[0]
    assert len(readable_examples(dataset, 2)) == 2


def test_dataset_wraps_past_the_end_and_fails_when_nothing_is_readable(tmp_path: Path):
    first = write_rgb(tmp_path / "a.png", gradient(8, 8))
    bad = tmp_path / "z.png"
    bad.write_bytes(b"junk")
    dataset = ImageFolderDataset([first, bad], 8)
    assert torch.equal(dataset[(1, False)]["image"], load_training_image(first, 8))
    with pytest.raises(I2IError, match="none of the 1 training examples"):
        ImageFolderDataset([bad], 8)[(0, False)]


def test_an_unreadable_held_out_file_is_named_when_left_out_of_the_sample_grids(tmp_path: Path, caplog):
    good = [write_rgb(tmp_path / f"{i}.png", gradient(12, 12, i)) for i in range(2)]
    bad = tmp_path / "0b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = ImageFolderDataset([good[0], bad, good[1]], 12)
    with caplog.at_level("WARNING", logger="i2icli"):
        held = fixed_batch(dataset, 4)
    assert held.shape[0] == 2
    [warning] = [record.getMessage() for record in caplog.records]
    assert "0b.png" in warning and warning.endswith("left out of the sample grids")


# --------------------------------------------------------------------------- label maps a model would misread


def class_map(seed: int = 0, classes: int = 4) -> np.ndarray:
    """A 16x16 class-index map: blocks of classes 0 to ``classes`` - 1."""
    return np.random.default_rng(seed).integers(0, classes, (4, 4)).astype(np.uint8).repeat(4, 0).repeat(4, 1)


def mask_0_255() -> np.ndarray:
    """A black-and-white mask saved as 0/255, as drawing programs and edge detectors write them."""
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    return mask


def write_label_maps(root: Path, maps: list[np.ndarray]) -> list[Path]:
    return [write_rgb(root / f"{index:03d}.png", values) for index, values in enumerate(maps)]


def test_label_maps_a_label_model_would_misread_are_counted_once_per_kind(tmp_path: Path):
    root = tmp_path / "labels"
    maps = write_label_maps(root, [class_map(0), mask_0_255(), class_map(1), mask_0_255(), np.full((16, 16), 255, np.uint8)])
    notes = label_map_notes(maps, root, "label", 4, may_refuse=True)
    assert notes == [
        f"1 of the 5 training label maps is 255 (unknown) at every pixel (e.g. {maps[4]}), so its photo follows no "
        "class; check that it is the label map meant",
        f"2 of the 5 training label maps hold only class 0 and 255, which means unknown (e.g. {maps[1]}), so the model "
        "learns class 0 alone from them; store a mask's classes as 0 and 1, and train on edge images with --edges",
    ]
    assert label_map_notes(maps[:1] + maps[2:3], root, "label", 4, may_refuse=True) == []


def test_a_run_none_of_whose_label_maps_show_a_class_but_0_is_refused(tmp_path: Path):
    root = tmp_path / "labels"
    masks = write_label_maps(root, [mask_0_255(), mask_0_255(), np.full((16, 16), 255, np.uint8)])
    with pytest.raises(InputError) as refused:
        label_map_notes(masks, root, "label", 19, may_refuse=True)
    assert str(refused.value.message) == (
        f"{root}: all 3 training label maps hold only class 0 and 255, which means unknown (e.g. {masks[0]}), so a model "
        "of --label-nc 19 classes would learn class 0 alone")
    assert refused.value.hint == "store a mask's classes as 0 and 1, or train on edge images with --edges"
    # One class beside unknown may be meant; a resumed run has trained on its maps already: warned, not refused.
    for label_nc, may_refuse in ((1, True), (19, False)):
        notes = label_map_notes(masks, root, "label", label_nc, may_refuse=may_refuse)
        assert [note.split(" (e.g.")[0] for note in notes] == [
            "1 of the 3 training label maps is 255 (unknown) at every pixel",
            "2 of the 3 training label maps hold only class 0 and 255, which means unknown"]
    with pytest.raises(InputError, match="255 .unknown. at every pixel .* so the model would learn no class"):
        label_map_notes(masks[2:], root, "label", 1, may_refuse=True)


def test_a_one_bit_mask_is_no_0_255_mask(tmp_path: Path):
    from PIL import Image

    root = tmp_path / "labels"
    root.mkdir()
    Image.fromarray(mask_0_255() > 0).save(root / "mask.png")  # mode "1": classes 0 and 1
    assert label_map_notes([root / "mask.png"], root, "label", 2, may_refuse=True) == []


def test_class_index_maps_given_as_edges_are_refused_and_palette_maps_warned_of(tmp_path: Path):
    from PIL import Image

    root = tmp_path / "edges"
    classes = write_label_maps(root, [class_map(0), class_map(1, classes=19)])
    with pytest.raises(InputError) as refused:
        label_map_notes(classes, root, "edge", 1, may_refuse=True)
    assert str(refused.value) == (
        f"{root}: all 2 training label maps hold only the values 0-18, as class-index label maps do (e.g. {classes[0]}), "
        "but --edges trains on edge images (white lines on black) (train on class-index maps with --label-nc N, N the "
        "number of classes)")
    # A colour-coded map may be an edge model's input on purpose (pix2pix's facades): a warning.
    palette = Image.fromarray(class_map(2), "P")
    palette.putpalette([0, 0, 0, 200, 60, 50, 60, 160, 70, 50, 80, 200])
    palette.save(root / "palette.png")
    edges = write_label_maps(tmp_path / "real", [mask_0_255(), np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))])
    maps = [*edges, root / "palette.png", classes[0]]
    assert label_map_notes(maps, root, "edge", 3, may_refuse=True) == [
        f"1 of the 4 training label maps is a colour palette image, as class-index label maps are stored (e.g. "
        f"{root / 'palette.png'}), but --edges trains on edge images; train on label maps with --label-nc N",
        f"1 of the 4 training label maps holds only the values 0-3, as class-index label maps do (e.g. {classes[0]}), "
        "but --edges trains on edge images (white lines on black); train on label maps with --label-nc N",
    ]
    assert label_map_notes(edges, root, "edge", 1, may_refuse=True) == []


def test_label_maps_are_checked_on_a_sample_spread_over_the_folder(tmp_path: Path, monkeypatch):
    root = tmp_path / "labels"
    maps = write_label_maps(root, [class_map(index) for index in range(9)] + [mask_0_255()] * 3)
    read = []
    real_read_image = paired_data.read_image
    monkeypatch.setattr(paired_data, "read_image", lambda path: read.append(path) or real_read_image(path))
    monkeypatch.setattr(paired_data, "LABEL_MAPS_CHECKED", 4)
    notes = label_map_notes(maps, root, "label", 4, may_refuse=True)
    assert read == [maps[0], maps[3], maps[6], maps[9]]  # the last of them among the masks at the end
    assert notes == [f"1 of 4 training label maps checked (spread over all 12) holds only class 0 and 255, which means "
                     f"unknown (e.g. {maps[9]}), so the model learns class 0 alone from them; store a mask's classes "
                     "as 0 and 1, and train on edge images with --edges"]


def test_a_label_map_that_cannot_be_read_is_left_to_the_dataset(tmp_path: Path):
    root = tmp_path / "labels"
    masks = write_label_maps(root, [mask_0_255()])
    (root / "broken.png").write_bytes(b"not a png")
    write_rgb(root / "colour.png", gradient(16, 16))  # no class-index map: the dataset refuses it by name
    with pytest.raises(InputError, match="the only training label map checked holds only class 0 and 255"):
        label_map_notes([root / "broken.png", root / "colour.png", *masks], root, "label", 2, may_refuse=True)
