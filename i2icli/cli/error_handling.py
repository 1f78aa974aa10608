"""Exit statuses, and ``handles_errors``: a command's failures, interrupts and lack of memory as one line each."""

from __future__ import annotations

import functools
import inspect
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer

from i2icli.cli.signals import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Interrupted,
    Terminated,
    signals_as_interrupts,
)
from i2icli.cli.stderr import console, report_error
from i2icli.cli.stdout import discard_standard_output, json_document, stdout_write
from i2icli.errors import I2IError, WeightsError
from i2icli.pipelines import memory_hints

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


F = TypeVar("F", bound=Callable[..., Any])


def _device_out_of_memory(error: RuntimeError, hint: memory_hints.MemoryHint) -> I2IError | None:
    """``pipelines.memory.out_of_memory_error``, the pipelines' own wording, asked only once torch
    is loaded (this module must not load it)."""
    if "torch" not in sys.modules:
        return None
    from i2icli.pipelines.memory import out_of_memory_error

    return out_of_memory_error(error, None, hint)


# The running command's hint for running out of memory: set by ``handles_errors``, read there and
# by the batch runner, which reports a job that ran out and goes on with the next.
_memory_hint: ContextVar[memory_hints.MemoryHint] = ContextVar("memory_hint", default=memory_hints.DEFAULT)


def out_of_memory(error: BaseException) -> I2IError | None:
    """One line for running out of memory, the device's or the computer's, with the running
    command's hint on what uses less; None for any other error."""
    hint = _memory_hint.get()
    if memory_hints.is_out_of_ram(error):  # worded as the pipelines word it
        return I2IError(memory_hints.OUT_OF_RAM, hint.ram)
    if isinstance(error, RuntimeError):
        return _device_out_of_memory(error, hint)
    return None


def _home_expanded(value: Any) -> Any:
    if isinstance(value, Path):
        return value.expanduser()
    if isinstance(value, list) and value and all(isinstance(item, Path) for item in value):
        return [item.expanduser() for item in value]
    return value


# `-o "$OUT"` with OUT unset: an empty name would put the results in the current folder.
EMPTY_OUTPUT = "-o is empty; name an output file or folder (-o results), or - for standard output"


def handles_errors(command: F | None = None, *, memory_hint: memory_hints.MemoryHint = memory_hints.DEFAULT,
                   checkpoint_options: dict[str, str] | None = None) -> Any:
    """Turn known failures into a one-line message and exit code 1 instead of a traceback.

    With ``--json`` (a command's ``as_json``), a failure of the whole run is also reported on
    stdout, as ``{"error": ..., "hint": ...}``, so that a script reading stdout gets a document
    whatever happens. A device that runs out of memory where the command has no smaller batch to
    retry with ends the same way, with ``memory_hint`` naming the command's options that use less
    device memory, and less of the computer's own.
    ``checkpoint_options`` maps a registry role (``weights.toml``'s ``role``) to the option that
    takes a file for it, so that a checkpoint that cannot be had names that option. An empty
    -o (a command's ``output``) is refused here, before the command starts, for every command. Used as ``@handles_errors`` or ``@handles_errors(memory_hint=..., ...)``."""
    if command is None:
        return functools.partial(handles_errors, memory_hint=memory_hint, checkpoint_options=checkpoint_options)
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

        hints = _memory_hint.set(memory_hint)
        try:
            if empty_output:
                raise usage_error(EMPTY_OUTPUT)
            with signals_as_interrupts():
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
            discard_standard_output()
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
            _memory_hint.reset(hints)

    return wrapper


def usage_error(message: str) -> typer.Exit:
    report_error(message)
    return typer.Exit(EXIT_USAGE)
