"""What TAB offers for option values: checkpoint names from weights.toml, devices, fixed words.

The shell runs `i2i` on every TAB, so these answer from the registry file and constants alone:
nothing here may import PyTorch, OpenCV or NumPy. An option that also takes a path offers its
names only while they match what was typed; when none does, the shell completes file names.
"""

from typing import Callable

import typer

# Static on purpose: asking PyTorch which devices exist would take seconds per TAB.
DEVICES = ("auto", "cpu", "cuda", "mps")

Completer = Callable[[typer.Context, str], list[str]]


def _matching(words: tuple[str, ...] | list[str], incomplete: str) -> list[str]:
    return [word for word in words if word.startswith(incomplete)]


def words(*choices: str) -> Completer:
    """Completion of an option that takes one of ``choices``."""

    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        return _matching(choices, incomplete)

    return complete


def checkpoint_names(*roles: str, extra: tuple[str, ...] = ()) -> Completer:
    """Completion of a model option: the registry's names for ``roles``, then the option's own
    words (``auto``, ``none``)."""

    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        from i2icli import weights

        names = [checkpoint.name for checkpoint in weights.registry() if checkpoint.role in roles]
        return _matching([*names, *extra], incomplete)

    return complete


def _registry_names(ctx: typer.Context, incomplete: str, *, downloadable_only: bool) -> list[str]:
    from i2icli import weights

    already_named = set(ctx.params.get("names") or ())
    names = [checkpoint.name for checkpoint in weights.registry()
             if not (downloadable_only and checkpoint.manual) and checkpoint.name not in already_named]
    return _matching(names, incomplete)


def fetchable_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """`i2i weights fetch NAMES`: the checkpoints it can download, each offered once."""
    return _registry_names(ctx, incomplete, downloadable_only=True)


def registry_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """`i2i weights verify NAMES`: every checkpoint, each offered once."""
    return _registry_names(ctx, incomplete, downloadable_only=False)


device_names = words(*DEVICES)
