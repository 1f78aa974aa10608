"""`i2i train paired`: train GRIT on (label map, photo) pairs, or evaluate a run on its held-out pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from i2icli.cli import completion
from i2icli.cli.error_handling import EXIT_OK, handles_errors, usage_error
from i2icli.cli.options import DeviceOption, JsonOption, finite, given_on_command_line
from i2icli.cli.paths import check_extra_output
from i2icli.cli.stderr import console, download_progress, plain, spinner, warn
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
from i2icli.errors import I2IError, InputError, WeightsError
from i2icli.pipelines import memory_hints

_LABEL_FOLDERS = ("labels", "label", "masks")
_PHOTO_FOLDERS = ("photos", "images", "img")


@handles_errors(memory_hint=memory_hints.TRAIN_PAIRED, checkpoint_options={"correspondence": "--vgg"})
def paired(
    context: typer.Context,
    data_dir: Annotated[Path, typer.Argument(metavar="DATA_DIR", show_default=False,
                                             help="Folder with labels/ and photos/ (or images/) subfolders whose files "
                                             "pair up by name: labels/12.png with photos/12.jpg.")],
    label_nc: Annotated[int | None, typer.Option("--label-nc", min=1, max=255, show_default=False, rich_help_panel=MODEL_PANEL,
                                                 help="Label maps are class-index PNGs with this many classes (e.g. 19 "
                                                 "for CelebAMask-HQ); 255 means unknown.")] = None,
    edges: Annotated[bool, typer.Option("--edges", rich_help_panel=MODEL_PANEL,
                                        help="Label maps are edge images (or sketches), used as they are.")] = False,
    edge_channels: Annotated[int, typer.Option(min=1, max=3, rich_help_panel=MODEL_PANEL,
                                               help="Channels of edge images: 1 (grey) or 3 (colour).")] = 1,
    labels: Annotated[Path | None, typer.Option(metavar="DIR", show_default=False, rich_help_panel=RUN_PANEL,
                                                help="Folder of label maps (default: DATA_DIR/labels).")] = None,
    photos: Annotated[Path | None, typer.Option(metavar="DIR", show_default=False, rich_help_panel=RUN_PANEL,
                                                help="Folder of photos (default: DATA_DIR/photos or DATA_DIR/images).")] = None,
    out: OutOption = Path("runs/paired"),
    size: Annotated[int, typer.Option(min=16, help="Training size in pixels (squares).", rich_help_panel=MODEL_PANEL)] = 256,
    levels: Annotated[int, typer.Option(min=0, max=8, help="Times the content encoder halves the size; --size must be a "
                                        "multiple of 2^levels (0: until it is below 16 px, at most 6 times).",
                                        rich_help_panel=MODEL_PANEL)] = 0,
    base_channels: Annotated[int, typer.Option(min=1, help="First content-encoder width.", rich_help_panel=MODEL_PANEL)] = 64,
    max_channels: Annotated[int, typer.Option(min=1, help="Widest generator layer.", rich_help_panel=MODEL_PANEL)] = 512,
    style_dim: Annotated[int, typer.Option(min=1, help="Length of the style code.", rich_help_panel=MODEL_PANEL)] = 8,
    disc_scales: Annotated[int, typer.Option(min=1, help="Scales of the patch discriminator.", rich_help_panel=MODEL_PANEL)] = 2,
    disc_layers: Annotated[int, typer.Option(min=1, help="Stride-2 layers per scale.", rich_help_panel=MODEL_PANEL)] = 3,
    disc_channels: Annotated[int, typer.Option(min=1, help="Discriminator's first width.", rich_help_panel=MODEL_PANEL)] = 64,
    steps: StepsOption = 100_000,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.", rich_help_panel=RUN_PANEL)] = 8,
    l1_weight: Annotated[float, typer.Option(callback=finite, min=0.0, help="Weight of the L1 loss on the reconstruction.",
                                             rich_help_panel=LOSS_PANEL)] = 10.0,
    vgg_weight: Annotated[float, typer.Option(callback=finite, min=0.0, help="Weight of a VGG-19 perceptual loss on the reconstruction "
                                              "(off by default, as in the paper).", rich_help_panel=LOSS_PANEL)] = 0.0,
    vgg: Annotated[str, typer.Option(metavar="NAME|PATH|none", help="VGG-19 checkpoint for --vgg-weight.", rich_help_panel=LOSS_PANEL,
                                      autocompletion=completion.checkpoint_names("correspondence", extra=("none",)))] = "vgg19-imagenet",
    g_lr: GeneratorLrOption = 1e-4,
    d_lr: DiscriminatorLrOption = 4e-4,
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
    eval_: Annotated[bool, typer.Option("--eval", help="Evaluate the run's latest checkpoint on the held-out pairs "
                                        "instead of training.", rich_help_panel=EVAL_PANEL)] = False,
    eval_checkpoint: EvalCheckpointOption = None,
    eval_style: Annotated[str, typer.Option(metavar="photo|mean", help="Style in --eval: 'photo' (each held-out photo's own, as the paper scores it) or "
                                            "'mean'.", rich_help_panel=EVAL_PANEL,
                                            autocompletion=completion.words("photo", "mean"))] = "photo",
    spectrum: Annotated[Path | None, typer.Option(metavar="FILE", show_default=False, help="Where --eval plots the power spectra "
                                                  "(default: OUT/eval/spectrum-step-N.png).", rich_help_panel=EVAL_PANEL)] = None,
    fid_model: FidModelOption = "fid-inception",
    lpips_backbone: LpipsBackboneOption = "vgg16-imagenet",
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Train GRIT paired translation (label map → photo) on matching pairs of files.

    The generator makes a reconstruction, trained by L1 against the photo, and a GAN residual
    with per-pixel noise, trained only through the adversarial loss on their sum. Ctrl-C saves a
    checkpoint; --resume continues exactly where it stopped. `i2i paired --checkpoint OUT` uses it.
    """
    from i2icli.archs.grit_config import GRITConfig
    from i2icli.pipelines.paired_plan import METHOD_NAME

    warn_of_options_for_the_other_mode(context, eval_, shared=("out", "labels", "photos", "device", "as_json"))
    device_named = device_checked_first(device)
    if eval_:
        if eval_style not in ("photo", "mean"):
            raise usage_error(f"--eval-style {eval_style}: give 'photo' or 'mean'")
        _evaluate(data_dir, labels, photos, out, eval_checkpoint, eval_style, spectrum, fid_model, lpips_backbone,
                  device, device_named, as_json)
        raise typer.Exit(EXIT_OK)

    # What needs no PyTorch is checked before it is imported (seconds): the run folder, the options
    # and the data folder. A resumed run's options come from its checkpoint, which PyTorch reads.
    resume_spec, stored = resume_point(out, resume, resume_from, METHOD_NAME)
    if stored is not None:
        torch_device = picked_device(device, device_named)
        method = _method_from_checkpoint(stored, torch_device, vgg if given_on_command_line(context, "vgg") else None)
        warn_of_options_the_run_keeps(context, stored, honoured=("vgg",) if method.options.vgg_weight > 0 else ())
        seed, batch_size = stored["settings"]["seed"], stored["settings"]["batch_size"]
        data_settings = method.data
        console.print(f"resuming {plain(out)} at step {stored['step']} [dim]({method.model_config.image_size} px, "
                      f"batch {batch_size}, seed {seed})[/]")
    else:
        if (label_nc is None) == (not edges):
            raise usage_error("say what the label maps are: --label-nc N for class-index maps, or --edges for edge images")
        if edges and edge_channels not in (1, 3):
            raise usage_error(f"--edge-channels {edge_channels}: edge images have 1 or 3 channels")
        check_training_size(size, "--size")
        try:
            model = GRITConfig(
                input_channels=label_nc if label_nc is not None else edge_channels,
                input_kind="label" if label_nc is not None else "edge", image_size=size, levels=levels,
                base_channels=base_channels, max_channels=max_channels, style_dim=style_dim, disc_scales=disc_scales,
                disc_layers=disc_layers, disc_base_channels=disc_channels,
            )
        except ValueError as error:
            raise usage_error(str(error)) from None
        data_settings = {"held_out": held_out_amount(held_out), "vgg": vgg}

    pairs, label_root = _pairs(data_dir, labels, photos)
    train_pairs, held_pairs = _split(pairs, label_root, data_settings, seed)
    torch_device = picked_device(device, device_named)
    from i2icli.training import data, files, paired_data

    if stored is None:
        from i2icli.training.paired import PairedTraining, PairedTrainingOptions

        options = PairedTrainingOptions(l1_weight=l1_weight, vgg_weight=vgg_weight, generator_lr=g_lr,
                                        discriminator_lr=d_lr, ema_decay=ema_decay)
    config = model if stored is None else method.model_config
    # Before the networks (and a VGG-19) are made: label maps the model cannot read as meant are
    # named, or the run refused, now rather than after hours of training.
    _check_label_maps(pairs, train_pairs, label_root, config, may_refuse=stored is None)
    if stored is None:
        # The run keeps its held-out pairs by name: a folder that grows later does not change them.
        data_settings["held_out_files"] = files.relative_names([label for label, _ in held_pairs], label_root)
        method = PairedTraining(model, options, seed=seed, data=data_settings,
                                vgg=_load_vgg(vgg, torch_device) if vgg_weight > 0 else None)
    dataset = paired_data.PairedDataset(train_pairs, config.image_size, config.input_kind, config.input_channels)
    held_dataset = paired_data.PairedDataset(held_pairs or train_pairs, config.image_size, config.input_kind,
                                             config.input_channels)
    held_dataset.role = "held-out" if held_pairs else "training"
    held_out_batch = data.fixed_batch(held_dataset, 4, data.collate_examples)
    console.print(f"training on {counted(len(train_pairs), 'pair')}, {len(held_pairs)} held out "
                  f"[dim]({plain(data_dir)}, {config.image_size} px, {config.input_description})[/]")
    run_training(method, dataset, held_out_batch, collate_fn=data.collate_examples, resume=resume_spec,
                 shown=("g_loss", "d_loss", "l1", "residual_abs"), noun="pair", as_json=as_json, out=out,
                 batch_size=batch_size, seed=seed, **run_schedule(context, stored), device=torch_device)
    raise typer.Exit(EXIT_OK)


