"""What every subcommand shares: the stderr console, option types, and the one place errors are rendered."""

from __future__ import annotations

import codecs
import contextlib
import functools
import inspect
import json
import logging
import math
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from i2icli.batch import file_key
from i2icli.cli import completion
from i2icli.errors import I2IError, InputError, WeightsError, first_line
from i2icli.formats import IMAGE_SUFFIXES, SEED_MAX


# Diagnostics go to stderr so that stdout stays clean for --json and shell pipelines. Whether it
# is a terminal is decided once, at start: while an image decodes, stderr is briefly a file that
# collects the C libraries' lines (see imageio), and a progress bar redrawn then would lose its place.
class _Console(Console):
    """Rich's console, which Ctrl-C and SIGTERM do not stop mid-write. Rich clears what it has
    buffered only after writing it: an interrupt raised in between (a script that signals as soon
    as it reads a line) left the line there, and the "interrupted" line printed it again. The
    commands' handlers (see ``_signals_as_interrupts``) wait until the write is over."""

    def _check_buffer(self) -> None:
        if threading.current_thread() is not threading.main_thread():  # interrupts are raised in the main thread
            super()._check_buffer()
            return
        _interrupts.writing = True
        try:
            super()._check_buffer()
        finally:
            _interrupts.writing = False
            pending, _interrupts.pending = _interrupts.pending, None
            if pending is not None:
                raise pending


class _Interrupts:
    """Whether the console is writing, and the interrupt that came meanwhile, raised after it."""

    writing = False
    pending: BaseException | None = None


_interrupts = _Interrupts()


def _raise_unless_writing(interrupt: BaseException) -> None:
    if _interrupts.writing:
        _interrupts.pending = _interrupts.pending or interrupt
        return
    raise interrupt


console = _Console(stderr=True, highlight=False, soft_wrap=True,
                   force_terminal=Console(stderr=True).is_terminal)


def transient_progress(*columns: Any) -> Any:
    """A progress bar that disappears when done. Off when stderr is not a terminal: there it could
    not be erased, and would leave an empty line in front of the command's messages."""
    from rich.progress import Progress

    # A dumb terminal (TERM=dumb: an editor's shell, a CI log) cannot redraw a line either.
    return Progress(*columns, console=console, transient=True,
                    disable=not console.is_terminal or console.is_dumb_terminal)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Image formats i2i does not write: `-o out.gif` is refused, rather than made a folder named out.gif.
_UNWRITTEN_IMAGE_SUFFIXES = frozenset({
    ".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".exr",
    ".hdr", ".ico", ".svg", ".psd", ".dng", ".raw", ".pdf",
})

F = TypeVar("F", bound=Callable[..., Any])


# What an option's value is called in help when its definition names nothing more telling
# (`--tile PX`, `--model NAME|PATH`): Typer would print the Python type, `<int range>` or `<str>`.
_VALUE_NAMES = {"<int>": "N", "<int range>": "N", "<float>": "X", "<float range>": "X", "<path>": "PATH", "<str>": "TEXT"}


