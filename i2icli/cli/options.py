"""Options several commands share, the checks of their values, and which of them were typed."""

from __future__ import annotations

import math
from typing import Annotated, Any, Iterable

import typer

from i2icli.cli import completion
from i2icli.cli.error_handling import usage_error
from i2icli.cli.stderr import warn
from i2icli.formats import SEED_MAX


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