def _folders(data_dir: Path, labels: Path | None, photos: Path | None) -> tuple[Path, Path]:
    def pick(given: Path | None, names: tuple[str, ...], what: str, option: str) -> Path:
        if given is not None:
            return given.expanduser()
        for name in names:
            if (data_dir / name).is_dir():
                return data_dir / name
        raise InputError(data_dir, f"has no {what} folder ({', '.join(n + '/' for n in names)})",
                         f"put the {what} in {data_dir / names[0]}, or pass {option}")

    data_dir = data_dir.expanduser()
    if not data_dir.is_dir():
        raise InputError(data_dir, "is a file, not a folder" if data_dir.exists() else "no such folder",
                         "pass the folder that holds labels/ and photos/")
    return pick(labels, _LABEL_FOLDERS, "label maps", "--labels"), pick(photos, _PHOTO_FOLDERS, "photos", "--photos")


def _pairs(data_dir: Path, labels: Path | None, photos: Path | None) -> tuple[list[tuple[Path, Path]], Path]:
    """The (label map, photo) pairs of the data folder, and the label maps' folder (which the
    split names them relative to)."""
    from i2icli.training import files

    label_root, photo_root = _folders(data_dir, labels, photos)
    pairs, notes = files.find_pairs(label_root, photo_root)
    mismatched = files.pairs_of_other_shapes(pairs)
    if mismatched:
        label, photo, (lw, lh), (pw, ph) = mismatched[0]
        notes.append(f"{len(mismatched)} of the {len(pairs)} pairs {'has' if len(mismatched) == 1 else 'have'} a label "
                     "map and a photo of different shapes "
                     f"(e.g. {label.name} {lw}x{lh}, {photo.name} {pw}x{ph}): each is cropped to its centred square, "
                     "so the two may not line up")
    for note in notes:
        warn(note)
    return pairs, label_root


