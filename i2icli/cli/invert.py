"""`i2i invert`: Multiple GAN Inversion (a source face's structure, an exemplar's style, a StyleGAN2's realism)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from i2icli.batch import is_folder
from i2icli.cli import completion
from i2icli.cli.error_handling import EXIT_FAILED, EXIT_OK, handles_errors, usage_error
from i2icli.cli.options import (
    DeviceOption,
    DryRunOption,
    JsonOption,
    MaxPixelsOption,
    seed_in_range,
    warn_of_options_unused,
)
from i2icli.cli.paths import check_output_folder, names_image_file, refuse_overwrite
from i2icli.cli.piping import (
    STANDARD_STREAM,
    argument_read_from_standard_input,
    output_name,
    read_piped_image,
    refuse_output_folder_for_standard_input,
    write_output,
    writes_to_standard_output,
)
from i2icli.cli.stderr import console, download_progress, transient_progress, warn
from i2icli.cli.stdout import json_document
from i2icli.errors import I2IError, InputError
from i2icli.formats import DEFAULT_MAX_PIXELS
from i2icli.pipelines import memory_hints

_MODEL = "Model"
_SEARCH = "Inversion"
_OUTPUT = "Output"


@handles_errors(memory_hint=memory_hints.INVERT,
                checkpoint_options={"generator": "--generator", "correspondence": "--correspondence-model",
                                    "perceptual": "--perceptual-model", "score": "--score-model", "detector": "--detector"})
def invert(
    context: typer.Context,
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="The face whose structure (pose, shape, expression) to "
                                          "keep; - reads it from standard input.", show_default=False)],
    exemplar: Annotated[str, typer.Argument(metavar="EXEMPLAR", help="The face whose style (colours, texture, lighting) to "
                                            "use; - reads it from standard input.", show_default=False)],
    output: Annotated[
        str, typer.Option("-o", "--output", metavar="DIR|FILE", help="Output image file (-: standard output, as PNG), or a folder for "
                          "SOURCE_EXEMPLAR.png.",
                          rich_help_panel=_OUTPUT)
    ] = "results",
    generator: Annotated[
        str, typer.Option(metavar="NAME|PATH", help="StyleGAN2 checkpoint (basicsr/GFPGAN FFHQ files load as published): a path, or a "
                          "name from `i2i weights list`. Its resolution is the output's.", rich_help_panel=_MODEL,
                          autocompletion=completion.checkpoint_names("generator"))
    ] = "stylegan2-ffhq-512",
    layers: Annotated[
        str, typer.Option(metavar="LIST", help="Composing layers to try, one hypothesis each, e.g. 4-8 or 3,5,7. A layer is a count "
                          "of StyleGAN2 style convs (15 at 512 px, 17 at 1024 px).", rich_help_panel=_SEARCH)
    ] = "4-8",
    codes: Annotated[int, typer.Option(min=1, max=256, help="Latent codes per hypothesis.", rich_help_panel=_SEARCH)] = 20,
    steps: Annotated[int, typer.Option(min=0, help="Adam steps.", rich_help_panel=_SEARCH)] = 1000,
    lr: Annotated[float, typer.Option(help="Adam learning rate.", rich_help_panel=_SEARCH)] = 0.05,
    size: Annotated[
        int, typer.Option(min=32, help="Working size of the warp and the fitting target, a multiple of 8 "
                          "(the paper: 256, i.e. x4 super-resolution with a 1024 px generator).", rich_help_panel=_SEARCH)
    ] = 256,
    seed: Annotated[int, typer.Option(min=0, callback=seed_in_range, help="Seed of the starting codes (same seed, same result on one device).",
                                      rich_help_panel=_SEARCH)] = 0,
    temperature: Annotated[
        float, typer.Option(help="Sharpness of the exemplar-to-source matching (the paper's alpha): "
                            "higher copies each position's single best match, lower blends several.", rich_help_panel=_SEARCH)
    ] = 100.0,
    perceptual_weight: Annotated[
        float, typer.Option(min=0.0, help="Weight of the VGG-16 perceptual loss against pixel MSE "
                            "(0: pixels only, and VGG-16 is not loaded).",
                            rich_help_panel=_SEARCH)
    ] = 1.0,
    batch_hypotheses: Annotated[
        bool | None,
        typer.Option("--batch-hypotheses/--one-by-one", help="Fit all layers in one batch, or one layer after "
                     "another (same results). Default: one batch on a GPU, one by one on a CPU (faster there).",
                     show_default=False, rich_help_panel="Device"),
    ] = None,
    aligned: Annotated[
        bool, typer.Option("--aligned", help="Inputs are already aligned face crops: skip detection and alignment "
                           "(non-square inputs are centre-cropped).")
    ] = False,
    save_all: Annotated[
        bool, typer.Option("--save-all", help="Also save every hypothesis, the aligned faces, the warped exemplar and "
                           "a JSON file of the scores.", rich_help_panel=_OUTPUT)
    ] = False,
    correspondence_model: Annotated[
        str, typer.Option(metavar="NAME|PATH", help="VGG-19 for the correspondence (torchvision layout).", rich_help_panel=_MODEL,
                          autocompletion=completion.checkpoint_names("correspondence"))
    ] = "vgg19-imagenet",
    perceptual_model: Annotated[
        str, typer.Option(metavar="NAME|PATH", help="VGG-16 for the perceptual loss (torchvision layout).", rich_help_panel=_MODEL,
                          autocompletion=completion.checkpoint_names("perceptual"))
    ] = "vgg16-imagenet",
    score_model: Annotated[
        str, typer.Option(metavar="NAME|PATH", help="FID Inception-v3 for the scores (pytorch-fid layout).", rich_help_panel=_MODEL,
                          autocompletion=completion.checkpoint_names("score"))
    ] = "fid-inception",
    detector: Annotated[str, typer.Option(metavar="NAME|PATH", help="Face detector: retinaface-resnet50 or a RetinaFace checkpoint path.",
                                          rich_help_panel=_MODEL, autocompletion=completion.checkpoint_names("detector"))] = "retinaface-resnet50",
    device: DeviceOption = "auto",
    bf16: Annotated[
        bool, typer.Option("--bf16", help="Run the networks under bfloat16 autocast (about 2x faster on CPUs with "
                           "AVX512-BF16/AMX and on recent GPUs); codes, Adam and losses stay fp32.",
                           rich_help_panel="Device")
    ] = False,
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Give SOURCE's face the style of EXEMPLAR's (Multiple GAN Inversion).

    Both faces are aligned as `i2i restore` aligns them, the exemplar is warped onto the source
    through VGG-19 features, and a StyleGAN2 is fitted to the warp with several latent codes
    blended at a composing layer, once per layer in --layers. The result with the lowest
    Fréchet distance to the exemplar wins. With one image per hypothesis this is the
    single-image form of FID: statistics over the spatial positions of a mid-level
    FID-Inception feature map (192 channels at 35x35), not over a set of images.
    """
    piped = argument_read_from_standard_input([("SOURCE", source), ("EXEMPLAR", exemplar)])
    if piped:  # the output would be named SOURCE_EXEMPLAR.png, and an image piped in has no name
        refuse_output_folder_for_standard_input(output, "result.png")
    if aligned:
        warn_of_options_unused(context, ["detector"], "with --aligned")
    if not steps:  # the starting codes are rendered as they are
        warn_of_options_unused(context, ["lr"], "with --steps 0")
    if not perceptual_weight:  # the VGG-16 is then not loaded at all
        warn_of_options_unused(context, ["perceptual_model"], "with --perceptual-weight 0")
    to_stdout = writes_to_standard_output(output, as_json=as_json, dry_run=dry_run, files_beside=[("--save-all", save_all)])
    from i2icli.pipelines.invert_settings import InvertSettings, parse_layers

    try:
        settings = InvertSettings(
            layers=parse_layers(layers), codes=codes, steps=steps, lr=lr, size=size, seed=seed,
            temperature=temperature, perceptual_weight=perceptual_weight, aligned=aligned,
            batch_hypotheses=batch_hypotheses, precision="bf16" if bf16 else "fp32",
        )
    except ValueError as error:
        raise usage_error(str(error)) from None
    source_path = Path(STANDARD_STREAM) if piped == "SOURCE" else Path(source).expanduser()
    exemplar_path = Path(STANDARD_STREAM) if piped == "EXEMPLAR" else Path(exemplar).expanduser()
    target = Path(STANDARD_STREAM) if to_stdout else _output_path(source_path, exemplar_path, output)
    if not to_stdout:
        for path in _written_files(target, settings.layers, save_all).values():
            refuse_overwrite(path, [source_path, exemplar_path])
            if is_folder(path):  # else found only when writing, after the whole inversion
                raise InputError(path, "is a folder, where this output file would go", "move it aside or choose another -o")
    def record_of(job: Any) -> dict[str, Any]:
        return {"source": str(source_path), "exemplar": str(exemplar_path), "output": str(target)}

    if dry_run:
        _exit_with_preview(source_path, exemplar_path, target, as_json=as_json, record_of=record_of, checkpoints=lambda: _checkpoints(
            generator=generator, detector=None if aligned else detector, correspondence=correspondence_model,
            perceptual=perceptual_model if perceptual_weight else None, scorer=score_model))

    from i2icli.batch import Job
    from i2icli.cli.runner import batch_failures, run_batch

    job = Job(source_path, target)
    try:
        source_picture, exemplar_picture = _read_faces(source_path, exemplar_path, piped, max_pixels, aligned=aligned)
    except I2IError as error:
        # Found before the networks load, and recorded as a batch command records an input it cannot read.
        job = Job(source_path, target, str(error))
    pipeline = None
    if job.problem is None:  # else PyTorch is not even imported: an input that cannot be read fails at once
        from i2icli.pipelines.invert import InvertPipeline

        try:
            with download_progress() as progress:
                pipeline = InvertPipeline.load(
                    generator=generator, correspondence=correspondence_model, perceptual=perceptual_model,
                    scorer=score_model, detector=detector, device=device, settings=settings, progress=progress,
                )
        except ValueError as error:  # layers or size this generator cannot do
            raise usage_error(str(error)) from None

    def process(job: Job) -> tuple[dict[str, Any], str, str]:
        with _loss_progress(settings.layers) as on_step:
            result = pipeline.invert(source_picture, exemplar_picture, on_step=on_step)
        written = _write(result, target, save_all)
        hypotheses.extend(result.hypotheses)
        return (_record_fields(result, written), f"{source_path} + {exemplar_path} → {output_name(target)}",
                f"layer {result.layer}; ")

    hypotheses: list[Any] = []  # shown below the line of the result
    records = run_batch([job], process, verb="inverting", skip_existing=False, record_of=record_of)
    if save_all or not as_json:
        chosen = records[0].get("layer")
        for hypothesis in hypotheses:
            mark = "[green]←[/]" if hypothesis.layer == chosen else ""
            console.print(f"  layer {hypothesis.layer:>2}: loss {hypothesis.loss:.4f}, Fréchet {hypothesis.score:.2f} {mark}")
    failed = batch_failures(records, as_json=as_json)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _read_faces(source: Path, exemplar: Path, piped: str | None, max_pixels: int, *, aligned: bool) -> tuple[Any, Any]:
    """Both pictures (one may come from standard input), checked as far as can be before the networks load."""
    from i2icli.imageio import read_image
    from i2icli.pipelines.invert_settings import check_face_crop

    piped_picture = read_piped_image(max_pixels) if piped else None
    source_picture = piped_picture if piped == "SOURCE" else read_image(source, max_pixels=max_pixels)
    exemplar_picture = piped_picture if piped == "EXEMPLAR" else read_image(exemplar, max_pixels=max_pixels)
    for path, picture in dict(((source, source_picture), (exemplar, exemplar_picture))).items():
        _warn_of_transparency(path, picture)  # once for a file given as both
    if aligned:
        check_face_crop(source_picture, "source")
        check_face_crop(exemplar_picture, "exemplar")
    return source_picture, exemplar_picture


