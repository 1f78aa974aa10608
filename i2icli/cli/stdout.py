"""What i2i writes to stdout: lines, JSON documents and piped images, and what to do once the reader has gone."""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import os
import sys
from typing import Any

from i2icli.errors import I2IError


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


def discard_standard_output() -> None:
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
        discard_standard_output()
        raise I2IError("-: standard output was closed before the image was written",
                       "keep the reading program open until the end") from None