def _check_label_maps(pairs: list[tuple[Path, Path]], train_pairs: list[tuple[Path, Path]], label_root: Path,
                      config: Any, *, may_refuse: bool) -> None:
    """Warn of JPEG label maps and of training label maps the model would misread; refuse a new
    run none of whose maps can be what was meant (see ``paired_data.label_map_notes``)."""
    from i2icli.semantics.labelmaps import jpeg_label_maps_note
    from i2icli.training import paired_data

    notes = [jpeg_label_maps_note(label for label, _ in pairs)] if config.input_kind == "label" else []
    notes += paired_data.label_map_notes([label for label, _ in train_pairs], label_root, config.input_kind,
                                         config.input_channels, may_refuse=may_refuse)
    for note in filter(None, notes):
        warn(note)


def _split(pairs: list[tuple[Path, Path]], label_root: Path, data_settings: dict[str, Any], seed: int,
           trained_on: int | None = None, evaluating: bool = False) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(training pairs, held-out pairs): the split is made on the label maps' paths, so it is stable."""
    photo_of = dict(pairs)
    train, held = run_split([label for label, _ in pairs], label_root, data_settings, seed, noun="pair",
                            trained_on=trained_on, evaluating=evaluating)
    return [(label, photo_of[label]) for label in train], [(label, photo_of[label]) for label in held]


