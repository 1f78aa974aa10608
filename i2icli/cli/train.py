"""`i2i train ...`: training commands for the methods that have no public weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from i2icli.cli import train_paired
from i2icli.cli.command_classes import Command, Group
from i2icli.cli.error_handling import EXIT_OK, handles_errors, usage_error
from i2icli.cli.options import DeviceOption, JsonOption, finite
from i2icli.cli.stderr import console, plain, spinner, warn
from i2icli.cli.stdout import json_document, stdout_write
from i2icli.cli.train_common import (
    EVAL_PANEL,
    LOSS_PANEL,
    MODEL_PANEL,
    RUN_PANEL,
    CheckpointEveryOption,
    DiscriminatorLrOption,
    EmaDecayOption,
    EvalCheckpointOption,
    FidModelOption,
    GeneratorLrOption,
    HeldOutOption,
    KeepOption,
    LogEveryOption,
    LpipsBackboneOption,
    OutOption,
    ResumeFromOption,
    ResumeOption,
    SampleEveryOption,
    SeedOption,
    StepsOption,
    WorkersOption,
    check_training_size,
    checkpoint_to_evaluate,
    counted,
    device_checked_first,
    evaluation_metrics,
    held_out_amount,
    picked_device,
    refuse_a_checkpoint_of_another_method,
    resume_point,
    rounded,
    run_schedule,
    run_split,
    run_training,
    warn_of_options_for_the_other_mode,
    warn_of_options_the_run_keeps,
)
from i2icli.errors import I2IError
from i2icli.pipelines import memory_hints

app = typer.Typer(help="Train the methods that have no public weights.", no_args_is_help=True, cls=Group)


@app.command("translate-lr", no_args_is_help=True, cls=Command)
@handles_errors(memory_hint=memory_hints.TRAIN)
def translate_lr(
    context: typer.Context,
    data_dir: Annotated[Path, typer.Argument(metavar="DATA_DIR", show_default=False,
                                             help="Folder of training photos (searched recursively).")],
    out: OutOption = Path("runs/translate-lr"),
    hr_size: Annotated[int, typer.Option(min=8, help="High-resolution training size (the paper: 128 or 256).",
                                         rich_help_panel=MODEL_PANEL)] = 128,
    lr_size: Annotated[int, typer.Option(min=4, max=32, help="Low-resolution target size; hr-size / lr-size must be a "
                                         "power of two.", rich_help_panel=MODEL_PANEL)] = 8,
    max_channels: Annotated[int, typer.Option(min=1, help="Channels of the widest generator layer (the authors' code calls it dim_in).",
                                              rich_help_panel=MODEL_PANEL)] = 512,
    base_channels: Annotated[int, typer.Option(min=1, help="First encoder width and narrowest decoder width.",
                                               rich_help_panel=MODEL_PANEL)] = 64,
    disc_channels: Annotated[int, typer.Option(min=0, help="Discriminator's first width (0: 2^14 / hr-size, as in the authors' code).",
                                               rich_help_panel=MODEL_PANEL)] = 0,
    disc_max_channels: Annotated[int, typer.Option(min=1, help="Discriminator's widest layer.", rich_help_panel=MODEL_PANEL)] = 512,
    steps: StepsOption = 100_000,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per step, split into two halves that translate to each "
                                            "other (even).", rich_help_panel=RUN_PANEL)] = 8,
    cycle_weight: Annotated[float | None, typer.Option(callback=finite, min=0.0, show_default=False, rich_help_panel=LOSS_PANEL,
                                                       help="Weight of the cycle loss, the paper's lambda_cyc (default: 1 below 256 px, 0.1 from 256 px, as in the paper).")
                            ] = None,
    r1_gamma: Annotated[float, typer.Option(callback=finite, min=0.0, help="Weight of the R1 gradient penalty on real images (keeps the discriminator smooth).", rich_help_panel=LOSS_PANEL)] = 10.0,
    g_lr: GeneratorLrOption = 1e-3,
    d_lr: DiscriminatorLrOption = 4e-3,
    ema_decay: EmaDecayOption = 0.999,
    held_out: HeldOutOption = "0.05",
    seed: SeedOption = 0,
    checkpoint_every: CheckpointEveryOption = 5000,
    sample_every: SampleEveryOption = 1000,
    log_every: LogEveryOption = 50,
    keep: KeepOption = 3,
    workers: WorkersOption = 2,
    resume: ResumeOption = False,
    resume_from: ResumeFromOption = None,
    eval_: Annotated[bool, typer.Option("--eval", help="Evaluate the run's latest checkpoint on the held-out images "
                                        "instead of training.", rich_help_panel=EVAL_PANEL)] = False,
    eval_checkpoint: EvalCheckpointOption = None,
    eval_targets: Annotated[int, typer.Option(min=1, help="Targets per held-out source in --eval.", rich_help_panel=EVAL_PANEL)] = 4,
    fid_model: FidModelOption = "fid-inception",
    lpips_backbone: LpipsBackboneOption = "vgg16-imagenet",
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Train translation with low-resolution conditioning on a folder of photos.

    Each step translates one half of the batch to the other half's low-resolution versions and
    back (four generator passes), with a non-saturating GAN loss whose discriminator also sees
    where the output misses its target, cycle consistency, and R1. Ctrl-C saves a checkpoint;
    --resume continues exactly where it stopped. `i2i translate-lr --checkpoint OUT` uses the result.
    """

    from i2icli.archs.lr_conditioned_config import LRTranslatorConfig
    from i2icli.pipelines.translate_lr_plan import METHOD_NAME
    from i2icli.training import files

    warn_of_options_for_the_other_mode(context, eval_, shared=("out", "device", "as_json"))
    device_named = device_checked_first(device)
    if eval_:
        _evaluate(data_dir, out, eval_checkpoint, eval_targets, fid_model, lpips_backbone, device, device_named, as_json)
        raise typer.Exit(EXIT_OK)
    if batch_size % 2:
        raise usage_error(f"--batch-size {batch_size}: must be even (the batch is split into two halves)")

    if out.expanduser().resolve() == data_dir.expanduser().resolve():
        # The run's sample grids would be written among the photos and trained on after a resume.
        raise usage_error(f"--out {out}: the run folder cannot be the data folder, whose images are all used for "
                          "training; choose another --out (a sub-folder is fine: it is left out)")
    # What needs no PyTorch is checked before it is imported (seconds): the run folder, the options
    # and the data folder. A resumed run's options come from its checkpoint, which PyTorch reads.
    resume_spec, stored = resume_point(out, resume, resume_from, METHOD_NAME)
    if stored is not None:
        method = _method_from_checkpoint(stored)
        warn_of_options_the_run_keeps(context, stored)
        seed, batch_size = stored["settings"]["seed"], stored["settings"]["batch_size"]
        data_settings = method.data
        console.print(f"resuming {plain(out)} at step {stored['step']} [dim](hr {method.model_config.hr_size}, "
                      f"lr {method.model_config.lr_size}, batch {batch_size}, seed {seed})[/]")
    else:
        check_training_size(hr_size, "--hr-size")
        try:
            model = LRTranslatorConfig(hr_size=hr_size, lr_size=lr_size, max_channels=max_channels, base_channels=base_channels,
                                       disc_base_channels=disc_channels, disc_max_channels=disc_max_channels)
        except ValueError as error:
            raise usage_error(str(error)) from None
        data_settings = {"hr_size": hr_size, "held_out": held_out_amount(held_out)}
        _refuse_a_run_folder_among_the_photos(out, data_dir)

    train_files, held_files = run_split(files.find_images(data_dir, exclude=out), data_dir, data_settings, seed,
                                        noun="image")
    torch_device = picked_device(device, device_named)
    from i2icli.training import data

    if stored is None:
        from i2icli.training.translate_lr import (
            LRTrainingOptions,
            TranslateLRTraining,
            default_cycle_weight,
        )

        options = LRTrainingOptions(
            cycle_weight=default_cycle_weight(hr_size) if cycle_weight is None else cycle_weight, r1_gamma=r1_gamma,
            generator_lr=g_lr, discriminator_lr=d_lr, ema_decay=ema_decay,
        )
        # The run keeps its held-out images by name: a folder that grows later does not change them.
        data_settings["held_out_files"] = files.relative_names(held_files, data_dir)
        if len(held_files) == 1:
            # Said now: once the run has trained, only a new run can hold out more.
            warn("only 1 image is held out: --eval translates held-out images to each other and needs two "
                 "(pass --held-out 2 or more to keep them)")
        method = TranslateLRTraining(model, options, seed=seed, data=data_settings)
    dataset = data.ImageFolderDataset(train_files, data_settings["hr_size"])
    held_dataset = data.ImageFolderDataset(held_files or train_files, data_settings["hr_size"])
    held_dataset.role = "held-out" if held_files else "training"
    held_out_batch = data.fixed_batch(held_dataset, 4)
    console.print(f"training on {counted(len(train_files), 'image')}, {len(held_files)} held out "
                  f"[dim]({plain(data_dir)}, {data_settings['hr_size']} px)[/]")
    run_training(method, dataset, held_out_batch, collate_fn=data.collate_images, resume=resume_spec,
                 shown=("g_loss", "d_loss", "cycle", "lr_error_levels"), noun="image", as_json=as_json, out=out,
                 batch_size=batch_size, seed=seed, **run_schedule(context, stored), device=torch_device)
    raise typer.Exit(EXIT_OK)


