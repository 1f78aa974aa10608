"""The one module that reads and writes image files.

Pixels are decoded and encoded with OpenCV (``IMREAD_UNCHANGED``), so 16-bit samples and
alpha survive; HEIF and AVIF, which OpenCV cannot read right, with Pillow (and pillow-heif).
Otherwise Pillow only parses headers (size, mode, EXIF orientation) and is the fallback decoder
for the few files OpenCV gets wrong; what OpenCV's encodings cannot hold (a
colour profile, metadata) is spliced into their bytes by :mod:`i2icli.containers`. Everything that
can go wrong with an input file becomes an :class:`~i2icli.errors.InputImageError` with a one-line
message.

In memory an image is a :class:`Picture`: RGB (never BGR), ``uint8`` or ``uint16`` exactly
as stored, the EXIF orientation already applied, alpha kept separately, the file's EXIF block
kept for the outputs (where it is made true of them: upright, no thumbnail, their size).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import itertools
import logging
import os
import re
import secrets
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageFile

from .containers import (
    JPEG_MOST_EXIF_BYTES,
    JPEG_MOST_XMP_BYTES,
    heif_nclx,
    png_chunks,
    png_gray_alpha,
    png_itxt_text,
    png_text_chunk,
    tiff_short_values,
    tiff_with_alpha_tag,
    tiff_with_exif,
    webp_is_lossless,
    with_exif_block,
    with_icc_profile,
    with_iptc_datasets,
    with_xmp_packet,
)
from .errors import DiskFullError, I2IError, InputImageError, ReadOnlyDiskError
from .exif import ORIENTATION_TAG, exif_block, first_directory, tiff_byte_order
from .formats import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from .icc import HDR_TRANSFERS, nclx_icc_profile
from .iptc import (
    IPTC_TAG,
    JPEG_PHOTOSHOP_HEADER,
    PHOTOSHOP_TAG,
    PNG_IPTC_KEYWORD,
    iptc_datasets,
    photoshop_iptc,
    png_raw_profile_iptc,
)
from .xmp import (
    JPEG_EXTENDED_XMP_HEADER,
    PNG_XMP_KEYWORD,
    with_extended_xmp,
    xmp_packet,
    xmp_parts,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "refuse_unreadable_file",
    "unreadable_file_reason",
    "encode_image",
    "format_suffix",
    "Picture",
    "read_image",
    "image_size",
    "read_stream",
    "write_image",
    "write_text",
    "to_8bit",
    "max_value",
    "to_float",
    "alpha_to_float",
    "from_float",
    "quantize",
]

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(IMAGE_SUFFIXES)
_SUFFIX_LIST = ", ".join(IMAGE_SUFFIXES)

# Pillow's format name -> the container we treat it as.
_READABLE_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",  # multi-picture JPEG from cameras: the first picture is a plain JPEG
    "PNG": "PNG",
    "WEBP": "WEBP",
    "TIFF": "TIFF",
    "BMP": "BMP",
    "DIB": "BMP",
    "HEIF": "HEIF",  # through pillow-heif's opener, registered when the first file is parsed
    "AVIF": "AVIF",
}
# Output suffix -> (container, cv2 extension).
_WRITE_FORMATS = {
    ".png": ("PNG", ".png"),
    ".jpg": ("JPEG", ".jpg"),
    ".jpeg": ("JPEG", ".jpg"),
    ".webp": ("WEBP", ".webp"),
    ".heic": ("HEIF", ".heic"),  # encoded through Pillow (pillow-heif), as OpenCV writes neither
    ".heif": ("HEIF", ".heic"),
    ".avif": ("AVIF", ".avif"),
    ".tif": ("TIFF", ".tiff"),
    ".tiff": ("TIFF", ".tiff"),
    ".bmp": ("BMP", ".bmp"),
}
# Container -> the first suffix that names it (.jpg, not .jpeg).
_SUFFIX_OF_FORMAT = {fmt: suffix for suffix, (fmt, _) in reversed(_WRITE_FORMATS.items())}
_KEEPS_16BIT = frozenset({"PNG", "TIFF"})
_KEEPS_ALPHA = frozenset({"PNG", "TIFF", "WEBP", "HEIF", "AVIF"})
# libavif refuses to decode an AVIF over 32768 pixels a side, so a longer one would be written
# unreadable; libheif reads HEIC that size, and no larger was checked to come back.
_MAX_SIDE = {"JPEG": 65_535, "WEBP": 16_383, "AVIF": 32_768, "HEIF": 32_768}
# Decoded and encoded with Pillow and its plugins, never OpenCV: OpenCV reads no HEIF, and hands an
# AVIF's 10-bit samples over unscaled (0-1023 in a uint16), its orientation left to guesswork.
_PIL_CODED = frozenset({"HEIF", "AVIF"})

# Pillow modes of files with a single luminance channel (with or without alpha).
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Modes whose samples Pillow hands over without loss (the fallback decoder's scope).
_EXACT_PIL_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"}) | _16BIT_MODES
# Pillow's modes with premultiplied ("associated") alpha, and the straight-alpha mode each becomes.
_PREMULTIPLIED_MODES = {"La": "LA", "RGBa": "RGBA"}

_BT601 = (0.299, 0.587, 0.114)

_pil_lock = threading.Lock()


@dataclass
class Picture:
    """An image in memory: RGB, 8- or 16-bit exactly as stored, upright."""

    rgb: np.ndarray  # HxWx3, RGB, uint8 or uint16; grayscale replicated to 3 channels
    alpha: np.ndarray | None = None  # HxW, same dtype as rgb
    grayscale: bool = False  # the file had a single luminance channel (+/- alpha)
    source: Path | None = None  # the file it came from (never overwritten by write_image)
    # HxW uint8 palette index of each pixel, for files with a colour palette: label maps are often
    # stored so, with the class as the index and the colours only for showing it.
    palette_indices: np.ndarray | None = None
    # The file's embedded colour profile (ICC), written back into PNG, JPEG and WebP outputs: the
    # pixels are in that colour space (Adobe RGB, a phone's Display P3), and without the profile
    # colour-managed viewers would show them as sRGB, washed out.
    icc_profile: bytes | None = None
    # The file was a lossless WebP: a WebP output is written lossless too, so that re-saving a
    # lossless master does not make it lossy.
    lossless_webp: bool = False
    # The file's EXIF block (date taken, camera, lens, exposure, GPS, copyright), as the file holds
    # it (a TIFF's: its descriptive tags gathered into one). Written back into PNG, JPEG, WebP and
    # TIFF outputs, so that photo managers file a restored photo under the day it was taken; there
    # its orientation is reset (the pixels are upright), its thumbnail (the unrestored picture)
    # left out and its pixel sizes made the output's. Unreadable metadata is written as none.
    exif: bytes | None = None
    # The file's XMP packet: what photo managers keep of the user's own work (star rating, colour
    # label, keywords, title and caption, people tags, creator and rights), made true of the
    # picture when read (upright, its face regions turned with the pixels). Written back as the
    # EXIF block is, made true of the output in the same way.
    xmp: bytes | None = None
    # The file's IPTC-IIM datasets: the captions, keywords, byline and copyright of older
    # cataloguing software and news agencies, each as the file holds it (the preview of the
    # unrestored picture left out). Written back into PNG, JPEG and TIFF outputs; WebP has no place
    # for them.
    iptc: bytes | None = None

    def __post_init__(self) -> None:
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"Picture.rgb must be an HxWx3 array, got {getattr(rgb, 'shape', type(rgb))}")
        if rgb.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Picture.rgb must be uint8 or uint16, got {rgb.dtype}")
        if self.alpha is not None:
            if self.alpha.shape != rgb.shape[:2] or self.alpha.dtype != rgb.dtype:
                raise ValueError(
                    f"Picture.alpha must be {rgb.shape[:2]} {rgb.dtype}, "
                    f"got {self.alpha.shape} {self.alpha.dtype}"
                )
        if self.source is not None:
            self.source = Path(self.source)

    @property
    def bit_depth(self) -> int:
        return 16 if self.rgb.dtype == np.uint16 else 8

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


# --------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
               data: bytes | None = None) -> Picture:
    """Read a JPEG, PNG, WebP, HEIF, AVIF, TIFF or BMP file into an upright :class:`Picture`.

    ``data``, when given, is the file's content (read from a pipe, say), and ``path`` only names
    it in messages. Raises :class:`InputImageError` for anything that is not a readable image, and
    for images over ``max_pixels`` (checked from the header, before any decoding).
    """
    p = Path(path)
    if data is None:
        data = _read_file(p, max_pixels)
    elif not data:
        raise InputImageError(p, "is empty (0 bytes)", "pass the image's content")
    pil, fmt = _readable_format(p, data)
    width, height = pil.size
    if width <= 0 or height <= 0:
        raise InputImageError(p, f"image has zero size ({width}x{height})", "re-export the image")
    _refuse_over_limit(p, width, height, max_pixels)
    if fmt == "TIFF" and _deep_separate_planes(pil):
        raise InputImageError(
            p,
            "stores its channels as separate planes of more than 8 bits, which i2i cannot read",
            "re-save it with pixel order interleaved (RGBRGB), or as a 16-bit PNG",
        )
    mode = pil.mode
    # A phone's or camera's JPEG often carries a preview or depth map as a second picture (MPO):
    # that is no page of the photo, so it goes without a word.
    frames = getattr(pil, "n_frames", 1) if pil.format != "MPO" else 1
    if frames > 1 and fmt == "HEIF":  # a burst, or edits kept beside the photo: libheif names the one shown
        logging.getLogger(__name__).warning("%s: holds %d pictures; only its primary one is used", p, frames)
    elif frames > 1:  # a multi-page TIFF, an animated WebP or PNG: say so rather than drop pages silently
        logging.getLogger(__name__).warning("%s: holds %d frames or pages; only the first is used", p, frames)
    orientation = _exif_orientation(pil, fmt, data)

    decoded, order = _decode_upright(p, pil, fmt, data, orientation)
    has_palette = mode in ("P", "PA") and _palette_has_colours(pil)
    palette_indices = _palette_indices(p, pil, fmt, orientation) if has_palette else None
    picture = _to_picture(decoded, order, mode, fmt, pil, data, p)
    picture.icc_profile = _file_icc_profile(p, pil, fmt, data)
    picture.lossless_webp = fmt == "WEBP" and webp_is_lossless(data)
    picture.palette_indices = palette_indices
    picture.exif = _file_exif(pil, fmt, data)
    # Made true of the picture as read at once: the face regions it draws lie on the file's stored
    # pixels, and the orientation that turned those comes from EXIF or, where Pillow finds it
    # there, from the packet itself.
    packet = _file_xmp(pil, fmt, data)
    picture.xmp = packet and xmp_packet(packet, size=(picture.width, picture.height), turned=orientation)
    picture.iptc = _file_iptc(pil, fmt, data)
    return picture


def _file_icc_profile(p: Path, pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
    """The file's colour profile; for a HEIF or AVIF file without one, the profile its colour
    description (nclx box) calls for: a phone's HEIC says Display P3 so, and written out without a
    profile its colours would be shown as sRGB, dull. An HDR photo's (PQ, HLG) has no profile to
    say it: it is read as stored, and the warning says its outputs are not tone-mapped."""
    icc = pil.info.get("icc_profile")
    if isinstance(icc, (bytes, bytearray)) and icc:
        return bytes(icc)
    # pillow-heif hands a HEIF file's over; Pillow's AVIF reader keeps it to itself.
    nclx = pil.info.get("nclx_profile") if fmt == "HEIF" else heif_nclx(data) if fmt == "AVIF" else None
    if not isinstance(nclx, dict):
        return None
    if (hdr := HDR_TRANSFERS.get(nclx.get("transfer_characteristics"))) is not None:
        logging.getLogger(__name__).warning(
            "%s: is an HDR photo (%s); it is read as stored, without tone mapping, so its outputs "
            "may look flat and dim", p, hdr)
    return nclx_icc_profile(nclx)


def _decode_upright(p: Path, pil: Image.Image, fmt: str, data: bytes, orientation: int) -> tuple[np.ndarray, str]:
    """The file's pixels, orientation applied, and their channel order ("BGR" or "RGB")."""
    mode = pil.mode
    if fmt in _PIL_CODED:
        decoded = _decode_heif(p, data) if fmt == "HEIF" else _decode_pil(p, pil, fmt, data, orientation)[0]
        return (decoded if orientation == 1 else _orient(decoded, orientation)), "RGB"
    # Many downloads and some cameras leave off a JPEG's end marker though all its picture data is
    # there, and OpenCV's libjpeg then gives up on a photo every viewer shows. Given the marker, it
    # reads such a file whole, and says so where the picture data itself stops short.
    end_marker_added = fmt == "JPEG" and not data.endswith(_JPEG_END_MARKER)
    with _c_library_messages() as printed:
        decoded = _decode_cv2(data + _JPEG_END_MARKER if end_marker_added else data)
    _heed_decoder_messages(p, fmt, printed, decoded is not None, end_marker_added=end_marker_added)
    order, cv2_oriented = "BGR", False
    if decoded is not None and orientation != 1:
        stored_w, stored_h = _stored_size(pil, fmt)
        if orientation >= 5 and stored_w != stored_h:  # a quarter turn shows in the shape
            cv2_oriented = decoded.shape[:2] == (stored_w, stored_h)
        else:
            cv2_oriented = _cv2_applies_orientation(fmt, orientation)
    # OpenCV drops the alpha of some TIFFs (e.g. Pillow's gray+alpha ones): redo those.
    lost_alpha = decoded is not None and mode in _ALPHA_MODES and _channels(decoded) in (1, 3)
    # It reads an 8-bit RGBA TIFF through libtiff's RGBA interface, which multiplies the colours by
    # the alpha: a semi-transparent pixel came out darker. Pillow hands the samples over as stored.
    premultiplied = decoded is not None and fmt == "TIFF" and mode == "RGBA" and decoded.dtype == np.uint8
    if decoded is None or lost_alpha or premultiplied:
        decoded, already_oriented = _decode_pil(p, pil, fmt, data, orientation)
        order, cv2_oriented = "RGB", already_oriented

    if decoded.dtype not in (np.uint8, np.uint16):
        raise InputImageError(
            p,
            f"has {decoded.dtype} samples; only 8- and 16-bit images are supported",
            "convert it to an 8- or 16-bit PNG or TIFF",
        )
    if fmt == "TIFF" and decoded.dtype == np.uint16 and _channels(decoded) == 1 and _tiff_photometric(pil) == 0:
        # WhiteIsZero (scanners use it): OpenCV and Pillow invert 8-bit samples but hand 16-bit
        # ones over as stored, so a 16-bit scan came out as its negative.
        decoded = np.subtract(np.uint16(65535), decoded)
    if order == "BGR" and fmt == "TIFF" and _channels(decoded) == 4 and _extra_samples(pil)[:1] == (1,):
        # OpenCV hands over the colours of a TIFF with associated alpha (a render's usual output)
        # premultiplied, as stored: taken as they were, every semi-transparent pixel came out darker.
        decoded = _unpremultiplied(decoded)
    if orientation != 1 and not cv2_oriented:
        decoded = _orient(decoded, orientation)
    return decoded, order


