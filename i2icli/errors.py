"""Errors a user can act on. The CLI renders each as one line; nothing else does."""

from __future__ import annotations

from pathlib import Path


def first_line(text: object, limit: int | None = None) -> str:
    """The first line of a library's message, for a one-line report; "" for an empty message.
    With ``limit``, shortened at a word boundary, not mid-word."""
    stripped = str(text).strip()
    line = stripped.splitlines()[0] if stripped else ""
    return line if limit is None or len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " …"


class I2IError(Exception):
    """A failure with a message meant for the user, and optionally what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(I2IError):
    """An input file that cannot be used: missing, malformed, or the wrong kind for the command."""

    def __init__(self, path: Path | str, problem: str, hint: str | None = None):
        super().__init__(f"{path}: {problem}", hint)
        self.path = Path(path)


class InputImageError(InputError):
    """An input file that cannot be read as an image: missing, corrupt, unsupported, too big."""


class DiskRefusesOutputsError(I2IError):
    """An output that could not be written because of its disk, not of the file (``path``): the
    later outputs on that disk would fail the same way, after their work."""

    def __init__(self, path: Path | str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.path = Path(path)


class DiskFullError(DiskRefusesOutputsError):
    """The disk is full (or the quota there is used up)."""


class ReadOnlyDiskError(DiskRefusesOutputsError):
    """The disk is mounted read-only (as Linux remounts a disk it finds errors on, mid-run)."""


class WeightsError(I2IError):
    """A checkpoint that cannot be found, fails its hash, or does not fit the model.

    ``role`` is the registry role of the checkpoint that could not be had (face, background, ...);
    ``hint_naming`` is the hint written for one command-line option, as a ``str.format`` template
    with ``{option}``. Only the CLI knows which of its options takes that role's file: it calls
    ``naming_option`` so the hint says ``--bg-model`` rather than "the model option"."""

    def __init__(self, message: str, hint: str | None = None, *, role: str | None = None,
                 hint_naming: str | None = None):
        super().__init__(message, hint)
        self.role = role
        self.hint_naming = hint_naming

    def naming_option(self, option: str) -> WeightsError:
        """This error with its hint naming ``option``, the command-line option that takes the file."""
        if self.hint_naming is None:
            return self
        return WeightsError(self.message, self.hint_naming.format(option=option), role=self.role)


class DeviceError(I2IError):
    """A device request that this machine cannot honour (e.g. --device cuda with no GPU)."""
