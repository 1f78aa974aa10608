"""`i2i restore`: restore the faces of old photos and upscale them."""

from __future__ import annotations

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
    HalfOption,
    JsonOption,
    MaxPixelsOption,
    finite,
    precision_from_flags,
    warn_of_options_unused,
)
from i2icli.cli.paths import check_output_folder, names_image_file
from i2icli.cli.piping import (
    STANDARD_STREAM,
    output_name,
    read_standard_input,
    refuse_more_than_one_image_to_standard_output,
    refuse_output_folder_for_standard_input,
    write_output,
    writes_to_standard_output,
)
from i2icli.cli.runner import batch_failures, exit_with_preview, run_batch, will_run
from i2icli.cli.stderr import download_progress, warn
from i2icli.formats import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, UPSCALE_MAX, UPSCALE_MIN
from i2icli.pipelines import memory_hints
from i2icli.pipelines.restore_models import (
    DEFAULT_DETECTOR,
    DEFAULT_FACE_MODEL,
    DEFAULT_PARSER,
)

_MODELS = "Models"
_FACES = "Faces"
_OUTPUT = "Output"
_EXTENSIONS = ("auto", *(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES))


def _file_name_suffix(value: str) -> str:
    if "/" in value or "\\" in value:
        raise typer.BadParameter("it is added to file names, so it cannot contain a path separator (/ or \\)")
    return value


@handles_errors(memory_hint=memory_hints.RESTORE,
                checkpoint_options={"face": "--model", "background": "--bg-model", "detector": "--detector", "parser": "--parser"})
