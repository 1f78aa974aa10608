"""`i2i exemplar`: CoCosNet v2 exemplar-based translation (pose, edge or label map + exemplar photo)."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from i2icli.cli import completion
from i2icli.cli.error_handling import EXIT_FAILED, EXIT_OK, handles_errors, usage_error
from i2icli.cli.options import (
    Bf16Option,
    DeviceOption,
    DryRunOption,
    JsonOption,
    MaxPixelsOption,
    precision_from_flags,
    seed_in_range,
    warn_of_options_unused,
)
from i2icli.cli.paths import check_output_folder, names_image_file
from i2icli.cli.piping import (
    STANDARD_STREAM,
    argument_read_from_standard_input,
    output_name,
    read_piped_image,
    refuse_output_folder_for_standard_input,
    write_output,
    writes_to_standard_output,
)
from i2icli.cli.runner import (
    batch_failures,
    exit_with_preview,
    one_writer_per_file,
    run_batch,
    will_run,
)
from i2icli.cli.stderr import warn
from i2icli.errors import InputError, InputImageError
from i2icli.formats import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from i2icli.pipelines import memory_hints
from i2icli.pipelines.exemplar_checkpoints import DEFAULT_CHECKPOINT

_MODEL = "Model"
_OUTPUT = "Output"
_CSV_COLUMNS = ("input", "exemplar", "exemplar_pose", "input_pose", "output")
_UNNAMED = "\0unnamed column "  # a name no header line uses


@dataclass(frozen=True)
class Pair:
    """One translation: what to draw (input), whose look to use (exemplar), where to write it."""

    input: Path
    exemplar: Path
    exemplar_pose: Path | None
    input_pose: Path | None
    output: Path
    problem: str | None = None
    row: str | None = None  # "pairs.csv:3" for a pair from a CSV file: its inputs may repeat in other rows

    @property
    def source(self) -> Path:
        return self.input


@handles_errors(memory_hint=memory_hints.EXEMPLAR,
                checkpoint_options={"exemplar": "--checkpoint"})
def exemplar(
    context: typer.Context,
    input: Annotated[
        str | None,
        typer.Argument(
            metavar="INPUT",
            help="The structure to draw: an OpenPose .json, an official NAME_candidate.txt/_subset.txt pose, a "
            "label or edge map image, or a photo whose pose is in --input-pose; - reads the image from standard input.",
            show_default=False,
        ),
    ] = None,
    exemplar_photo: Annotated[
        str | None, typer.Argument(metavar="EXEMPLAR", help="The photo whose appearance to use (-: from standard input).",
                                   show_default=False)
    ] = None,
    exemplar_pose: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="The exemplar's own pose (.json or _candidate.txt) or label/edge map (-: the "
                     "map from standard input). Required.", show_default=False),
    ] = None,
    input_pose: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="INPUT is a photo and this is its pose (.json coordinates are that photo's pixels).",
                     show_default=False),
    ] = None,
    output: Annotated[
        str,
        typer.Option("-o", "--output", metavar="DIR|FILE", help="Output file for one pair (-: standard output, as PNG), or a "
                     "folder (for INPUT_EXEMPLAR.png files).",
                     rich_help_panel=_OUTPUT),
    ] = "results",
    pairs: Annotated[
        str | None,
        typer.Option(metavar="CSV", help=f"CSV file of pairs, with a header naming columns among: {', '.join(_CSV_COLUMNS)}. "
                     "Relative paths are relative to the CSV file.", show_default=False),
    ] = None,
    checkpoint: Annotated[
        str,
        typer.Option(metavar="DIR", help="Folder holding latest_net_G.pth and latest_net_Corr.pth (the official DeepFashionHD "
                     "model is a manual download: see `i2i weights list`).", rich_help_panel=_MODEL,
                     autocompletion=completion.checkpoint_names("exemplar")),
    ] = DEFAULT_CHECKPOINT,
    size: Annotated[
        int, typer.Option(min=64, help="Square working size, a multiple of 32 (the official model: 512).",
                          rich_help_panel=_MODEL)
    ] = 512,
    iterations: Annotated[
        int, typer.Option(min=1, max=50, rich_help_panel=_MODEL,
                          help="Matching refinement rounds at each finer level (PatchMatch search + GRU update); "
                          "more is slower and may match better.")
    ] = 5,
    seed: Annotated[
        int, typer.Option(min=0, callback=seed_in_range, help="Seed of the propagation-order coin flips (same seed, same result).",
                          rich_help_panel=_MODEL)
    ] = 0,
    label_nc: Annotated[
        int | None,
        typer.Option(min=1, help="Inputs are label maps with this many classes (one-hot encoded).",
                     rich_help_panel=_MODEL, show_default=False),
    ] = None,
    save_warps: Annotated[
        bool, typer.Option("--save-warps", help="Also save the exemplar warped onto the input at each level.",
                           rich_help_panel=_OUTPUT)
    ] = False,
    save_label: Annotated[
        bool, typer.Option("--save-label", help="Also save the rendered pose skeletons the model sees.",
                           rich_help_panel=_OUTPUT)
    ] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip pairs whose output already exists.")] = False,
    device: DeviceOption = "auto",
    half: Annotated[
        bool | None,
        typer.Option("--fp16/--fp32", help="Half precision (CUDA only), or full precision. Default: fp16 on CUDA, "
                     "else fp32 (matching scores are always fp32).", show_default=False, rich_help_panel="Device"),
    ] = None,
    bf16: Bf16Option = False,
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Draw INPUT's structure with EXEMPLAR's appearance (CoCosNet v2).

    Photos, poses and maps are padded to a centred square (the official DeepFashion layout) and
    translated at --size; the result is cropped back to the input's frame: a map's own shape,
    the --input-pose photo's, or for a pose file alone the exemplar's.
    """
    piped = argument_read_from_standard_input(
        [("INPUT", input), ("EXEMPLAR", exemplar_photo), ("--exemplar-pose", exemplar_pose)],
        other_files=[("--input-pose", input_pose, "a pose file"), ("--pairs", pairs, "a CSV list of pairs")])
    if piped in ("INPUT", "EXEMPLAR"):  # the output would be named INPUT_EXEMPLAR.png
        refuse_output_folder_for_standard_input(output, "result.png")
    to_stdout = writes_to_standard_output(output, as_json=as_json, dry_run=dry_run, files_beside=[
        ("--save-warps", save_warps), ("--save-label", save_label)])
    if to_stdout and pairs is not None:
        raise usage_error("-o - writes one image to standard output, and --pairs is for many; give -o a folder")
    precision = precision_from_flags(half, bf16)
    if size % 32:
        raise usage_error(f"--size {size}: must be a multiple of 32")
    jobs = _plan(input, exemplar_photo, exemplar_pose, input_pose, output, pairs)
    _warn_of_options_unused(context, jobs, save_label=save_label, label_nc=label_nc)
    if to_stdout:
        skip_existing = False  # "-" names no file that could exist
    else:
        inputs = [path for job in jobs for path in (job.input, job.exemplar, job.exemplar_pose, job.input_pose) if path]
        jobs, _ = one_writer_per_file(jobs, lambda pair: [path for paths in _written_files(
            pair.output, size, save_warps=save_warps, save_label=save_label).values() for path in paths], inputs,
            name_of=lambda pair: pair.row or str(pair.input))

    def record_of(job: Pair) -> dict[str, Any]:
        return {"input": str(job.input), "exemplar": str(job.exemplar), "output": str(job.output)}

    if dry_run:
        exit_with_preview(jobs, skip_existing=skip_existing, as_json=as_json, record_of=record_of,
                          inputs_of=_inputs_of, checkpoints=lambda: _checkpoints(checkpoint))
    piped_picture = _read_piped_image(piped, max_pixels) if piped else None
    todo = [job for job in jobs if will_run(job, skip_existing=skip_existing)]

    pipeline = None
    if todo:  # else PyTorch is not even imported: a batch of missing files fails at once
        from i2icli.pipelines.exemplar import ExemplarPipeline, ExemplarSettings

        settings = ExemplarSettings(size=size, iterations=iterations, seed=seed)
        pipeline = ExemplarPipeline.load(checkpoint, device=device, precision=precision, settings=settings)
    def process(job: Pair) -> tuple[dict[str, Any], str, str]:
        extra = _translate(job, pipeline, label_nc=label_nc, save_warps=save_warps, save_label=save_label,
                           max_pixels=max_pixels, piped=piped, piped_picture=piped_picture)
        return extra, f"{_inputs_of(job)} → {output_name(job.output)}", ""

    records = run_batch(jobs, process, verb="translating", skip_existing=skip_existing, record_of=record_of,
                        inputs_of=_inputs_of)
    failed = batch_failures(records, as_json=as_json)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _read_piped_image(piped: str, max_pixels: int) -> Any:
    """The image piped in for ``piped`` (INPUT, EXEMPLAR or --exemplar-pose)."""
    try:
        return read_piped_image(max_pixels)
    except InputImageError as error:
        # A pose piped in (`cat pose.json |`) would be called a damaged image: say what - takes here.
        if piped != "--exemplar-pose" or "is not an image file" not in error.message:
            raise
        raise InputImageError(STANDARD_STREAM, "is not an image file, and --exemplar-pose - reads a label or edge map "
                              "image", "a pose (.json or _candidate.txt) is not read from standard input: save it to "
                              "a file and pass its path to --exemplar-pose") from None