def _decode_heif(p: Path, data: bytes) -> np.ndarray:
    """A HEIF file's primary picture, upright (libheif applies the file's rotation and mirroring),
    in RGB order: 16 bits a sample where the file stores more than 8 (a phone's HDR photo has 10),
    as a 16-bit PNG's are read, and 8 otherwise. (The plugin Pillow opens it with narrows them to 8.)"""
    import pillow_heif

    try:
        with _c_library_messages():
            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
            depth = int(heif.info.get("bit_depth", 8))
            stored = np.asarray(heif)  # libheif's buffer, read-only
    except Exception:  # libheif's errors come as several types
        raise _corrupt(p) from None
    if stored.dtype == np.uint16 and 8 < depth < 16:
        # libheif hands the samples over in the top bits (a 10-bit 1023 as 65472): repeated into the
        # low bits they span the whole range, white 65535 as in a 16-bit PNG. Made from libheif's
        # buffer in one new array: a copy of it first, then shifted, held three pictures at once.
        decoded = stored >> depth
        decoded |= stored
        return decoded
    return stored.copy()  # writable


def _unpremultiplied(colour_and_alpha: np.ndarray) -> np.ndarray:
    """An HxWx4 array of colours premultiplied by the alpha (the last channel) with the colours
    divided back out: a Picture's colours and alpha are apart, as PNG and WebP store them."""
    top = max_value(colour_and_alpha.dtype)
    alpha = colour_and_alpha[..., 3:].astype(np.float32)
    straight = np.multiply(colour_and_alpha[..., :3], np.float32(top), dtype=np.float32)
    np.divide(straight, alpha, out=straight, where=alpha > 0)  # fully transparent stays 0
    np.clip(np.rint(straight, out=straight), 0, top, out=straight)
    result = colour_and_alpha.copy()
    result[..., :3] = straight
    return result


