"""`i2i translate-lr`: a high-resolution source plus a tiny target give a high-resolution image
that keeps the source's detail and downsamples to the target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from i2icli.cli import completion
from i2icli.cli.error_handling import EXIT_FAILED, EXIT_OK, handles_errors, usage_error
from i2icli.cli.options import DeviceOption, DryRunOption, JsonOption, MaxPixelsOption
from i2icli.cli.paths import (
    check_extra_output,
    check_output_folder,
    image_files,
    names_image_file,
    refuse_overwrite,
)
from i2icli.cli.piping import (
    STANDARD_STREAM,
    argument_read_from_standard_input,
    output_name,
    read_piped_image,
    refuse_more_than_one_image_to_standard_output,
    refuse_output_folder_for_standard_input,
    write_output,
    writes_to_standard_output,
)
from i2icli.cli.runner import (
    ShownBefore,
    batch_failures,
    exit_with_preview,
    one_writer_per_file,
    run_batch,
    will_run,
)
from i2icli.cli.stderr import console, download_progress, plain, warn
from i2icli.cli.train_common import refuse_a_missing_run
from i2icli.errors import I2IError
from i2icli.formats import DEFAULT_MAX_PIXELS
from i2icli.pipelines import memory_hints

_MODEL = "Model"
_OUTPUT = "Output"
_LOSSY_SUFFIXES = {".jpg", ".jpeg", ".webp", ".heic", ".heif", ".avif"}  # as write_image encodes them


@dataclass(frozen=True)
class PairJob:
    source: Path
    target: Path
    output: Path
    problem: str | None = None


@handles_errors(memory_hint=memory_hints.TRANSLATE_LR,
                checkpoint_options={"detector": "--detector"})
def translate_lr(
    source: Annotated[str, typer.Argument(metavar="SOURCE", show_default=False,
                                          help="High-resolution photo whose detail (identity, texture) to keep, or a folder of "
                                          "them; - reads one from standard input.")],
    target: Annotated[str, typer.Argument(metavar="TARGET", show_default=False,
                                          help="Tiny target (e.g. 8x8) whose layout, pose and colours to match, or a full-size "
                                          "photo to downsample, or a folder of them; - reads one from standard input.")],
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", "-c", metavar="RUN|FILE", show_default=False, rich_help_panel=_MODEL,
                          help="A checkpoint from `i2i train translate-lr` (file, or the run's --out folder), or the "
                          "authors' training file.")
    ],
    output: Annotated[
        str, typer.Option("-o", "--output", metavar="DIR|FILE", rich_help_panel=_OUTPUT,
                          help="Output image file for one pair (-: standard output, as PNG); a folder (for "
                          "SOURCE__TARGET.png files) otherwise.")
    ] = "results",
    lr_size: Annotated[
        int | None, typer.Option("--lr-size", min=4, max=32, show_default=False, rich_help_panel=_MODEL,
                                 help="Low-resolution size to work at (default: the checkpoint's). The output is this "
                                 "times the model's scale.")
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Correct the output so that it downsamples exactly to the target "
                           "(adds back the upsampled residual). The error with and without it is reported.")
    ] = False,
    align_faces: Annotated[
        bool, typer.Option("--align-faces", help="Align faces first, as `i2i restore` aligns them (for face models).")
    ] = False,
    grid: Annotated[
        Path | None, typer.Option("--grid", metavar="FILE", show_default=False, rich_help_panel=_OUTPUT,
                                  help="Also write a grid like the paper's figures: targets across the top, sources "
                                  "down the side.")
    ] = None,
    detector: Annotated[str, typer.Option(metavar="NAME|PATH", help="Face detector for --align-faces: retinaface-resnet50 or a RetinaFace "
                                          "checkpoint path.", rich_help_panel=_MODEL,
                                          autocompletion=completion.checkpoint_names("detector"))
                        ] = "retinaface-resnet50",
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip pairs whose output exists.",
                                                rich_help_panel=_OUTPUT)] = False,
    device: DeviceOption = "auto",
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Translate SOURCE to the tiny TARGET (image-to-image translation with low-resolution conditioning).

    The output keeps the source's fine detail and, downsampled by average pooling to the target's
    size, matches the target. Inputs are centre-cropped to squares. SOURCE and TARGET may be
    folders: every source is translated to every target.
    """
    piped = argument_read_from_standard_input([("SOURCE", source), ("TARGET", target)])
    if piped:  # the outputs are named SOURCE__TARGET, and an image piped in has no name
        refuse_output_folder_for_standard_input(output)
    to_stdout = writes_to_standard_output(output, as_json=as_json, dry_run=dry_run)
    sources, targets = _inputs(source, "SOURCE", piped, output), _inputs(target, "TARGET", piped, output)
    if to_stdout:
        refuse_more_than_one_image_to_standard_output(len(sources) * len(targets), "pairs")
        skip_existing = False  # "-" names no file that could exist
        jobs = [PairJob(sources[0], targets[0], Path(STANDARD_STREAM))]
    else:
        jobs = _plan(sources, targets, output)
    lossy = sorted({job.output.suffix.lower() for job in jobs} & _LOSSY_SUFFIXES)
    if exact and lossy:
        # The correction is a fraction of a level: lossy compression undoes it, and the errors
        # reported are measured before encoding, so they would not describe the file.
        warn(f"--exact with a {lossy[0]} output: compression changes the pixels, so the file will not downsample "
             "exactly to the target; write a .png (or .tif) to keep the correction")
    if grid is not None:
        grid = check_extra_output(grid, "--grid")
        refuse_overwrite(grid, [*sources, *targets], [job.output for job in jobs])

    def record_of(job: PairJob) -> dict[str, Any]:
        return {"source": str(job.source), "target": str(job.target), "output": str(job.output)}

    # With every pair skipped, only --grid needs the model: it prepares the inputs of the earlier outputs it shows.
    grid_needs_model = grid is not None
    if dry_run:
        exit_with_preview(jobs, skip_existing=skip_existing, as_json=as_json, record_of=record_of,
                          inputs_of=_inputs_of, checkpoints=lambda: _checkpoints(checkpoint, detector, align_faces),
                          loads_without_jobs=grid_needs_model)
    piped_picture = read_piped_image(max_pixels) if piped else None
    translator: Any = None
    # Else PyTorch is not even imported: a batch of missing files fails at once.
    if grid_needs_model or any(will_run(job, skip_existing=skip_existing) for job in jobs):
        refuse_a_missing_run(_checkpoints(checkpoint, detector, align_faces=False)[0][1], device)  # before PyTorch is imported
        from i2icli.pipelines.translate_lr import LRTranslator

        try:
            with download_progress() as progress:
                translator = LRTranslator.load(checkpoint, lr_size=lr_size, device=device, align_faces=align_faces,
                                               detector=detector, progress=progress)
        except ValueError as error:
            raise usage_error(str(error)) from None
    cache = _PreparedInputs(translator, max_pixels, piped, piped_picture)
    results: dict[tuple[Path, Path], Any] = {}

    def process(job: PairJob) -> tuple[dict[str, Any], str, str]:
        from i2icli.pipelines.imagetensors import to_picture

        source_tensor, source_picture = cache.source(job.source)
        target_tensor, target_picture = cache.target(job.target)
        out, error, network_error = translator.translate_tensors(source_tensor, target_tensor, exact=exact)
        # No metadata of the source's: the output is a new picture (cropped square, its layout the
        # target's), of which the source's date taken, camera and GPS position would be untrue.
        picture = to_picture(out[0])
        write_output(job.output, picture)
        if grid is not None:  # kept only for the grid: a large batch need not hold every output
            results[(job.source, job.target)] = (source_picture, target_picture, picture)
        # Named as training's metrics and `train translate-lr --eval` name them: the network's own
        # error, and the error after the --exact correction (null without it).
        fields = {"lr_error_levels": round(float(network_error[0]), 4),
                  "lr_error_levels_exact": round(float(error[0]), 4) if exact else None, "exact": exact}
        detail = f"LR error {float(network_error[0]):.2f} levels"
        if exact:
            detail += f", {float(error[0]):.3f} with --exact"
        return fields, f"{_inputs_of(job)} → {output_name(job.output)}", detail + "; "  # paths, as --dry-run shows

    records = run_batch(jobs, process, verb="translating", skip_existing=skip_existing, record_of=record_of,
                        inputs_of=_inputs_of)
    if grid is not None:
        _add_earlier_outputs(results, jobs, records, cache)
        _write_grid(grid, sources, targets, results)
    failed = batch_failures(records, as_json=as_json)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _inputs_of(job: PairJob) -> str:
    """A pair as its status lines name it: both images (one source is in a pair per target)."""
    return f"{job.source} + {job.target}"


