"""GRIT paired translation: networks, the loss split, training, the pipeline, spectra, the CLI. Tiny and CPU-only."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CommandRunner
from feature_checkpoints import random_fid_inception_state_dict, random_vgg_state_dict
from PIL import Image
from torch.nn import functional as F

from i2icli.archs.grit import GRITConfig, GRITGenerator, MultiScaleDiscriminator
from i2icli.cli.app import app
from i2icli.errors import InputError
from i2icli.imageio import Picture, read_image
from i2icli.pipelines.paired import PairedTranslator, generator_from_checkpoint
from i2icli.pipelines.spectrum import frequencies, high_frequency_share, plot_spectra, radial_power_spectrum
from i2icli.semantics.labelmaps import class_indices, label_colours, one_hot, square_label_channels
from i2icli.training import files, paired_data
from i2icli.training.checkpoints import load_training_checkpoint
from i2icli.training.paired import (
    PairedTraining,
    PairedTrainingOptions,
    evaluate,
    image_scores,
)

TINY = GRITConfig(input_channels=4, image_size=32, base_channels=8, max_channels=16, style_dim=4, style_channels=8,
                  mapping_dim=16, disc_base_channels=8, disc_max_channels=16)
TINY_ARGS = ["--label-nc", "4", "--size", "32", "--base-channels", "8", "--max-channels", "16", "--style-dim", "4",
             "--disc-channels", "8"]
COLOURS = np.array([[40, 40, 40], [200, 60, 50], [60, 160, 70], [50, 80, 200]], np.uint8)
runner = CommandRunner()


def randomised(config: GRITConfig = TINY, seed: int = 0) -> GRITGenerator:
    """A generator whose every parameter is random, noise strengths included (they start at zero)."""
    torch.manual_seed(seed)
    generator = GRITGenerator(config)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.normal_(0, 0.3) if parameter.ndim > 1 else parameter.uniform_(-0.5, 0.5)
    return generator.eval()


def label_batch(count: int = 2, size: int = 32, classes: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, classes, (count, size // 8, size // 8), generator=g)
    indices = indices.repeat_interleave(8, 1).repeat_interleave(8, 2)
    return F.one_hot(indices, classes).permute(0, 3, 1, 2).float()


def write_pairs(root: Path, count: int, size: int = 40, seed: int = 0) -> Path:
    """labels/NNN.png (class indices 0-3: a disc, a bar, a ground strip) and photos/NNN.jpg coloured by
    class with grain on top: the fine detail a residual can carry."""
    rng = np.random.default_rng(seed)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        label = np.zeros((size, size), np.uint8)
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        cv2.circle(label, (int(cx), int(cy)), int(rng.integers(size // 8, size // 4)), 1, -1)
        x, y = rng.integers(0, size // 2, 2)
        cv2.rectangle(label, (int(x), int(y)), (int(x) + size // 3, int(y) + size // 5), 2, -1)
        label[size - size // 6 :] = 3
        photo = np.clip(COLOURS[label].astype(np.float32) + rng.normal(0, 15, (size, size, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "labels" / f"{index:03d}.png"), label)
        cv2.imwrite(str(root / "photos" / f"{index:03d}.png"), photo[:, :, ::-1])
    return root


def train_cli(data_dir: Path, out: Path, steps: int, *extra: str):
    return runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), *TINY_ARGS, "--steps", str(steps),
                               "--batch-size", "4", "--held-out", "3", "--workers", "0", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short training run shared by the tests that need a trained checkpoint."""
    root = tmp_path_factory.mktemp("paired")
    data_dir = write_pairs(root / "data", 15)
    out = root / "run"
    result = train_cli(data_dir, out, 60, "--log-every", "10", "--sample-every", "30", "--checkpoint-every", "30",
                       "--g-lr", "4e-4")
    assert result.exit_code == 0, result.output
    return {"data": data_dir, "run": out, "output": result.output}


# --------------------------------------------------------------------------- networks


