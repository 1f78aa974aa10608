"""Images piped in with "-" and out with "-o -": what cannot go with them, reading one, writing a result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

from i2icli.cli.error_handling import usage_error
from i2icli.cli.paths import names_image_file
from i2icli.cli.stdout import write_standard_output

# "-" for INPUT reads the image from standard input, and "-o -" writes it to standard output, as
# Unix tools do (a folder named "-" is still reached as ./-).
STANDARD_STREAM = "-"


def argument_read_from_standard_input(images: Iterable[tuple[str, str | None]],
                                      other_files: Iterable[tuple[str, str | None, str]] = ()) -> str | None:
    """The name of the image argument given as "-" (LABEL, --style), whose image is piped into the
    command; None when none is. ``images`` pairs each image argument's name with its value as
    typed (a Path would make "./-", the file named "-", into "-"). ``other_files`` names the
    arguments that take another kind of file (a pose, a CSV list), and what it is: those are not
    read from standard input. Standard input holds one image, so a second "-" is refused."""
    for name, value, what in other_files:
        if value == STANDARD_STREAM:
            raise usage_error(f"{name} -: {what} is not read from standard input; save it to a file and pass its path "
                              "(a file named - is ./-)")
    piped = [name for name, value in images if value == STANDARD_STREAM]
    if len(piped) > 1:
        raise usage_error(f"{' and '.join(piped)} are {'both' if len(piped) == 2 else 'all'} -, but standard input "
                          "holds one image; save all but one of them to files and pass their paths")
    return piped[0] if piped else None


def refuse_output_folder_for_standard_input(output: str, example: str = "out.png") -> None:
    """An output folder names each result after its input, and an image piped in has no name."""
    if output != STANDARD_STREAM and not names_image_file(output):
        raise usage_error(f"an image read from standard input needs an output file name (-o {example}), or -o - to "
                          "write it to standard output")


def read_piped_image(max_pixels: int) -> Any:
    """The image piped into the command, decoded (a ``Picture`` named "-"): read once, and refused
    before any model loads when it is no image or over ``max_pixels``."""
    from i2icli.imageio import read_image

    return read_image(STANDARD_STREAM, max_pixels=max_pixels, data=read_standard_input(max_pixels))


def read_standard_input(max_pixels: int) -> bytes:
    """The image piped into the command (one over ``max_pixels`` is refused from its header)."""
    from i2icli.imageio import read_stream

    stream = sys.stdin
    if stream is None or stream.isatty():  # reading would wait for typing that never comes
        raise usage_error("- reads the image from standard input, which is a terminal here; pipe or redirect an "
                          "image into it (< photo.jpg)")
    return read_stream(getattr(stream, "buffer", stream), STANDARD_STREAM, max_pixels=max_pixels)


def writes_to_standard_output(output: str, *, as_json: bool, dry_run: bool,
                              files_beside: Iterable[tuple[str, bool]] = ()) -> bool:
    """Whether "-o -" sends the result to standard output, once what cannot go with it is refused:
    --json (which writes there too), and the options named in ``files_beside`` that are given
    (they write more files next to the output, and "-" is in no folder)."""
    if output != STANDARD_STREAM:
        return False
    if as_json:
        raise usage_error("--json and -o - would both write to standard output; use one of them")
    for option, given in files_beside:
        if given:
            raise usage_error(f"{option} writes files beside the output: give -o a file or a folder")
    if not dry_run:
        refuse_terminal_output()
    return True


def refuse_more_than_one_image_to_standard_output(count: int, inputs_hold: str = "images") -> None:
    if count > 1:
        raise usage_error(f"-o - writes one image to standard output, but the inputs hold {count} {inputs_hold}; "
                          "give -o a folder")


def refuse_terminal_output() -> None:
    """-o - on a terminal would fill it with binary data."""
    if sys.stdout is not None and sys.stdout.isatty():
        raise usage_error("-o - writes the image to standard output, which is a terminal here; redirect it "
                          "(> out.png) or pipe it to another program")


def write_output(path: Path, picture: Any, *, piped_format: str = ".png") -> None:
    """Write ``picture`` to ``path`` (atomically), or, for "-o -" (``path`` is "-"), to standard
    output in ``piped_format``: the one choice every command makes when it saves a result."""
    from i2icli.imageio import encode_image, write_image

    if str(path) == STANDARD_STREAM:
        write_standard_output(encode_image(picture, piped_format))
    else:
        write_image(path, picture)


def output_name(path: Path) -> str:
    """An output as a status line names it: its path, or "standard output" for "-o -"."""
    return "standard output" if str(path) == STANDARD_STREAM else str(path)
