"""translate-lr: networks, the downsampling contract, --exact, checkpoints, training, CLI. Tiny and CPU-only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CommandRunner
from feature_checkpoints import random_fid_inception_state_dict, random_vgg_state_dict

from i2icli.archs.lr_conditioned import (
    LRConditionedGenerator,
    LRDifferenceDiscriminator,
    LRTranslatorConfig,
    config_from_state_dicts,
    difference_map,
    downscale,
)
from i2icli.cli.app import app
from i2icli.pipelines.translate_lr import (
    LRTranslator,
    generator_from_checkpoint,
    lr_error_levels,
    project_to_target,
    quantise,
)
from i2icli.training import files
from i2icli.training.checkpoints import load_training_checkpoint
from i2icli.training.translate_lr import LRTrainingOptions, TranslateLRTraining, evaluate

TINY = LRTranslatorConfig(hr_size=32, lr_size=8, max_channels=16, base_channels=4, disc_base_channels=8, disc_max_channels=16)
TINY_ARGS = ["--hr-size", "32", "--lr-size", "8", "--max-channels", "16", "--base-channels", "4", "--disc-channels", "8",
             "--disc-max-channels", "16"]
runner = CommandRunner()


def smooth_images(count: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 3, 3, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1


def write_photos(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        path = folder / f"photo{index:02d}.png"
        cv2.imwrite(str(path), cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC))
        paths.append(path)
    return paths


def train_cli(data_dir: Path, out: Path, steps: int, *extra: str) -> object:
    return runner.invoke(app, ["train", "translate-lr", str(data_dir), "--out", str(out), *TINY_ARGS, "--steps", str(steps),
                               "--batch-size", "4", "--held-out", "3", "--workers", "0", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One short training run through the CLI, shared by the tests that need a trained checkpoint."""
    root = tmp_path_factory.mktemp("translate-lr")
    write_photos(root / "data", 10)
    result = train_cli(root / "data", root / "run", 24, "--checkpoint-every", "12", "--sample-every", "12", "--log-every", "4")
    assert result.exit_code == 0, result.output
    return {"data": root / "data", "run": root / "run", "root": root}


# --- networks ------------------------------------------------------------------------------------


def test_shapes_and_sizes():
    generator, discriminator = LRConditionedGenerator(TINY).eval(), LRDifferenceDiscriminator(TINY).eval()
    source, target = smooth_images(2, 32, 0), smooth_images(2, 8, 1)
    with torch.no_grad():
        out = generator(source, target)
        logits = discriminator(out, difference_map(out, target, 2 / 255))
    assert out.shape == (2, 3, 32, 32)
    assert logits.shape == (2, 1, 5, 5)  # a patch of logits, as in the authors' network at 8x8
    # fully convolutional: the same weights work at another LR size with the same scale
    with torch.no_grad():
        assert generator(smooth_images(1, 64, 2), smooth_images(1, 16, 3)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="must be 4x the target"):
        generator(source, smooth_images(2, 16, 4))


@pytest.mark.parametrize("lr_size", [4, 8, 9, 12, 16, 17, 20, 31, 32])
def test_the_discriminator_head_follows_the_authors_rule_at_every_size(lr_size):
    """The authors' head: int(log2(lr_size)) - 3 downsampling blocks (none below 8) after the block
    that takes the difference map, then a 4x4 convolution without padding."""
    halvings = max(int(math.log2(lr_size)) - 3, 0)
    config = LRTranslatorConfig(hr_size=2 * lr_size, lr_size=lr_size, max_channels=8, base_channels=4,
                                disc_base_channels=4, disc_max_channels=8)
    discriminator = LRDifferenceDiscriminator(config).eval()
    head_blocks = {key.split(".")[1] for key in discriminator.state_dict()
                   if key.startswith("last_block.") and ".conv1." in key}
    assert len(head_blocks) == 1 + halvings
    patch = lr_size
    for _ in range(halvings):
        patch //= 2
    with torch.no_grad():
        logits = discriminator(torch.zeros(1, 3, 2 * lr_size, 2 * lr_size), torch.zeros(1, 3, lr_size, lr_size))
    assert logits.shape == (1, 1, patch - 3, patch - 3)


@pytest.mark.parametrize(("hr", "lr", "message"), [(8, 16, "power of two"), (48, 8, "power of two"), (128, 2, "outside 4-32"),
                                                   (16, 16, "power of two")])
