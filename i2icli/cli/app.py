"""The `i2i` Typer application: global flags and the list of subcommands."""

from __future__ import annotations

from typing import Annotated

import typer

from i2icli import __version__
from i2icli.cli import exemplar, invert, paired, restore, train, translate_lr, weights
from i2icli.cli.command_classes import Command, Group
from i2icli.cli.stderr import route_messages_to_console

app = typer.Typer(
    name="i2i",
    cls=Group,
    help="Restore and translate photos with GAN models.",
    no_args_is_help=True,
    # --install-completion and --show-completion; Typer asks shellingham which shell runs i2i.
    add_completion=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(ctx: typer.Context, value: bool) -> None:
    # While the shell asks for completions the line is only parsed: printing here would offer
    # the version text as a completion.
    if value and not ctx.resilient_parsing:
        typer.echo(f"i2i {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Restore and translate photos with GAN models."""
    route_messages_to_console()


app.command("restore", no_args_is_help=True, cls=Command)(restore.restore)
app.command("exemplar", no_args_is_help=True, cls=Command)(exemplar.exemplar)
app.command("invert", no_args_is_help=True, cls=Command)(invert.invert)
app.command("translate-lr", no_args_is_help=True, cls=Command)(translate_lr.translate_lr)
app.command("paired", no_args_is_help=True, cls=Command)(paired.paired)
app.add_typer(weights.app, name="weights")
app.add_typer(train.app, name="train")


def main() -> None:
    app()