def _warn_of_transparency(path: Path, picture: Any) -> None:
    """The networks see colour only: transparent areas count with whatever colours lie beneath
    them (often black), which the picture shown with its transparency does not suggest."""
    from i2icli.pixels import max_value

    if picture.alpha is not None and picture.alpha.min() < max_value(picture.alpha.dtype):
        warn(f"{path}: has transparent areas, which invert takes in the colours beneath them; flatten it onto "
             "the background you want first")


def _exit_with_preview(source: Path, exemplar: Path, target: Path, *, as_json: bool, record_of: Any,
                       checkpoints: Any) -> None:
    """--dry-run: the one inversion as a batch of one, and the checkpoints it would load."""
    from i2icli.batch import Job
    from i2icli.cli.runner import exit_with_preview
    from i2icli.imageio import unreadable_file_reason

    # Not read, only looked at: what reading would refuse from the name and the file's kind alone
    # fails the preview as it would the run.
    problem = next(filter(None, (unreadable_file_reason(path) for path in (source, exemplar)
                                 if str(path) != STANDARD_STREAM)), None)
    exit_with_preview([Job(source, target, problem)], skip_existing=False, as_json=as_json,
                      record_of=record_of, inputs_of=lambda job: f"{source} + {exemplar}", checkpoints=checkpoints)