def test_impossible_sizes_are_refused(hr, lr, message):
    with pytest.raises(ValueError, match=message):
        LRTranslatorConfig(hr_size=hr, lr_size=lr)


def test_downscale_is_block_average_and_difference_map_is_zero_on_target():
    images = smooth_images(2, 32, 5)
    small = downscale(images, 8)
    torch.testing.assert_close(small, images.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)))
    # an image that is its target's blocks has nothing to show in the difference map
    exact = torch.nn.functional.interpolate(quantise(small), scale_factor=4, mode="nearest")
    assert difference_map(exact, quantise(small), 2 / 255).abs().max() < 1e-6
    # the rounding is straight-through: gradients still reach the image
    image = images.clone().requires_grad_(True)
    difference_map(image, small + 0.1, 2 / 255).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_the_discriminator_judges_the_difference_map_too():
    """The method's conditioning: the discriminator's verdict depends on the LR difference map."""
    torch.manual_seed(0)
    discriminator = LRDifferenceDiscriminator(TINY).eval()
    images = torch.rand(2, 3, TINY.hr_size, TINY.hr_size) * 2 - 1
    lr_shape = (2, 3, TINY.lr_size, TINY.lr_size)
    with torch.no_grad():
        none_missed = discriminator(images, torch.zeros(lr_shape))
        some_missed = discriminator(images, torch.rand(lr_shape))
    assert (none_missed - some_missed).abs().max() > 1e-4


def test_exact_projection_downsamples_to_the_target_within_an_8bit_level():
    images = smooth_images(3, 32, 6) * 0.9
    targets = downscale(smooth_images(3, 32, 7), 8)
    before = lr_error_levels(quantise(images), targets)
    projected = quantise(project_to_target(images, targets))
    after = lr_error_levels(projected, targets)
    assert before.min() > 5  # unrelated images: far from each other's targets
    assert after.max() < 1.0
    assert projected.min() >= -1 and projected.max() <= 1
    # and it stays close to the image it corrected: the change is the target residual, not a copy
    assert (projected - images).abs().mean() < (downscale(images, 8) - targets).abs().mean() * 2


# --- checkpoints ---------------------------------------------------------------------------------


def _tiny_author_style(tmp_path: Path) -> tuple[Path, TranslateLRTraining]:
    """A file in the authors' layout: only their five keys (no stored configuration)."""
    config = LRTranslatorConfig(hr_size=128, lr_size=8, max_channels=16, base_channels=4, disc_base_channels=128,
                                disc_max_channels=16)  # 2**14 / 128 = 128: the authors' rule for the first width
    method = TranslateLRTraining(config, LRTrainingOptions(), seed=3)
    path = tmp_path / "authors.pt"
    torch.save(method.state_dict(), path)
    return path, method


def test_loads_the_authors_layout_and_picks_the_ema_generator(tmp_path):
    path, method = _tiny_author_style(tmp_path)
    with torch.no_grad():
        for parameter in method.average.parameters():
            parameter.add_(0.01)  # make EMA and live generator differ
    torch.save(method.state_dict(), path)
    content = torch.load(path, weights_only=True)
    assert set(content) == {"Gen", "Dis", "optG", "optD", "AverageG"}
    generator, config = generator_from_checkpoint(content)
    assert (config.hr_size, config.lr_size) == (128, 8)
    for key, value in method.average.state_dict().items():
        assert torch.equal(generator.state_dict()[key], value)


def test_bare_generator_takes_lr_size_from_the_option(tmp_path):
    method = TranslateLRTraining(TINY, LRTrainingOptions(), seed=0)
    generator, config = generator_from_checkpoint(method.netG.state_dict(), lr_size=16)
    assert (config.hr_size, config.lr_size) == (64, 16)
    _, default = generator_from_checkpoint(method.netG.state_dict())
    assert default.lr_size == 8


def test_config_from_state_dicts_round_trips():
    config = LRTranslatorConfig(hr_size=64, lr_size=16, max_channels=16, base_channels=4, disc_base_channels=256,
                                disc_max_channels=32)
    read = config_from_state_dicts(LRConditionedGenerator(config).state_dict(), LRDifferenceDiscriminator(config).state_dict())
    assert LRDifferenceDiscriminator(read).state_dict().keys() == LRDifferenceDiscriminator(config).state_dict().keys()
    assert (read.hr_size, read.lr_size, read.base_channels, read.max_channels) == (64, 16, 4, 16)