def _inputs(given: str, role: str, piped: str | None, output: str) -> list[Path]:
    """SOURCE's or TARGET's images. The one read from standard input pairs with one image (a file,
    or a folder holding one): more would make one output per pair, each named after both inputs,
    and "-" names none."""
    if piped == role:
        return [Path(STANDARD_STREAM)]
    images = image_files(Path(given).expanduser(), role, Path(output))
    if piped is not None and len(images) > 1:
        raise usage_error(f"{piped} - (standard input) is one image, so {role} must be one image file, not the folder "
                          f"{given} of {len(images)} images")
    return images


def _plan(sources: list[Path], targets: list[Path], given: str) -> list[PairJob]:
    inputs = {p.resolve() for p in [*sources, *targets]}
    output = Path(given).expanduser()
    to_file = names_image_file(given)  # as typed: "new.png/" is a folder, and Path() drops the slash
    check_output_folder(output.parent if to_file else output)
    pairs = len(sources) * len(targets)
    if to_file and pairs == 1:  # two files, or folders holding one image each, as restore takes them
        refuse_overwrite(output, [*sources, *targets])
        return [PairJob(sources[0], targets[0], output)]
    if to_file:
        raise usage_error(f"-o {output} names one output file, but the inputs make {pairs} pairs; give -o a folder")
    jobs = [PairJob(source, target, output / f"{source.stem}__{target.stem}.png") for source in sources for target in targets]
    return one_writer_per_file(jobs, lambda job: [job.output], inputs, name_of=lambda job: f"{job.source} + {job.target}")[0]