class _PlainValueNames:
    """Typer's help prints a flag as `--json <bool>`, as if it took a value (`--json true` is
    refused), and other options with their Python type; here a flag shows nothing, and a value
    the name its definition gives or a plain N, X, PATH or TEXT, as in the README's tables. An
    argument shows its name only."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.param_type_name == "argument":
                # Its name (INPUTS, SOURCE) is what help shows for it; the type beside it, `<path>`
                # or `<list[str]>`, would only repeat that in Python's words.
                param.display_type_rich = lambda ctx: None
                continue
            if param.metavar is not None:
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""
            else:
                param.metavar = _VALUE_NAMES.get(param.display_type_rich(ctx) or "", None)
        return params


def _value_given(error: Exception) -> str | None:
    """The value a user typed, when Typer's validation refused it. Typer's message ("Input should be
    less than or equal to 8") does not repeat it; in a long script line it is what to look for."""
    errors = getattr(error.__cause__, "errors", None)  # a pydantic ValidationError
    try:
        given = errors()[0]["input"] if callable(errors) else None
    except (LookupError, TypeError):
        return None
    return str(given) if isinstance(given, (str, int, float)) else None


def _names_no_finite_number(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


@contextmanager
def _usage_errors_on_one_line() -> Iterator[None]:
    try:
        yield
    except typer.TyperException as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # shows the help, as asked for; not an error line
            raise
        ctx = getattr(error, "ctx", None)
        message = " ".join(error.format_message().split()).removesuffix(".")
        given = _value_given(error)
        if given is not None and message.startswith("Invalid value for") and _names_no_finite_number(given):
            # NaN fails every bound, and Typer would say "should be at most 1" of it.
            message = f"{message.split(': ', 1)[0]}: {given} is not a finite number"
        elif given is not None and given not in message:
            message += f" (given: {given})"
        report_error(I2IError(message, f"see '{ctx.command_path} -h'" if ctx is not None else None))
        raise typer.Exit(error.exit_code) from None


class _UsageErrorsOnOneLine:
    """Typer draws a usage error (a missing argument, a value out of range, a mistyped command) as
    the usage line, a hint and a framed panel, five lines or more; here it is one line like every
    other i2i error, with where to read more. The exit status stays 2. Parsing happens in
    ``make_context``, a sub-command's inside its group's ``invoke``: both are covered."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_errors_on_one_line():
            return super().make_context(*args, **kwargs)  # type: ignore[misc]

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_on_one_line():
            return super().invoke(ctx)  # type: ignore[misc]


class _FlowingHelp:
    """A command's description comes from its docstring, whose line breaks Typer keeps: in a
    terminal of another width they leave ragged lines. Here each paragraph flows as one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        if self.help:  # type: ignore[has-type]
            paragraphs = inspect.cleandoc(self.help).split("\n\n")  # type: ignore[has-type]
            self.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


class Command(_UsageErrorsOnOneLine, _PlainValueNames, _FlowingHelp, TyperCommand):
    """The class of every i2i command (``app.command(..., cls=Command)``)."""


class Group(_UsageErrorsOnOneLine, _PlainValueNames, _FlowingHelp, TyperGroup):
    """The class of i2i and its command groups (``typer.Typer(cls=Group)``)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a cron job's or a service's stop), raised where Ctrl-C would be, so that it
    ends the run the same clean way: no temporary file left behind, the --json summary printed."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM in a batch, carrying the batch's --json summary up to that moment."""

    def __init__(self, summary: dict[str, Any], *, terminated: bool = False) -> None:
        super().__init__()
        self.summary = summary
        self.terminated = terminated


EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM


def _interrupt(signum: int, frame: Any) -> None:
    _raise_unless_writing(KeyboardInterrupt())


def _terminate(signum: int, frame: Any) -> None:
    # A second SIGTERM must not cut short the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _raise_unless_writing(Terminated())


@contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """Ctrl-C, and SIGTERM, which would otherwise end Python at once (an output being written left
    as a temporary file), raised as interrupts, though not while the console writes a line."""
    if threading.current_thread() is not threading.main_thread():  # handlers are set from there only
        yield
        return
    previous = {number: signal.signal(number, handler)
                for number, handler in ((signal.SIGINT, _interrupt), (signal.SIGTERM, _terminate))}
    try:
        yield
    finally:
        for number, handler in previous.items():
            # None means a handler installed outside Python: the default is the closest to it.
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


# Control characters as escapes: a file name may hold a newline, which would split a line that
# scripts read one per file, or an escape sequence, which the terminal would obey.
_CONTROL_CHARACTERS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL_CHARACTERS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def visible(text: str) -> str:
    """``text`` on one line, its control characters written as escapes (\\n, \\x1b)."""
    return text.translate(_CONTROL_CHARACTERS)


def megabytes(size: int | None) -> str:
    """A checkpoint's size as listings show it ("332.5 MB"), or "?" where the registry has none."""
    return f"{size / 2**20:.1f} MB" if size else "?"


def report_error(error: I2IError | str) -> None:
    """Print one line: the error, then what to do about it if known."""
    # Built as Text, not markup: escaped markup doubles a backslash that ends a message (C:\photos\).
    line = Text.assemble(("error:", "bold red"), " ", visible(str(error.message if isinstance(error, I2IError) else error)))
    if isinstance(error, I2IError) and error.hint:
        line.append(f" — {visible(error.hint)}", style="dim")
    console.print(line, soft_wrap=True)


def plain(value: Any) -> str:
    """``value`` as text in a console line: a file named "IMG [edited].jpg" is not markup, and one
    holding control characters shows them as escapes."""
    return escape(visible(str(value)))


def warn(text: str) -> None:
    """One warning line; ``text`` is shown as it is (it may hold file names)."""
    console.print(Text.assemble(("warning:", "yellow"), " ", visible(text)))


def given_on_command_line(context: Any, name: str) -> bool:
    """Whether the option ``name`` was typed on this command line, rather than left at its default."""
    return getattr(context.get_parameter_source(name), "name", None) == "COMMANDLINE"


def warn_of_options_unused(context: Any, names: Iterable[str], because: str) -> None:
    """One warning naming the options among ``names`` that were typed but that ``because`` makes
    pointless: a silent no-op leaves the user believing they had an effect."""
    typed = [param.opts[0] for param in context.command.params
             if param.name in set(names) and given_on_command_line(context, param.name)]
    if typed:
        warn(f"{', '.join(typed)}: not used {because}")


class _ConsoleLogHandler(logging.Handler):
    """The package's logged warnings (a tile shrunk to fit, extra TIFF pages ignored), shown as
    the CLI's own warnings rather than through Python's bare fallback handler."""

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # One line like every other message: the source file and line Python adds mean nothing to a user.
    warn(first_line(message) or category.__name__)


def route_messages_to_console() -> None:
    """Send logged warnings and Python warnings through the one console (stderr). Idempotent."""
    logger = logging.getLogger("i2icli")
    if not any(isinstance(handler, _ConsoleLogHandler) for handler in logger.handlers):
        # Propagation stays on: with no handler above, Python's fallback printer is not used.
        logger.addHandler(_ConsoleLogHandler(logging.WARNING))
    warnings.showwarning = _show_warning


def _device_out_of_memory(error: RuntimeError, hint: str) -> I2IError | None:
    """``pipelines.memory.out_of_memory_error``, the pipelines' own wording, asked only once torch
    is loaded (this module must not load it)."""
    if "torch" not in sys.modules:
        return None
    from i2icli.pipelines.memory import out_of_memory_error

    return out_of_memory_error(error, None, hint)


_DEFAULT_DEVICE_MEMORY_HINT = "use a smaller --size, or --device cpu"
_DEFAULT_RAM_HINT = "close other programs that use much memory, or use smaller images"
# The running command's hints for running out of memory: set by ``handles_errors``, read there and
# by the batch runner, which reports a job that ran out and goes on with the next.
_memory_hints: ContextVar[tuple[str, str]] = ContextVar("memory_hints", default=(_DEFAULT_DEVICE_MEMORY_HINT,
                                                                                 _DEFAULT_RAM_HINT))


def out_of_memory(error: BaseException) -> I2IError | None:
    """One line for running out of memory, the device's or the computer's, with the running
    command's hint on what uses less; None for any other error."""
    device_hint, ram_hint = _memory_hints.get()
    # PyTorch's CPU allocator reports its failures as a RuntimeError rather than MemoryError.
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error)):
        return I2IError("out of memory", ram_hint)
    if isinstance(error, RuntimeError):
        return _device_out_of_memory(error, device_hint)
    return None