@pytest.mark.parametrize("hr_size, lr_size, disc_base", [(128, 8, 32), (128, 16, 48), (128, 4, 128), (256, 32, 16)])
def test_authors_file_trained_with_another_discriminator_width_keeps_its_sizes(hr_size, lr_size, disc_base):
    config = LRTranslatorConfig(hr_size=hr_size, lr_size=lr_size, max_channels=16, base_channels=4,
                                disc_base_channels=disc_base, disc_max_channels=32)
    authors_file = {"Gen": LRConditionedGenerator(config).state_dict(), "Dis": LRDifferenceDiscriminator(config).state_dict()}
    _, read = generator_from_checkpoint(authors_file)
    # (4 and 8 give the same networks when the width does not follow the authors' rule: 8 is taken.)
    expected_lr = 8 if lr_size == 4 and disc_base != 2**14 // hr_size else lr_size
    assert (read.lr_size, read.hr_size) == (expected_lr, expected_lr * (hr_size // lr_size))
    assert LRDifferenceDiscriminator(read).state_dict().keys() == authors_file["Dis"].keys()


# --- training --------------------------------------------------------------------------------------


def test_short_training_lowers_cycle_and_consistency_and_writes_what_translate_lr_loads(run):
    rows = list(csvrows(run["run"] / "metrics.csv"))
    assert [int(row["step"]) for row in rows] == [4, 8, 12, 16, 20, 24]
    first, last = rows[0], rows[-1]
    assert float(last["cycle"]) < float(first["cycle"])
    assert float(last["lr_error_levels"]) < float(first["lr_error_levels"])
    assert sorted(p.name for p in (run["run"] / "samples").iterdir()) == ["step-0000012.png", "step-0000024.png"]
    grid = cv2.imread(str(run["run"] / "samples" / "step-0000024.png"))
    assert grid.shape == (32 * 4, 32 * 4, 3)  # header row/column + 3 held-out images
    stored = load_training_checkpoint(run["run"] / "checkpoints" / "latest.pt")
    assert {"Gen", "Dis", "optG", "optD", "AverageG"} <= set(stored) and stored["step"] == 24
    translator = LRTranslator.load(str(run["run"]), device="cpu")
    assert translator.config == TINY


def csvrows(path: Path):
    import csv

    with open(path, newline="") as handle:
        yield from csv.DictReader(handle)


def test_resume_continues_with_the_same_step_and_optimiser_state(tmp_path, run):
    straight = train_cli(run["data"], tmp_path / "straight", 6)
    assert straight.exit_code == 0, straight.output
    first = train_cli(run["data"], tmp_path / "resumed", 3)
    assert first.exit_code == 0, first.output
    second = train_cli(run["data"], tmp_path / "resumed", 6, "--resume")
    assert second.exit_code == 0, second.output
    assert "resuming" in second.output and "step 3" in second.output
    assert "ignored" not in second.output  # the run's own settings, repeated: nothing to say
    a = torch.load(tmp_path / "straight" / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "latest.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for network in ("Gen", "Dis", "AverageG"):
        for key in a[network]:
            assert torch.equal(a[network][key], b[network][key]), (network, key)
    assert a["optG"]["state"][0]["step"] == b["optG"]["state"][0]["step"] == 6
    torch.testing.assert_close(a["optD"]["state"][0]["exp_avg_sq"], b["optD"]["state"][0]["exp_avg_sq"], rtol=0, atol=0)
    changed = train_cli(run["data"], tmp_path / "resumed", 7, "--resume", "--g-lr", "0.5", "--seed", "3")
    assert changed.exit_code == 0, changed.output
    assert "--g-lr, --seed ignored: a resumed run keeps the settings it was started with" in changed.output


def test_a_run_with_the_former_discriminator_head_resumes_and_evaluates(tmp_path):
    """i2i's discriminator used to halve its head down to 8x8 or less: at 12x12 one downsampling
    block where the authors' has none. Such a run goes on with the head it was trained with."""
    write_photos(tmp_path / "data", 8)
    sizes = ("--hr-size", "24", "--lr-size", "12")
    started = train_cli(tmp_path / "data", tmp_path / "run", 2, *sizes)
    assert started.exit_code == 0, started.output
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    stored = torch.load(latest, weights_only=True)
    method = TranslateLRTraining(LRTranslatorConfig(**stored["config"]["model"]),
                                 LRTrainingOptions(**stored["config"]["training"]))
    former = LRDifferenceDiscriminator(method.model_config, head_halvings=1)
    assert former.state_dict().keys() != method.netD.state_dict().keys()
    method.netD, method.optD = former, torch.optim.Adam(former.parameters(), **method.optD.defaults)
    method.train_step(smooth_images(4, 24, 0), torch.Generator().manual_seed(0))  # gives optD a state to resume
    torch.save({**stored, **method.state_dict()}, latest)

    resumed = train_cli(tmp_path / "data", tmp_path / "run", 4, *sizes, "--resume")
    assert resumed.exit_code == 0, resumed.output
    after = torch.load(latest, weights_only=True)
    assert after["step"] == 4
    assert {key: value.shape for key, value in after["Dis"].items()} == {
        key: value.shape for key, value in former.state_dict().items()}
    assert not torch.equal(after["Dis"]["last_block.1.conv1.conv.weight_orig"],
                           former.state_dict()["last_block.1.conv1.conv.weight_orig"])  # it was trained on
    assert after["optD"]["state"][0]["step"] == 3

    scored = runner.invoke(app, ["train", "translate-lr", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--eval",
                                 "--fid-model", "none", "--lpips-backbone", "none", "--device", "cpu", "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout[scored.stdout.index("{"):])["translations"] > 0


def test_a_new_run_never_overwrites_an_old_one(run):
    result = train_cli(run["data"], run["run"], 2)
    assert result.exit_code == 1
    assert "already holds a training run" in result.output and "Traceback" not in result.output


def test_odd_batch_and_bad_sizes_are_usage_errors(tmp_path, run):
    odd = runner.invoke(app, ["train", "translate-lr", str(run["data"]), "--out", str(tmp_path / "x"), "--batch-size", "3"])
    assert odd.exit_code == 2 and "must be even" in odd.output
    sizes = runner.invoke(app, ["train", "translate-lr", str(run["data"]), "--out", str(tmp_path / "y"),
                                "--hr-size", "48", "--lr-size", "8"])
    assert sizes.exit_code == 2 and "power of two" in sizes.output
    # The data folder as the run folder: its sample grids would become training images on resume.
    inside = runner.invoke(app, ["train", "translate-lr", str(run["data"]), "--out", str(run["data"] / "."), *TINY_ARGS])
    assert inside.exit_code == 2 and "cannot be the data folder" in inside.output
    assert not (run["data"] / "samples").exists()


def test_eval_reports_lr_error_fid_and_lpips(tmp_path, run):
    fid_file, vgg_file = tmp_path / "fid.pth", tmp_path / "vgg16.pth"
    torch.save(random_fid_inception_state_dict(seed=3), fid_file)
    torch.save(random_vgg_state_dict(16, seed=2), vgg_file)
    result = runner.invoke(app, ["train", "translate-lr", str(run["data"]), "--out", str(run["run"]), "--eval",
                                 "--eval-targets", "2", "--fid-model", str(fid_file), "--lpips-backbone", str(vgg_file),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["held_out_images"] == 3 and summary["translations"] == 6
    assert summary["lr_error_levels"] > summary["lr_error_levels_exact"]
    assert summary["lr_error_levels_exact"] < 1.0
    assert summary["fid"] is not None and summary["fid"] >= 0
    assert summary["lpips_diversity"] is not None and summary["lpips_diversity"] > 0


def test_eval_network_that_cannot_be_had_names_its_option(tmp_path, run, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = runner.invoke(app, ["train", "translate-lr", str(run["data"]), "--out", str(run["run"]), "--eval",
                                 "--lpips-backbone", "none", "--device", "cpu"])
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert "fid-inception" in line and line.endswith("pass a checkpoint path with --fid-model; or leave the metric out with --fid-model none")


def test_evaluate_pairs_each_source_with_the_next_targets():
    generator = LRConditionedGenerator(TINY).eval()
    images = smooth_images(4, 32, 9)
    seen = []

    def lpips_distance(a, b):
        seen.append(len(a))
        return (a - b).abs().flatten(1).mean(1)

    result = evaluate(generator, 8, images, targets_per_source=3, lpips_distance=lpips_distance)
    assert result.translations == 12 and result.images == 4
    assert seen == [3, 3, 3, 3]  # three pairs among each source's three outputs
    assert result.lr_error_exact < 1.0 < result.lr_error


@pytest.mark.parametrize("count, per_source", [(2, 4), (4, 1)])
def test_evaluate_says_why_lpips_diversity_is_left_out(count, per_source):
    generator = LRConditionedGenerator(TINY).eval()

    def lpips_distance(a, b):
        return (a - b).abs().flatten(1).mean(1)

    result = evaluate(generator, 8, smooth_images(count, 32, 9), targets_per_source=per_source,
                      lpips_distance=lpips_distance)
    assert result.lpips_diversity is None
    assert any("LPIPS diversity" in note and "--eval-targets 2" in note for note in result.notes)


def test_lpips_backbone_mapping_matches_lpips_with_torchvision_weights(tmp_path):
    import lpips
    import torchvision

    from i2icli.training.metrics import load_lpips

    state = random_vgg_state_dict(16, seed=4, compact=False)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    ours = load_lpips(str(path))
    reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    vgg = torchvision.models.vgg16()
    vgg.load_state_dict(state)
    for index, layer in enumerate(vgg.features[:30]):
        slice_number = 1 + sum(index >= start for start in (4, 9, 16, 23))
        getattr(reference.net, f"slice{slice_number}")._modules[str(index)] = layer
    a, b = smooth_images(2, 32, 10), smooth_images(2, 32, 11)
    with torch.no_grad():
        torch.testing.assert_close(ours(a, b), reference(a, b).flatten(), rtol=1e-5, atol=1e-6)
    assert ours(a, a).abs().max() < 1e-6


# --- inference CLI ---------------------------------------------------------------------------------


def test_translate_one_pair_with_exact(run, tmp_path):
    photos = sorted(run["data"].glob("*.png"))
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["translate-lr", str(photos[0]), str(photos[1]), "-c", str(run["run"]), "-o", str(out),
                                 "--exact", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout[result.stdout.index("{"):])["results"][0]
    # Named as `train translate-lr --eval` names them: the network's error, and after --exact.
    assert record["lr_error_levels_exact"] < 1.0 <= record["lr_error_levels"]
    assert "network_lr_error_levels" not in record
    written = cv2.imread(str(out))
    assert written.shape == (32, 32, 3)
    # the file as written downsamples to the target within a level
    target = cv2.resize(cv2.imread(str(photos[1]))[4:44], (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    blocks = lambda image: image.reshape(8, 4, 8, 4, 3).mean((1, 3))  # noqa: E731
    assert np.abs(blocks(written.astype(np.float64)) - blocks(target)).mean() < 1.0


def test_one_pair_to_standard_output_is_the_file_it_would_write(run, tmp_path):
    photos = sorted(run["data"].glob("*.png"))
    pair = [str(photos[0]), str(photos[1]), "-c", str(run["run"]), "--device", "cpu"]
    assert runner.invoke(app, ["translate-lr", *pair, "-o", str(tmp_path / "out.png")]).exit_code == 0
    piped = runner.invoke(app, ["translate-lr", *pair, "-o", "-", "--grid", str(tmp_path / "grid.png")])
    assert piped.exit_code == 0, piped.output
    assert piped.stdout_bytes == (tmp_path / "out.png").read_bytes()
    assert "→ standard output" in piped.stderr and (tmp_path / "grid.png").is_file()
    assert not Path("-").exists()
    folder = runner.invoke(app, ["translate-lr", str(run["data"]), str(photos[1]), "-c", str(run["run"]), "-o", "-"])
    assert folder.exit_code == 2 and folder.stdout_bytes == b""
    assert "the inputs hold 10 pairs" in folder.stderr
    as_json = runner.invoke(app, ["translate-lr", *pair, "-o", "-", "--json"])
    assert as_json.exit_code == 2 and "--json and -o - would both write to standard output" in as_json.stderr


def test_tiny_targets_folders_and_grid(run, tmp_path):
    photos = sorted(run["data"].glob("*.png"))
    sources, targets = tmp_path / "sources", tmp_path / "targets"
    sources.mkdir()
    targets.mkdir()
    for photo in photos[:2]:
        (sources / photo.name).write_bytes(photo.read_bytes())
    tiny = cv2.resize(cv2.imread(str(photos[2])), (8, 8), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(targets / "tiny.png"), tiny)
    (targets / "broken.png").write_bytes(b"not an image at all")
    result = runner.invoke(app, ["translate-lr", str(sources), str(targets), "-c", str(run["run"]), "-o", str(tmp_path / "out"),
                                 "--grid", str(tmp_path / "grid.png"), "--device", "cpu", "--json"])
    assert result.exit_code == 1  # the broken target fails its pairs; the others are written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo00__tiny.png", "photo01__tiny.png"]
    assert f"✓ {sources / 'photo00.png'} + {targets / 'tiny.png'} → {tmp_path / 'out' / 'photo00__tiny.png'}" in result.stderr
    assert "Traceback" not in result.output
    # Each of the broken target's two pairs failed, but its error is shown once.
    assert result.stderr.count("broken.png") == 1, result.stderr
    failed = [record for record in json.loads(result.stdout)["results"] if record["status"] == "failed"]
    assert len(failed) == 2 and all("broken.png: is not an image file" in record["error"] for record in failed)
    written = [record for record in json.loads(result.stdout)["results"] if record["status"] == "ok"]
    assert [(r["exact"], r["lr_error_levels_exact"]) for r in written] == [(False, None)] * 2  # no --exact
    assert all(r["lr_error_levels"] > 0 for r in written)
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (3 * 32, 2 * 32, 3)  # header + two sources; corner + one readable target
    # the header shows the tiny target's pixels as blocks
    assert np.array_equal(grid[:32, 32:][::4, ::4], tiny)
    # Run again with --skip-existing: the grid shows the outputs written before, not grey cells.
    (tmp_path / "grid.png").unlink()
    again = runner.invoke(app, ["translate-lr", str(sources), str(targets), "-c", str(run["run"]), "-o", str(tmp_path / "out"),
                                "--grid", str(tmp_path / "grid.png"), "--device", "cpu", "--skip-existing"])
    assert again.exit_code == 1
    # Each skipped pair names both its images: the source alone would read as one skip per target.
    skipped = f"skipped {sources / 'photo01.png'} + {targets / 'tiny.png'} ({tmp_path / 'out' / 'photo01__tiny.png'} exists)"
    assert skipped in again.stderr, again.stderr
    assert np.array_equal(cv2.imread(str(tmp_path / "grid.png")), grid)


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    photos = sorted(run["data"].glob("*.png"))
    oblong = tmp_path / "oblong.png"
    cv2.imwrite(str(oblong), np.zeros((8, 6, 3), np.uint8))
    wrong_size = tmp_path / "tiny16.png"
    cv2.imwrite(str(wrong_size), np.zeros((16, 16, 3), np.uint8))
    text = tmp_path / "notes.png"
    text.write_text("hello")
    dot = tmp_path / "dot.png"
    cv2.imwrite(str(dot), np.zeros((1, 1, 3), np.uint8))
    sliver = tmp_path / "sliver.png"
    cv2.imwrite(str(sliver), np.zeros((3, 200, 3), np.uint8))
    cases = [
        ([str(photos[0]), str(oblong)], 1, "must be square"),
        ([str(photos[0]), str(wrong_size)], 1, "pass --lr-size 16"),
        ([str(photos[0]), str(dot)], 1, "pass a target of 8x8 (or 4-32 px with --lr-size)"),  # --lr-size 1 is no option
        ([str(photos[0]), str(sliver)], 1, "crop the target square at 8x8 px"),  # not "tiny images can only be targets"
        ([str(text), str(photos[1])], 1, "notes.png"),
        ([str(tmp_path / "missing.png"), str(photos[1])], 1, "no such file"),
        ([str(photos[0]), str(photos[1]), "-o", str(photos[0])], 1, "would overwrite an input"),
    ]
    for arguments, code, message in cases:
        result = runner.invoke(app, ["translate-lr", *arguments, "-c", str(run["run"]), "--device", "cpu"])
        assert result.exit_code == code, (arguments, result.output)
        [line] = result.stderr.strip().splitlines()
        assert message in line, (arguments, result.stderr)
    # An option out of its range is the option parser's usage error (exit 2).
    result = runner.invoke(app, ["translate-lr", str(photos[0]), str(photos[1]), "--lr-size", "64", "-c", str(run["run"])])
    assert result.exit_code == 2 and "less than or equal to 32" in result.output


def test_wrong_checkpoints_are_one_line_errors(tmp_path, run):
    photos = sorted(run["data"].glob("*.png"))
    other_method = tmp_path / "paired.pt"
    torch.save({"format": "i2i-train", "format_version": 1, "method": "paired", "config": {}, "step": 1}, other_method)
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, unrelated)
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()
    for checkpoint, message in [(other_method, "`paired` checkpoint"), (unrelated, "not a translate-lr checkpoint"),
                                (empty_run, "no checkpoints/latest.pt"), (tmp_path / "none.pt", "no such checkpoint file or run folder"),
                                # registry names are refused before any download; a plain word is a missing run
                                ("gfpgan-1.4", "gfpgan-1.4 is a GFPGAN checkpoint, not a translate-lr one"),
                                ("myrun", "myrun: no such checkpoint file or run folder")]:
        result = runner.invoke(app, ["translate-lr", str(photos[0]), str(photos[1]), "-c", str(checkpoint),
                                     "-o", str(tmp_path / "o.png"), "--device", "cpu"])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.png").exists()


def test_training_folder_problems_are_clear(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["train", "translate-lr", str(empty), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "no training images" in result.output and "Traceback" not in result.output
    one = tmp_path / "one"
    write_photos(one, 1)
    result = runner.invoke(app, ["train", "translate-lr", str(one), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "has only 1 training image" in result.output


def test_dataset_split_is_what_eval_uses(run):
    images = files.find_images(run["data"])
    train, held = files.split_held_out(images, run["data"], 3, 0)
    assert len(held) == 3 and not set(train) & set(held)


class _FixedFaces:
    """A detector that reports given faces, so alignment is exercised without detector weights."""

    def __init__(self, faces):
        self.faces = faces

    def detect(self, rgb):
        return list(self.faces)


def test_align_faces_crops_the_largest_face_and_reports_none(run):
    from i2icli.faces.align import FACE_TEMPLATE_512
    from i2icli.faces.detect import DetectedFace
    from i2icli.imageio import Picture

    base = LRTranslator.load(str(run["run"]), device="cpu")
    # A photo whose face, at half the template's scale and offset by (40, 30), is bright on black.
    photo = np.zeros((400, 400, 3), np.uint8)
    landmarks = FACE_TEMPLATE_512 * 0.5 + np.array([40, 30], np.float32)
    photo[20:300, 30:310] = 200  # a little beyond the region the crop covers (30-286, 40-296)
    small = DetectedFace(np.array([0, 0, 20, 20]), 0.9, landmarks * 0.1)
    large = DetectedFace(np.array([40, 30, 296, 286]), 0.9, landmarks)
    aligned = LRTranslator(base.generator, base.config, device=torch.device("cpu"), detector=_FixedFaces([small, large]))
    tensor = aligned.prepare_source(Picture(rgb=photo, source=Path("photo.png")))
    assert tensor.shape == (1, 3, 32, 32)
    assert tensor.min() > 0.5  # the crop is all face: the large face filled the template exactly
    nobody = LRTranslator(base.generator, base.config, device=torch.device("cpu"), detector=_FixedFaces([]))
    with pytest.raises(Exception, match="no face found in the source.*leave out --align-faces"):
        nobody.prepare_source(Picture(rgb=photo, source=Path("photo.png")))


def test_translate_returns_a_typed_result(run):
    from i2icli.imageio import read_image

    photos = sorted(run["data"].glob("*.png"))
    translator = LRTranslator.load(str(run["run"]), device="cpu")
    result = translator.translate(read_image(photos[0]), read_image(photos[1]), exact=True)
    assert result.picture.rgb.shape == (32, 32, 3) and result.target.rgb.shape == (8, 8, 3)
    assert result.exact and result.lr_error < 1.0 < result.network_error
    assert set(result.seconds) == {"prepare", "generate"}


def test_outputs_that_would_clash_are_refused(run, tmp_path):
    photos = sorted(run["data"].glob("*.png"))
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "a.png").write_bytes(photos[0].read_bytes())
    cv2.imwrite(str(sources / "a.jpg"), cv2.imread(str(photos[1])))  # the same output name, a__<target>.png
    result = runner.invoke(app, ["translate-lr", str(sources), str(photos[2]), "-c", str(run["run"]),
                                 "-o", str(tmp_path / "out"), "--device", "cpu", "--json"])
    assert result.exit_code == 1
    status = {Path(r["source"]).name: r["status"] for r in json.loads(result.stdout)["results"]}
    assert status == {"a.jpg": "ok", "a.png": "failed"}
    # Both pairs named, each with its own source (not the same file twice).
    assert f"{sources / 'a.png'} + {photos[2]}: its output" in result.stderr
    assert f"is also written for {sources / 'a.jpg'} + {photos[2]}" in result.stderr
    # A grid named like the output would replace it.
    single = runner.invoke(app, ["translate-lr", str(photos[0]), str(photos[1]), "-c", str(run["run"]),
                                 "-o", str(tmp_path / "g.png"), "--grid", str(tmp_path / "g.png"), "--device", "cpu"])
    assert single.exit_code == 1 and "also one of the command's outputs" in single.stderr
    assert not (tmp_path / "g.png").exists()
    gif = runner.invoke(app, ["translate-lr", str(photos[0]), str(photos[1]), "-c", str(run["run"]),
                              "-o", str(tmp_path / "g.png"), "--grid", str(tmp_path / "grid.gif"), "--device", "cpu"])
    assert gif.exit_code == 2 and "--grid" in gif.stderr and not (tmp_path / "g.png").exists()
    (tmp_path / "grid.png").mkdir()  # a folder where the grid would go: refused before any work
    folder = runner.invoke(app, ["translate-lr", str(photos[0]), str(photos[1]), "-c", str(run["run"]),
                                 "-o", str(tmp_path / "g.png"), "--grid", str(tmp_path / "grid.png"), "--device", "cpu"])
    assert folder.exit_code == 1 and "grid.png: is a folder" in folder.stderr and not (tmp_path / "g.png").exists()


def test_dry_run_lists_the_pairs_without_loading_the_checkpoint(tmp_path):
    sources = write_photos(tmp_path / "sources", 2)
    target = write_photos(tmp_path / "targets", 1, seed=1, size=(8, 8))[0]
    out = tmp_path / "out"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.pt").write_bytes(b"never opened")  # only looked for
    args = ["translate-lr", str(tmp_path / "sources"), str(target), "-c", str(tmp_path / "run"), "-o", str(out),
            "--dry-run"]
    listed = runner.invoke(app, args)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [f"{source} + {target} → {out / (source.stem + '__' + target.stem + '.png')}"
                                          for source in sources]
    document = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert (document["would_run"], document["skipped"], document["failed"]) == (2, 0, 0)
    assert not out.exists()
    # One pair, and -o a name ending in a slash: a folder to make, whatever its name looks like.
    listed = runner.invoke(app, ["translate-lr", str(sources[0]), str(target), "-c", str(tmp_path / "run"),
                                 "-o", f"{tmp_path / 'new.png'}/", "--dry-run"])
    assert listed.stdout.strip() == f"{sources[0]} + {target} → {tmp_path / 'new.png' / 'photo00__photo00.png'}"


def test_paths_with_brackets_are_shown_as_they_are(tmp_path):
    """File names are text, not console markup: "[v2]" must not vanish from the lines naming them."""
    write_photos(tmp_path / "data [v2]", 6)
    result = train_cli(tmp_path / "data [v2]", tmp_path / "run [v2]", 1, "--held-out", "2")
    assert result.exit_code == 0, result.output
    assert f"({tmp_path / 'data [v2]'}, 32 px)" in result.stderr
    assert f"→ {tmp_path / 'run [v2]' / 'checkpoints'}" in result.stderr


def test_a_broken_file_in_a_folder_given_as_source_and_target_is_reported_once(run, tmp_path):
    photos = sorted(run["data"].glob("*.png"))
    both = tmp_path / "both"
    both.mkdir()
    (both / "photo.png").write_bytes(photos[0].read_bytes())
    (both / "broken.png").write_bytes(b"not an image at all")
    result = runner.invoke(app, ["translate-lr", str(both), str(both), "-c", str(run["run"]), "-o", str(tmp_path / "out"),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    status = {(Path(r["source"]).name, Path(r["target"]).name): r["status"] for r in json.loads(result.stdout)["results"]}
    assert status == {("broken.png", "broken.png"): "failed", ("broken.png", "photo.png"): "failed",
                      ("photo.png", "broken.png"): "failed", ("photo.png", "photo.png"): "ok"}
    # Unreadable as a source and as a target: one file, one error line.
    assert result.stderr.count("broken.png") == 1, result.stderr


@pytest.mark.parametrize("suffix", [".jpg", ".avif", ".heic"])
def test_exact_with_a_lossy_output_says_the_file_will_not_be_exact(run, tmp_path, suffix):
    photos = sorted(run["data"].glob("*.png"))
    pair = [str(photos[0]), str(photos[1]), "-c", str(run["run"]), "--device", "cpu", "--exact"]
    lossy = runner.invoke(app, ["translate-lr", *pair, "-o", str(tmp_path / f"out{suffix}")])
    assert lossy.exit_code == 0, lossy.output
    assert f"warning: --exact with a {suffix} output" in lossy.stderr and "write a .png" in lossy.stderr
    lossless = runner.invoke(app, ["translate-lr", *pair, "-o", str(tmp_path / "out.png")])
    assert lossless.exit_code == 0 and "warning" not in lossless.stderr