def restore(
    context: typer.Context,
    inputs: Annotated[list[str], typer.Argument(metavar="INPUTS", help="Image files, folders or glob patterns; - reads one image from standard input.", show_default=False)],
    output: Annotated[
        str, typer.Option("-o", "--output", metavar="DIR|FILE", help="Folder for the results (created if missing), or for one input the "
                          "output file itself (its extension picks the format); - writes it to standard output.", rich_help_panel=_OUTPUT)
    ] = "results",
    upscale: Annotated[float, typer.Option("--upscale", "-s", min=UPSCALE_MIN, max=UPSCALE_MAX, callback=finite, help="Final size factor; fractions too (e.g. 1.5).")] = 2.0,
    strength: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="How much of the restored face to use: 1 all of it, 0 none.")
    ] = 1.0,
    model: Annotated[str, typer.Option(metavar="NAME|PATH", help="Face model: gfpgan-1.4, gfpgan-1.3, or a checkpoint path.", rich_help_panel=_MODELS,
                                            autocompletion=completion.checkpoint_names("face"))] = DEFAULT_FACE_MODEL,
    bg_model: Annotated[
        str,
        typer.Option(metavar="NAME|PATH|none",
            help="Background model: auto (realesrgan-x2plus up to 2x, realesrgan-x4plus above), realesr-general-x4v3, "
            "a checkpoint path, or none (Lanczos resize).",
            rich_help_panel=_MODELS,
            autocompletion=completion.checkpoint_names("background", extra=("auto", "none")),
        ),
    ] = "auto",
    detector: Annotated[
        str, typer.Option(metavar="NAME|PATH", help="Face detector: retinaface-resnet50 or a RetinaFace checkpoint path (resnet50 or mobilenet0.25).", rich_help_panel=_MODELS,
                          autocompletion=completion.checkpoint_names("detector"))
    ] = DEFAULT_DETECTOR,
    parser: Annotated[
        str, typer.Option(metavar="NAME|PATH|none", help="Face parser for soft paste masks: parsenet, a path, or none.", rich_help_panel=_MODELS,
                          autocompletion=completion.checkpoint_names("parser", extra=("none",)))
    ] = DEFAULT_PARSER,
    threshold: Annotated[float, typer.Option(callback=finite, min=0.0, max=1.0, help="Face detection confidence threshold.", rich_help_panel=_FACES)] = 0.97,
    only_center_face: Annotated[bool, typer.Option("--only-center-face", help="Restore only the face nearest the centre.", rich_help_panel=_FACES)] = False,
    min_face_size: Annotated[float, typer.Option(metavar="PX", callback=finite, min=0.0, help="Ignore faces smaller than this many pixels.", rich_help_panel=_FACES)] = 16.0,
    detect_size: Annotated[
        int, typer.Option(metavar="PX", min=0, help="Detect faces on a copy at most this many pixels wide/high (0: full size).", rich_help_panel=_FACES)
    ] = 1280,
    aligned: Annotated[bool, typer.Option("--aligned", help="Inputs are already aligned 512x512 face crops; each output is its restored 512x512 face (no --upscale, no alpha).", rich_help_panel=_FACES)] = False,
    save_faces: Annotated[
        bool, typer.Option("--save-faces", help="Also save face crops, restored faces and side-by-side comparisons.", rich_help_panel=_OUTPUT)
    ] = False,
    ext: Annotated[str, typer.Option(metavar="FORMAT", help="Output format: auto (same as input), png, jpg, webp, heic, avif, tif or bmp.", rich_help_panel=_OUTPUT,
                                          autocompletion=completion.words(*_EXTENSIONS))] = "auto",
    suffix: Annotated[str, typer.Option(help="Text added to each output file name.", rich_help_panel=_OUTPUT,
                                        callback=_file_name_suffix)] = "",
    strip_metadata: Annotated[
        bool, typer.Option("--strip-metadata", help="Leave the photo's EXIF, IPTC and XMP metadata (date taken, "
                           "camera, GPS position, rating, keywords, captions) out of the outputs; its colour profile is kept.", rich_help_panel=_OUTPUT)
    ] = False,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Look into sub-folders of folder inputs.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose output file already exists.")] = False,
    device: DeviceOption = "auto",
    half: HalfOption = None,
    bf16: Bf16Option = False,
    tile: Annotated[
        int, typer.Option(metavar="PX", min=0, help="Background tile size in pixels (0: whole image at once).", rich_help_panel="Device")
    ] = 400,
    face_batch: Annotated[
        int, typer.Option(min=0, help="Faces per network call (0: 1 on a CPU, from free memory on a GPU).", rich_help_panel="Device")
    ] = 0,
    max_memory: Annotated[
        float,
        typer.Option(metavar="GB",
            min=0.0,
            callback=finite,
            help="GPU memory budget in GB (0: what the GPU has free); face batches and tiles are sized to fit it. "
            "Not used on a CPU, where --tile bounds memory.",
            rich_help_panel="Device",
        ),
    ] = 0.0,
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Restore faces with GFPGAN and upscale the rest with Real-ESRGAN."""
    precision = precision_from_flags(half, bf16)
    if aligned:  # the face network alone runs, on the whole 512x512 input
        warn_of_options_unused(context, ["upscale", "bg_model", "detector", "parser", "threshold", "only_center_face",
                                         "min_face_size", "detect_size", "tile"], "with --aligned")
    if ext.lower() not in _EXTENSIONS:
        raise usage_error(f"--ext {ext}: use one of {', '.join(_EXTENSIONS)}")

    piped = _check_streams(inputs, output, as_json=as_json, save_faces=save_faces, suffix=suffix, dry_run=dry_run)
    jobs = _plan(inputs, output, piped, recursive=recursive, ext=ext, suffix=suffix)
    face_stem = face_stems(jobs)
    if save_faces and not piped.output:
        from i2icli.batch import refuse_face_file_clashes

        jobs = refuse_face_file_clashes(jobs, face_stem)

    def record_of(job: Any) -> dict[str, Any]:
        return {"input": str(job.source), "output": job.output and str(job.output)}

    background = {"none": None, "auto": "auto"}.get(bg_model.lower(), bg_model)
    parser_spec = None if parser.lower() == "none" else parser
    if dry_run:
        exit_with_preview(jobs, skip_existing=skip_existing and not piped.output, as_json=as_json, record_of=record_of,
                          checkpoints=lambda: _checkpoints(model, background, detector, parser_spec, upscale=upscale,
                                                           aligned=aligned))
    if piped.input:
        piped.data = read_standard_input(max_pixels)
    if piped.output:
        skip_existing = False  # "-" names no file that could exist
        piped.output_suffix = _piped_output_suffix(jobs[0].source, ext, piped.data)

    todo = [job for job in jobs if will_run(job, skip_existing=skip_existing)]
    pipeline = None
    if todo:  # else PyTorch is not even imported: a batch of missing files fails at once
        from i2icli.pipelines.restore import RestorePipeline, RestoreSettings

        settings = RestoreSettings(
            upscale=upscale,
            strength=strength,
            threshold=threshold,
            min_face_size=min_face_size,
            only_center_face=only_center_face,
            detect_max_side=detect_size,
            aligned=aligned,
            face_batch=face_batch,
            keep_faces=save_faces,
        )
        with download_progress() as progress:
            pipeline = RestorePipeline.load(
                model=model,
                bg_model=background,
                detector=detector,
                parser=parser_spec,
                device=device,
                precision=precision,
                tile=tile,
                max_memory=max_memory or None,
                settings=settings,
                progress=progress,
            )

    stages = restore_stages(pipeline, max_pixels=max_pixels, save_faces=save_faces, face_stem=face_stem,
                            output_named=not piped.output and names_image_file(output), piped=piped,
                            strip_metadata=strip_metadata)
    # Decoding and encoding on worker threads keeps a GPU busy. On a CPU they would compete with
    # the networks for the same cores: there a 2 MP folder ran 69.3 s/image with it and 70.7 s
    # without, within noise (decode + encode are 0.3 s of it), for 130 MB more memory.
    overlap_io = pipeline is not None and pipeline.device.type != "cpu"
    records = run_batch(jobs, stages, verb="restoring", skip_existing=skip_existing, overlap_io=overlap_io,
                        record_of=record_of)
    failed = batch_failures(records, as_json=as_json)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _checkpoints(model: str, background: str | None, detector: str, parser: str | None, *, upscale: float,
                 aligned: bool) -> list[tuple[str, Any]]:
    """Where each checkpoint RestorePipeline.load would load comes from, in the order it loads them."""
    from i2icli.pipelines.loading import checkpoint_source

    needed = [("--model", checkpoint_source(model, "GFPGAN"))]
    if aligned:  # the face network alone runs
        return needed
    needed.append(("--detector", checkpoint_source(detector, "RetinaFace")))
    if parser:
        needed.append(("--parser", checkpoint_source(parser, "ParseNet")))
    if background:
        if background == "auto":
            from i2icli.pipelines.restore_models import background_model_for

            background = background_model_for(upscale)
        needed.append(("--bg-model", checkpoint_source(background, "Real-ESRGAN")))
    return needed


@dataclass
class Piped:
    """What goes through the standard streams: the input read from stdin (``data``, once read),
    the output written to stdout (in the format of ``output_suffix``)."""

    input: bool = False
    output: bool = False
    data: bytes | None = None
    output_suffix: str = ".png"


def _check_streams(inputs: list[str], output: str, *, as_json: bool, save_faces: bool, suffix: str,
                   dry_run: bool) -> Piped:
    """Refuse what cannot go with "-" (stdin) or "-o -" (stdout), before anything is read."""
    piped = Piped(input=STANDARD_STREAM in inputs, output=output == STANDARD_STREAM)
    if piped.input and len(inputs) > 1:
        raise usage_error("- (the image on standard input) must be the only input")
    if piped.input:
        refuse_output_folder_for_standard_input(output, "restored.png")
    if piped.output and suffix:
        raise usage_error("--suffix is for output folders; -o - writes to standard output")
    writes_to_standard_output(output, as_json=as_json, dry_run=dry_run, files_beside=[("--save-faces", save_faces)])
    return piped


def _piped_output_suffix(source: Path, ext: str, piped_data: bytes | None) -> str:
    """The format written to stdout: --ext, else the input's own (read off the piped data)."""
    if ext.lower() != "auto":
        return "." + ext.lower()
    if piped_data is not None:
        from i2icli.imageio import format_suffix

        return format_suffix(piped_data) or ".png"  # no image: reading it fails with its own message
    found = source.suffix.lower()  # the image's own: INPUT may be a folder or pattern holding it
    return found if found in IMAGE_SUFFIXES else ".png"