def _home_expanded(value: Any) -> Any:
    if isinstance(value, Path):
        return value.expanduser()
    if isinstance(value, list) and value and all(isinstance(item, Path) for item in value):
        return [item.expanduser() for item in value]
    return value


# `-o "$OUT"` with OUT unset: an empty name would put the results in the current folder.
EMPTY_OUTPUT = "-o is empty; name an output file or folder (-o results), or - for standard output"


def handles_errors(command: F | None = None, *, out_of_memory_hint: str = _DEFAULT_DEVICE_MEMORY_HINT,
                   out_of_ram_hint: str = _DEFAULT_RAM_HINT, checkpoint_options: dict[str, str] | None = None) -> Any:
    """Turn known failures into a one-line message and exit code 1 instead of a traceback.

    With ``--json`` (a command's ``as_json``), a failure of the whole run is also reported on
    stdout, as ``{"error": ..., "hint": ...}``, so that a script reading stdout gets a document
    whatever happens. A device that runs out of memory where the command has no smaller batch to
    retry with ends the same way, with ``out_of_memory_hint`` naming the command's options that
    use less; ``out_of_ram_hint`` does the same for the computer's own memory.
    ``checkpoint_options`` maps a registry role (``weights.toml``'s ``role``) to the option that
    takes a file for it, so that a checkpoint that cannot be had names that option. An empty
    -o (a command's ``output``) is refused here, before the command starts, for every command. Used as ``@handles_errors`` or ``@handles_errors(out_of_memory_hint=..., ...)``."""
    if command is None:
        return functools.partial(handles_errors, out_of_memory_hint=out_of_memory_hint,
                                 out_of_ram_hint=out_of_ram_hint, checkpoint_options=checkpoint_options)
    signature = inspect.signature(command)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError:  # arguments the command does not take: it will say so itself
            json_asked = empty_output = False
        else:
            json_asked = bound.arguments.get("as_json") is True
            empty_output = bound.arguments.get("output") == ""
            # A quoted "~/photo.png" reaches the command unexpanded: expanded here, once for every
            # path option, so that no check or read sees the literal "~".
            bound.arguments.update({name: _home_expanded(value) for name, value in bound.arguments.items()})
            args, kwargs = bound.args, bound.kwargs

        def fail(error: I2IError) -> typer.Exit:
            if isinstance(error, WeightsError) and error.role in (checkpoint_options or {}):
                error = error.naming_option(checkpoint_options[error.role])
            report_error(error)
            if json_asked:
                stdout_write(json_document({"error": error.message, "hint": error.hint}))
            return typer.Exit(EXIT_FAILED)

        hints = _memory_hints.set((out_of_memory_hint, out_of_ram_hint))
        try:
            if empty_output:
                raise usage_error(EMPTY_OUTPUT)
            with _signals_as_interrupts():
                return command(*args, **kwargs)
        except I2IError as error:
            raise fail(error) from None
        except KeyboardInterrupt as interrupt:
            terminated = isinstance(interrupt, Terminated) or getattr(interrupt, "terminated", False)
            what = "terminated" if terminated else "interrupted"
            console.print(f"[yellow]{what}[/]")
            if json_asked:  # a script reading stdout still gets a document: what was done, if known
                summary = interrupt.summary if isinstance(interrupt, Interrupted) else None
                stdout_write(json_document(summary or {"error": what, "hint": None}))
            raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The program reading our output stopped early (`| head -1`): as with any Unix tool,
            # the command ends there, quietly, for there is nothing wrong to report.
            _discard_standard_output()
            raise typer.Exit(EXIT_FAILED) from None
        except (MemoryError, RuntimeError) as error:
            report = out_of_memory(error)
            if report is None:
                raise
            raise fail(report) from None
        except OSError as error:
            # A file-system failure no check foresaw (a disk filling up mid-run, say): still one line.
            where = f"{error.filename}: " if error.filename else ""
            raise fail(I2IError(f"{where}{error.strerror or error}")) from None
        finally:
            _memory_hints.reset(hints)

    return wrapper