def _load_vgg(spec: str, device: Any) -> Any:
    from i2icli.archs.features import VGGFeatures
    from i2icli.pipelines.loading import load_checkpoint
    from i2icli.training.paired import VGG_LAYERS

    def build(state_dict: dict) -> VGGFeatures:
        network = VGGFeatures(19, VGG_LAYERS)
        network.load_torchvision_state_dict(state_dict)
        return network

    with download_progress() as progress:
        return load_checkpoint(spec, "VGG-19", build, progress).to(device)


def _method_from_checkpoint(stored: dict[str, Any], device: Any, vgg_file: str | None = None) -> Any:
    """The run's method, from its checkpoint; ``vgg_file`` (--vgg given on resume) replaces the VGG-19
    the run names, e.g. a file that has moved."""
    from i2icli.archs.grit_config import GRITConfig
    from i2icli.training.paired import PairedTraining, PairedTrainingOptions

    config = stored["config"]
    options = PairedTrainingOptions(**config["training"])
    data_settings = config.get("data", {})
    # The VGG-19 is a frozen loss network, not part of the trained state: loading it from another
    # file leaves the weights, the optimisers and resuming's exactness alone (another network
    # would change the loss values from here on). The run's record keeps the path it started with.
    vgg = None
    if options.vgg_weight > 0:
        try:
            vgg = _load_vgg(vgg_file or data_settings.get("vgg", "vgg19-imagenet"), device)
        except WeightsError as error:
            if vgg_file is not None:
                raise
            raise WeightsError(f"{error.message} (the run's VGG-19 for --vgg-weight)",
                               "if the file has moved, name it with --vgg when resuming") from None
    return PairedTraining(GRITConfig(**config["model"]), options, seed=stored["settings"]["seed"], data=data_settings, vgg=vgg)


def _spectrum_file(spectrum: Path | None, data_dir: Path, out: Path) -> Path | None:
    """--spectrum, if it is a PNG outside the data and the run's own files (which it would replace)."""
    from i2icli.batch import is_inside

    if spectrum is None:
        return None
    spectrum = check_extra_output(spectrum, "--spectrum", (".png",))  # the plot is a PNG
    for folder, what in ((data_dir, "the training data"), (out / "checkpoints", "the run's checkpoints"),
                         (out / "samples", "the run's sample grids")):
        if is_inside(spectrum, folder):
            raise usage_error(f"--spectrum {spectrum} is inside {what} ({folder}); choose a file elsewhere")
    return spectrum