def _stored_size(pil: Image.Image, fmt: str) -> tuple[int, int]:
    """(width, height) as stored, before orientation: Pillow reports an oriented TIFF size."""
    if fmt == "TIFF":
        tags = getattr(pil, "tag_v2", {})
        w, h = tags.get(256), tags.get(257)
        if isinstance(w, int) and isinstance(h, int):
            return w, h
    return pil.size


def _deep_separate_planes(pil: Image.Image) -> bool:
    """Whether a TIFF keeps each channel of a deeper-than-8-bit image in a plane of its own
    (PlanarConfiguration 2, "per channel" order). OpenCV and Pillow both decode such a file into
    scrambled pixels without an error, and a batch would restore that noise as if it were the photo."""
    tags = getattr(pil, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return tags.get(284) == 2 and tags.get(277, 1) > 1 and any(int(b) > 8 for b in bits)


def _extra_samples(pil: Image.Image) -> tuple[int, ...]:
    """A TIFF's ExtraSamples tag: what each sample beyond the colour ones holds (0 unspecified,
    1 premultiplied alpha, 2 alpha); () when absent."""
    kinds = getattr(pil, "tag_v2", {}).get(338, ())
    return tuple(kinds) if isinstance(kinds, tuple) else (kinds,)


def _channels(arr: np.ndarray) -> int:
    return 1 if arr.ndim == 2 else int(arr.shape[2])


class ImageOverPixelLimit(InputImageError):
    """An image over the pixel limit. The hint names --max-pixels, which the inference commands
    have; a caller without that option gives its own hint with :meth:`with_hint`."""

    def __init__(self, path: Path, problem: str, hint: str):
        super().__init__(path, problem, hint)
        self.problem = problem

    def with_hint(self, hint: str) -> ImageOverPixelLimit:
        return ImageOverPixelLimit(self.path, self.problem, hint)


def _refuse_over_limit(p: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageOverPixelLimit(
            p,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
            f"raise the limit with --max-pixels {width * height} if this machine has the memory",
        )


def image_size(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The (width, height) :func:`read_image` would give, upright, from the file's header and
    metadata alone: no pixel is decoded. What read_image refuses from the header (no such file,
    no image, a format i2i cannot read, over ``max_pixels``) is refused the same way."""
    p = Path(path)
    data = _read_file(p, max_pixels)
    pil, fmt = _readable_format(p, data)
    width, height = _stored_size(pil, fmt)
    if width <= 0 or height <= 0:
        raise InputImageError(p, f"image has zero size ({width}x{height})", "re-export the image")
    _refuse_over_limit(p, width, height, max_pixels)
    return (height, width) if _exif_orientation(pil, fmt, data) >= 5 else (width, height)


def refuse_unreadable_file(path: str | os.PathLike[str]) -> None:
    """Refuse, as :func:`read_image` would, what is wrong with ``path`` before it is opened: no
    such file, a link to nothing, a folder, a pipe or device, a suffix i2i does not read. Commands
    call it while planning, so a run loads no model for such an input and --dry-run names it."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        from .batch import unreadable_link_reason

        if link_reason := unreadable_link_reason(p):
            raise InputImageError(p, link_reason) from None
        if isinstance(e, (FileNotFoundError, NotADirectoryError)):
            raise InputImageError(p, "no such file", "check the path") from None
        raise InputImageError(p, f"cannot access the file: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise InputImageError(p, "is a directory, not an image file", "pass an image file")
    if not stat.S_ISREG(mode):  # a named pipe would wait for a writer for ever; a device never ends
        raise InputImageError(p, "is not a regular file (a pipe, socket or device)", "save the image to a file first")
    if p.suffix.lower() not in SUPPORTED_SUFFIXES:
        shown = f"'{p.suffix}'" if p.suffix else "no suffix"
        raise InputImageError(p, f"unsupported file type ({shown})", f"i2i reads {_SUFFIX_LIST}")


def unreadable_file_reason(path: str | os.PathLike[str]) -> str | None:
    """:func:`refuse_unreadable_file`'s one-line message for ``path``, or None when it passes."""
    try:
        refuse_unreadable_file(path)
    except InputImageError as error:
        return str(error)
    return None


def _read_file(p: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    refuse_unreadable_file(p)
    try:
        with open(p, "rb") as f:
            _refuse_over_limit_from_header(p, f, max_pixels)
            data = f.read()
    except PermissionError:
        raise InputImageError(p, "cannot read the file: permission denied") from None
    except OSError as e:
        raise InputImageError(p, f"cannot read the file: {e.strerror or e}") from None
    if not data:
        raise InputImageError(p, "file is empty (0 bytes)", "re-copy or re-export the image")
    return data


def read_stream(stream: BinaryIO, name: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """All of ``stream`` (an image piped in). ``name`` names it in messages.

    A pipe may never end (``cat /dev/zero |``, ``yes |``), so nothing is read past what its first
    megabyte allows: data that does not start like an image, or a header over ``max_pixels``, is
    refused from there; and no stream is read past the most bytes its image could take."""
    p = Path(name)
    head = stream.read(_HEADER_BYTES)
    if head and not _has_image_signature(head):
        _readable_format(p, head)  # refused from its header: not an image, or one i2i cannot read
    width, height = _refuse_over_limit_from_header(p, io.BytesIO(head), max_pixels)
    limit = _most_bytes(width * height or max_pixels)
    chunks, total = [head], len(head)
    while chunk := stream.read(_STREAM_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            held = f"a {width}x{height} image" if width else f"an image of at most {max_pixels:,} pixels (--max-pixels)"
            raise InputImageError(p, f"goes on past {limit / 2**20:,.0f} MB, far more than {held} takes",
                                  "pipe in one image file alone, or save it to a file and pass its path")
        chunks.append(chunk)
    return b"".join(chunks)


_HEADER_BYTES = 2**20
_STREAM_CHUNK_BYTES = 2**24


def _most_bytes(pixels: int) -> int:
    """The most a file of this many pixels may hold: 16 bytes a pixel is twice an uncompressed
    16-bit RGBA TIFF, and 64 MB leaves room for previews, profiles and metadata."""
    return 16 * pixels + 2**26


def _refuse_over_limit_from_header(p: Path, file: BinaryIO, max_pixels: int) -> tuple[int, int]:
    """The pixel limit checked on the open file, or a stream's first bytes, before the whole
    content is read into memory (a scan of several GB would take that much first). What Pillow
    cannot parse here is left to the full read, whose checks say what is wrong. Returns the size
    the header gives, or (0, 0)."""
    try:
        with _pil_strict():
            width, height = Image.open(file).size
    except Exception:  # Pillow raises a zoo of types for bad headers
        width = height = 0
    finally:
        file.seek(0)
    _refuse_over_limit(p, width, height, max_pixels)
    return width, height


@contextlib.contextmanager
def _pil_strict() -> Iterator[None]:
    """Pillow with our own size limit instead of its bomb check, and no silent truncation.

    Both settings are process-global in Pillow, so they are swapped under a lock and
    restored afterwards. Every parse of a file passes here, so pillow-heif's opener is registered
    with the first.
    """
    _register_heif_opener()
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
def _register_heif_opener() -> None:
    """Let Pillow open HEIC/HEIF files, through pillow-heif: done when the first file is read, as
    loading libheif and its codecs would slow every command's start, even ones that read no image."""
    import pillow_heif

    # The primary picture alone: a phone's HEIC also holds thumbnails and depth maps, none of them
    # a page of the photo.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def _not_an_image(p: Path) -> InputImageError:
    return InputImageError(
        p,
        "is not an image file (the contents are not JPEG, PNG, WebP, HEIF, AVIF, TIFF or BMP data)",
        "check that it is the right file; re-export it if it is damaged",
    )


def _corrupt(p: Path) -> InputImageError:
    return InputImageError(
        p,
        "image data is corrupt or truncated",
        "re-copy, re-download or re-export the image",
    )


def _open_header(p: Path, data: bytes) -> Image.Image:
    """Parse the header only: format, mode, size, metadata. No pixel decoding."""
    try:
        with _pil_strict():
            return Image.open(io.BytesIO(data))
    except Exception:  # Pillow raises a zoo of types for bad headers
        if 3 in tiff_short_values(data, 339):  # SampleFormat IEEE float: Pillow opens one-channel ones only
            raise InputImageError(p, "has floating-point samples; only 8- and 16-bit images are supported",
                                  "convert it to an 8- or 16-bit PNG or TIFF") from None
        if tiff_short_values(data, 277) == (2,) and max(tiff_short_values(data, 258), default=8) > 8:
            # Gray+alpha of 16 bits: Pillow has no such mode, and OpenCV drops the alpha and the
            # low 8 bits. A sound file, not a damaged one.
            raise InputImageError(p, "is a gray+alpha TIFF of 16 bits, which i2i cannot read",
                                  "re-save it as a 16-bit PNG") from None
        raise (_corrupt(p) if _has_image_signature(data) else _not_an_image(p)) from None


def _readable_format(p: Path, data: bytes) -> tuple[Image.Image, str]:
    """The parsed header and its format, refused when the data is no image or one i2i cannot read."""
    pil = _open_header(p, data)
    fmt = _READABLE_FORMATS.get(pil.format or "")
    if fmt is None:
        raise InputImageError(
            p,
            f"is an image in {pil.format or 'an unknown'} format, which i2i cannot read",
            f"convert it to one of {_SUFFIX_LIST}",
        )
    return pil, fmt


def _has_image_signature(data: bytes) -> bool:
    """Starts like one of our formats (so a failure to parse means damage, not a wrong file)."""
    return (data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or (data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS))


_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",  # TIFF, BigTIFF
    b"BM",  # BMP
)
# The major brands of an ISO media file's "ftyp" box that say HEIF or AVIF: HEVC pictures and
# sequences, the general image brands, AV1 pictures and sequences.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})


def _exif_orientation(pil: Image.Image, fmt: str, data: bytes) -> int:
    """EXIF orientation 1-8 (1 when absent or unreadable: bad metadata is not fatal).

    A HEIF file's orientation is its own rotation and mirroring (irot, imir), which libheif applies
    as it decodes: an EXIF orientation inside says the same again, or is stale, and applied too it
    turned the photo twice. Pillow decodes an AVIF as stored and gives the file's rotation and
    mirroring as this tag, in place of any the EXIF block held."""
    if fmt == "HEIF":
        return 1
    try:
        with _pil_strict():
            if fmt == "PNG" and "exif" not in pil.info:
                # Pillow would decode the whole image to look for an eXIf chunk after IDAT.
                raw = _png_exif_chunk(data)
                if raw is None:
                    return 1
                exif = Image.Exif()
                exif.load(raw)
            else:
                exif = pil.getexif()
            value = exif.get(ORIENTATION_TAG)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _file_exif(pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
    """The file's EXIF block, unparsed (it is checked when written), or None. A TIFF keeps its
    EXIF tags among the ones that lay out its own pixels: those are gathered into a block here."""
    if fmt == "TIFF":
        return exif_block(data)
    raw = pil.info.get("exif")
    if raw is None and fmt == "PNG":  # an eXIf chunk after the pixel data, which Pillow's header parse does not reach
        raw = _png_exif_chunk(data) or _png_exif_text(pil)
    return bytes(raw) if isinstance(raw, (bytes, bytearray)) and raw else None


def _png_exif_text(pil: Image.Image) -> bytes | None:
    """The EXIF block of a PNG written before the eXIf chunk existed (by ImageMagick, say): hex
    digits in a text chunk, after a line naming the profile and one giving its length. Its
    orientation is not applied, as browsers and most viewers do not read it: the pixels are as they
    show them, and the block written out says they are upright."""
    text = pil.info.get("Raw profile type exif")
    if not isinstance(text, str):
        return None
    try:
        return bytes.fromhex("".join(text.split("\n")[3:]))
    except ValueError:
        return None


def _png_exif_chunk(data: bytes) -> bytes | None:
    return next(png_chunks(data, b"eXIf"), None)


def _file_xmp(pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
    """The file's XMP packet, unparsed (it is checked when written), or None. A JPEG's Extended XMP
    (the rest of a packet over 64 KB, in segments of its own: large previews or editing histories,
    mostly) is joined to it, where it is whole."""
    if fmt == "PNG":  # an iTXt chunk, or the tEXt or zTXt that older writers put it in
        texts = itertools.chain((png_itxt_text(body) for body in png_chunks(data, b"iTXt")),
                                (_latin1_as_utf8(text) for kind in (b"tEXt", b"zTXt") for body in png_chunks(data, kind)
                                 if (text := png_text_chunk(kind, body, PNG_XMP_KEYWORD)) is not None))
        raw = next((text for text in texts if text is not None), None)
    else:  # Pillow reads a JPEG's XMP segment, a WebP's chunk and a TIFF's tag with the header
        raw = pil.info.get("xmp")
    if isinstance(raw, str):
        raw = raw.encode()
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        return None
    if fmt == "JPEG":
        raw = with_extended_xmp(bytes(raw), (body[len(JPEG_EXTENDED_XMP_HEADER):]
                                             for marker, body in getattr(pil, "applist", [])
                                             if marker == "APP1" and body.startswith(JPEG_EXTENDED_XMP_HEADER)))
    return bytes(raw)


def _latin1_as_utf8(text: bytes) -> bytes:
    """A PNG ``tEXt`` or ``zTXt`` chunk's ``text`` as UTF-8: PNG gives those chunks Latin-1, which
    some writers keep to (Pillow, for a packet whose text fits it) and others ignore, writing the
    packet's UTF-8 as it is. Text with NUL bytes in it is no Latin-1 but a packet in UTF-16 or
    UTF-32, left for :func:`~i2icli.xmp.xmp_packet` to read."""
    if b"\x00" in text:
        return text
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return text.decode("latin-1").encode()
    return text


def _file_iptc(pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
    """The file's IPTC-IIM datasets that describe the photo, or None: from a JPEG's Photoshop
    resources (APP13 segments, joined as Photoshop splits a long run of them), a TIFF's IPTC-NAA tag
    (or its Photoshop resources), a PNG's "Raw profile type iptc" text anywhere in the file. A block
    that does not parse is left out."""
    raw: bytes | None = None
    if fmt == "JPEG":
        resources = b"".join(body[len(JPEG_PHOTOSHOP_HEADER):] for marker, body in getattr(pil, "applist", [])
                             if marker == "APP13" and body.startswith(JPEG_PHOTOSHOP_HEADER))
        raw = photoshop_iptc(resources)
    elif fmt == "TIFF" and (order := tiff_byte_order(data)) is not None:
        try:
            fields = {tag: value for tag, _kind, _count, value in first_directory(data, order).fields}
        except struct.error:
            return None
        raw = fields.get(IPTC_TAG) or photoshop_iptc(fields.get(PHOTOSHOP_TAG, b""))
    elif fmt == "PNG":
        texts = (png_text_chunk(kind, body, PNG_IPTC_KEYWORD) for kind in (b"tEXt", b"zTXt")
                 for body in png_chunks(data, kind))
        raw = next((png_raw_profile_iptc(text) for text in texts if text is not None), None)
    return raw and iptc_datasets(raw)


@contextlib.contextmanager
def _quiet_cv2(*, errors: bool = False) -> Iterator[None]:
    """Silence OpenCV's own multi-line logging; failures become our one-line errors. With
    ``errors``, its error lines are still printed, for :func:`_c_library_messages` to collect."""
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
def _c_library_messages() -> Iterator[list[str]]:
    """The lines the C libraries print on stderr meanwhile, collected instead of shown: on a
    terminal they broke i2i's one-line messages, and what matters in them is said in i2i's own
    words (see :func:`_heed_decoder_messages`). The process's stderr (file descriptor 2) is
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


_JPEG_END_MARKER = b"\xff\xd9"
# libjpeg's word for picture data that stops before its last block: of a file cut short, once
# the end marker it lacked is added.
_JPEG_DATA_CUT_SHORT = "Corrupt JPEG data: premature end of data segment"
_JPEG_STRAY_BYTES_BEFORE_END = re.compile(r"Corrupt JPEG data: (\d+) extraneous bytes before marker 0xd9")
# Writers that pad a JPEG leave a byte or a few before its end marker. A scan garbled on a bad
# card leaves what its misread codes did not use, commonly hundreds or thousands of bytes.
_JPEG_PADDING_MAX_BYTES = 16


def _heed_decoder_messages(
    p: Path, fmt: str, printed: list[str], decoded: bool, *, end_marker_added: bool = False
) -> None:
    """Say what OpenCV's decoders printed means for this file, in one line of i2i's own.

    A PNG whose pixel data stops short of its last row ("Not enough image data") is refused:
    OpenCV fails it, but Pillow, the fallback decoder, reads it without a word, the missing rows
    black. (libpng's other errors are left to Pillow's strict decoding, which refuses what is
    damaged, and reads a PNG that merely lacks its end chunk.) A JPEG that ends early is refused
    too: OpenCV 4's libjpeg fills its missing rows with grey. (One that lacks only its end marker,
    ``end_marker_added`` to it before decoding, is read as it is; one that stops inside its
    picture data is refused.) So is a TIFF OpenCV hands over
    though libtiff failed on it ("LZWDecode: Not enough data at scanline 28"): the rows after are
    noise. (Where OpenCV fails, Pillow decodes the file or refuses it.)

    A JPEG whose data is damaged inside but complete ("Corrupt JPEG data") is restored with a
    warning rather than refused: libjpeg says so both of a photo garbled on a bad card and of a
    sound one with a few stray bytes before its end marker, and a hobbyist's damaged photo may be
    the only copy, whose undamaged part is still worth restoring. The stray bytes alone, no more
    than a writer's padding, are no damage and go unsaid. The rest (libpng's complaints about a
    colour profile or a text chunk, say) is about metadata, not pixels, and goes unsaid too.
    """
    cut_short = {"PNG": "libpng error: Not enough image data", "JPEG": "Premature end of JPEG file"}.get(fmt)
    if cut_short and cut_short in printed:
        raise _corrupt(p)
    if end_marker_added and _JPEG_DATA_CUT_SHORT in printed:
        raise _corrupt(p)
    if fmt == "TIFF" and decoded and any("TIFF_Error" in line for line in printed):
        raise _corrupt(p)
    if fmt == "JPEG" and any(line.startswith("Corrupt JPEG data") and not _is_padding(line) for line in printed):
        logging.getLogger(__name__).warning(
            "%s: the JPEG data is damaged, so parts of the picture (and of the result) may be garbled; "
            "check the result, or use an undamaged copy", p)


def _is_padding(libjpeg_line: str) -> bool:
    """Whether libjpeg's line speaks of no more stray bytes before the end marker than a writer pads with."""
    stray = _JPEG_STRAY_BYTES_BEFORE_END.fullmatch(libjpeg_line)
    return stray is not None and int(stray.group(1)) <= _JPEG_PADDING_MAX_BYTES


def _decode_cv2(data: bytes) -> np.ndarray | None:
    with _quiet_cv2(errors=True):  # libtiff's errors reach us only through OpenCV's log
        try:
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            return None


def _decode_pil(
    p: Path, pil: Image.Image, fmt: str, data: bytes, orientation: int
) -> tuple[np.ndarray, bool]:
    """Fallback decoder, only for modes Pillow represents exactly.

    Returns pixels in RGB order, and whether the orientation is already applied (recent
    Pillow transposes TIFFs on load and then drops the tag).
    """
    mode = pil.mode
    if (mode not in _EXACT_PIL_MODES and mode not in _PREMULTIPLIED_MODES) or _pil_loses_depth(pil, fmt, data):
        if mode == "CMYK" and _pil_loses_depth(pil, fmt, data):  # OpenCV's libtiff refuses 16-bit CMYK
            raise InputImageError(p, "is a CMYK TIFF of 16 bits, which i2i cannot read",
                                  "convert it to RGB: a 16-bit RGB TIFF or PNG keeps the depth")
        raise _corrupt(p)
    try:
        with _c_library_messages(), _pil_strict():  # Pillow's libtiff prints too
            pil.load()
            oriented = _pil_oriented_on_load(pil, fmt, orientation)
            if mode == "1":
                pil = pil.convert("L")
            elif mode in ("P", "PA"):
                pil = pil.convert("RGBA" if mode == "PA" or "transparency" in pil.info else "RGB")
            elif mode in _PREMULTIPLIED_MODES:
                pil = pil.convert(_PREMULTIPLIED_MODES[mode])
            arr = np.array(pil)  # a writable copy
    except Exception:
        raise _corrupt(p) from None
    if mode in _16BIT_MODES:
        arr = arr.astype(np.uint16, copy=False)  # I;16B arrives big-endian
    return arr, oriented


def _pil_oriented_on_load(pil: Image.Image, fmt: str, orientation: int) -> bool:
    """Whether Pillow applied the orientation while loading (recent Pillow transposes TIFFs on
    load and then drops the tag). Call after ``pil.load()``."""
    return (
        orientation != 1
        and fmt == "TIFF"
        and ORIENTATION_TAG not in getattr(pil, "tag_v2", {ORIENTATION_TAG: None})
    )


def _palette_has_colours(pil: Image.Image) -> bool:
    """Whether a palette holds any non-grey entry. A palette of greys is a grey image stored
    compactly (PNG optimisers do so, in any order): its pixels are what it shows, not its indices."""
    palette = pil.getpalette() or []
    entries = np.asarray(palette[: len(palette) // 3 * 3], dtype=np.int32).reshape(-1, 3)
    return bool((entries != entries[:, :1]).any())


def _palette_indices(p: Path, pil: Image.Image, fmt: str, orientation: int) -> np.ndarray:
    """The stored palette index of each pixel, upright (Pillow decodes palette files exactly)."""
    try:
        with _c_library_messages(), _pil_strict():
            pil.load()
            oriented = _pil_oriented_on_load(pil, fmt, orientation)
            indices = np.array(pil.getchannel(0) if pil.mode == "PA" else pil, dtype=np.uint8)
    except Exception:
        raise _corrupt(p) from None
    return indices if oriented or orientation == 1 else _orient(indices, orientation)


def _pil_loses_depth(pil: Image.Image, fmt: str, data: bytes) -> bool:
    """Would Pillow silently reduce this file's 16-bit colour samples to 8 bits?"""
    if pil.mode in _16BIT_MODES:
        return False
    if fmt == "PNG":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth
    if fmt == "TIFF":
        bits = getattr(pil, "tag_v2", {}).get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(int(b) > 8 for b in bits)
    return False


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1-8 to an HxW(xC) array (the transform Pillow's exif_transpose does)."""
    if orientation == 2:  # mirror horizontal
        view = arr[:, ::-1]
    elif orientation == 3:  # rotate 180
        view = arr[::-1, ::-1]
    elif orientation == 4:  # mirror vertical
        view = arr[::-1]
    elif orientation == 5:  # transpose (mirror along the main diagonal)
        view = arr.swapaxes(0, 1)
    elif orientation == 6:  # rotate 90 clockwise
        view = arr.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:  # transverse (mirror along the anti-diagonal)
        view = arr.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:  # rotate 90 counter-clockwise
        view = arr.swapaxes(0, 1)[::-1]
    else:
        return arr
    return np.ascontiguousarray(view)


@functools.lru_cache(maxsize=None)
def _cv2_applies_orientation(fmt: str, orientation: int) -> bool:
    """Does cv2.imdecode(IMREAD_UNCHANGED) already apply this EXIF orientation for fmt?

    It is documented not to, but OpenCV 5's TIFF decoder does, whatever the flags.
    Rather than trust one version's behaviour, probe it once with a tiny image.
    """
    if orientation == 1 or fmt == "BMP":
        return False
    base = np.zeros((16, 24), np.uint8)
    base[:8, :8] = 255
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buf = io.BytesIO()
    try:
        Image.fromarray(base).save(buf, format=fmt, exif=exif.tobytes())
        with _quiet_cv2():
            out = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception:
        return False
    if out is None:
        return False
    if out.ndim == 3:
        out = out[..., 0]
    oriented = _orient(base, orientation)
    if oriented.shape != base.shape:
        return out.shape == oriented.shape
    if out.shape != base.shape:
        return False
    err_raw = np.abs(out.astype(np.int32) - base).sum()
    err_oriented = np.abs(out.astype(np.int32) - oriented).sum()
    return bool(err_oriented < err_raw)


def _tiff_photometric(pil: Image.Image) -> int | None:
    """A TIFF's PhotometricInterpretation: 0 WhiteIsZero, 1 BlackIsZero, 2 RGB, 5 CMYK, ..."""
    return getattr(pil, "tag_v2", {}).get(262)


def _file_is_gray(pil: Image.Image, fmt: str, data: bytes) -> bool:
    """Does the file store a single luminance channel (with or without alpha)?"""
    if fmt == "PNG" and len(data) > 25:
        return data[25] in (0, 4)  # IHDR colour type; Pillow calls 16-bit gray+alpha "RGBA"
    if fmt == "TIFF" and _tiff_photometric(pil) in (0, 1):  # WhiteIsZero / BlackIsZero
        return True
    return pil.mode in _GRAY_MODES


def _to_picture(
    arr: np.ndarray, order: str, mode: str, fmt: str, pil: Image.Image, data: bytes, p: Path
) -> Picture:
    channels = _channels(arr)
    alpha = None
    if channels == 4 and mode == "CMYK":  # OpenCV converts CMYK to BGR + an opaque 4th channel
        arr, channels = arr[..., :3], 3
    if channels in (2, 4) and fmt == "TIFF" and _extra_samples(pil)[:1] == (0,):
        # ExtraSamples 0 is "unspecified data", not transparency: a film scanner's infrared
        # channel, say, which OpenCV hands over as a 4th channel like alpha. Taken for alpha it
        # made parts of the photo see-through.
        arr = arr[..., 0] if channels == 2 else arr[..., :3]
        channels -= 1
    grayscale = _file_is_gray(pil, fmt, data) or channels in (1, 2)
    if grayscale:
        # Gray+alpha comes back from OpenCV as BGRA with equal colour channels.
        luma = arr if channels == 1 else arr[..., 0]
        rgb = np.stack((luma, luma, luma), axis=-1)
        if channels in (2, 4):
            alpha = np.ascontiguousarray(arr[..., -1])
        elif fmt == "PNG" and mode in _GRAY_MODES and isinstance(pil.info.get("transparency"), int):
            # A gray PNG's tRNS colour key: OpenCV ignores it, Pillow only reports it.
            key, bits = pil.info["transparency"], data[24]  # IHDR bit depth
            if bits < 8 and key < 2**bits:
                # The key is in the stored scale (0-3 at 2 bits), the pixels come scaled to 0-255:
                # compared unscaled, no pixel matched and the transparency was lost.
                key = key * 255 // (2**bits - 1)
            maximum = np.iinfo(arr.dtype).max
            alpha = np.where(luma == key, 0, maximum).astype(arr.dtype)
    else:
        if order == "BGR":
            rgb = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB if channels == 4 else cv2.COLOR_BGR2RGB)
        else:
            rgb = np.ascontiguousarray(arr[..., :3])
        if channels == 4:
            alpha = np.ascontiguousarray(arr[..., 3])
    return Picture(rgb=rgb, alpha=alpha, grayscale=grayscale, source=p)


# --------------------------------------------------------------------------- writing


def write_image(path: str | os.PathLike[str], picture: Picture, *, jpeg_quality: int = 95) -> Path:
    """Write ``picture`` atomically, in the format its suffix names. Returns the path.

    16-bit is kept for PNG and TIFF, written at 10 bits for HEIF, and rounded to 8-bit otherwise;
    alpha is kept for PNG, TIFF, WebP, HEIF and AVIF and dropped for JPEG and BMP; grayscale pictures are stored with
    one luminance channel where the format allows (WebP has none, and a 16-bit gray+alpha TIFF
    is written as RGBA, the only such TIFF Pillow and OpenCV read back). ``jpeg_quality``
    (1-100) applies to JPEG, HEIF, AVIF and to WebP, which is lossless instead where the picture came from a
    lossless WebP. Never overwrites ``picture.source``.
    """
    target = Path(path)
    suffix = target.suffix
    _write_format(target, suffix)  # before the checks below: a file type i2i cannot write says so first
    if picture.source is not None and _same_file(target, picture.source):
        raise I2IError(
            f"{target}: refusing to overwrite the input image",
            "choose a different output file or folder",
        )
    if target.is_dir():
        raise I2IError(f"{target}: is a directory", "give an output file name with an image suffix")
    data = encode_image(picture, suffix, jpeg_quality=jpeg_quality, name=target)
    _write_new_file(target, data)
    return target


def _write_new_file(target: Path, data: bytes | np.ndarray) -> None:
    """``data`` written atomically as ``target``, its folders made; a failure named in one line."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)
    except OSError as e:
        blocking = next((folder for folder in target.parents if folder.is_file()), None)
        if blocking is not None:  # mkdir's "File exists" would not say which file is in the way
            raise I2IError(f"{target}: cannot write: {blocking} is a file, so the folder cannot be made",
                           "choose another output") from None
        # The error names the hidden temporary file, which the user never asked for: name the target.
        message, hint = f"{target}: cannot write: {e.strerror or e}", _WRITE_HINTS.get(e.errno)
        if e.errno in _DISK_FULL:  # a batch stops writing there
            raise DiskFullError(target, message, hint) from None
        if e.errno == errno.EROFS:  # so does it there
            raise ReadOnlyDiskError(target, message, hint) from None
        raise I2IError(message, hint) from None


def encode_image(picture: Picture, suffix: str, *, jpeg_quality: int = 95, name: str | os.PathLike[str] = "-") -> bytes:
    """The bytes :func:`write_image` would write for a file with this suffix (``.png``, ``.jpg``,
    ...), for a destination that is no file, such as a pipe. ``name`` names it in messages."""
    target = Path(name)
    fmt, ext = _write_format(target, suffix)
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be between 1 and 100, got {jpeg_quality}")
    if picture.width == 0 or picture.height == 0:  # no format holds one (the gray+alpha PNG came out invalid)
        raise ValueError(f"cannot encode an empty picture ({picture.width}x{picture.height})")
    _refuse_oversize(target, fmt, picture.width, picture.height)
    if fmt in _PIL_CODED:
        return _encode_pil_coded(target, picture, fmt, int(jpeg_quality))
    data = bytes(_encode(target, picture, fmt, ext, int(jpeg_quality)))
    # OpenCV's encodings hold none of what follows: it is spliced into their bytes. The EXIF block
    # and XMP packet are made true of this file first (upright, no thumbnail, its size), and the IPTC
    # datasets, which say nothing of the file, go as they are; where one cannot be read, the file
    # goes without it.
    size, has_alpha = (picture.width, picture.height), picture.alpha is not None
    if fmt == "TIFF" and has_alpha:
        data = tiff_with_alpha_tag(data)
    if picture.icc_profile:
        data = with_icc_profile(data, fmt, picture.icc_profile, grayscale=picture.grayscale, size=size,
                                has_alpha=has_alpha)
    if picture.exif and fmt == "TIFF":
        data = tiff_with_exif(data, picture.exif, size)
    elif picture.exif and (block := exif_block(picture.exif, size=size,
                                               most_bytes=JPEG_MOST_EXIF_BYTES if fmt == "JPEG" else None)):
        # after the profile: an Exif APP1 goes in front of the ICC APP2 segments
        data = with_exif_block(data, fmt, block, size=size, has_alpha=has_alpha)
    if picture.xmp and (parts := xmp_parts(picture.xmp, size=size,
                                           most_bytes=JPEG_MOST_XMP_BYTES if fmt == "JPEG" else None)):
        # after the EXIF block: a JPEG's XMP APP1 (and its Extended XMP) follows its Exif APP1
        packet, extended = parts
        data = with_xmp_packet(data, fmt, packet, size=size, has_alpha=has_alpha, extended=extended)
    if picture.iptc and (datasets := iptc_datasets(picture.iptc)):
        # after the XMP packet: a JPEG's APP13 follows its APP1 segments
        data = with_iptc_datasets(data, fmt, datasets)
    return data


def _write_format(target: Path, suffix: str) -> tuple[str, str]:
    """(container, OpenCV extension) for an output suffix, or the error naming ``target``."""
    if suffix.lower() not in _WRITE_FORMATS:
        shown = f"'{suffix}'" if suffix else "no suffix"
        raise I2IError(f"{target}: cannot write this file type ({shown})", f"use one of {_SUFFIX_LIST}")
    return _WRITE_FORMATS[suffix.lower()]


def format_suffix(data: bytes) -> str | None:
    """The output suffix of the format ``data`` is in (``.jpg``, ``.png``, ...), from its header;
    None when it is no image i2i reads."""
    try:
        with _pil_strict():
            found = Image.open(io.BytesIO(data)).format
    except Exception:  # Pillow raises a zoo of types for what is no image
        return None
    return _SUFFIX_OF_FORMAT.get(_READABLE_FORMATS.get(found or "", ""))


# What to do when the system refuses a write: its own words ("No space left on device") name the
# cause only.
_WRITE_HINTS = {
    errno.ENOSPC: "free some space on that disk, or write the results to another one",
    getattr(errno, "EDQUOT", errno.ENOSPC): "free some space on that disk, or write the results to another one",
    errno.EACCES: "choose an output folder you can write to",
    errno.EPERM: "choose an output folder you can write to",
    errno.EROFS: "the disk is read-only: choose another output folder",
}


_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def check_output_size(path: str | os.PathLike[str], width: int, height: int, *, suffix: str | None = None) -> None:
    """Raise if an image of ``width`` x ``height`` cannot be written in ``path``'s format, or in the
    format of ``suffix`` (for an output that is no file; JPEG, WebP, HEIF and AVIF cap each side; a
    libheif without an encoder writes no HEIF). Commands
    ask before the work, rather than find out when saving it."""
    target = Path(path)
    chosen = (target.suffix if suffix is None else suffix).lower()
    fmt = _WRITE_FORMATS.get(chosen, ("", ""))[0]
    _refuse_oversize(target, fmt, width, height)
    if fmt == "HEIF":  # before the work too: the photo would be restored only to fail when saved
        _refuse_missing_heif_encoder(target)


def _refuse_oversize(target: Path, fmt: str, width: int, height: int) -> None:
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise I2IError(f"{target}: {width}x{height} is too large for {fmt} (at most {limit} pixels a side)",
                       "write PNG or TIFF instead")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):  # catches hard links and case-insensitive file systems
            return True
    except OSError:
        pass
    return a.resolve() == Path(b).resolve()


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as round(v / 257) (exact for all 65536 values), no float copy."""
    if arr.dtype == np.uint8:
        return arr
    return cv2.convertScaleAbs(arr, alpha=1.0 / 257.0)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """The single channel of a grayscale picture: exact if the channels are still equal."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # ITU-R BT.601 weights


def _encode(target: Path, picture: Picture, fmt: str, ext: str, quality: int) -> bytes | np.ndarray:
    rgb, alpha = picture.rgb, picture.alpha if fmt in _KEEPS_ALPHA else None
    narrow = to_8bit if fmt not in _KEEPS_16BIT else (lambda arr: arr)
    alpha = None if alpha is None else narrow(alpha)

    if picture.grayscale:
        luma = narrow(_luma(rgb))  # luma at full depth, then round once
        if alpha is not None and fmt == "PNG":
            return png_gray_alpha(luma, alpha)
        if alpha is not None and fmt == "TIFF" and luma.dtype == np.uint8:
            return _encode_tiff_gray_alpha(luma, alpha)
        if alpha is None and fmt != "WEBP":
            pixels = luma
        else:  # WebP has no gray; neither Pillow nor OpenCV reads a 16-bit gray+alpha TIFF back
            pixels = np.stack((luma, luma, luma) if alpha is None else (luma, luma, luma, alpha), axis=-1)
    elif alpha is None:
        pixels = cv2.cvtColor(narrow(rgb), cv2.COLOR_RGB2BGR)
    else:
        rgb = narrow(rgb)
        pixels = np.stack((rgb[..., 2], rgb[..., 1], rgb[..., 0], alpha), axis=-1)

    params: list[int] = []
    if fmt == "JPEG":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif fmt == "WEBP":  # a quality over 100 is libwebp's lossless mode
        params = [cv2.IMWRITE_WEBP_QUALITY, 101 if picture.lossless_webp else quality]
    with _quiet_cv2():
        try:
            ok, buf = cv2.imencode(ext, pixels, params)
        except cv2.error:
            ok, buf = False, None
    if not ok or buf is None:
        raise I2IError(f"{target}: could not encode the image as {fmt}", "try writing PNG instead")
    return buf


def _encode_pil_coded(target: Path, picture: Picture, fmt: str, quality: int) -> bytes:
    """A HEIF (HEIC) or AVIF file through Pillow (pillow-heif for HEIF), whose encoders take the
    colour profile, EXIF block and XMP packet themselves: made true of the output as for the other
    formats (upright, so no rotation is written; no thumbnail; its size). HEIF has no place for IPTC
    datasets. A 16-bit picture (a 10-bit HEIC read, say) is written as a 10-bit HEIC, so that
    restoring a phone's HDR photo keeps its depth; AVIF gets 8 bits, all Pillow writes."""
    size = (picture.width, picture.height)
    deep = fmt == "HEIF" and picture.rgb.dtype == np.uint16
    narrow = (lambda arr: arr) if deep else to_8bit
    alpha = None if picture.alpha is None else narrow(picture.alpha)
    if picture.grayscale:
        luma = narrow(_luma(picture.rgb))
        pixels = luma if alpha is None else np.stack((luma, luma, luma, alpha), axis=-1)
    else:
        rgb = narrow(picture.rgb)
        pixels = rgb if alpha is None else np.dstack((rgb, alpha))
    pixels = np.ascontiguousarray(pixels)
    options: dict[str, object] = {"quality": quality}
    if fmt == "HEIF":
        # x265's "fast" preset in place of libheif's "slow": a 12 MP photo in under half the time,
        # at the same quality and a file 1% larger. Chroma stays halved (4:2:0), the HEVC profile
        # that phones, Windows and macOS decode: they show a 4:4:4 HEIC wrong or not at all.
        options["enc_params"] = {"preset": "fast"}
    elif pixels.ndim == 3:
        # Full-resolution chroma: halved, the colour edges of a restored face (lips, eyes) blur,
        # 2.5 dB of PSNR on a portrait for a file about a quarter larger. The AV1 decoders that
        # read AVIF (dav1d, libaom) all take it.
        options["subsampling"] = "4:4:4"
    # As for PNG and JPEG: a profile of another colour space than the pixels' would misdescribe them.
    written = b"GRAY" if pixels.ndim == 2 else b"RGB "
    if picture.icc_profile and picture.icc_profile[16:20] == written:
        options["icc_profile"] = picture.icc_profile
    if picture.exif and (block := exif_block(picture.exif, size=size)):
        options["exif"] = block
    if picture.xmp and (parts := xmp_parts(picture.xmp, size=size)):
        options["xmp"] = parts[0]
    if fmt == "HEIF":
        _refuse_missing_heif_encoder(target)
    buffer = io.BytesIO()
    try:
        with _c_library_messages():
            if deep:  # Pillow has no 16-bit colour image: pillow-heif takes the samples itself
                import pillow_heif

                mode = "L;16" if pixels.ndim == 2 else "RGB;16" if pixels.shape[2] == 3 else "RGBA;16"
                pillow_heif.from_bytes(mode, size, pixels.tobytes()).save(buffer, **options)
            else:
                Image.fromarray(pixels).save(buffer, fmt, **options)
    except Exception:  # the encoders' errors come as several types
        raise I2IError(f"{target}: could not encode the image as {fmt}", "try writing PNG instead") from None
    return buffer.getvalue()


def _refuse_missing_heif_encoder(target: Path) -> None:
    """pillow-heif's wheels carry libheif with an HEVC encoder (x265); a build without one reads
    HEIC but cannot write it."""
    _register_heif_opener()
    import pillow_heif

    if not pillow_heif.libheif_info().get("HEIF"):
        raise I2IError(f"{target}: this installation's libheif has no HEIC encoder, so i2i cannot write HEIC",
                       "write .avif, .jpg or .png instead")


def _encode_tiff_gray_alpha(gray: np.ndarray, alpha: np.ndarray) -> bytes:
    """An 8-bit gray+alpha TIFF (unassociated alpha), through Pillow: OpenCV writes no two-sample
    TIFF, and written as RGBA a gray picture took twice the space and came back as a colour one."""
    buffer = io.BytesIO()
    # Deflate with the horizontal predictor (tag 317 = 2), which roughly halves a photo's file.
    Image.fromarray(np.stack((gray, alpha), axis=-1), "LA").save(
        buffer, "TIFF", compression="tiff_adobe_deflate", tiffinfo={317: 2})
    return buffer.getvalue()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a small text file (a run's scores, say) the same atomic way images are written."""
    target = Path(path)
    _write_new_file(target, text.encode("utf-8"))
    return target


def replace_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Have ``write`` create and fsync a hidden temp file beside ``target`` (exclusively: it must
    not exist yet), then rename it over ``target``: readers see the old file or the new one,
    never half of one."""
    # File systems limit a name to 255 bytes, not characters: 100 characters of Japanese or emoji
    # are 300-400 bytes, and a target name that fits would get a temp name that does not.
    stem = target.stem[:100]
    while len(os.fsencode(stem)) > 100:
        stem = stem[:-1]
    while True:
        temp = target.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
        if not temp.exists():
            break
    try:
        write(temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(target.parent)


def _atomic_write(target: Path, data: bytes | np.ndarray) -> None:
    def write(temp: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(temp, flags, 0o666)  # the umask applies, unlike mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data).cast("B"))
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(target, write)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable too (POSIX only; best effort)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- float helpers


def max_value(dtype: np.dtype) -> float:
    """The value of full intensity for an image dtype: 255 or 65535."""
    return 65535.0 if dtype == np.uint16 else 255.0


def to_float(picture: Picture) -> np.ndarray:
    """The RGB pixels as HxWx3 float32 in [0, 1]."""
    return np.divide(picture.rgb, np.float32(max_value(picture.rgb.dtype)), dtype=np.float32)


def alpha_to_float(picture: Picture) -> np.ndarray | None:
    """The alpha channel as HxW float32 in [0, 1], or None."""
    if picture.alpha is None:
        return None
    return np.divide(picture.alpha, np.float32(max_value(picture.alpha.dtype)), dtype=np.float32)


def quantize(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float [0, 1] values as ``dtype`` (uint8 or uint16): scaled, NaN to 0, clipped, rounded."""
    scaled = np.multiply(values, np.float32(max_value(dtype)), dtype=np.float32)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0.0, max_value(dtype), out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(dtype)


def from_float(rgb_float: np.ndarray, alpha_float: np.ndarray | None, like: Picture) -> Picture:
    """Back from float [0, 1] to a Picture with ``like``'s dtype, grayscale-ness and source.

    Values are clipped to [0, 1] (NaN becomes 0) and rounded. If ``like`` is grayscale the
    result is BT.601 luma replicated to three channels. The size may differ from ``like``'s.
    """
    rgb_float = np.asarray(rgb_float)
    if rgb_float.ndim != 3 or rgb_float.shape[2] != 3:
        raise ValueError(f"rgb_float must be HxWx3, got {rgb_float.shape}")
    dtype = like.rgb.dtype
    if like.grayscale:
        luma = np.zeros(rgb_float.shape[:2], np.float32)
        for channel, weight in enumerate(_BT601):
            luma += rgb_float[..., channel].astype(np.float32, copy=False) * np.float32(weight)
        q = quantize(luma, dtype)
        rgb = np.stack((q, q, q), axis=-1)
    else:
        rgb = quantize(rgb_float, dtype)
    alpha = None
    if alpha_float is not None:
        alpha_float = np.asarray(alpha_float)
        if alpha_float.shape != rgb.shape[:2]:
            raise ValueError(f"alpha_float must be {rgb.shape[:2]}, got {alpha_float.shape}")
        alpha = quantize(alpha_float, dtype)
    return Picture(rgb=rgb, alpha=alpha, grayscale=like.grayscale, source=like.source, icc_profile=like.icc_profile,
                   lossless_webp=like.lossless_webp)