def usage_error(message: str) -> typer.Exit:
    report_error(message)
    return typer.Exit(EXIT_USAGE)


def finite(value: float | None) -> float | None:
    """Option callback: infinity passes a range without an upper bound, an option without a range
    takes NaN too, and either would only surface later as NaN weights or images."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def positive_finite(value: float | None) -> float | None:
    """Option callback for rates and scales that must be above zero."""
    value = finite(value)
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value} must be above 0")
    return value


def _device_name(value: str) -> str:
    """A well-formed device name (lower-cased); whether that device is present is checked on use."""
    import re

    name = value.strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise typer.BadParameter(f"{value!r}: use auto, cpu, cuda, cuda:N or mps")
    return name


DeviceOption = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel="Device", callback=_device_name,
                      autocompletion=completion.device_names)
]
HalfOption = Annotated[
    bool | None,
    typer.Option(
        "--fp16/--fp32",
        help="Half precision (CUDA only), or full precision. Default: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.",
        show_default=False,
        rich_help_panel="Device",
    ),
]
Bf16Option = Annotated[
    bool,
    typer.Option("--bf16", help="bfloat16 (CPUs with AVX512-BF16/AMX, recent GPUs).", rich_help_panel="Device"),
]


def precision_from_flags(half: bool | None, bf16: bool) -> str:
    """--fp16/--fp32/--bf16 as one precision name; two of them at once is a usage error."""
    if bf16 and half is not None:
        raise usage_error("--bf16 cannot be combined with --fp16 or --fp32")
    if bf16:
        return "bf16"
    return "auto" if half is None else ("fp16" if half else "fp32")


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print a machine-readable summary on stdout.", rich_help_panel="Output")
]


DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="List what would be written and what skipped, on stdout, and stop: no model is "
                 "loaded and no image is read.", rich_help_panel="Output"),
]


def seed_in_range(value: int) -> int:
    """Option callback for seeds: the upper bound is checked here rather than with ``max=``, which
    would print all nineteen digits of it in every command's help."""
    if value > SEED_MAX:
        raise typer.BadParameter(f"{value} is over the largest seed, {SEED_MAX}")
    return value