def _warn_of_options_unused(context: typer.Context, jobs: list[Pair], *, save_label: bool, label_nc: int | None) -> None:
    """--save-label draws poses and --label-nc reads label maps: given for pairs without any of
    those, they would do nothing without a word."""
    if not save_label and label_nc is None:
        return
    from i2icli.semantics.inputs import is_pose_file

    # Per pair, whether its input's and its exemplar's semantics are poses (a piped one is an image).
    poses = [[path is not None and str(path) != STANDARD_STREAM and is_pose_file(path)
              for path in (job.input_pose or job.input, job.exemplar_pose)] for job in jobs if job.problem is None]
    if not poses:
        return
    if save_label and not any(any(pair) for pair in poses):
        warn_of_options_unused(context, ["save_label"], "with label or edge maps: only a pose is drawn, and a map "
                               "is its own picture")
    if label_nc is not None and all(all(pair) for pair in poses):
        warn_of_options_unused(context, ["label_nc"], "with poses: it is the number of classes of label maps")


def _inputs_of(job: Pair) -> str:
    """A pair as its status lines name it: both images (one input may be in a pair per exemplar)."""
    return f"{job.input} + {job.exemplar}"


def _plan(input: str | None, exemplar_photo: str | None, exemplar_pose: str | None, input_pose: str | None,
          output: str, pairs: str | None) -> list[Pair]:
    if pairs is not None:
        if input or exemplar_photo or exemplar_pose or input_pose:
            raise usage_error("give either --pairs CSV or INPUT EXEMPLAR --exemplar-pose, not both")
        if names_image_file(output):
            raise usage_error("with --pairs, -o/--output is a folder")
        folder = Path(output).expanduser()
        jobs = _pairs_from_csv(Path(pairs).expanduser(), folder)
        if any(job.problem is None and job.output.parent == folder for job in jobs):  # rows without an output cell
            check_output_folder(folder)
        return jobs
    if input is None or exemplar_photo is None:
        raise usage_error("give INPUT and EXEMPLAR (or --pairs CSV)")
    if exemplar_pose is None:
        raise usage_error("--exemplar-pose is required: the model needs the exemplar's own pose or label map")
    source, look = Path(input).expanduser(), Path(exemplar_photo).expanduser()
    if output == STANDARD_STREAM:
        target = Path(STANDARD_STREAM)
    else:
        target = Path(output).expanduser()
        if not names_image_file(output):
            target = target / _default_name(source, look)
        check_output_folder(target.parent)
    pose = Path(input_pose).expanduser() if input_pose else None
    return [_checked(Pair(source, look, Path(exemplar_pose).expanduser(), pose, target))]


