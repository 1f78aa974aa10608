"""The Click classes of i2i's commands and groups: help as the README's tables show it, usage errors on one line."""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from typing import Any, Iterator

import typer
from typer.core import TyperCommand, TyperGroup

from i2icli.cli.stderr import report_error
from i2icli.errors import I2IError

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
