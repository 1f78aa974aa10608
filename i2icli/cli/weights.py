"""`i2i weights`: list, fetch and verify the pretrained checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from i2icli.cli import completion
from i2icli.cli.command_classes import Command, Group
from i2icli.cli.error_handling import EXIT_FAILED, handles_errors
from i2icli.cli.options import JsonOption
from i2icli.cli.stderr import console, download_progress, megabytes, plain, report_error
from i2icli.cli.stdout import json_document, stdout_write

app = typer.Typer(help="List, download and verify pretrained checkpoints.", no_args_is_help=True, cls=Group)

# What `i2i restore` loads with its default options, at any --upscale (x2plus up to 2x, x4plus above).
RESTORE_DEFAULTS = ("gfpgan-1.4", "realesrgan-x2plus", "realesrgan-x4plus", "retinaface-resnet50", "parsenet")


@app.command("list", cls=Command)
@handles_errors
def list_weights(as_json: JsonOption = False) -> None:
    """Every known checkpoint, and whether it is on this machine."""
    from rich.table import Table

    from i2icli import weights

    rows = []
    for checkpoint in weights.registry():
        local = weights.local_copy(checkpoint)
        # What loading the name would stop at, though no copy is there to list (a folder, a link to nothing).
        stand_in = None if checkpoint.manual else weights.weights_dir_stand_in(checkpoint)
        rows.append((checkpoint, local, _size_is_wrong(checkpoint, local), stand_in))
    if as_json:
        stdout_write(json_document([
            {"name": c.name, "role": c.role, "file": c.file, "bytes": c.bytes, "license": c.license,
             "origin": c.origin, "hub": f"{c.hub_repo}/{c.hub_file}@{c.hub_revision}" if c.hub_repo else None,
             "url": c.download_url, "local_path": str(p) if p else None,
             "local_size_matches": None if p is None or not c.bytes else not wrong_size,
             "local_error": stand_in.message if stand_in else None,
             "manual_download": c.manual, "sha256": c.sha256 or None,
             "pinned_by_prefix": bool(c.sha256) and c.pinned_by_prefix}
            for c, p, wrong_size, stand_in in rows
        ]))
        return
    from rich.console import Console

    table = Table(title="i2i checkpoints")
    table.add_column("name", no_wrap=True)  # what other commands take: always whole
    for column in ("role", "file", "size", "license", "on this machine"):
        table.add_column(column, overflow="fold")  # paths and URLs wrap, never cut short
    for checkpoint, local, wrong_size, stand_in in rows:
        if checkpoint.manual:
            where, size = f"[yellow]manual download[/] {checkpoint.url}", "?"
        elif stand_in is not None:
            where, size = f"[red]{plain(stand_in.message)}[/]", megabytes(checkpoint.bytes)
        elif wrong_size:
            where = f"[red]{plain(local)} ({megabytes(local.stat().st_size)}: damaged, see `i2i weights verify`)[/]"
            size = megabytes(checkpoint.bytes)
        else:
            where, size = (f"[green]{plain(local)}[/]" if local else "[dim]no[/]"), megabytes(checkpoint.bytes)
        table.add_row(checkpoint.name, checkpoint.role, checkpoint.file, size, checkpoint.license, where)
    # The listing is what the command produces, so it goes to stdout (for grep), unlike diagnostics.
    Console(highlight=False).print(table)


def _size_is_wrong(checkpoint, local: Path | None) -> bool:
    """A size unlike the registry's: a truncated or swapped file, told apart without hashing it
    (the hash is `verify`'s job, and would make listing read every file)."""
    return local is not None and bool(checkpoint.bytes) and local.stat().st_size != checkpoint.bytes


@app.command("fetch", cls=Command)
@handles_errors
def fetch(
    names: Annotated[list[str] | None, typer.Argument(metavar="NAMES", help="Names from `i2i weights list` (default: what `i2i restore` uses).", show_default=False,
                                                         autocompletion=completion.fetchable_names)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fetch every checkpoint that can be downloaded (not the "
                                       "manual downloads).")] = False,
    to: Annotated[Path | None, typer.Option(metavar="DIR", help="Also copy the files into this folder (e.g. to carry to an offline machine).")] = None,
) -> None:
    """Download checkpoints (Hub first, then the official release) and check their sha256."""
    from i2icli import weights
    from i2icli.errors import I2IError, WeightsError

    chosen = [c.name for c in weights.registry() if not c.manual] if all_ else list(names or RESTORE_DEFAULTS)
    failed = 0
    for name in chosen:
        try:
            checkpoint = weights.find(name, path_allowed=False)
            with download_progress() as progress:
                path = weights.fetch(checkpoint, progress=lambda done, total: progress(checkpoint.file, done, total))
            if to is not None:
                path = weights.copy_into(to, path, checkpoint.file)
            console.print(f"[green]✓[/] {name}: {plain(path)}")
        except WeightsError as error:
            failed += 1
            # This command has no model option to pass a file to: the hint says so.
            report_error(error.naming_option("the model option of the command that needs it"))
        except I2IError as error:
            failed += 1
            report_error(error)
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command("verify", cls=Command)
@handles_errors
def verify(
    names: Annotated[list[str] | None, typer.Argument(metavar="NAMES", help="Names from `i2i weights list` (default: all of them).", show_default=False,
                                                         autocompletion=completion.registry_names)] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the sha256 of every local copy of the checkpoints (every copy: a run passes over a
    bad one, but it should be known)."""
    from rich.console import Console

    from i2icli import weights
    from i2icli.errors import WeightsError

    chosen = [weights.find(name, path_allowed=False) for name in names] if names else list(weights.registry())
    # Results are what the command produces: stdout, like `list`; failures also go to stderr.
    results, out = [], Console(highlight=False)
    for checkpoint in chosen:
        if checkpoint.manual:
            results.append({"name": checkpoint.name, "path": None, "status": "manual_download"})
            if not as_json:
                out.print(f"[dim]-[/] {checkpoint.name}: no published checksum (manual download, used by path)")
            continue
        copies = weights.local_copies(checkpoint)
        if (stand_in := weights.weights_dir_stand_in(checkpoint)) is not None:
            # Not a copy, but what a run by this name stops at: failed, as an unreadable copy is.
            results.append({"name": checkpoint.name, "path": str(weights.weights_dir() / checkpoint.file),
                            "status": "failed", "error": str(stand_in)})
            report_error(stand_in)
        elif not copies:
            results.append({"name": checkpoint.name, "path": None, "status": "absent"})
            if not as_json:
                out.print(f"[dim]-[/] {checkpoint.name}: not on this machine")
        for local in copies:
            try:
                digest = weights.verify(checkpoint, local)
            except WeightsError as error:
                results.append({"name": checkpoint.name, "path": str(local), "status": "failed", "error": str(error)})
                report_error(error)
                continue
            results.append({"name": checkpoint.name, "path": str(local), "status": "ok", "sha256": digest})
            if as_json:
                continue
            if checkpoint.pinned_by_prefix:
                # Only the publisher's 8-digit prefix is pinned; show the full digest so it can be.
                out.print(f"[green]✓[/] {checkpoint.name}: {plain(local)} (prefix pin; sha256 {digest})")
            else:
                out.print(f"[green]✓[/] {checkpoint.name}: {plain(local)}")
    present = len({r["name"] for r in results if r["status"] in ("ok", "failed") and Path(r["path"]).is_file()})
    bad = len({r["name"] for r in results if r["status"] == "failed"})
    if as_json:
        stdout_write(json_document({"present": present, "failed": bad, "files": results}))
    else:
        out.print(f"{present} present, {bad} failed verification")
    if bad:
        raise typer.Exit(EXIT_FAILED)
