"""What the training commands share: option panels, --held-out parsing, the progress bar and the
closing summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from i2icli.cli import completion
from i2icli.cli.error_handling import usage_error
from i2icli.cli.options import (
    finite,
    given_on_command_line,
    positive_finite,
    seed_in_range,
)
from i2icli.cli.paths import check_output_folder
from i2icli.cli.stderr import console, download_progress, plain, redraws_lines, warn
from i2icli.cli.stdout import json_document, stdout_write
from i2icli.errors import I2IError

MODEL_PANEL = "Model"
LOSS_PANEL = "Losses and optimiser"
RUN_PANEL = "Run"
EVAL_PANEL = "Evaluation"


# Options every training command has, declared once.
OutOption = Annotated[Path, typer.Option("--out", metavar="DIR", help="Run folder: checkpoints/, samples/, metrics.csv.", rich_help_panel=RUN_PANEL)]
StepsOption = Annotated[int, typer.Option(min=1, help="Total training steps (a resumed run continues to this count, its own "
                                          "unless given).",
                                          rich_help_panel=RUN_PANEL)]
# The largest 32-bit float: Adam takes its rate as one, and torch fails with a traceback on a larger one.
_LARGEST_RATE = 3.4028234663852886e38


def _learning_rate(value: float) -> float:
    value = positive_finite(value)
    if value > _LARGEST_RATE:
        raise typer.BadParameter(f"{value} is over {_LARGEST_RATE:.4g}, the largest rate the networks' 32-bit numbers hold")
    return value


GeneratorLrOption = Annotated[float, typer.Option(help="Generator Adam learning rate.", rich_help_panel=LOSS_PANEL,
                                                  callback=_learning_rate)]
DiscriminatorLrOption = Annotated[float, typer.Option(help="Discriminator Adam learning rate.", rich_help_panel=LOSS_PANEL,
                                                      callback=_learning_rate)]


def _ema_decay(value: float) -> float:
    """Option callback: at a decay of 1 the averaged generator never leaves its starting weights
    (translate-lr), or lags ever further behind (paired's warm-up alone), and inference uses it.
    0 is no averaging: the average is the trained generator itself."""
    value = finite(value)
    if not 0 <= value < 1:
        raise typer.BadParameter(f"{value} must be at least 0 and below 1 (0: no averaging; from 1 on, the averaged "
                                 "generator, which inference uses, no longer follows the training)")
    return value


EmaDecayOption = Annotated[float, typer.Option(metavar="X", callback=_ema_decay, help="EMA decay of the generator used "
                                               "for inference, in [0, 1) (0: no averaging).", rich_help_panel=LOSS_PANEL)]
HeldOutOption = Annotated[str, typer.Option(metavar="X|N", help="Examples kept out of training for samples and --eval: a fraction or a count.",
                                            rich_help_panel=RUN_PANEL)]
SeedOption = Annotated[int, typer.Option(min=0, callback=seed_in_range, help="Seed of everything random: initial weights, batch order, flips, noise.",
                                         rich_help_panel=RUN_PANEL)]
CheckpointEveryOption = Annotated[int, typer.Option(min=1, help="Write a checkpoint every N steps (and at the end).",
                                                    rich_help_panel=RUN_PANEL)]
SampleEveryOption = Annotated[int, typer.Option(min=1, help="Write a sample grid every N steps.", rich_help_panel=RUN_PANEL)]
LogEveryOption = Annotated[int, typer.Option(min=1, help="Add a row to metrics.csv every N steps.", rich_help_panel=RUN_PANEL)]
KeepOption = Annotated[int, typer.Option(min=1, help="Step checkpoints to keep (latest.pt is always kept).",
                                         rich_help_panel=RUN_PANEL)]
WorkersOption = Annotated[int, typer.Option(min=0, help="Data-loading worker processes.", rich_help_panel=RUN_PANEL)]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its latest checkpoint, exactly; "
                                            "--steps, --checkpoint-every, --sample-every, --log-every, --keep and --workers "
                                            "stay the run's own unless given.",
                                            rich_help_panel=RUN_PANEL)]
ResumeFromOption = Annotated[Path | None, typer.Option(metavar="FILE", show_default=False, help="Continue from this checkpoint file instead.",
                                                       rich_help_panel=RUN_PANEL)]
EvalCheckpointOption = Annotated[Path | None, typer.Option(metavar="FILE", show_default=False, help="Checkpoint to evaluate (default: the "
                                                           "run's latest).", rich_help_panel=EVAL_PANEL)]
FidModelOption = Annotated[str, typer.Option(metavar="NAME|PATH|none", help="FID Inception checkpoint ('none' to skip FID).", rich_help_panel=EVAL_PANEL,
                                             autocompletion=completion.checkpoint_names("score", extra=("none",)))]
LpipsBackboneOption = Annotated[str, typer.Option(metavar="NAME|PATH|none", help="VGG-16 for LPIPS, when the lpips package is installed ('none' to skip).",
                                                  rich_help_panel=EVAL_PANEL,
                                                  autocompletion=completion.checkpoint_names("perceptual", extra=("none",)))]


def counted(count: int, noun: str) -> str:
    """"1 pair", "3 pairs": a count with its noun, in the singular for one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def rounded(value: float | None, digits: int) -> float | None:
    """``value`` rounded for a --json summary, None kept (a metric that was not computed). A value
    that is not finite (a PSNR where the images are identical) is written as null by
    ``json_document``."""
    return None if value is None else round(value, digits)


def check_training_size(size: int, option: str) -> None:
    """Refuse a training size whose images would be larger than i2i reads or writes an image
    (their sample grids, the inputs of the trained model)."""
    from i2icli.formats import DEFAULT_MAX_PIXELS

    if size * size > DEFAULT_MAX_PIXELS:
        raise usage_error(f"{option} {size}: {size}x{size} is over the {DEFAULT_MAX_PIXELS:,} pixels i2i takes in an image; "
                          "give a smaller size")


def held_out_amount(text: str) -> float | int:
    """--held-out 0.05 is a fraction of the images, --held-out 20 a count."""
    try:
        value = float(text)
    except ValueError:
        raise usage_error(f"--held-out {text}: give a fraction below 1 (0.05) or a count (20)") from None
    if not math.isfinite(value) or value < 0 or (value >= 1 and not value.is_integer()):
        raise usage_error(f"--held-out {text}: give a fraction below 1 (0.05) or a count (20)")
    return int(value) if value >= 1 else value


def evaluation_metrics(fid_model: str, lpips_backbone: str, device: Any) -> tuple[Any, Any, list[str]]:
    """``(fid_features, lpips_distance, notes)`` for ``--eval``: None for a metric turned off
    ('none') or, for LPIPS, when the lpips package is missing (said in ``notes``)."""
    from i2icli.errors import WeightsError
    from i2icli.training import metrics

    def loaded(load: Any, spec: str, option: str) -> Any:
        try:
            with download_progress() as progress:
                return load(spec, device, progress)
        except WeightsError as error:
            error = error.naming_option(option)
            raise WeightsError(error.message, f"{error.hint}; or leave the metric out with {option} none") from None

    fid_features = lpips_distance = None
    notes: list[str] = []
    if fid_model != "none":
        network = loaded(metrics.load_fid_network, fid_model, "--fid-model")
        fid_features = lambda images: metrics.inception_features(network, images)  # noqa: E731
    if lpips_backbone != "none":
        if metrics.lpips_available():
            lpips_distance = loaded(metrics.load_lpips, lpips_backbone, "--lpips-backbone")
        else:
            notes.append("LPIPS not computed: the lpips package is not installed (install i2i's `metrics` extra)")
    return fid_features, lpips_distance, notes


def run_split(files: list[Path], root: Path, data_settings: dict[str, Any], seed: int, *, noun: str,
              trained_on: int | None = None, evaluating: bool = False) -> tuple[list[Path], list[Path]]:
    """(training, held-out) files of a run (``noun``: what a file is, "pair" or "image"). A run records its held-out files when it starts
    (``data_settings["held_out_files"]``, relative to ``root``) and keeps exactly those: a folder
    that grew since would otherwise give a new split, whose held-out part can hold files the run
    trained on. Runs from before that record are split again by ``data_settings["held_out"]``;
    ``trained_on`` (their training-set size, for --eval) lets a warning say when that split cannot
    be theirs. Unless ``evaluating``, a folder that holds none of the run's training files is
    refused."""
    from i2icli.training.files import split_as_recorded, split_held_out

    recorded = data_settings.get("held_out_files")
    if recorded is None:
        train, held = split_held_out(files, root, data_settings["held_out"], seed,
                                     noun="pair" if noun == "pair" else "training image")
        if trained_on is not None and trained_on != len(train):
            warn(f"{root} has {counted(len(files), noun)} now and the run trained on {trained_on} (besides those it "
                 "held out): it recorded no held-out list, so they are chosen again from today's folder and the "
                 f"held-out scores may include {noun}s it trained on")
        return train, held
    train, held, missing = split_as_recorded(files, root, list(recorded))
    if not train and not evaluating:
        # Every file here is one the run holds out: there is nothing it may train on.
        raise I2IError(f"{root}: holds only the run's {counted(len(held), f'held-out {noun}')}, none to train on",
                       "pass the data folder the run was trained on")
    if missing:
        warn(f"{len(missing)} of the run's {counted(len(recorded), f'held-out {noun}')} "
             f"{'is' if len(missing) == 1 else 'are'} no longer in {root} (e.g. {missing[0]})")
    return train, held


def device_always_present(device: str) -> bool:
    """Whether --device names a device every machine has (auto falls back to the CPU). Only another
    one's absence takes PyTorch to find out: for these, checks that need no PyTorch may come first
    without changing which error a command ends with."""
    return device in ("auto", "cpu")


def refuse_a_missing_run(source: Any, device: str) -> None:
    """Refuse a trained model's checkpoint that is not there (a mistyped run folder; ``source``, a
    ``weights.CheckpointSource``) before PyTorch is imported, with the error loading it would end
    with. A device the machine may lack is checked before the checkpoint when the model loads, so
    for such a device this leaves both to the loading, in that order."""
    if source.status == "missing" and device_always_present(device):
        raise source.error


def device_checked_first(device: str) -> Any:
    """--device as a torch device, picked now when the machine may lack it (cuda, mps) so that its
    error comes before any other, as it always has; None for auto and cpu, which
    :func:`picked_device` picks once the checks that need no PyTorch have passed."""
    return None if device_always_present(device) else picked_device(device)


def picked_device(device: str, checked_first: Any = None) -> Any:
    """The torch device for --device: ``checked_first`` (from :func:`device_checked_first`) when it was picked already."""
    if checked_first is not None:
        return checked_first
    from i2icli.pipelines.devices import pick_device

    return pick_device(device)


def resume_point(out: Path, resume: bool, resume_from: Path | None, method_name: str) -> tuple[bool | Path, dict | None]:
    """What --resume / --resume-from ask of ``loop.train``, and the checkpoint they name (checked to
    come from ``method_name``); ``(False, None)`` for a new run."""
    from i2icli.training import run_folder

    check_output_folder(out, option="--out")  # before the data is searched and any model is built
    spec: bool | Path = resume_from if resume_from is not None else resume
    if not spec:
        # Here rather than only in the loop, which comes after the data search and the networks' loading.
        run_folder.refuse_a_new_run_in(out)
        return False, None
    if resume_from is None and not (out / "checkpoints" / "latest.pt").exists():
        raise I2IError(f"{out}: no training run to resume (no checkpoints/latest.pt)",
                       "start a new run without --resume, or name a checkpoint file with --resume-from")
    refuse_a_folder_as_checkpoint(resume_from, "--resume-from")
    # PyTorch reads the checkpoint: imported only once the checks above have passed.
    from i2icli.training import checkpoints

    path = resume_from or out / "checkpoints" / "latest.pt"
    stored = checkpoints.load_training_checkpoint(path)
    refuse_another_method(stored, path, method_name, "resume it with the command that wrote it")
    return spec, stored


def refuse_a_folder_as_checkpoint(path: Path | None, option: str) -> None:
    """Refuse a folder given to ``option``, which takes a checkpoint file, naming the run's latest
    checkpoint in it (a run folder is what `i2i paired -c` and `i2i translate-lr -c` take)."""
    if path is None or not path.is_dir():
        return
    inside = next((file for file in (path / "checkpoints" / "latest.pt", path / "latest.pt") if file.is_file()), None)
    raise I2IError(f"{option} {path}: is a folder, not a checkpoint file",
                   f"pass {inside}" if inside else "pass a .pt file from a run's checkpoints/ folder")


def checkpoint_to_evaluate(checkpoint: Path | None, out: Path) -> Path:
    """The checkpoint --eval scores: --eval-checkpoint, or the run's latest. A folder, or a file that
    is not there, is refused now, before PyTorch is imported, with the error loading it would end with."""
    from i2icli.training.checkpoint_files import refuse_a_missing_checkpoint

    refuse_a_folder_as_checkpoint(checkpoint, "--eval-checkpoint")
    path = checkpoint or out / "checkpoints" / "latest.pt"
    refuse_a_missing_checkpoint(path)
    return path


def refuse_a_checkpoint_of_another_method(path: Path, method_name: str) -> None:
    """Refuse the checkpoint --eval would score unless ``method_name`` wrote it, reading only which
    command did: its networks are loaded once the data folder has been checked."""
    from i2icli.training.checkpoints import training_checkpoint_method

    method = training_checkpoint_method(path)
    refuse_another_method({"method": method}, path, method_name, f"score it with `i2i train {method} --eval`")


def refuse_another_method(stored: dict, path: Path, method_name: str, hint: str) -> None:
    """Refuse the training checkpoint ``stored`` (read from ``path``) unless ``method_name`` wrote it."""
    if stored.get("method") != method_name:
        raise I2IError(f"{path}: the checkpoint is from `i2i train {stored.get('method')}`, not {method_name}", hint)


# The options that say how a run goes (not what it learns), and their fields in a checkpoint's settings.
_SCHEDULE_OPTIONS = {"steps": "steps", "checkpoint_every": "checkpoint_every", "sample_every": "sample_every",
                     "log_every": "log_every", "keep": "keep_checkpoints", "workers": "num_workers"}


def run_schedule(context: Any, stored: dict | None) -> dict[str, int]:
    """--steps, --checkpoint-every, --sample-every, --log-every, --keep and --workers for
    :func:`run_training`: as this command line gives them, except that a resumed run keeps its own
    value of each one not typed (the defaults would quietly change where it stops and how often it
    logs and saves)."""
    schedule = {name: context.params[name] for name in _SCHEDULE_OPTIONS}
    run_settings = (stored or {}).get("settings") or {}
    for name, field in _SCHEDULE_OPTIONS.items():
        if field in run_settings and not given_on_command_line(context, name):
            schedule[name] = int(run_settings[field])
    return schedule


# Option names whose stored field is named otherwise.
_STORED_AS = {"g_lr": "generator_lr", "d_lr": "discriminator_lr", "disc_channels": "disc_base_channels",
              "size": "image_size"}
# Options that give the model's input channels, each for one kind of label map only.
_INPUT_CHANNELS_OF_KIND = {"label_nc": "label", "edge_channels": "edge"}
_MISSING = object()  # an option the stored run has no field for: never equal, so named as ignored


def warn_of_options_the_run_keeps(context: Any, stored: dict, honoured: tuple[str, ...] = ()) -> list[str]:
    """On resume the model, the losses, the optimiser, the batch, the split and the seed are the
    run's own. Name each such option on this command line whose value differs from the run's (or
    cannot be compared): it has no effect. Repeating the run's own values is fine. ``honoured``
    names the parameters among them that a resumed run does use."""
    known: dict[str, Any] = dict(stored.get("settings") or {})
    for part in (stored.get("config") or {}).values():
        if isinstance(part, dict):
            known.update(part)
    if "held_out" in known:
        known["held_out"] = str(known["held_out"])
    ignored = []
    for param in context.command.params:
        fixed = getattr(param, "rich_help_panel", None) in (MODEL_PANEL, LOSS_PANEL) or param.name in ("batch_size", "held_out", "seed")
        if not fixed or param.name in honoured or not given_on_command_line(context, param.name):
            continue
        value = context.params[param.name]
        if param.name == "held_out":
            value = str(held_out_amount(value))
        stored_value = known.get(_STORED_AS.get(param.name, param.name), _MISSING)
        if param.name == "edges":
            stored_value = known.get("input_kind") == "edge"
        elif param.name in _INPUT_CHANNELS_OF_KIND:
            # The run's input channels answer --label-nc for a run on label maps and
            # --edge-channels for one on edge images; for the other kind the option means nothing.
            of_this_kind = known.get("input_kind", "label") == _INPUT_CHANNELS_OF_KIND[param.name]
            stored_value = known.get("input_channels", _MISSING) if of_this_kind else _MISSING
        if stored_value != value:
            ignored.append(param.opts[0])
    if ignored:
        warn(f"{', '.join(ignored)} ignored: a resumed run keeps the settings it was started with (start a new run "
             "with another --out to change them)")
    return ignored


def warn_of_options_for_the_other_mode(context: Any, evaluating: bool, shared: tuple[str, ...]) -> list[str]:
    """--eval scores a checkpoint and trains nothing, and training evaluates nothing: name each
    option typed on this command line that the chosen mode has no use for (the Evaluation panel's
    when training, the others when evaluating, except the ``shared`` parameters both use)."""
    unused = []
    for param in context.command.params:
        if param.param_type_name != "option" or param.name in ("eval_", *shared):
            continue
        if (getattr(param, "rich_help_panel", None) == EVAL_PANEL) != evaluating and given_on_command_line(context, param.name):
            unused.append(param.opts[0])
    if unused:
        reason = "--eval scores a checkpoint and trains nothing" if evaluating else "only --eval uses them"
        warn(f"{', '.join(unused)} ignored: {reason}")
    return unused


def run_training(method: Any, dataset: Any, held_out_batch: Any, *, collate_fn: Any, resume: bool | Path,
                 shown: tuple[str, ...], noun: str, as_json: bool, out: Path, steps: int, batch_size: int, seed: int,
                 checkpoint_every: int, sample_every: int, log_every: int, keep: int, workers: int, device: Any) -> None:
    """Train with a progress bar showing the ``shown`` losses, then report the run. ``noun`` is
    what one training example is ("image", "pair")."""
    from i2icli.training import loop

    if batch_size > len(dataset):
        warn(f"--batch-size {batch_size} is more than the {counted(len(dataset), noun)} to train on: each batch repeats "
             f"{noun}s")

    settings = loop.TrainingSettings(
        out_dir=out, steps=steps, batch_size=batch_size, seed=seed, checkpoint_every=checkpoint_every,
        sample_every=sample_every, log_every=log_every, keep_checkpoints=keep, num_workers=workers,
        device=device,
    )
    warn_of_workers_over_cpus(workers)
    with training_progress(shown) as on_progress:
        result = loop.train(method, dataset, settings, held_out_batch=held_out_batch, resume=resume, collate_fn=collate_fn,
                            on_progress=on_progress, on_warning=warn)
    report_run(result, as_json)


def warn_of_workers_over_cpus(workers: int) -> None:
    """Said once: the loop starts at most one worker per CPU this process may use."""
    from i2icli.training.loop import usable_cpus

    if workers > (cpus := usable_cpus()):
        warn(f"--workers {workers} is more than the {counted(cpus, 'CPU')} this process may use: using {cpus}")


def report_run(result: Any, as_json: bool) -> None:
    """The line a finished (or interrupted) run ends with, and its --json summary."""
    console.print(f"[green]✓[/] step {result.step} → {plain(result.checkpoint)} [dim]({counted(result.steps_run, 'step')} in "
                  f"{result.seconds:.1f} s; samples in {plain(result.samples)}, metrics in {plain(result.metrics)})[/]")
    if as_json:
        stdout_write(json_document({"step": result.step, "checkpoint": str(result.checkpoint), "metrics": str(result.metrics),
                                    "samples": str(result.samples), "steps_run": result.steps_run}))


class training_progress:
    """A Rich bar over the steps whose text shows the latest losses."""

    def __init__(self, shown: tuple[str, ...]) -> None:
        self.shown = shown

    def __enter__(self):  # type: ignore[no-untyped-def]
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console,
                                 disable=not redraws_lines())
        self.started = False

        def on_progress(step: int, total: int, losses: dict[str, float]) -> None:
            if not self.started:  # drawn from the first step on: a refused run prints only its error
                self.progress.__enter__()
                self.task = self.progress.add_task("training", total=total, completed=step - 1, losses="")
                self.started = True
            text = "  ".join(f"{name} {losses[name]:.3f}" for name in self.shown if name in losses)
            self.progress.update(self.task, completed=step, total=total, losses=text)

        return on_progress

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.__exit__(*exc)  # type: ignore[arg-type]