def test_shapes_of_every_part():
    generator, discriminator = randomised(), MultiScaleDiscriminator(TINY)
    labels = label_batch(3)
    style = generator.encode_style(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert style.shape == (3, TINY.style_dim)
    result = generator(labels, style, torch.Generator().manual_seed(0))
    assert result.reconstruction.shape == result.residual.shape == (3, 3, 32, 32)
    logits = discriminator(labels, result.image)
    assert [tuple(x.shape[:2]) for x in logits] == [(3, 1), (3, 1)] and logits[0].shape[-1] > logits[1].shape[-1]
    # Fully convolutional: another multiple of 2^depth works, and a non-multiple is refused.
    assert generator(label_batch(1, 48), generator.mean_style(1)).residual.shape == (1, 3, 48, 48)
    with pytest.raises(ValueError, match="multiples of 4"):
        generator(label_batch(1, 32)[..., :30, :30], generator.mean_style(1))


def test_output_is_reconstruction_plus_residual_exactly():
    generator = randomised()
    result = generator(label_batch(), generator.mean_style(2), torch.Generator().manual_seed(4))
    assert torch.equal(result.image, result.reconstruction + result.residual)
    assert result.residual.abs().mean() > 0


def test_seeds_change_the_output_but_not_the_reconstruction():
    generator = randomised()
    labels, style = label_batch(), generator.mean_style(2)
    first = generator(labels, style, torch.Generator().manual_seed(1))
    again = generator(labels, style, torch.Generator().manual_seed(1))
    other = generator(labels, style, torch.Generator().manual_seed(2))
    assert torch.equal(first.image, again.image)  # a seed is a seed
    assert torch.equal(first.reconstruction, other.reconstruction)
    assert (first.residual - other.residual).abs().mean() > 1e-3
    assert (first.image - other.image).abs().mean() > 1e-3


def test_reconstruction_loss_never_reaches_the_residual_decoder():
    generator = randomised()
    photo = torch.rand(2, 3, 32, 32) * 2 - 1
    result = generator(label_batch(), generator.encode_style(photo), torch.Generator().manual_seed(0))
    F.l1_loss(result.reconstruction, photo).backward()
    residual = generator.residual_parameters()
    assert residual and all(p.grad is None or not p.grad.any() for p in residual)
    reached = [p for p in generator.reconstruction_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(reached) > 0.9 * len(generator.reconstruction_parameters())

    # The adversarial loss on the sum does reach the residual decoder.
    generator.zero_grad()
    discriminator = MultiScaleDiscriminator(TINY)
    result = generator(label_batch(), generator.encode_style(photo), torch.Generator().manual_seed(0))
    (-discriminator(label_batch(), result.image)[0].mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in residual)


def test_training_step_moves_the_residual_decoder_only_through_the_adversarial_loss():
    method = PairedTraining(TINY, PairedTrainingOptions(generator_lr=1e-3), seed=0)
    batch = {"label": label_batch(4), "photo": torch.rand(4, 3, 32, 32) * 2 - 1}
    method.train_step(batch, torch.Generator().manual_seed(0))  # the residual head leaves zero
    before = [p.detach().clone() for p in method.netG.residual_parameters()]
    # With the discriminator's verdict removed, the generator step has nothing to tell the residual.
    method.netD = _ConstantDiscriminator()
    method.optD = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0)
    method.optG.state.clear()
    method.train_step(batch, torch.Generator().manual_seed(1))
    after = list(method.netG.residual_parameters())
    assert all(torch.equal(b, a) for b, a in zip(before, after))


class _ConstantDiscriminator(torch.nn.Module):
    def forward(self, label, image):
        return [torch.zeros(len(image), 1, 2, 2, requires_grad=True) + 0 * image.sum()]


# --------------------------------------------------------------------------- label maps and data


def test_label_maps_become_one_hot_with_255_as_unknown(tmp_path):
    labels = np.array([[0, 1], [3, 255]], np.uint8)
    encoded = one_hot(labels, 4, "x.png")
    assert encoded.shape == (4, 2, 2)
    assert encoded[:, 0, 0].tolist() == [1, 0, 0, 0] and encoded[:, 1, 0].tolist() == [0, 0, 0, 1]
    assert not encoded[:, 1, 1].any()
    with pytest.raises(InputError, match="has class 3"):
        one_hot(labels, 3, "x.png")
    colour = Picture(rgb=np.full((8, 8, 3), (200, 0, 0), np.uint8), source=tmp_path / "c.png")
    with pytest.raises(InputError, match="is a colour image, but a label map must hold class indices"):
        square_label_channels(colour, colour.source, 8, "label", 4)


def _palette_png(path, indices, palette):
    image = Image.fromarray(indices, mode="P")
    image.putpalette([value for colour in palette for value in colour])
    image.save(path)


def test_label_maps_may_be_palette_images_or_show_greys(tmp_path):
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 255]], np.uint8)
    # PASCAL VOC style: the class is the palette index, the colours are only for showing it.
    voc = [(index * 97 % 256, index * 31 % 256, (index * 7 + 50) % 256) for index in range(256)]
    _palette_png(tmp_path / "voc.png", indices, voc)
    np.testing.assert_array_equal(class_indices(read_image(tmp_path / "voc.png"), "voc.png"), indices)
    # The real VOC palette shows class 7 (car) in grey (128, 128, 128): a map of background and
    # cars only shows nothing but greys, and is still read by its indices.
    cars = np.array([[0, 7], [7, 0]], np.uint8)
    _palette_png(tmp_path / "cars.png", cars, [tuple(colour) for colour in label_colours(256)])
    assert read_image(tmp_path / "cars.png").rgb[0, 1].tolist() == [128, 128, 128]
    np.testing.assert_array_equal(class_indices(read_image(tmp_path / "cars.png"), "cars.png"), cars)
    # A grey map a PNG optimiser stored with a palette in another order: read as the greys it shows.
    greys = indices.copy()
    greys[indices == 255] = 9
    order = [9, 3, 2, 1, 0] + list(range(10, 256))
    stored = np.vectorize(order.index)(greys).astype(np.uint8)
    _palette_png(tmp_path / "grey.png", stored, [(value, value, value) for value in order])
    np.testing.assert_array_equal(class_indices(read_image(tmp_path / "grey.png"), "grey.png"), greys)
    # An RGB file that shows greys only is read the same way.
    cv2.imwrite(str(tmp_path / "rgb.png"), np.repeat(greys[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(class_indices(read_image(tmp_path / "rgb.png"), "rgb.png"), greys)
    cv2.imwrite(str(tmp_path / "deep.png"), greys.astype(np.uint16) * 257)
    with pytest.raises(InputError, match="deep.png: is a 16-bit image"):
        class_indices(read_image(tmp_path / "deep.png"), tmp_path / "deep.png")


def test_a_one_bit_mask_holds_classes_0_and_1(tmp_path):
    """A binary mask saved with one bit per pixel decodes as black and white (0 and 255), and 255
    means unknown: its foreground is class 1, not nothing."""
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    Image.fromarray(mask * 255).convert("1").save(tmp_path / "mask.png")
    picture = read_image(tmp_path / "mask.png")
    np.testing.assert_array_equal(class_indices(picture, "mask.png"), mask)
    assert square_label_channels(picture, "mask.png", 8, "label", 2)[:, 3, 3].tolist() == [0, 1]
    # The same greys in an 8-bit file are still class 0 and unknown.
    cv2.imwrite(str(tmp_path / "grey.png"), mask * 255)
    np.testing.assert_array_equal(class_indices(read_image(tmp_path / "grey.png"), "grey.png"), mask * 255)


def test_edges_follow_the_model_channels():
    picture = Picture(rgb=np.full((10, 20, 3), 255, np.uint8))
    grey = square_label_channels(picture, "e.png", 8, "edge", 1)
    colour = square_label_channels(picture, "e.png", 8, "edge", 3)
    assert grey.shape == (1, 8, 8) and colour.shape == (3, 8, 8)
    assert np.allclose(grey, 1) and np.allclose(colour, 1)


def test_pairs_match_by_name_and_flip_together(tmp_path):
    root = write_pairs(tmp_path, 3, size=48)
    (root / "labels" / "lonely.png").write_bytes((root / "labels" / "000.png").read_bytes())
    pairs, notes = files.find_pairs(root / "labels", root / "photos")
    assert [label.stem for label, _ in pairs] == ["000", "001", "002"]
    assert all(label.stem == photo.stem for label, photo in pairs)
    assert notes == [f"1 label map in {root / 'labels'} has no partner and is not used (e.g. lonely)"]
    dataset = paired_data.PairedDataset(pairs, 32, "label", 4)
    plain, flipped = dataset[(1, False)], dataset[(1, True)]
    assert torch.equal(plain["label"].flip(-1), flipped["label"]) and torch.equal(plain["photo"].flip(-1), flipped["photo"])
    # The label's class colour agrees with the photo where the label is confident (same crop, same flip).
    classes = flipped["label"].argmax(0)
    expected = torch.from_numpy(COLOURS.astype(np.float32) / 127.5 - 1)[classes].permute(2, 0, 1)
    interior = F.max_pool2d(-F.max_pool2d(-flipped["label"][None], 5, 1, 2), 1)[0].max(0).values > 0  # away from edges
    assert (flipped["photo"] - expected).abs()[:, interior].mean() < 0.2

    # Two files of one name: one is used, the same whatever order the folder lists them in, and a
    # warning names the other.
    cv2.imwrite(str(root / "labels" / "000.bmp"), np.zeros((48, 48), np.uint8))
    (root / "photos" / "002.jpg").write_bytes((root / "photos" / "001.png").read_bytes())
    pairs, notes = files.find_pairs(root / "labels", root / "photos")
    assert [(label.name, photo.name) for label, photo in pairs] == [("000.png", "000.png"), ("001.png", "001.png"),
                                                                    ("002.png", "002.png")]
    assert notes[0] == ("2 files left out, each for a file of the same name whose suffix sorts later: "
                        "labels/000.bmp (000.png is used), photos/002.jpg (002.png is used)")

    with pytest.raises(InputError, match="no label map here has a photo"):
        (tmp_path / "other").mkdir()
        cv2.imwrite(str(tmp_path / "other" / "zzz.png"), np.zeros((4, 4), np.uint8))
        files.find_pairs(tmp_path / "other", root / "photos")


# --------------------------------------------------------------------------- spectra and metrics


def test_spectrum_puts_the_high_frequencies_in_a_grainy_residual():
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(4, 3, 6, 6, generator=g) * 2 - 1, size=64, mode="bicubic", align_corners=False)
    grain = 0.1 * torch.randn(4, 3, 64, 64, generator=g)
    spectra = {name: radial_power_spectrum(images) for name, images in
               (("reconstruction", smooth), ("residual", grain), ("output", smooth + grain))}
    assert high_frequency_share(spectra["residual"]) > 0.4 > 0.05 > high_frequency_share(spectra["reconstruction"])
    top = frequencies(64) > 0.3
    assert (spectra["residual"][top] > spectra["reconstruction"][top]).all()


def test_spectrum_of_a_sinusoid_peaks_at_its_frequency(tmp_path):
    x = torch.arange(64, dtype=torch.float64)
    wave = torch.cos(2 * np.pi * 8 * x / 64).expand(64, 64)[None, None].expand(1, 3, 64, 64)
    spectrum = radial_power_spectrum(wave)
    assert int(np.argmax(spectrum)) == 8 and np.isclose(frequencies(64)[8], 0.125)
    path = plot_spectra({"output": spectrum}, tmp_path / "plot" / "s.png")
    assert read_image(path).width > 100


def test_image_scores():
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    same = image_scores(image, image)
    assert same.l1 == 0 and same.psnr == float("inf") and same.ssim == pytest.approx(1.0)
    noisy = image_scores((image + 0.1 * torch.randn_like(image)).clamp(-1, 1), image)
    assert 0 < noisy.l1 < 0.1 and 15 < noisy.psnr < 40 and 0 < noisy.ssim < 1


def test_evaluate_scores_output_and_reconstruction():
    generator = randomised()
    labels, photos = label_batch(3), torch.rand(3, 3, 32, 32) * 2 - 1
    calls = []
    result = evaluate(generator, labels, photos, seed=1, lpips_distance=lambda a, b: calls.append(len(a)) or (a - b).abs().mean((1, 2, 3)))
    assert result.images == 3 and calls == [3]
    assert result.output != result.reconstruction
    assert set(result.spectra) == {"reconstruction", "residual", "output", "photo"}
    assert evaluate(generator, labels, photos, seed=1).output == result.output  # seeded


def test_evaluate_measures_lpips_a_batch_at_a_time():
    # All held-out images in one LPIPS call hold all their VGG features on the device at once.
    generator = randomised()
    labels, photos = label_batch(3), torch.rand(3, 3, 32, 32) * 2 - 1
    calls = []

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(len(a))
        return b.mean((1, 2, 3))  # one number per image, whatever was generated

    result = evaluate(generator, labels, photos, seed=1, lpips_distance=distance, batch=2)
    assert calls == [2, 1]
    assert result.lpips == pytest.approx(float(photos.mean((1, 2, 3)).mean()), rel=1e-6)  # the mean over all images


# --------------------------------------------------------------------------- training


def test_training_lowers_the_losses_and_writes_samples(run):
    rows = list(csv.DictReader((run["run"] / "metrics.csv").open()))
    assert len(rows) == 6
    assert float(rows[-1]["l1"]) < 0.7 * float(rows[0]["l1"])
    assert float(rows[-1]["g_loss"]) < float(rows[0]["g_loss"])
    assert (run["run"] / "samples" / "step-0000060.png").is_file()
    grid = read_image(run["run"] / "samples" / "step-0000060.png")
    assert (grid.height, grid.width) == (3 * 32, 6 * 32)  # three held-out rows, six columns
    stored = load_training_checkpoint(run["run"] / "checkpoints" / "latest.pt")
    assert stored["method"] == "paired" and stored["step"] == 60
    assert set(stored) >= {"G", "D", "optG", "optD", "G_ema"}
    generator, config = generator_from_checkpoint(stored)
    assert (config.image_size, config.input_channels, config.input_kind) == (32, 4, "label")
    assert generator.style_mean.abs().sum() > 0  # the running mean of the training styles


def test_resume_is_exact(tmp_path):
    data_dir = write_pairs(tmp_path / "data", 8)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_cli(data_dir, straight, 4, "--checkpoint-every", "2").exit_code == 0
    assert train_cli(data_dir, split, 2).exit_code == 0
    result = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(split), "--steps", "4", "--resume",
                                 "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    a = load_training_checkpoint(straight / "checkpoints" / "latest.pt")
    b = load_training_checkpoint(split / "checkpoints" / "latest.pt")
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    assert a["ema_updates"] == b["ema_updates"] == 4


def test_resume_keeps_the_runs_own_schedule_unless_given(tmp_path):
    """--log-every, --sample-every, --checkpoint-every, --keep, --workers and --steps left out on
    --resume are the run's own, not the defaults; one given is used."""
    data_dir = write_pairs(tmp_path / "data", 8)
    out = tmp_path / "run"
    schedule = ["--log-every", "1", "--sample-every", "1", "--checkpoint-every", "1", "--keep", "9"]
    assert train_cli(data_dir, out, 2, *schedule).exit_code == 0  # --workers 0
    resumed = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), "--resume", "--steps", "4",
                                  "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    settings = load_training_checkpoint(out / "checkpoints" / "latest.pt")["settings"]
    assert {key: settings[key] for key in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints",
                                           "num_workers", "steps")} == {
        "log_every": 1, "sample_every": 1, "checkpoint_every": 1, "keep_checkpoints": 9, "num_workers": 0, "steps": 4}
    assert [row["step"] for row in csv.DictReader((out / "metrics.csv").open())] == ["1", "2", "3", "4"]
    assert sorted(p.name for p in (out / "samples").iterdir())[-2:] == ["step-0000003.png", "step-0000004.png"]
    assert len(list((out / "checkpoints").glob("step-*.pt"))) == 4  # --keep 9, not 3
    # Without --steps the run stops where it was to stop; a value given is used.
    again = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), "--resume", "--device", "cpu"])
    assert again.exit_code == 0 and "already reached step 4 of 4" in again.output
    more = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), "--resume", "--steps", "6",
                               "--log-every", "2", "--device", "cpu"])
    assert more.exit_code == 0, more.output
    assert load_training_checkpoint(out / "checkpoints" / "latest.pt")["settings"]["log_every"] == 2