def _checkpoints(*, generator: str, detector: str | None, correspondence: str, perceptual: str | None,
                 scorer: str) -> list[tuple[str, Any]]:
    """Where each checkpoint InvertPipeline.load would load comes from, in the order it loads them."""
    from i2icli.pipelines.loading import checkpoint_source

    wanted = [("--generator", generator, "StyleGAN2 generator"), ("--detector", detector, "RetinaFace"),
              ("--correspondence-model", correspondence, "VGG-19"), ("--perceptual-model", perceptual, "VGG-16"),
              ("--score-model", scorer, "FID Inception")]
    return [(option, checkpoint_source(spec, kind)) for option, spec, kind in wanted if spec is not None]


def _output_path(source: Path, exemplar: Path, output: str) -> Path:
    target = Path(output).expanduser()
    if not names_image_file(output):  # as typed: "new.png/" is a folder, and Path() drops the slash
        target = target / f"{source.stem}_{exemplar.stem}.png"
    check_output_folder(target.parent)
    return target


def _record_fields(result: Any, written: dict[str, Any]) -> dict[str, Any]:
    """What a --json record has besides the batch runner's fields: the chosen layer, every
    hypothesis, the time of each stage, and with --save-all the files beside the output."""
    hypothesis_files = written.get("hypotheses", {})
    return {
        "layer": result.layer,
        "hypotheses": [
            {"layer": h.layer, "loss": h.loss, "frechet": h.score,
             **({"file": hypothesis_files[h.layer]} if h.layer in hypothesis_files else {})}
            for h in result.hypotheses
        ],
        "frechet_form": "single-image (spatial statistics of FID Inception block 1)",
        "stages": {stage: round(value, 3) for stage, value in result.seconds.items()},
        **{name: path for name, path in written.items() if name != "hypotheses"},
    }