def _plan(inputs: list[str], given: str, piped: Piped, *, recursive: bool, ext: str, suffix: str) -> list[Any]:
    """The jobs for INPUTS. -o names the output folder, or, for a single input, the output file;
    "-" reads the one input from standard input, "-o -" writes the one output to standard output."""
    from i2icli.batch import Job, file_key, plan_jobs

    if piped.input:
        output = Path(given).expanduser()
        if not piped.output:
            _refuse_folder_options(output, ext, suffix)
            check_output_folder(output.parent)
        return [Job(Path(STANDARD_STREAM), output)]
    if piped.output:
        import tempfile

        with tempfile.TemporaryDirectory() as nowhere:  # an empty folder no output can clash in
            jobs = plan_jobs(inputs, Path(nowhere), recursive=recursive)
        refuse_more_than_one_image_to_standard_output(len(jobs))
        return [Job(job.source, Path(STANDARD_STREAM), job.problem) for job in jobs]
    output = Path(given).expanduser()
    if not names_image_file(given):  # the string as typed: "new.png/" is a folder, and Path() drops the slash
        check_output_folder(output)
        return plan_jobs(inputs, output, recursive=recursive, ext=ext, suffix=suffix)
    _refuse_folder_options(output, ext, suffix)
    check_output_folder(output.parent)
    jobs = plan_jobs(inputs, output.parent, recursive=recursive)
    # Run again on the folder it wrote into, the command would find its own earlier result there
    # and refuse two images for one output file; found in a folder or by a pattern, it is left out.
    named = {file_key(Path(spec).expanduser()) for spec in inputs}
    earlier = [job for job in jobs if file_key(job.source) == file_key(output) and file_key(job.source) not in named]
    if earlier and len(jobs) > 1:
        warn(f"{earlier[0].source}: left out, as the output this command writes")
        jobs = [job for job in jobs if job not in earlier]
    if len(jobs) > 1:
        raise usage_error(f"-o {output} names one output file, but the inputs hold {len(jobs)} images; give -o a folder")
    job = jobs[0]
    if job.output is None:  # missing, unreadable, or an empty folder: nothing to name
        return jobs
    problem = None
    if file_key(output) == file_key(job.source):
        problem = f"{job.source}: the output would overwrite the input; choose another -o/--output"
    return [Job(job.source, output, problem)]