def test_perceptual_term_uses_the_vgg_checkpoint(tmp_path):
    data_dir = write_pairs(tmp_path / "data", 6)
    vgg = tmp_path / "vgg19.pth"
    torch.save(random_vgg_state_dict(19, seed=1), vgg)
    result = train_cli(data_dir, tmp_path / "run", 2, "--vgg-weight", "1", "--vgg", str(vgg), "--log-every", "1")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert float(rows[0]["vgg"]) > 0
    # The VGG file moved: resuming says to name it again, and --vgg then finds it.
    moved = tmp_path / "moved" / "vgg19.pth"
    moved.parent.mkdir()
    vgg.rename(moved)

    def resume(*extra: str):
        return runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(tmp_path / "run"), "--resume",
                                   "--steps", "3", "--workers", "0", "--device", "cpu", *extra])

    lost = resume()
    assert lost.exit_code == 1 and "vgg19.pth" in lost.stderr and "name it with --vgg when resuming" in lost.stderr
    found = resume("--vgg", str(moved))
    assert found.exit_code == 0, found.output
    assert "ignored" not in found.output
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [row["step"] for row in rows] == ["1", "2", "3"] and float(rows[-1]["vgg"]) > 0


def test_eval_reports_metrics_and_writes_the_spectrum_plot(tmp_path, run):
    fid_file, vgg_file = tmp_path / "fid.pth", tmp_path / "vgg16.pth"
    torch.save(random_fid_inception_state_dict(seed=3), fid_file)
    torch.save(random_vgg_state_dict(16, seed=2), vgg_file)
    plot = tmp_path / "spectrum.png"
    result = runner.invoke(app, ["train", "paired", str(run["data"]), "--out", str(run["run"]), "--eval", "--spectrum",
                                 str(plot), "--fid-model", str(fid_file), "--lpips-backbone", str(vgg_file),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["held_out_pairs"] == 3
    for part in ("output", "reconstruction"):
        assert 0 < summary[part]["l1"] < 1 and summary[part]["psnr"] > 5 and -1 < summary[part]["ssim"] <= 1
    assert math.isfinite(summary["fid"]) and summary["fid"] >= 0
    assert 0 <= summary["lpips"] <= 1
    assert set(summary["high_frequency_share"]) == {"reconstruction", "residual", "output", "photo"}
    assert read_image(plot).width > 100


def test_eval_json_has_null_for_an_infinite_psnr(run, monkeypatch):
    """Outputs identical to their photos have an infinite PSNR, which JSON cannot hold."""
    import dataclasses

    import i2icli.training.paired as paired_training

    real_evaluate = paired_training.evaluate

    def perfect_output(*args, **kwargs):
        result = real_evaluate(*args, **kwargs)
        return dataclasses.replace(result, output=paired_training.ImageScores(l1=0.0, psnr=math.inf, ssim=1.0))

    monkeypatch.setattr(paired_training, "evaluate", perfect_output)
    result = runner.invoke(app, ["train", "paired", str(run["data"]), "--out", str(run["run"]), "--eval", "--fid-model",
                                 "none", "--lpips-backbone", "none", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    summary = json.loads(result.stdout[result.stdout.index("{"):], parse_constant=refuse)
    assert summary["output"] == {"l1": 0.0, "psnr": None, "ssim": 1.0}
    assert summary["reconstruction"]["psnr"] > 5


# --------------------------------------------------------------------------- the pipeline and CLI


def test_paired_cli_loads_the_trained_checkpoint(tmp_path, run):
    label = run["data"] / "labels" / "000.png"
    out = tmp_path / "out" / "a.png"
    result = runner.invoke(app, ["paired", str(label), "-c", str(run["run"]), "-o", str(out), "--samples", "3",
                                 "--seed", "7", "--save-components", "--std-map", "--spectrum", str(tmp_path / "s.png"),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    record = summary["results"][0]
    assert summary["ok"] == 1 and record["seeds"] == [7, 8, 9]
    names = sorted(path.name for path in out.parent.iterdir())
    assert names == ["a-reconstruction.png", "a-seed7-residual.png", "a-seed7.png", "a-seed8-residual.png", "a-seed8.png",
                     "a-seed9-residual.png", "a-seed9.png", "a-std.png"]
    # The saved output is the saved reconstruction plus the saved residual (up to 8-bit rounding).
    recon = read_image(out.parent / "a-reconstruction.png").rgb.astype(np.float64) / 127.5 - 1
    residual = read_image(out.parent / "a-seed7-residual.png").rgb.astype(np.float64) / 127.5 - 1
    output = read_image(out.parent / "a-seed7.png").rgb.astype(np.float64) / 127.5 - 1
    inside = (np.abs(residual) < 0.99) & (np.abs(recon) < 0.99)  # where neither file had to clip
    assert inside.mean() > 0.5
    assert np.abs(np.clip(recon + residual, -1, 1) - output)[inside].max() <= 2.5 / 127.5
    assert (tmp_path / "s.png").is_file()


def test_one_sample_to_standard_output_is_the_file_it_would_write(tmp_path, run):
    label = run["data"] / "labels" / "000.png"
    args = ["paired", str(label), "-c", str(run["run"]), "--seed", "3", "--device", "cpu"]
    assert runner.invoke(app, [*args, "-o", str(tmp_path / "a.png")]).exit_code == 0
    piped = runner.invoke(app, [*args, "-o", "-", "--spectrum", str(tmp_path / "s.png")])
    assert piped.exit_code == 0, piped.output
    assert piped.stdout_bytes == (tmp_path / "a.png").read_bytes()
    assert f"{label} → standard output" in " ".join(piped.stderr.split()) and (tmp_path / "s.png").is_file()
    assert not Path("-").exists()
    for extra, expected in ((["--samples", "2"], "--samples 2 makes 2 images, and -o - writes one"),
                            (["--save-components"], "--save-components writes files beside the output"),
                            (["--json"], "--json and -o - would both write to standard output")):
        refused = runner.invoke(app, [*args, "-o", "-", *extra])
        assert refused.exit_code == 2 and refused.stdout_bytes == b"", extra
        assert expected in refused.stderr, extra
    folder = runner.invoke(app, ["paired", str(run["data"] / "labels"), "-c", str(run["run"]), "-o", "-"])
    assert folder.exit_code == 2 and "-o - writes one image to standard output, but the inputs hold" in folder.stderr


def test_jpeg_label_maps_are_warned_of_in_training_and_translation(tmp_path):
    data_dir = write_pairs(tmp_path / "data", 6)
    for label in sorted((data_dir / "labels").glob("*.png")):
        cv2.imwrite(str(label.with_suffix(".jpg")), cv2.imread(str(label), cv2.IMREAD_GRAYSCALE) * 40,
                    [cv2.IMWRITE_JPEG_QUALITY, 100])  # classes 0-120 in steps of 40: visible, still blurred
        label.unlink()
    trained = train_cli(data_dir, tmp_path / "run", 1, "--label-nc", "160")
    assert trained.exit_code == 0, trained.output
    assert f"6 label maps are JPEG files (e.g. {data_dir / 'labels' / '000.jpg'})" in " ".join(trained.stderr.split())
    label = data_dir / "labels" / "000.jpg"
    result = runner.invoke(app, ["paired", str(label), "-c", str(tmp_path / "run"), "-o", str(tmp_path / "out.png"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{label}: is a JPEG label map" in " ".join(result.stderr.split())


def test_a_runs_checkpoints_folder_stands_for_its_latest_and_step_files_are_named(tmp_path, run):
    checkpoints = run["run"] / "checkpoints"
    assert PairedTranslator.load(str(checkpoints), device="cpu").config == PairedTranslator.load(str(run["run"]), device="cpu").config
    step = sorted(checkpoints.glob("step-*.pt"))[-1]
    (tmp_path / "copy" / "checkpoints").mkdir(parents=True)
    (tmp_path / "copy" / "checkpoints" / step.name).write_bytes(step.read_bytes())
    label = run["data"] / "labels" / "000.png"
    result = runner.invoke(app, ["paired", str(label), "-c", str(tmp_path / "copy"), "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 1
    assert f"pass a checkpoint file such as {tmp_path / 'copy' / 'checkpoints' / step.name}" in " ".join(result.stderr.split())


def test_samples_match_one_by_one_and_the_mean_style_is_the_default(run):
    translator = PairedTranslator.load(str(run["run"]), device="cpu")
    label = read_image(run["data"] / "labels" / "001.png")
    together = translator.translate(label, samples=3, seed=4, std_map=True)
    alone = translator.translate(label, samples=1, seed=5)
    assert torch.allclose(together.tensors["output"][1], alone.tensors["output"][0], atol=1e-5)
    # The pipeline runs the reconstruction once and the residual decoder per sample: the same as
    # the whole generator per sample.
    with torch.no_grad():
        whole = translator.generator(translator.prepare_label(label), translator.style_code(None), torch.Generator().manual_seed(6))
    assert torch.allclose(together.tensors["output"][2], whole.image[0], atol=1e-5)
    assert torch.equal(together.tensors["output"], together.tensors["reconstruction"] + together.tensors["residual"])
    assert together.std_map is not None and together.std_map.shape == (32, 32)
    styled = translator.translate(label, style=read_image(run["data"] / "photos" / "002.png"), seed=5)
    assert not torch.equal(styled.tensors["reconstruction"], alone.tensors["reconstruction"])


def test_folder_batch_goes_on_past_a_bad_file(tmp_path, run):
    folder = tmp_path / "labels"
    folder.mkdir()
    for name in ("000", "001"):
        (folder / f"{name}.png").write_bytes((run["data"] / "labels" / f"{name}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(folder / "colour.png"), np.full((8, 8, 3), (0, 0, 255), np.uint8))
    classes = cv2.imread(str(folder / "000.png"), cv2.IMREAD_UNCHANGED)
    _palette_png(folder / "palette.png", classes, [(40 * i % 256, 90 * i % 256, 255 - i) for i in range(256)])
    out = tmp_path / "out"
    result = runner.invoke(app, ["paired", str(folder), "-c", str(run["run"]), "-o", str(out), "--device", "cpu", "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["ok"] == 3 and summary["failed"] == 2
    assert "colour.png: is a colour image" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "palette.png"]
    assert f"✓ {folder / '000.png'} → {out / '000.png'}" in result.stderr  # the path, as --dry-run shows it
    # The palette file holds 000.png's classes: the same label map, so the same image.
    np.testing.assert_array_equal(cv2.imread(str(out / "palette.png")), cv2.imread(str(out / "000.png")))
    again = runner.invoke(app, ["paired", str(folder), "-c", str(run["run"]), "-o", str(out), "--skip-existing",
                                "--device", "cpu", "--json"])
    assert json.loads(again.stdout)["skipped"] == 3


def test_skip_existing_redoes_a_label_map_whose_files_were_cut_short(tmp_path, run, monkeypatch):
    """A label map's files are written one after another; the one --skip-existing looks for comes
    last, so a run stopped between two writes leaves the label map to be done again."""
    import i2icli.imageio

    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "a.png").write_bytes((run["data"] / "labels" / "000.png").read_bytes())
    out = tmp_path / "out"
    args = ["paired", str(folder), "-c", str(run["run"]), "-o", str(out), "--samples", "2", "--std-map",
            "--save-components", "--device", "cpu", "--json"]
    real_write = i2icli.imageio.write_image

    def disk_full_at_the_std_map(path, picture, **options):
        if Path(path).name == "a-std.png":
            raise OSError(28, "No space left on device")
        return real_write(path, picture, **options)

    monkeypatch.setattr(i2icli.imageio, "write_image", disk_full_at_the_std_map)
    assert runner.invoke(app, args).exit_code == 1
    assert not (out / "a-seed0.png").exists()
    monkeypatch.setattr(i2icli.imageio, "write_image", real_write)
    again = runner.invoke(app, [*args, "--skip-existing"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["ok"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["a-reconstruction.png", "a-seed0-residual.png", "a-seed0.png",
                                                     "a-seed1-residual.png", "a-seed1.png", "a-std.png"]


def test_bad_inputs_give_one_clear_line(tmp_path, run):
    label = run["data"] / "labels" / "000.png"

    def paired(*args: str):
        return runner.invoke(app, ["paired", *args, "--device", "cpu"])

    cases = [
        (paired(str(tmp_path / "missing.png"), "-c", str(run["run"])), 1, "no such file"),
        (paired(str(label), "-c", str(tmp_path)), 1, "no checkpoints/latest.pt"),
        (paired(str(label), "-c", str(run["run"]), "-o", str(label)), 1, "overwrite an input"),
        (paired(str(label), "-c", str(run["run"]), "--std-map"), 2, "--samples 2"),
        (paired(str(label), "-c", str(run["run"]), "--style", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o.png")),
         1, "nope.jpg"),
        (paired(str(label), "-c", str(run["run"]), "--size", "30", "-o", str(tmp_path / "o.png")), 2, "multiple of 4"),
        (paired(str(label), "-c", str(run["run"]), "--size", "100000", "-o", str(tmp_path / "o.png")), 2,
         "--size 100000: 100000x100000 = 10,000,000,000 pixels, over --max-pixels 200,000,000"),
        (paired(str(label), "-c", str(run["run"]), "--size", "64", "--max-pixels", "4000", "-o", str(tmp_path / "o.png")), 2,
         "over --max-pixels 4,000"),
    ]
    wrong = tmp_path / "other.pt"
    torch.save({"method": "translate-lr", "config": {}}, wrong)
    cases.append((paired(str(label), "-c", str(wrong), "-o", str(tmp_path / "o.png")), 1, "translate-lr"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage")
    cases.append((paired(str(label), "-c", str(corrupt), "-o", str(tmp_path / "o.png")), 1, "corrupt.pt"))
    # One's own run cannot be downloaded again: its older checkpoints are what there is.
    cases.append((paired(str(label), "-c", str(corrupt), "-o", str(tmp_path / "o.png")), 1,
                  "pass another checkpoint from the run's checkpoints/ folder"))
    for result, code, text in cases:
        assert result.exit_code == code, (text, result.output)
        assert text in result.stderr, (text, result.stderr)
        if code == 1:  # exit 2 is the option parser's usage box
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert label.is_file() and read_image(label).grayscale  # nothing overwritten


def test_a_style_from_standard_input_that_is_no_image_is_named_before_the_checkpoint(tmp_path):
    label = write_pairs(tmp_path / "data", 1) / "labels" / "000.png"
    result = runner.invoke(app, ["paired", str(label), "-c", str(tmp_path / "no-run-here"), "--style", "-",
                                 "-o", str(tmp_path / "out.png")], input=b"hello")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().startswith("error: -: is not an image file")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.png").exists()


def test_images_in_sub_folders_are_never_left_out_silently(tmp_path, run):
    nested = tmp_path / "labels" / "more"
    nested.mkdir(parents=True)
    (nested / "000.png").write_bytes((run["data"] / "labels" / "000.png").read_bytes())
    only_below = runner.invoke(app, ["paired", str(tmp_path / "labels"), "-c", str(run["run"]), "--device", "cpu"])
    assert only_below.exit_code == 1
    assert "no images in this LABEL folder" in only_below.stderr and "1 image is in sub-folders" in only_below.stderr
    (tmp_path / "labels" / "001.png").write_bytes((run["data"] / "labels" / "001.png").read_bytes())
    out = tmp_path / "out"
    some = runner.invoke(app, ["paired", str(tmp_path / "labels"), "-c", str(run["run"]), "-o", str(out), "--device", "cpu"])
    assert some.exit_code == 0, some.output
    assert "1 image in sub-folders left out" in some.stderr
    assert [p.name for p in out.iterdir()] == ["001.png"]
    # The command's own results in a sub-folder are not counted as left out.
    into_input = ["paired", str(tmp_path / "labels"), "-c", str(run["run"]), "-o", str(tmp_path / "labels" / "results"),
                  "--device", "cpu"]
    assert runner.invoke(app, into_input).exit_code == 0  # writes labels/results/001.png
    again = runner.invoke(app, into_input)
    assert again.exit_code == 0 and "1 image in sub-folders left out" in again.stderr  # more/000.png only


def test_the_default_depth_is_what_the_levels_help_says():
    help_text = " ".join(runner.invoke(app, ["train", "paired", "--help"]).stdout.replace("│", " ").split())
    assert "--size must be a multiple of 2^levels (0: until it is below 16 px, at most 6 times)" in help_text
    for size in (16, 32, 48, 256, 384, 1024, 4096):
        depth = GRITConfig(input_channels=4, image_size=size).depth
        sizes = [size // 2**times for times in range(depth + 1)]
        assert (sizes[-1] < 16 <= sizes[-2]) or (depth == 6 and sizes[-1] >= 16), size


def test_train_refuses_unclear_or_missing_data(tmp_path):
    data_dir = write_pairs(tmp_path / "data", 4)
    neither = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(tmp_path / "r1")])
    assert neither.exit_code == 2 and "--label-nc" in neither.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(app, ["train", "paired", str(empty), "--label-nc", "4", "--out", str(tmp_path / "r2")])
    assert missing.exit_code == 1 and "label maps folder" in missing.stderr and "Traceback" not in missing.output
    # Label maps with classes beyond --label-nc: every example is unreadable, said in one line.
    too_few = train_cli(data_dir, tmp_path / "r3", 2, "--label-nc", "2")
    assert too_few.exit_code == 1 and "has class" in too_few.stderr


def test_pairs_of_different_shapes_are_counted_in_one_warning(tmp_path):
    data_dir = write_pairs(tmp_path / "data", 4)
    for name in ("000", "002"):  # 40x40 label maps with 64x48 photos: their centred squares differ
        photo = data_dir / "photos" / f"{name}.png"
        cv2.imwrite(str(photo), cv2.resize(cv2.imread(str(photo)), (64, 48)))
    # A photo stored on its side with an EXIF quarter turn is shown, and compared, upright.
    Image.new("RGB", (40, 80)).save(data_dir / "photos" / "003.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    (data_dir / "photos" / "003.png").unlink()
    Image.new("RGB", (80, 40)).save(data_dir / "photos" / "003.jpg", exif=exif)
    (data_dir / "labels" / "003.png").unlink()
    cv2.imwrite(str(data_dir / "labels" / "003.png"), np.zeros((80, 40), np.uint8))
    result = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(tmp_path / "run"), *TINY_ARGS,
                                 "--steps", "1", "--batch-size", "2", "--held-out", "1", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "different shapes" in line]
    assert warnings == ["warning: 2 of the 4 pairs have a label map and a photo of different shapes (e.g. 000.png 40x40, "
                        "000.png 64x48): each is cropped to its centred square, so the two may not line up"]


def test_counts_of_one_are_singular(tmp_path):
    data_dir = write_pairs(tmp_path / "data", 2)
    out = tmp_path / "run"
    trained = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), *TINY_ARGS, "--steps", "1",
                                  "--batch-size", "1", "--held-out", "1", "--workers", "0", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    assert "training on 1 pair, 1 held out" in trained.output and "(1 step in" in trained.output
    scored = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), "--eval", "--fid-model", "none",
                                 "--lpips-backbone", "none", "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    assert "step 1: 1 held-out pair, style from each photo" in scored.output


def test_edge_images_train_and_translate(tmp_path):
    root = write_pairs(tmp_path / "data", 6)
    edges = root / "edges"
    edges.mkdir()
    for photo in sorted((root / "photos").iterdir()):
        grey = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(edges / photo.name), cv2.Canny(cv2.GaussianBlur(grey, (5, 5), 0), 40, 120))
    args = TINY_ARGS[2:]  # without --label-nc
    result = runner.invoke(app, ["train", "paired", str(root), "--labels", str(edges), "--edges", *args, "--steps", "2",
                                 "--batch-size", "2", "--held-out", "2", "--workers", "0", "--device", "cpu",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "1-channel edge images" in result.output
    # A colour edge image is made grey for a one-channel model.
    colour = tmp_path / "colour_edges.png"
    cv2.imwrite(str(colour), cv2.cvtColor(cv2.imread(str(edges / "000.png"), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR))
    out = tmp_path / "edge_out.png"
    result = runner.invoke(app, ["paired", str(colour), "-c", str(tmp_path / "run"), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert read_image(out).width == 32
    assert "warning" not in result.stderr
    # A class-index map given to an edge model reads as an almost black edge image: translated, with a warning.
    label = root / "labels" / "000.png"
    palette = Image.fromarray(cv2.imread(str(label), cv2.IMREAD_GRAYSCALE), "P")
    palette.putpalette(COLOURS.flatten().tolist())
    palette.save(tmp_path / "palette.png")
    for source, words in [(label, "holds only the values 0-3, as a class-index label map does"),
                          (tmp_path / "palette.png", "is a colour palette image")]:
        result = runner.invoke(app, ["paired", str(source), "-c", str(tmp_path / "run"), "-o", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert f"warning: {source}: {words}" in " ".join(result.stderr.split())
        assert "model trained with --label-nc" in " ".join(result.stderr.split())


def test_label_maps_of_class_0_and_unknown_alone_are_warned_of(tmp_path, run):
    # A mask saved as 0/255, or an edge image, gave a picture of class 0 alone without a word.
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    cv2.imwrite(str(tmp_path / "unknown.png"), np.full((32, 32), 255, np.uint8))
    expected = {"mask.png": "holds only class 0 and 255, which means unknown", "unknown.png": "every pixel is 255 (unknown)",
                "000.png": None}
    (tmp_path / "000.png").write_bytes((run["data"] / "labels" / "000.png").read_bytes())
    for name, words in expected.items():
        result = runner.invoke(app, ["paired", str(tmp_path / name), "-c", str(run["run"]), "-o",
                                     str(tmp_path / "out" / name), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        stderr = " ".join(result.stderr.split())
        if words is None:
            assert "warning" not in stderr, stderr
        else:
            assert f"warning: {tmp_path / name}: {words}" in stderr, stderr


def test_outputs_that_would_clash_are_refused(tmp_path, run):
    folder = tmp_path / "labels"
    folder.mkdir()
    label = run["data"] / "labels" / "000.png"
    (folder / "b.png").write_bytes(label.read_bytes())
    cv2.imwrite(str(folder / "b.bmp"), cv2.imread(str(run["data"] / "labels" / "001.png"), cv2.IMREAD_UNCHANGED))
    result = runner.invoke(app, ["paired", str(folder), "-c", str(run["run"]), "-o", str(tmp_path / "out"),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 1
    status = {Path(r["label"]).name: r["status"] for r in json.loads(result.stdout)["results"]}
    assert status == {"b.bmp": "ok", "b.png": "failed"} and "b.png is also written for" in result.stderr
    plot = runner.invoke(app, ["paired", str(label), "-c", str(run["run"]), "-o", str(tmp_path / "p.png"),
                               "--spectrum", str(tmp_path / "p.png"), "--device", "cpu"])
    assert plot.exit_code == 1 and "also one of the command's outputs" in plot.stderr
    # The plot is a PNG, and a plot that could not be written is found before any work.
    jpeg = runner.invoke(app, ["paired", str(label), "-c", str(run["run"]), "-o", str(tmp_path / "q.png"),
                               "--spectrum", str(tmp_path / "plot.jpg"), "--device", "cpu"])
    assert jpeg.exit_code == 2 and "--spectrum" in jpeg.stderr and ".png file" in jpeg.stderr
    (tmp_path / "afile").write_text("x")
    below = runner.invoke(app, ["paired", str(label), "-c", str(run["run"]), "-o", str(tmp_path / "q.png"),
                                "--spectrum", str(tmp_path / "afile" / "plot.png"), "--device", "cpu"])
    assert below.exit_code == 1 and "choose another --spectrum" in below.stderr
    assert not (tmp_path / "q.png").exists()


def test_eval_scores_the_runs_own_held_out_pairs_after_the_folder_grew(tmp_path):
    """A held-out fraction of a folder that grew would be a larger, other set, with pairs the run
    trained on: the run records its held-out pairs and --eval (and --resume) keep to them."""
    data_dir = write_pairs(tmp_path / "data", 15)
    out = tmp_path / "run"
    assert train_cli(data_dir, out, 2, "--held-out", "0.2").exit_code == 0
    stored = load_training_checkpoint(out / "checkpoints" / "latest.pt")
    recorded = stored["config"]["data"]["held_out_files"]
    assert len(recorded) == 3 and stored["settings"]["dataset_size"] == 12
    write_pairs(data_dir, 40)  # the same first 15 pairs, and 25 more

    def evaluate_run():
        return runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), "--eval", "--fid-model", "none",
                                   "--lpips-backbone", "none", "--device", "cpu", "--json"])

    result = evaluate_run()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["held_out_pairs"] == 3
    assert "warning" not in result.stderr
    resumed = runner.invoke(app, ["train", "paired", str(data_dir), "--out", str(out), "--resume", "--steps", "3",
                                  "--workers", "0", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert "training on 37 pairs, 3 held out" in resumed.output
    assert load_training_checkpoint(out / "checkpoints" / "latest.pt")["config"]["data"]["held_out_files"] == recorded

    # A run from before the record: its split is made again, and a warning says it may not be the run's.
    del stored["config"]["data"]["held_out_files"]
    torch.save(stored, out / "checkpoints" / "latest.pt")
    older = evaluate_run()
    assert older.exit_code == 0, older.output
    warning = next(line for line in older.stderr.splitlines() if line.startswith("warning:"))
    assert "has 40 pairs now and the run trained on 12" in warning and "may include pairs it trained on" in warning


def test_eval_spectrum_never_replaces_data_or_run_files(tmp_path, run):
    photo = next((run["data"] / "photos").iterdir())
    kept = photo.read_bytes()
    for target, message in ((photo, "inside the training data"), (run["run"] / "metrics.csv", "name a .png file"),
                            (run["run"] / "samples" / "x.png", "inside the run's sample grids")):
        result = runner.invoke(app, ["train", "paired", str(run["data"]), "--out", str(run["run"]), "--eval",
                                     "--spectrum", str(target), "--fid-model", "none", "--lpips-backbone", "none",
                                     "--device", "cpu"])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert photo.read_bytes() == kept


def test_options_of_the_other_mode_are_named_as_ignored(tmp_path, run):
    training = runner.invoke(app, ["train", "paired", str(run["data"]), "--out", str(tmp_path / "new"), "--spectrum",
                                   str(tmp_path / "s.png"), "--fid-model", "none", "--steps", "5"])
    assert training.stderr.splitlines()[0] == "warning: --spectrum, --fid-model ignored: only --eval uses them"
    scoring = runner.invoke(app, ["train", "paired", str(run["data"]), "--out", str(run["run"]), "--eval", "--steps", "5",
                                  "--seed", "3", "--fid-model", "none", "--lpips-backbone", "none", "--device", "cpu"])
    assert scoring.exit_code == 0, scoring.output
    assert scoring.stderr.splitlines()[0] == "warning: --steps, --seed ignored: --eval scores a checkpoint and trains nothing"


def test_resuming_nothing_or_a_folder_says_what_to_pass(tmp_path, run):
    def resume(*args: str):
        return runner.invoke(app, ["train", "paired", str(run["data"]), "--out", str(tmp_path / "new"), *args,
                                   "--device", "cpu"])

    nothing = resume("--resume")
    assert nothing.exit_code == 1 and nothing.stderr.strip() == (
        f"error: {tmp_path / 'new'}: no training run to resume (no checkpoints/latest.pt) — start a new run without "
        "--resume, or name a checkpoint file with --resume-from")
    for folder in (run["run"], run["run"] / "checkpoints"):
        given = resume("--resume-from", str(folder))
        assert given.exit_code == 1 and given.stderr.strip() == (
            f"error: --resume-from {folder}: is a folder, not a checkpoint file — pass "
            f"{run['run'] / 'checkpoints' / 'latest.pt'}")
    assert not (tmp_path / "new").exists()


def test_training_paths_and_amounts_that_cannot_work_are_named_before_any_work(tmp_path):
    data = write_pairs(tmp_path / "data", 3)
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    cases = [
        (["train", "paired", str(data), "--out", str(a_file), "--edges"], 1, "is a file, not a folder — choose another --out"),
        (["train", "paired", str(a_file), "--out", str(tmp_path / "run"), "--edges"], 1, "is a file, not a folder"),
        (["train", "paired", str(data), "--out", str(tmp_path / "run"), "--edges", "--held-out", "nan"], 2, "--held-out nan"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code and message in result.stderr, (args, result.output)
    assert not (tmp_path / "run").exists()


def test_dry_run_lists_the_label_maps_without_loading_the_checkpoint(tmp_path):
    labels = write_pairs(tmp_path / "data", 2) / "labels"
    out = tmp_path / "out"
    out.mkdir()
    (out / "000.png").write_bytes(b"an earlier result")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.pt").write_bytes(b"never opened")  # only looked for
    args = ["paired", str(labels), "-c", str(tmp_path / "run"), "-o", str(out), "--skip-existing", "--dry-run"]
    listed = runner.invoke(app, args)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [f"skipped {labels / '000.png'} ({out / '000.png'} exists)",
                                          f"{labels / '001.png'} → {out / '001.png'}"]
    document = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert [(r["label"], r["status"]) for r in document["results"]] == [
        (str(labels / "000.png"), "skipped"), (str(labels / "001.png"), "would run")]
    assert sorted(p.name for p in out.iterdir()) == ["000.png"]


def test_a_heic_output_without_a_heic_encoder_is_refused_before_any_image_is_made(tmp_path, run, monkeypatch):
    """Every command, not only restore, finds a libheif that cannot encode HEIC before it computes an
    image that would fail at its write."""
    import pillow_heif

    from i2icli.pipelines import paired as paired_pipeline

    monkeypatch.setattr(pillow_heif, "libheif_info", lambda: {"HEIF": "", "AVIF": "", "encoders": {}})
    computed = []
    monkeypatch.setattr(paired_pipeline.PairedTranslator, "translate",
                        lambda self, *args, **kwargs: computed.append(args) or pytest.fail("an image was computed"))
    out = tmp_path / "out.heic"
    result = runner.invoke(app, ["paired", str(run["data"] / "labels" / "000.png"), "-c", str(run["run"]), "-o", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and f"{out}: this installation's libheif has no HEIC encoder" in result.stderr
    assert "write .avif, .jpg or .png instead" in result.stderr
    assert not computed and not out.exists()