def _pairs_from_csv(path: Path, folder: Path) -> list[Pair]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            # Column names as a spreadsheet may write them: "Input", " exemplar ", and a header line
            # ending in commas, whose unnamed columns get names no header can hold.
            names = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
            reader.fieldnames = [name or f"{_UNNAMED}{index + 1}" for index, name in enumerate(names)]
            header = [name for name in names if name]
            # File line numbers. Blank lines are skipped, and so are lines of empty cells (",,,"), as
            # a spreadsheet writes rows it once touched.
            rows = [(reader.line_num, row) for row in reader if not _blank(row)]
    except OSError as error:
        raise InputError(path, f"cannot read the pairs file ({error.strerror or error})") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise InputError(path, f"not a readable CSV file ({error})") from None
    no_pairs = InputError(path, "no pairs in this CSV file", f"write a header line ({','.join(_CSV_COLUMNS)}) and one row per pair")
    if not names:
        raise no_pairs
    unknown = [name for name in header if name not in _CSV_COLUMNS]
    if len(unknown) == len(header):  # the first line is a pair, say, or commas alone
        raise InputError(path, f"the first line is not a header: it names none of the columns {', '.join(_CSV_COLUMNS)}",
                         f"add a header line such as {','.join(_CSV_COLUMNS[:3])}")
    repeated = next((name for name in header if header.count(name) > 1), None)
    if repeated:  # the last cell would win without a word
        raise InputError(path, f"the header names the column {repeated!r} twice", "keep one column of each name")
    if unknown or "input" not in header or "exemplar" not in header:
        raise InputError(path, f"the header must name input and exemplar (and may name {', '.join(_CSV_COLUMNS[2:])})"
                         + (f"; unknown column {unknown[0]!r}" if unknown else ""),
                         f"the first line must be the header, e.g. {','.join(_CSV_COLUMNS)}")
    if not rows:
        raise no_pairs
    base = path.parent
    jobs = []
    for number, row in rows:
        # DictReader keeps cells beyond the header's columns under None. Those and the cells of
        # unnamed columns may stay empty, as spreadsheets write them; one that is not would be lost.
        if any((value or "").strip() for value in row.get(None) or []):
            jobs.append(Pair(path, path, None, None, folder, f"{path}:{number}: more cells than the header has columns"))
            continue
        unnamed = next((key for key, value in row.items()
                        if key is not None and key.startswith(_UNNAMED) and (value or "").strip()), None)
        if unnamed is not None:
            jobs.append(Pair(path, path, None, None, folder, f"{path}:{number}: a cell in column "
                             f"{unnamed[len(_UNNAMED):]}, which the header leaves unnamed"))
            continue
        row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}

        def cell(name: str) -> Path | None:
            value = row.get(name, "")
            return (base / Path(value).expanduser()) if value else None

        source, look = cell("input"), cell("exemplar")
        if source is None or look is None:
            jobs.append(Pair(source or path, look or path, None, None, folder, f"{path}:{number}: input and exemplar are required"))
            continue
        target = cell("output") or folder / _default_name(source, look)
        jobs.append(_checked(Pair(source, look, cell("exemplar_pose"), cell("input_pose"), target, row=f"{path}:{number}"),
                             f"{path}:{number}: "))
    return jobs