MaxPixelsOption = Annotated[
    int, typer.Option(min=1, help="Refuse inputs with more pixels than this.", rich_help_panel="Device")
]


def names_image_file(output: str | Path) -> bool:
    """Whether -o/--output names an image file (by its extension) rather than a folder. An existing
    folder, or a name ending in a slash, is a folder whatever its name; an image format i2i cannot
    write is a usage error."""
    import os

    path = Path(output).expanduser()
    suffix = path.suffix.lower()
    if os.path.isdir(path) or str(output).endswith(("/", os.sep)):  # "new.png/" is a folder to make
        return False
    if suffix in _UNWRITTEN_IMAGE_SUFFIXES:
        raise usage_error(f"-o {output}: i2i cannot write {suffix} files; name a {', '.join(IMAGE_SUFFIXES)} file "
                          "or a folder")
    return suffix in IMAGE_SUFFIXES


def image_files(path: Path, role: str, output: Path | None = None) -> list[Path]:
    """An image argument: the file itself, or the images in a folder (not its sub-folders, whose
    images are counted as left out, so that none is missed silently; the command's ``output``
    folder, wherever it lies, is not counted)."""
    from i2icli.batch import images_and_unreadable_links

    path = path.expanduser()
    if path.is_dir():
        output = output.expanduser() if output is not None else None
        skip = output if output is not None and output.resolve() != path.resolve() else None
        everything, links = images_and_unreadable_links(path, recursive=True, exclude=skip)  # one walk for all
        own = [image for image in everything if image.parent == path]
        below = len(everything) - len(own)
        # A link to nothing is kept: reading it fails for that image alone, naming the link.
        found = sorted(own + [link for link, _ in links if link.parent == path])
        if not found:
            hint = (f"its {below} image{'s are' if below > 1 else ' is'} in sub-folders, which are not searched: pass "
                    "a sub-folder" if below else "pass an image file or a folder of images")
            raise InputError(path, f"no images in this {role} folder", hint)
        if below:
            warn(f"{path}: {below} image{'s' if below > 1 else ''} in sub-folders left out (only the folder's own "
                 "images are used)")
        return found
    if not path.exists():
        raise InputError(path, "no such file or folder", f"check the {role} path")
    return [path]