def _write(result: Any, target: Path, save_all: bool) -> dict[str, Any]:
    from i2icli.atomic_files import write_text
    from i2icli.imageio import write_image

    write_output(target, result.picture)
    if not save_all:
        return {}
    files = _written_files(target, [h.layer for h in result.hypotheses], save_all)
    written: dict[str, Any] = {"hypotheses": {}}
    for hypothesis in result.hypotheses:
        path = files[f"layer{hypothesis.layer:02d}"]
        write_image(path, hypothesis.picture)
        written["hypotheses"][hypothesis.layer] = str(path)
    for name, picture in (("warped", result.warped), ("source_face", result.source_face),
                          ("exemplar_face", result.exemplar_face)):
        write_image(files[name], picture)
        written[name] = str(files[name])
    scores = {"chosen_layer": result.layer,
              "hypotheses": [{"layer": h.layer, "loss": h.loss, "frechet": h.score,
                              "file": written["hypotheses"][h.layer]} for h in result.hypotheses]}
    written["scores"] = str(write_text(files["scores"], json_document(scores) + "\n"))
    return written


def _written_files(target: Path, layers: Any, save_all: bool) -> dict[str, Path]:
    """The files a run writes: the result, and with --save-all every hypothesis, the warp, both
    aligned faces and the scores, named after the result."""
    folder, stem = target.parent, target.stem
    files = {"result": target}
    if save_all:
        files.update({f"layer{layer:02d}": folder / f"{stem}_layer{layer:02d}.png" for layer in layers})
        files.update({name: folder / f"{stem}_{name}.png" for name in ("warped", "source_face", "exemplar_face")})
        files["scores"] = folder / f"{stem}_scores.json"
    return files


class _loss_progress:
    """A progress bar over the Adam steps whose text shows every hypothesis's current loss."""

    def __init__(self, layers: tuple[int, ...]) -> None:
        self.layers = layers

    def __enter__(self):  # type: ignore[no-untyped-def]
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = transient_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                           TimeRemainingColumn())
        self.progress.__enter__()
        self.task = self.progress.add_task("inverting", total=None)

        def on_step(step: int, total: int, losses: Any) -> None:
            text = "  ".join(f"L{layer} {loss:.4f}" for layer, loss in zip(self.layers, losses))
            self.progress.update(self.task, completed=step, total=total, description=f"inverting  {text}")

        return on_step

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]