class _PreparedInputs:
    """Each file is read and prepared once, however many pairs it is in; a bad file fails its pairs
    (its error is shown once, and recorded for each)."""

    def __init__(self, translator: Any, max_pixels: int, piped_role: str | None = None, piped: Any = None) -> None:
        self.translator = translator
        self.max_pixels = max_pixels
        # The role ("SOURCE" or "TARGET") whose one image was read from standard input, and that image.
        self.piped_role, self.piped = piped_role, piped
        self.prepared: dict[tuple[str, Path], Any] = {}
        # By file, not by role: a file that cannot be read, in both SOURCE and TARGET (one folder
        # given as both), is one error. Only failures are kept, not the full-size pictures.
        self.unreadable: dict[Path, I2IError] = {}

    def _get(self, role: str, path: Path) -> Any:
        key = (role, path)
        piped = role.upper() == self.piped_role  # "-" here is standard input, not a file named "-" (./-)
        if key not in self.prepared and path in self.unreadable and not piped:
            self.prepared[key] = self.unreadable[path]
        if key not in self.prepared:
            from i2icli.imageio import read_image
            from i2icli.pipelines.imagetensors import to_picture

            try:
                picture = self.piped if piped else read_image(path, max_pixels=self.max_pixels)
            except I2IError as error:
                self.prepared[key] = self.unreadable[path] = error
                raise
            try:
                prepare = self.translator.prepare_source if role == "source" else self.translator.prepare_target
                tensor = prepare(picture)
                self.prepared[key] = (tensor, to_picture(tensor[0]))
            except I2IError as error:
                self.prepared[key] = error
                raise
        value = self.prepared[key]
        if isinstance(value, I2IError):
            raise ShownBefore(value.message, value.hint)
        return value

    def source(self, path: Path) -> Any:
        return self._get("source", path)

    def target(self, path: Path) -> Any:
        return self._get("target", path)


def _add_earlier_outputs(results: dict[tuple[Path, Path], Any], jobs: list[PairJob], records: list[dict],
                         cache: _PreparedInputs) -> None:
    """Pairs skipped by --skip-existing go into the grid as their existing outputs, not as
    failures; one that cannot be read, or was made at another size, stays a grey cell."""
    from i2icli.imageio import read_image

    for job, record in zip(jobs, records):
        if record["status"] != "skipped":
            continue
        try:
            _, source_picture = cache.source(job.source)
            _, target_picture = cache.target(job.target)
            earlier = read_image(job.output, max_pixels=cache.max_pixels)
        except I2IError:
            continue
        if earlier.rgb.shape == source_picture.rgb.shape:
            results[(job.source, job.target)] = (source_picture, target_picture, earlier)


def _write_grid(path: Path, sources: list[Path], targets: list[Path], results: dict[tuple[Path, Path], Any]) -> None:
    """Rows and columns for the files that could be read; a failed pair is a grey cell."""
    import numpy as np

    from i2icli.imageio import Picture, write_image
    from i2icli.pipelines.translate_lr import translation_grid

    first = {s: r[0] for (s, _), r in results.items()}
    columns = {t: r[1] for (_, t), r in results.items()}
    rows = [s for s in sources if s in first]
    cols = [t for t in targets if t in columns]
    if not rows or not cols:
        console.print(f"[yellow]no grid written[/]: no pair could be translated ({plain(path)})")
        return
    size = first[rows[0]].rgb.shape[0]
    grey = Picture(rgb=np.full((size, size, 3), 128, dtype=np.uint8))
    outputs = [[results[(s, t)][2] if (s, t) in results else grey for t in cols] for s in rows]
    write_image(path, translation_grid([first[s] for s in rows], [columns[t] for t in cols], outputs))
    console.print(f"[green]✓[/] grid → {plain(path)}")


def _checkpoints(checkpoint: str, detector: str, align_faces: bool) -> list[tuple[str, Any]]:
    """Where each checkpoint LRTranslator.load would load comes from: the run's, and the detector's for --align-faces."""
    from i2icli.pipelines.loading import checkpoint_source, trained_checkpoint_source
    from i2icli.pipelines.translate_lr_plan import METHOD_NAME

    needed = [("--checkpoint", trained_checkpoint_source(checkpoint, METHOD_NAME))]
    if align_faces:
        needed.append(("--detector", checkpoint_source(detector, "RetinaFace")))
    return needed