def _default_name(source: Path, look: Path) -> str:
    """INPUT_EXEMPLAR.png. An official pose pair is NAME, whichever way it is named (NAME_{}.txt,
    NAME_candidate.txt or NAME_subset.txt): one pose, one output name, and no braces in it."""
    name = source.name
    for ending in ("_{}.txt", "_candidate.txt", "_subset.txt"):
        if name.lower().endswith(ending) and len(name) > len(ending):  # in any case, as the pose reader takes them
            return f"{name[: -len(ending)]}_{look.stem}.png"
    return f"{source.stem}_{look.stem}.png"


def _blank(row: dict[str | None, Any]) -> bool:
    """Whether a CSV row has nothing in any cell (DictReader keeps extra cells as a list under None)."""
    cells = [value for key, value in row.items() if key is not None] + list(row.get(None) or [])
    return not any((cell or "").strip() for cell in cells)


def _checked(pair: Pair, where: str = "") -> Pair:
    """A pair that lacks the exemplar's pose, would write no image file, or gives a pose file an
    input pose is refused (outputs over inputs are refused for the whole batch at once, by
    ``one_writer_per_file``)."""
    problem = _unreadable_file(pair, where)
    if pair.exemplar_pose is None:
        problem = f"{where}no exemplar_pose: the model needs the exemplar's own pose or label map"
    if pair.output.suffix.lower() not in IMAGE_SUFFIXES and str(pair.output) != STANDARD_STREAM:
        problem = f"{where}{pair.output}: the output must be an image file ({', '.join(IMAGE_SUFFIXES)})"
    if pair.input_pose is not None and pair.exemplar_pose is not None:
        from i2icli.semantics.inputs import is_pose_file

        if is_pose_file(pair.input):  # else refused as "unsupported file type", with a list of image formats
            problem = (f"{where}{pair.input}: is a pose itself, so it takes no input pose (that is the pose of a "
                       "photo given as input); leave out the one or the other")
    return dataclasses.replace(pair, problem=problem)


def _unreadable_file(pair: Pair, where: str) -> str | None:
    """A pair naming a file that is not there, or of a type its place does not take, refused while
    planning as reading it would be: no model is loaded for it, and --dry-run does not say it
    would run. Files are only looked for, not read."""
    from i2icli.imageio import unreadable_file_reason
    from i2icli.semantics.inputs import is_pose_file
    from i2icli.semantics.pose import official_pair_files

    photos = [pair.exemplar] + ([pair.input] if pair.input_pose is not None else [])
    semantics = [path for path in (pair.input, pair.exemplar_pose, pair.input_pose) if path not in photos]
    for path in [*photos, *semantics]:
        if path is None or str(path) == STANDARD_STREAM:
            continue
        if not (path in semantics and is_pose_file(path)):  # an image: what reading it would refuse
            if reason := unreadable_file_reason(path):
                return f"{where}{reason}"
            continue
        try:  # an official pose is the two files it names
            files = list(official_pair_files(path)) if path.suffix.lower() == ".txt" else [path]
        except InputError as error:
            return f"{where}{error}"
        if missing := next((file for file in files if not file.exists()), None):
            return f"{where}{missing}: no such file"
    return None