def _evaluate(data_dir: Path, labels: Path | None, photos: Path | None, out: Path, checkpoint: Path | None, style: str,
              spectrum: Path | None, fid_model: str, lpips_backbone: str, device_option: str, device_named: Any,
              as_json: bool) -> None:
    chosen_plot = _spectrum_file(spectrum, data_dir, out)  # checked before anything is loaded
    path = checkpoint_to_evaluate(checkpoint, out)  # before PyTorch is imported (seconds)
    device = picked_device(device_option, device_named)
    from i2icli.pipelines.paired import generator_from_checkpoint
    from i2icli.pipelines.spectrum import high_frequency_share, plot_spectra
    from i2icli.training import checkpoints, data, paired_data
    from i2icli.training.paired import METHOD_NAME, evaluate

    refuse_a_checkpoint_of_another_method(path, METHOD_NAME)
    pairs, label_root = _pairs(data_dir, labels, photos)  # before the checkpoint's networks are loaded (seconds)
    stored = checkpoints.load_training_checkpoint(path)
    try:
        generator, config = generator_from_checkpoint(stored)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise I2IError(f"{path}: not a checkpoint from `i2i train paired` ({error})", "pass one with --eval-checkpoint") from None
    seed = stored["settings"]["seed"]
    plot = chosen_plot or out / "eval" / f"spectrum-step-{stored['step']}.png"
    data_settings = {"held_out": 0.05, **stored["config"].get("data", {})}
    _, held_pairs = _split(pairs, label_root, data_settings, seed, trained_on=stored["settings"].get("dataset_size"),
                           evaluating=True)
    if not held_pairs:
        if data_settings.get("held_out_files"):
            recorded = counted(len(data_settings["held_out_files"]), "held-out pair")
            raise I2IError(f"{data_dir}: none of the run's {recorded} is here",
                           "pass the data folder the run was trained on")
        raise I2IError(f"{data_dir}: no held-out pairs for this run's split", "train with --held-out above 0")
    dataset = paired_data.PairedDataset(held_pairs, config.image_size, config.input_kind, config.input_channels)
    dataset.role = "held-out"
    batch, skipped = data.collate_examples(data.readable_examples(dataset))
    notes = list(skipped)
    fid_features, lpips_distance, more_notes = evaluation_metrics(fid_model, lpips_backbone, device)
    notes += more_notes
    with spinner("evaluating"):
        result = evaluate(generator.to(device), batch["label"], batch["photo"], style=style, seed=seed,
                          fid_features=fid_features, lpips_distance=lpips_distance)
    assert result.spectra is not None
    plot_spectra(result.spectra, plot, title=f"Power spectrum, {result.images} held-out pairs (step {stored['step']})")
    shares = {name: high_frequency_share(s) for name, s in result.spectra.items()}
    summary = {
        "checkpoint": str(path), "step": stored["step"], "held_out_pairs": result.images, "style": style,
        **{name: {"l1": rounded(scores.l1, 5), "psnr": rounded(scores.psnr, 3), "ssim": rounded(scores.ssim, 4)}
           for name, scores in (("output", result.output), ("reconstruction", result.reconstruction))},
        "lpips": rounded(result.lpips, 4),
        "fid": rounded(result.fid, 3),
        "spectrum_plot": str(plot), "high_frequency_share": {name: rounded(share, 5) for name, share in shares.items()},
        "notes": [*result.notes, *notes],
    }
    console.print(f"step {stored['step']}: {counted(result.images, 'held-out pair')}, "
                  f"style from {'each photo' if style == 'photo' else 'the mean'}")
    console.print("                  L1       PSNR     SSIM")
    for name, scores in (("output", result.output), ("reconstruction", result.reconstruction)):
        console.print(f"  {name:<15} {scores.l1:.4f}   {scores.psnr:6.2f}   {scores.ssim:.4f}")
    if result.lpips is not None:
        console.print(f"  LPIPS           {result.lpips:.4f}")
    if result.fid is not None:
        console.print(f"  FID             {result.fid:.2f}")
    console.print("  power above 1/4 cycle per pixel: " + ", ".join(f"{n} {100 * v:.1f}%" for n, v in shares.items()))
    console.print(f"[green]✓[/] spectrum → {plain(plot)}")
    for note in summary["notes"]:
        console.print(f"  [dim]{plain(note)}[/]")
    if as_json:
        stdout_write(json_document(summary))