def _refuse_a_run_folder_among_the_photos(out: Path, data_dir: Path) -> None:
    """A run folder inside the data folder is left out of the search for training images (its
    sample grids are none): photos already in a new run's folder would be left out with it,
    without a word."""
    from i2icli.batch import is_inside
    from i2icli.errors import InputError
    from i2icli.training import files

    if not out.is_dir() or not is_inside(out, data_dir):
        return
    try:
        photos = files.find_images(out, exclude=out / "samples")  # an earlier session's grids are no photos
    except InputError:  # none there: a fine place for the run
        return
    raise usage_error(f"--out {out}: holds {counted(len(photos), 'image')} of the data folder (e.g. {photos[0]}), which "
                      "would be left out of training with the run folder; choose a new folder for the run")


def _method_from_checkpoint(stored: dict[str, Any]) -> Any:
    from i2icli.archs.lr_conditioned_config import LRTranslatorConfig
    from i2icli.training.translate_lr import LRTrainingOptions, TranslateLRTraining

    config = stored["config"]
    return TranslateLRTraining(LRTranslatorConfig(**config["model"]), LRTrainingOptions(**config["training"]),
                               seed=stored["settings"]["seed"], data=config.get("data"))


def _evaluate(data_dir: Path, out: Path, checkpoint: Path | None, targets: int, fid_model: str, lpips_backbone: str,
              device_option: str, device_named: Any, as_json: bool) -> None:
    path = checkpoint_to_evaluate(checkpoint, out)  # before PyTorch is imported (seconds)
    device = picked_device(device_option, device_named)
    from i2icli.pipelines.translate_lr import generator_from_checkpoint
    from i2icli.training import checkpoints, data, files
    from i2icli.training.translate_lr import METHOD_NAME, evaluate

    refuse_a_checkpoint_of_another_method(path, METHOD_NAME)
    images = files.find_images(data_dir, exclude=out)  # before the checkpoint's networks are loaded (seconds)
    stored = checkpoints.load_training_checkpoint(path)
    generator, config = generator_from_checkpoint(stored)
    data_settings = {"held_out": 0.05, **stored["config"].get("data", {})}
    _, held_files = run_split(images, data_dir, data_settings, stored["settings"]["seed"], noun="image",
                              trained_on=stored["settings"].get("dataset_size"), evaluating=True)
    if not held_files and data_settings.get("held_out_files"):
        recorded = counted(len(data_settings["held_out_files"]), "held-out image")
        raise I2IError(f"{data_dir}: none of the run's {recorded} is here",
                       "pass the data folder the run was trained on")
    if len(held_files) < 2:
        raise I2IError(f"{data_dir}: only {counted(len(held_files), 'held-out image')} for this run's split",
                       "evaluation needs at least two; a run keeps its split, so start a new one with --held-out 2 or more")
    dataset = data.ImageFolderDataset(held_files, config.hr_size)
    dataset.role = "held-out"
    images, skipped = data.collate_images(data.readable_examples(dataset))
    if len(images) < 2:
        unreadable = next(message for message in skipped if not isinstance(message, data.ReadingNote))
        raise I2IError(f"{data_dir}: only {len(images)} of the {len(held_files)} held-out images can be read ({unreadable})",
                       "evaluation needs at least two; replace the unreadable files, or start a new run with a larger --held-out")
    fid_features, lpips_distance, notes = evaluation_metrics(fid_model, lpips_backbone, device)
    notes = [*skipped, *notes]
    with spinner("evaluating"):
        result = evaluate(generator.to(device), config.lr_size, images, targets_per_source=targets,
                          fid_features=fid_features, lpips_distance=lpips_distance)
    summary = {
        "checkpoint": str(path), "step": stored["step"], "held_out_images": result.images,
        "translations": result.translations, "lr_error_levels": rounded(result.lr_error, 4),
        "lr_error_levels_exact": rounded(result.lr_error_exact, 4),
        "fid": rounded(result.fid, 3),
        "lpips_diversity": rounded(result.lpips_diversity, 4),
        "notes": [*result.notes, *notes],
    }
    console.print(f"step {stored['step']}: {result.translations} translations of {result.images} held-out images")
    console.print(f"  LR-consistency error  {result.lr_error:.3f} levels  ({result.lr_error_exact:.3f} with --exact)")
    if result.fid is not None:
        console.print(f"  FID                   {result.fid:.2f}")
    if result.lpips_diversity is not None:
        console.print(f"  LPIPS (diversity)     {result.lpips_diversity:.4f}")
    for note in summary["notes"]:
        console.print(f"  [dim]{plain(note)}[/]")
    if as_json:
        stdout_write(json_document(summary))


app.command("paired", no_args_is_help=True, cls=Command)(train_paired.paired)
