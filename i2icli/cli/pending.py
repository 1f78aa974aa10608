"""Subcommands whose methods are not in this release yet: they say so and exit non-zero."""

from __future__ import annotations

import typer

from i2icli.cli.common import EXIT_FAILED, console

PENDING = {
    "paired": "GRIT paired translation (label map to photo)",
}


def register(app: typer.Typer) -> None:
    for name, summary in PENDING.items():
        _add(app, name, summary)


def _add(app: typer.Typer, name: str, summary: str) -> None:
    @app.command(
        name,
        help=f"{summary[0].upper()}{summary[1:]} (not available yet).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def not_available(ctx: typer.Context) -> None:
        console.print(f"[bold red]error:[/] `i2i {name}` ({summary}) is not available yet in this version of i2i")
        raise typer.Exit(EXIT_FAILED)
