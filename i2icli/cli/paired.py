"""`i2i paired`: a label map (or edge image) becomes a photo, GRIT's reconstruction plus GAN residual."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from i2icli.cli.error_handling import EXIT_FAILED, EXIT_OK, handles_errors, usage_error
from i2icli.cli.options import (
    DeviceOption,
    DryRunOption,
    JsonOption,
    MaxPixelsOption,
    seed_in_range,
)
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
    read_standard_input,
    refuse_more_than_one_image_to_standard_output,
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
from i2icli.cli.stderr import console, plain
from i2icli.cli.train_common import refuse_a_missing_run
from i2icli.errors import InputError
from i2icli.formats import DEFAULT_MAX_PIXELS, SEED_MAX
from i2icli.pipelines import memory_hints

_MODEL = "Model"
_OUTPUT = "Output"


@dataclass(frozen=True)
class LabelJob:
    source: Path
    base: Path  # what the outputs are named after (see output_files)
    output: Path  # the first sample's output: what --skip-existing looks for (written last)
    problem: str | None = None


def output_files(output: Path, seeds: list[int], components: bool, std_map: bool) -> dict[str, Path]:
    """Every file a label map's results go to, by role.

    One sample: OUTPUT itself. Several: OUTPUT's stem plus ``-seed<S>`` for each seed S. The
    components add ``-reconstruction`` (once: it does not depend on the noise) and ``-residual``
    per sample; the standard-deviation map adds ``-std``.
    """
    def named(suffix: str) -> Path:
        return output.with_name(f"{output.stem}{suffix}{output.suffix}")

    files: dict[str, Path] = {}
    several = len(seeds) > 1
    for seed in seeds:
        tag = f"-seed{seed}" if several else ""
        files[f"output:{seed}"] = named(tag) if tag else output
        if components:
            files[f"residual:{seed}"] = named(f"{tag}-residual")
    if components:
        files["reconstruction"] = named("-reconstruction")
    if std_map:
        files["std"] = named("-std")
    return files


@handles_errors(memory_hint=memory_hints.PAIRED)
def paired(
    label: Annotated[str, typer.Argument(metavar="LABEL", show_default=False,
                                         help="Label map (class-index PNG) or edge image, or a folder of them; - reads "
                                         "one from standard input.")],
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", "-c", metavar="RUN|FILE", show_default=False, rich_help_panel=_MODEL,
                          help="A checkpoint from `i2i train paired` (file, or the run's --out folder).")
    ],
    output: Annotated[
        str, typer.Option("-o", "--output", metavar="DIR|FILE", rich_help_panel=_OUTPUT,
                          help="Output image for one label map (-: standard output, as PNG); a folder (for LABEL.png "
                          "files) otherwise.")
    ] = "results",
    style: Annotated[
        str | None, typer.Option("--style", metavar="PHOTO", show_default=False, rich_help_panel=_MODEL,
                                 help="Photo whose style (colours, lighting) to use (-: from standard input). Default: "
                                 "the mean style of the training photos.")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, max=256, help="Variations per label map, each from "
                                         "its own noise.")] = 1,
    seed: Annotated[int, typer.Option(min=0, callback=seed_in_range, help="Noise seed of the first sample; sample k uses seed + k.")] = 0,
    save_components: Annotated[
        bool, typer.Option("--save-components", rich_help_panel=_OUTPUT,
                           help="Also write the reconstruction (-reconstruction) and the GAN residual (-residual, "
                           "grey = 0) next to each output.")
    ] = False,
    std_map: Annotated[
        bool, typer.Option("--std-map", rich_help_panel=_OUTPUT,
                           help="Also write the per-pixel standard deviation over the samples (-std), as a heat map: "
                           "where the variations differ (needs --samples 2 or more).")
    ] = False,
    spectrum: Annotated[
        Path | None, typer.Option("--spectrum", metavar="FILE", show_default=False, rich_help_panel=_OUTPUT,
                                  help="Also plot the radially averaged power spectrum of the reconstruction, the "
                                  "residual and the output, averaged over all results (PNG).")
    ] = None,
    size: Annotated[int | None, typer.Option(min=8, show_default=False, rich_help_panel=_MODEL,
                                             help="Working size in pixels (default: the training size); its square "
                                             "must be within --max-pixels.")] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip label maps whose output exists.",
                                                rich_help_panel=_OUTPUT)] = False,
    device: DeviceOption = "auto",
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Turn label maps into photos with GRIT (a reconstruction plus a GAN residual with noise).

    Label maps are centre-cropped to squares. Each --samples variation draws different noise,
    which changes only the residual's fine detail; the reconstruction stays the same.
    """
    piped = argument_read_from_standard_input([("LABEL", label), ("--style", style)])
    if piped == "LABEL":  # the outputs are named after LABEL; --style's name is in none of them
        refuse_output_folder_for_standard_input(output, "photo.png")
    to_stdout = writes_to_standard_output(output, as_json=as_json, dry_run=dry_run, files_beside=[
        ("--save-components", save_components), ("--std-map", std_map)])
    if to_stdout and samples > 1:
        raise usage_error(f"--samples {samples} makes {samples} images, and -o - writes one; give -o a file or a folder")
    if std_map and samples < 2:
        raise usage_error("--std-map needs --samples 2 or more")
    if size is not None and size * size > max_pixels:
        # Checked before anything is loaded: the networks' activations at such a size would take
        # more memory than the machine has, and the system would kill i2i without a word.
        raise usage_error(f"--size {size}: {size}x{size} = {size * size:,} pixels, over --max-pixels {max_pixels:,}; "
                          "use a smaller --size, or raise --max-pixels if this machine has the memory")
    if seed + samples - 1 > SEED_MAX:  # sample k uses seed + k
        raise usage_error(f"--seed {seed}: with --samples {samples}, use at most {SEED_MAX - samples + 1}")
    from i2icli.pipelines.paired_plan import sample_seed

    label_path = Path(STANDARD_STREAM) if piped == "LABEL" else Path(label).expanduser()
    style_path = Path(style).expanduser() if style else None
    if style_path is not None and piped != "--style":
        _check_style_photo(style_path)
    labels = [label_path] if piped == "LABEL" else image_files(label_path, "LABEL", Path(output))
    seeds = [sample_seed(seed, k) for k in range(samples)]
    inputs = [path for path in (*labels, style_path) if path is not None]
    if to_stdout:
        refuse_more_than_one_image_to_standard_output(len(labels), "label maps")
        skip_existing = False  # "-" names no file that could exist
        jobs, written = [LabelJob(labels[0], Path(STANDARD_STREAM), Path(STANDARD_STREAM))], []
    else:
        jobs, written = one_writer_per_file(
            _plan(labels, output, seeds, single=piped == "LABEL" or label_path.is_file()),
            lambda job: output_files(job.base, seeds, save_components, std_map).values(), inputs)
    if spectrum is not None:
        spectrum = check_extra_output(spectrum, "--spectrum", (".png",))  # the plot is a PNG
        refuse_overwrite(spectrum, inputs, written)

    def record_of(job: LabelJob) -> dict[str, Any]:
        return {"label": str(job.source), "output": str(job.output)}

    if dry_run:
        exit_with_preview(jobs, skip_existing=skip_existing, as_json=as_json, record_of=record_of,
                          checkpoints=lambda: [("--checkpoint", _checkpoint_source(checkpoint))])

    from i2icli.imageio import read_image

    piped_picture = None
    if piped == "LABEL":
        from i2icli.semantics.labelmaps import piped_label_map

        data = read_standard_input(max_pixels)
        piped_picture = piped_label_map(read_image(STANDARD_STREAM, max_pixels=max_pixels, data=data), data)
    elif piped:
        piped_picture = read_piped_image(max_pixels)
    translator: Any = None
    style_code = None
    if any(will_run(job, skip_existing=skip_existing) for job in jobs):  # else no model is loaded, nor PyTorch imported
        refuse_a_missing_run(_checkpoint_source(checkpoint), device)  # before PyTorch is imported
        from i2icli.pipelines.paired import PairedTranslator

        try:
            translator = PairedTranslator.load(checkpoint, size=size, device=device)
        except ValueError as error:
            raise usage_error(str(error)) from None
        if piped == "--style":
            style_picture = piped_picture
        else:
            style_picture = read_image(style_path, max_pixels=max_pixels) if style_path else None
        style_code = translator.style_code(style_picture)
    spectra = _SpectrumSums() if spectrum is not None else None

    def process(job: LabelJob) -> tuple[dict[str, Any], str, str]:
        from i2icli.pipelines.paired import std_heatmap

        picture = piped_picture if piped == "LABEL" else read_image(job.source, max_pixels=max_pixels)
        result = translator.translate(picture, style=style_code, samples=samples, seed=seed, std_map=std_map)
        files = output_files(job.base, seeds, save_components, std_map)
        pictures = {}
        for index, noise_seed in enumerate(result.seeds):
            pictures[f"output:{noise_seed}"] = result.outputs[index]
            if save_components:
                pictures[f"residual:{noise_seed}"] = result.residuals[index]
        if save_components:
            pictures["reconstruction"] = result.reconstruction
        if std_map:
            assert result.std_map is not None
            pictures["std"] = std_heatmap(result.std_map)
        # job.output, the file --skip-existing looks for, is written last: a run cut short between
        # two writes leaves it missing, so the label map is done again rather than left incomplete.
        for role in sorted(pictures, key=lambda role: files[role] == job.output):
            write_output(files[role], pictures[role])
        fields: dict[str, Any] = {"outputs": [str(files[f"output:{s}"]) for s in seeds], "seeds": seeds}
        if save_components:
            fields["reconstruction"] = str(files["reconstruction"])
            fields["residuals"] = [str(files[f"residual:{s}"]) for s in seeds]
        detail = f"{samples} sample{'s' if samples > 1 else ''}; "
        if std_map:
            assert result.std_map is not None
            fields["std_map"] = str(files["std"])
            fields["std_max_levels"] = round(float(result.std_map.max()), 3)
            fields["std_mean_levels"] = round(float(result.std_map.mean()), 3)
            # Both to a hundredth of a level: a map of tiny differences would read "up to 0.0" otherwise.
            detail += f"std up to {fields['std_max_levels']:.2f} levels (mean {fields['std_mean_levels']:.2f}); "
        if spectra is not None:
            spectra.add(result.tensors)
        return fields, f"{job.source} → {output_name(job.output)}", detail  # the path, as restore and --dry-run show it

    records = run_batch(jobs, process, verb="translating", skip_existing=skip_existing, record_of=record_of)
    if spectra is not None:
        spectra.write(spectrum)  # type: ignore[union-attr,arg-type]
    failed = batch_failures(records, as_json=as_json)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _check_style_photo(path: Path) -> None:
    """Only looked for, not read: a --style photo that is not there fails the plan (and --dry-run),
    as reading it would, rather than after the checkpoint has been loaded."""
    from i2icli.imageio import refuse_unreadable_file

    if path.is_dir():
        raise InputError(path, "is a folder, but --style takes one photo", "pass a photo file as --style")
    refuse_unreadable_file(path)