def _refuse_folder_options(output: Path, ext: str, suffix: str) -> None:
    if ext.lower() != "auto" or suffix:
        raise usage_error(f"-o {output} names the output file: its extension picks the format, so --ext and --suffix "
                          "(which are for output folders) cannot be used with it")


def face_stems(jobs: list[Any]) -> Any:
    """How --save-faces names a photo's face files: OUTPUT-STEM_NN.png, as GFPGAN does, unless two
    outputs in one folder share a stem, in any case (old.jpg, old.png, Old.tif); then the whole
    name: old.jpg_NN.png."""
    from collections import Counter

    from i2icli.batch import case_blind

    # Case-blind: A.png and a.jpg would give A_00.png and a_00.png, one file on a disk that ignores case.
    stems = Counter(case_blind(job.output.with_suffix("")) for job in jobs if job.output is not None)
    return lambda output: output.name if stems[case_blind(output.with_suffix(""))] > 1 else output.stem


def restore_stages(pipeline: Any, *, max_pixels: int, save_faces: bool, face_stem: Any = None,
                   output_named: bool = False, piped: Piped | None = None, strip_metadata: bool = False) -> Any:
    """A restore job as the batch runner's three stages: decode, restore, encode (and save faces).
    ``face_stem(output)`` names the face files (default: the output's stem); ``output_named``: -o
    names the output file itself, whose extension is the format (--ext does not apply); ``piped``:
    the one job's input comes from stdin, or its output goes to stdout; ``strip_metadata``: the
    outputs get no EXIF block, XMP packet or IPTC datasets of the photo's."""
    face_stem = face_stem or (lambda output: output.stem)
    piped = piped or Piped()
    from i2icli.cli.runner import Stages
    from i2icli.image_encoding import check_output_size
    from i2icli.imageio import read_image

    def suffix_of(job: Any) -> str:  # the output's format
        return piped.output_suffix if piped.output else job.output.suffix

    def read(job: Any) -> Any:
        picture = read_image(job.source, max_pixels=max_pixels, data=piped.data if piped.input else None)
        if strip_metadata:
            picture.exif = picture.xmp = picture.iptc = None
        # Before the work, not after it.
        check_output_size(job.output, *pipeline.output_size(picture), suffix=suffix_of(job))
        return picture

    metadata_lost_told = False

    def write(job: Any, result: Any) -> tuple[dict[str, Any], str, str]:
        nonlocal metadata_lost_told
        _warn_of_lost_transparency(job, result.picture, output_named, suffix_of(job).lower())
        if not metadata_lost_told:
            metadata_lost_told = _warn_of_lost_metadata(job, result.picture, output_named, suffix_of(job).lower())
        extra = {"faces": result.face_count, "stages": {k: round(v, 3) for k, v in result.seconds.items()}}
        if save_faces:  # first: the output is what --skip-existing takes for a photo done, face files too
            extra.update(_save_faces(job.output, face_stem(job.output), result, result.picture.rgb.dtype))
        write_output(job.output, result.picture, piped_format=piped.output_suffix)
        faces = f"{result.face_count} face{'s' if result.face_count != 1 else ''}, "
        return extra, f"{job.source} → {output_name(job.output)}", faces

    return Stages(
        read=read,
        compute=lambda job, picture: pipeline.restore(picture),
        write=write,
    )


