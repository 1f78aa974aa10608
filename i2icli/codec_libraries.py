"""The C codec libraries under Pillow and OpenCV, kept in check for both reading and writing.

Pillow's size limit and truncation setting are process-global, OpenCV logs on its own, the
libraries print on the process's stderr, and pillow-heif's plugin is costly to load: each is
handled here once, so that the decoders and encoders only say what to run under these guards.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

import cv2
from PIL import Image, ImageFile

_pil_lock = threading.Lock()


@contextlib.contextmanager
def pil_strict() -> Iterator[None]:
    """Pillow with our own size limit instead of its bomb check, and no silent truncation.

    Both settings are process-global in Pillow, so they are swapped under a lock and
    restored afterwards. Every parse of a file passes here, so pillow-heif's opener is registered
    with the first.
    """
    register_heif_opener()
    with _pil_lock:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


@functools.lru_cache(maxsize=None)
def register_heif_opener() -> None:
    """Let Pillow open HEIC/HEIF files, through pillow-heif: done when the first file is read, as
    loading libheif and its codecs would slow every command's start, even ones that read no image."""
    import pillow_heif

    # The primary picture alone: a phone's HEIC also holds thumbnails and depth maps, none of them
    # a page of the photo.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


@contextlib.contextmanager
def quiet_cv2(*, errors: bool = False) -> Iterator[None]:
    """Silence OpenCV's own multi-line logging; failures become our one-line errors. With
    ``errors``, its error lines are still printed, for :func:`c_library_messages` to collect."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR if errors else log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(level)


# The C libraries under OpenCV and Pillow print on the process's stderr: libpng ("libpng
# warning: iCCP: known incorrect sRGB profile"), libjpeg ("Corrupt JPEG data: bad Huffman code",
# "Premature end of JPEG file"), libtiff ("TIFFFillStrip: Read error on strip 0"). Lines starting
# so are theirs.
_C_LIBRARY_PREFIXES = (
    "libpng ",
    "Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters", "Inconsistent progression",
    "Warning: unknown JFIF", "Unknown Adobe color transform", "Application transferred too",
    "TIFF", "_TIFF", "Unknown field with tag", "Invalid TIFF", "Sorry, ",
    "[ERROR:", "[ WARN:", "[ INFO:",  # OpenCV's log, which passes on libtiff's errors
)
_stderr_lock = threading.RLock()  # re-entrant: a collection inside another must not wait for ever


@contextlib.contextmanager
def c_library_messages() -> Iterator[list[str]]:
    """The lines the C libraries print on stderr meanwhile, collected instead of shown: on a
    terminal they broke i2i's one-line messages, and what matters in them is said in i2i's own
    words (see :func:`i2icli.image_decoding._heed_decoder_messages`). The process's stderr (file descriptor 2) is
    pointed at a temporary file; anything else written there meanwhile (a progress bar, another
    thread's report) is passed on afterwards. Decoders take turns while it is swapped. Meanwhile a
    check of whether stderr is a terminal says no, so a console that draws a progress bar should
    make that check once, at its start."""
    printed: list[str] = []
    with _stderr_lock:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            shown = os.dup(2)
        except (OSError, ValueError):  # no stderr to guard (closed, or a GUI process without one)
            shown = None
        if shown is None:
            yield printed
            return
        try:
            with tempfile.TemporaryFile() as sink:
                os.dup2(sink.fileno(), 2)
                try:
                    yield printed
                finally:
                    with contextlib.suppress(OSError, ValueError):
                        if sys.stderr is not None:
                            sys.stderr.flush()
                    os.dup2(shown, 2)
                    sink.seek(0)
                    passed_on, theirs = [], False
                    for line in sink.read().splitlines(keepends=True):
                        text = line.decode("utf-8", "replace").strip()
                        if text.startswith(_C_LIBRARY_PREFIXES):
                            printed.append(text)
                            theirs = True
                        elif not (theirs and not text):  # OpenCV ends an error with an empty line
                            passed_on.append(line)
                            theirs = False
                    if passed_on:
                        with contextlib.suppress(OSError):
                            os.write(2, b"".join(passed_on))
        finally:
            os.close(shown)