def check_output_folder(folder: Path, option: str = "-o/--output") -> None:
    """Fail before any work when results could not be written into ``folder`` (created if missing):
    a batch that finds out only at its first write may have spent an hour on it."""
    import os

    folder = folder.expanduser()
    try:
        if folder.exists() and not folder.is_dir():
            raise InputError(folder, "is a file, not a folder", f"choose another {option}")
        existing = folder.absolute()
        while not existing.exists():
            existing = existing.parent
    except OSError as error:
        raise InputError(folder, f"cannot be used as the output folder ({error.strerror or error})",
                         f"choose another {option}") from None
    if not existing.is_dir():
        raise InputError(folder, f"{existing} is a file, so this folder cannot be made", f"choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        # On a disk mounted read-only no change of permissions would help: say which it is.
        why = f"{existing} is on a read-only disk" if _mounted_read_only(existing) else f"{existing}: permission denied"
        raise InputError(folder, f"cannot be written ({why})", f"choose another {option}")


def _mounted_read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


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


def _discard_standard_output() -> None:
    """Point stdout at the null device once its reader has gone: Python would flush it again on
    exit and report the same broken pipe as a traceback ("Exception ignored ...")."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def write_standard_output(data: bytes) -> None:
    try:
        buffer = sys.stdout.buffer
        buffer.write(data)
        buffer.flush()
    except BrokenPipeError:
        _discard_standard_output()
        raise I2IError("-: standard output was closed before the image was written",
                       "keep the reading program open until the end") from None


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


def check_extra_output(path: Path, option: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Path:
    """A file named by an option other than -o (--grid, --spectrum), checked before any work: a
    format that cannot be written, or a folder that cannot be made, would fail only at the end."""
    path = path.expanduser()
    if path.suffix.lower() not in suffixes:
        raise usage_error(f"{option} {path}: name a {', '.join(suffixes)} file")
    if path.is_dir():
        raise InputError(path, "is a folder", f"choose another {option}")
    check_output_folder(path.parent, option)
    return path


def refuse_overwrite(target: Path, inputs: Iterable[Path], outputs: Iterable[Path] = ()) -> None:
    """Raise InputError if writing ``target`` would replace one of ``inputs``, or one of the
    command's own ``outputs`` (a plot written over the image it summarises, say)."""
    # By file, not by name: on a case-insensitive disk (macOS, Windows) a.png's output A.png is a.png.
    key = file_key(target.expanduser())
    if key in {file_key(p.expanduser()) for p in inputs}:
        raise InputError(target, "the output would overwrite an input", "choose another output")
    if key in {file_key(p.expanduser()) for p in outputs}:
        raise InputError(target, "this file is also one of the command's outputs", "choose another name for it")


def json_document(value: Any) -> str:
    """``value`` as JSON text, with NaN and infinity (a diverged fit, say) written as null:
    Python would write the bare words NaN and Infinity, which are not JSON and which JSON
    parsers other than Python's refuse."""
    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(inner) for inner in item]
        return item

    return json.dumps(finite(value), indent=2, allow_nan=False)


def stdout_write(text: str) -> None:
    line = text + "\n"
    try:
        sys.stdout.write(line)
    except UnicodeEncodeError:
        # A file name whose bytes are not valid in the locale's encoding (Latin-1 names from an
        # old disk, say) is held as surrogates, which a strict stdout refuses: write the bytes the
        # name really has, so the line still names the file for the shell. A character the
        # encoding lacks (a dry run's → under PYTHONIOENCODING=ascii) is written as its escape.
        encoding = sys.stdout.encoding or "utf-8"
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            sys.stdout.write(line.encode(encoding, "backslashreplace").decode(encoding))
        else:
            sys.stdout.flush()
            buffer.write(line.encode(encoding, _NAME_BYTES_OR_ESCAPES))
    sys.stdout.flush()


def _name_bytes_or_escape(error: UnicodeError) -> tuple[bytes | str, int]:
    """Encoding error handler: a byte of a file name held as a surrogate becomes that byte again;
    any other character the encoding lacks becomes its backslash escape."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    character = error.object[error.start]
    if 0xDC80 <= ord(character) <= 0xDCFF:
        return bytes([ord(character) - 0xDC00]), error.start + 1
    return codecs.backslashreplace_errors(UnicodeEncodeError(error.encoding, error.object, error.start,
                                                             error.start + 1, error.reason))


_NAME_BYTES_OR_ESCAPES = "i2i-name-bytes-or-escapes"
codecs.register_error(_NAME_BYTES_OR_ESCAPES, _name_bytes_or_escape)


@contextmanager
def download_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A callback ``(label, done, total)`` that draws one download bar per label on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with transient_progress(*columns) as progress:
        tasks: dict[str, Any] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(f"downloading {label}", total=total)
            progress.update(tasks[label], completed=done, total=total)

        yield update