def _warn_of_lost_transparency(job: Any, picture: Any, output_named: bool, suffix: str) -> None:
    """JPEG and BMP hold no alpha: a photo with transparent areas would show, unannounced, whatever
    colours lie under them (often black). (--aligned results have no alpha: its help says so.)"""
    import logging

    from i2icli.pixels import max_value

    if picture.alpha is None or suffix not in (".jpg", ".jpeg", ".bmp"):
        return
    if picture.alpha.min() < max_value(picture.alpha.dtype):
        # A named -o file takes its format from its extension, and refuses --ext.
        remedy = ("name a .png, .webp or .tif file with -o" if output_named else "use --ext png, webp or tif")
        logging.getLogger(__name__).warning(
            "%s: has transparent areas, which a %s file cannot hold: they come out in the colours beneath; "
            "%s to keep them", job.source, suffix.lstrip(".").upper(), remedy)


# Formats that keep EXIF and XMP but have no place for IPTC-IIM datasets.
_NO_IPTC_SUFFIXES = frozenset({".webp", ".heic", ".heif", ".avif"})


def _warn_of_lost_metadata(job: Any, picture: Any, output_named: bool, suffix: str) -> bool:
    """BMP has no place for EXIF, IPTC or XMP: a photo's date taken, GPS position, rating and
    captions would be left out of it unannounced, where the other formats keep them. WebP, HEIC and
    AVIF have none for IPTC: a photo that holds its captions there alone, with no XMP packet to
    repeat them, would lose them unannounced too. Said once a run, not for each photo of a folder;
    whether it was said."""
    import logging

    from i2icli.exif import exif_block

    logger = logging.getLogger(__name__)
    if suffix == ".bmp" and (picture.xmp or picture.iptc or (picture.exif and exif_block(picture.exif))):
        remedy = "name a .png, .jpg, .webp or .tif file with -o" if output_named else "use --ext png, jpg, webp or tif"
        logger.warning(
            "%s: a BMP file holds no EXIF, IPTC or XMP metadata: the date taken, camera, GPS position, rating and "
            "captions of this photo and of any after it are left out; %s to keep them, or --strip-metadata to leave "
            "them out without this warning", job.source, remedy)
        return True
    if suffix in _NO_IPTC_SUFFIXES and picture.iptc and not picture.xmp:
        remedy = "name a .png, .jpg or .tif file with -o" if output_named else "use --ext png, jpg or tif"
        logger.warning(
            "%s: a %s file holds no IPTC-IIM metadata, and this photo keeps its caption, keywords, byline and "
            "copyright there alone: they are left out of it and of any such output after it; %s to keep them, or "
            "--strip-metadata to leave them out without this warning", job.source, suffix.lstrip(".").upper(), remedy)
        return True
    return False


def _save_faces(output: Path, stem: str, result: Any, dtype: Any) -> dict[str, list[str]]:
    """Crops, restored faces and side-by-side pairs next to the output, one PNG per face; return
    the files by folder name (the --json record's keys), each list in the order of the faces."""
    import numpy as np

    from i2icli.batch import FACE_FOLDERS, face_file_name, output_path_problem
    from i2icli.errors import I2IError
    from i2icli.imageio import Picture, write_image
    from i2icli.pixels import quantize

    if result.faces:
        # Planning measured the names of face 00; past 99 faces they grow a digit. The longest is
        # measured before any is written, rather than failing at the 101st with a hundred written.
        longest = output.parent / FACE_FOLDERS[0] / face_file_name(stem, len(result.faces) - 1)
        if problem := output_path_problem(longest, f"with {len(result.faces)} faces, its --save-faces file"):
            raise I2IError(problem)
    written: dict[str, list[str]] = {folder: [] for folder in FACE_FOLDERS}
    for index, face in enumerate(result.faces):
        crop, restored = quantize(face.crop, dtype), quantize(face.restored, dtype)
        name = face_file_name(stem, index)
        for folder, pixels in zip(FACE_FOLDERS, (crop, restored, np.hstack([crop, restored]))):
            # In the photo's colour space, as the output is (a grey photo's profile fits no RGB file: left out).
            path = write_image(output.parent / folder / name, Picture(rgb=pixels, alpha=None, grayscale=False,
                                                                      source=None, icc_profile=result.picture.icc_profile))
            written[folder].append(str(path))
    return written