def _translate(job: Pair, pipeline: Any, *, label_nc: int | None, save_warps: bool, save_label: bool,
               max_pixels: int, piped: str | None = None, piped_picture: Any = None) -> dict[str, Any]:
    """``piped`` names the argument (INPUT, EXEMPLAR or --exemplar-pose) whose image,
    ``piped_picture``, was read from standard input."""
    from i2icli.imageio import Picture, read_image, write_image

    exemplar = piped_picture if piped == "EXEMPLAR" else read_image(job.exemplar, max_pixels=max_pixels)
    assert job.exemplar_pose is not None
    # What came through standard input is already read: passed as the picture, not as its path "-".
    semantic, exemplar_semantic = pipeline.read_pair(
        piped_picture if piped == "INPUT" else job.input, exemplar,
        piped_picture if piped == "--exemplar-pose" else job.exemplar_pose,
        input_pose=job.input_pose, label_nc=label_nc, max_pixels=max_pixels)
    _warn_of_keypoints_outside(semantic, job.input if job.input_pose is not None else None, job.exemplar)
    _warn_of_keypoints_outside(exemplar_semantic, job.exemplar, job.exemplar)
    result = pipeline.translate(semantic, exemplar, exemplar_semantic)
    # The pipeline's "total" is no stage: the record's "seconds" is the pair's whole time.
    written: dict[str, Any] = {"stages": {k: round(v, 3) for k, v in result.seconds.items() if k != "total"}}
    files = _written_files(job.output, pipeline.settings.size, save_warps=save_warps, save_label=save_label)
    if save_warps:
        for path, warp in zip(files["warps"], result.warps):
            write_image(path, warp)
        written["warps"] = [str(path) for path in files["warps"]]
    if save_label:
        labels = []
        for path, semantics in zip(files["labels"], (semantic, exemplar_semantic)):
            if semantics.drawing is not None:  # poses only: a label or edge map is its own picture
                write_image(path, Picture(semantics.drawing))
                labels.append(str(path))
        written["labels"] = labels
    # Last: --skip-existing takes an existing output for a pair whose every file was written.
    write_output(job.output, result.picture)
    return written


def _warn_of_keypoints_outside(semantics: Any, photo: Path | None, exemplar: Path) -> None:
    """Warn of a pose whose keypoints lie outside the photo they are placed on (``photo``; None
    for a pose file alone, placed in the exemplar's frame): the person would be drawn cut off."""
    from i2icli.semantics.pose import keypoints_outside

    if semantics.pose is None or semantics.frame is None:
        return
    span = keypoints_outside(semantics.pose, semantics.frame)
    if span is None:
        return
    width, height = semantics.frame
    where = f"x {span[0]:.0f} to {span[2]:.0f}, y {span[1]:.0f} to {span[3]:.0f}"
    if photo is None:
        warn(f"{semantics.source}: its keypoints ({where}) reach beyond the {width}x{height} frame of the exemplar "
             f"{exemplar}, in which a pose file alone is drawn; give the photo the pose was found on as INPUT, with "
             "the pose as --input-pose")
    else:
        warn(f"{semantics.source}: its keypoints ({where}) reach beyond the {width}x{height} photo {photo}; the pose "
             "must be found on that photo, at that size, or the person is drawn out of place")


def _written_files(output: Path, size: int, *, save_warps: bool, save_label: bool) -> dict[str, list[Path]]:
    """Every file a pair may write: its output, a warp per level, the input's and exemplar's skeletons."""
    stem, folder = output.stem, output.parent
    levels = (size // 8, size // 4, size // 2, size)
    return {
        "output": [output],
        "warps": [folder / f"{stem}_warp{level}.png" for level in levels] if save_warps else [],
        "labels": [folder / f"{stem}_{which}_label.png" for which in ("input", "exemplar")] if save_label else [],
    }


def _checkpoints(checkpoint: str) -> list[tuple[str, Any]]:
    """Where ExemplarPipeline.load would have its two files from: the --checkpoint folder."""
    from i2icli.pipelines.exemplar_checkpoints import checkpoint_sources

    return [("--checkpoint", source) for source in checkpoint_sources(checkpoint)]