def _plan(labels: list[Path], given: str, seeds: list[int], single: bool) -> list[LabelJob]:
    def job(source: Path, base: Path) -> LabelJob:
        return LabelJob(source, base, output_files(base, seeds, False, False)[f"output:{seeds[0]}"])

    output = Path(given).expanduser()
    to_file = names_image_file(given)  # as typed: "new.png/" is a folder, and Path() drops the slash
    check_output_folder(output.parent if to_file else output)
    if single and to_file:
        return [job(labels[0], output)]
    if to_file:
        raise usage_error(f"-o {output}: with a folder of label maps, -o must be a folder")
    return [job(path, output / f"{path.stem}.png") for path in labels]


class _SpectrumSums:
    """Spectra summed over the batch's results, then averaged into one plot."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0

    def add(self, tensors: dict[str, Any]) -> None:
        from i2icli.pipelines.spectrum import radial_power_spectrum

        for name, images in tensors.items():
            spectrum = radial_power_spectrum(images)
            self.sums[name] = self.sums.get(name, 0) + spectrum
        self.count += 1

    def write(self, path: Path) -> None:
        from i2icli.pipelines.spectrum import high_frequency_share, plot_spectra

        if not self.count:
            console.print(f"[yellow]no spectrum written[/]: no label map was translated ({plain(path)})")
            return
        spectra = {name: total / self.count for name, total in self.sums.items()}
        plot_spectra(spectra, path, title=f"Power spectrum over {self.count} label map{'s' if self.count > 1 else ''}")
        shares = ", ".join(f"{name} {100 * high_frequency_share(s):.1f}%" for name, s in spectra.items())
        console.print(f"[green]✓[/] spectrum → {plain(path)} [dim](power above 1/4 cycle per pixel: {shares})[/]")


def _checkpoint_source(checkpoint: str) -> Any:
    """Where PairedTranslator.load would have ``checkpoint`` (a run folder: its latest) from."""
    from i2icli.pipelines.loading import trained_checkpoint_source
    from i2icli.pipelines.paired_plan import METHOD_NAME

    return trained_checkpoint_source(checkpoint, METHOD_NAME)
