"""i2i paired and i2i translate-lr on less common inputs, checkpoints and option combinations. Tiny and CPU-only."""

from __future__ import annotations

import cv2
from PIL import Image
import numpy as np
import pytest
import torch
from conftest import CommandRunner

from i2icli.archs.grit import GRITConfig, GRITGenerator
from i2icli.archs.lr_conditioned import LRConditionedGenerator, LRDifferenceDiscriminator, LRTranslatorConfig
from i2icli.cli.app import app
from i2icli.pipelines.translate_lr import generator_from_checkpoint

runner = CommandRunner()


def authors_file(hr_size: int, lr_size: int, same_layout_lr: int) -> dict[str, dict[str, torch.Tensor]]:
    """A training file as the authors' code writes it at an ``hr_size`` that is no power of two.

    Their discriminator's first width is 2**14 // hr_size and its head has int(log2(lr_size)) - 3
    downsampling blocks; i2i's discriminator at ``same_layout_lr`` (same number of levels) has
    exactly those shapes."""
    torch.manual_seed(0)
    levels = (hr_size // lr_size).bit_length() - 1
    generator = LRConditionedGenerator(LRTranslatorConfig(hr_size=hr_size, lr_size=lr_size, max_channels=16,
                                                          base_channels=4))
    authors_layout = LRTranslatorConfig(hr_size=same_layout_lr << levels, lr_size=same_layout_lr, max_channels=16,
                                        base_channels=4, disc_base_channels=2**14 // hr_size, disc_max_channels=16)
    return {"Gen": generator.state_dict(), "Dis": LRDifferenceDiscriminator(authors_layout).state_dict()}


@pytest.mark.parametrize("hr_size, lr_size, same_layout_lr", [(48, 12, 8), (384, 12, 8), (320, 20, 16), (40, 5, 5)])
def test_an_authors_file_at_a_size_that_is_no_power_of_two_keeps_its_sizes(hr_size, lr_size, same_layout_lr):
    file = authors_file(hr_size, lr_size, same_layout_lr)
    _, config = generator_from_checkpoint(file)
    assert (config.hr_size, config.lr_size) == (hr_size, lr_size)
    # i2i's discriminator at the sizes read is the authors' (a run at these sizes trains their network).
    assert {key: value.shape for key, value in LRDifferenceDiscriminator(config).state_dict().items()} == {
        key: value.shape for key, value in file["Dis"].items()}


def test_translate_lr_works_an_authors_file_at_its_own_low_resolution_size(tmp_path):
    checkpoint = tmp_path / "authors.pt"
    torch.save(authors_file(48, 12, 8), checkpoint)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "source.png"), rng.integers(0, 256, (60, 50, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "target.png"), rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["translate-lr", str(tmp_path / "source.png"), str(tmp_path / "target.png"), "-c",
                                 str(checkpoint), "-o", str(output), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(output)).shape == (48, 48, 3)


def test_a_missing_style_photo_fails_the_plan_and_the_dry_run(tmp_path):
    label = tmp_path / "label.png"
    cv2.imwrite(str(label), np.zeros((16, 16), np.uint8))
    missing = tmp_path / "nobody.jpg"
    # The checkpoint is not there either: the style photo is named before any model is looked for.
    for extra in ([], ["--dry-run"], ["--dry-run", "--json"]):
        result = runner.invoke(app, ["paired", str(label), "-c", str(tmp_path / "no-run"), "--style", str(missing),
                                     "-o", str(tmp_path / "out.png"), *extra])
        assert result.exit_code != 0, result.output
        assert f"{missing}: no such file" in result.output and "Traceback" not in result.output
        if "--json" not in extra:  # (--json adds the error as a document on standard output)
            assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["paired", str(label), "-c", str(tmp_path / "no-run"), "--style", str(tmp_path),
                                 "--dry-run"])
    assert result.exit_code != 0 and f"{tmp_path}: is a folder" in result.output
    assert not (tmp_path / "out.png").exists()


def paired_checkpoint(path, label_nc: int = 4):
    """A checkpoint in the layout `i2i train paired` writes, with a generator fresh from its initialisation."""
    config = GRITConfig(input_channels=label_nc, image_size=32, base_channels=8, max_channels=16, style_dim=4,
                        style_channels=8, mapping_dim=16, disc_base_channels=8, disc_max_channels=16)
    torch.manual_seed(0)
    torch.save({"method": "paired", "config": {"model": config.to_dict()}, "G": GRITGenerator(config).state_dict()}, path)
    return path


def test_a_one_bit_mask_from_standard_input_holds_classes_0_and_1_as_from_its_file(tmp_path):
    checkpoint = paired_checkpoint(tmp_path / "paired.pt")
    mask = np.zeros((32, 32), bool)
    mask[8:24, 4:20] = True
    Image.fromarray(mask).convert("1").save(tmp_path / "mask.png")
    outputs = {}
    for how in ("file", "pipe"):
        outputs[how] = tmp_path / f"{how}.png"
        label = str(tmp_path / "mask.png") if how == "file" else "-"
        result = runner.invoke(app, ["paired", label, "-c", str(checkpoint), "-o", str(outputs[how]), "--device", "cpu"],
                               input=(tmp_path / "mask.png").read_bytes())
        assert result.exit_code == 0, result.output
        assert "unknown" not in result.output  # the mask's foreground is class 1, not 255
    assert outputs["file"].read_bytes() == outputs["pipe"].read_bytes()
