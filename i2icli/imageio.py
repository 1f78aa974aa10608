"""Reading and writing image files: what the rest of i2i calls (:func:`read_image`,
:func:`write_image`, :func:`encode_image`, ...), with the decoding, the metadata, the per-format
encoding and the atomic writes each in a module of its own (:mod:`i2icli.image_decoding`,
:mod:`i2icli.image_metadata`, :mod:`i2icli.image_encoding`, :mod:`i2icli.atomic_files`).

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

import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from .atomic_files import write_new_file
from .codec_libraries import pil_strict
from .containers import (
    JPEG_MOST_EXIF_BYTES,
    JPEG_MOST_XMP_BYTES,
    tiff_with_alpha_tag,
    tiff_with_exif,
    webp_is_lossless,
    with_exif_block,
    with_icc_profile,
    with_iptc_datasets,
    with_xmp_packet,
)
from .errors import I2IError, InputImageError
from .exif import exif_block
from .formats import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from .image_decoding import (
    GRAY_MODES,
    PIL_CODED,
    READABLE_FORMATS,
    SUFFIX_LIST,
    channel_count,
    decode_palette_indices,
    decode_upright,
    deep_separate_planes,
    extra_samples,
    file_is_gray,
    has_image_signature,
    palette_has_colours,
    readable_format,
    stored_size,
)
from .image_encoding import (
    SUFFIX_OF_FORMAT,
    encode_pil_coded,
    encode_pixels,
    refuse_oversize,
    write_format,
)
from .image_metadata import (
    exif_orientation,
    file_exif,
    file_icc_profile,
    file_iptc,
    file_xmp,
)
from .iptc import iptc_datasets
from .pixels import max_value, quantize
from .xmp import xmp_packet, xmp_parts

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
    "to_float",
    "alpha_to_float",
    "from_float",
]

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(IMAGE_SUFFIXES)

_BT601 = (0.299, 0.587, 0.114)


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
    pil, fmt = readable_format(p, data)
    _refuse_bad_size(p, *pil.size, max_pixels)
    if fmt == "TIFF" and deep_separate_planes(pil):
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
    orientation = exif_orientation(pil, fmt, data)

    decoded, order = decode_upright(p, pil, fmt, data, orientation)
    has_palette = mode in ("P", "PA") and palette_has_colours(pil)
    palette_indices = decode_palette_indices(p, pil, fmt, orientation) if has_palette else None
    picture = _to_picture(decoded, order, mode, fmt, pil, data, p)
    picture.icc_profile = file_icc_profile(p, pil, fmt, data)
    picture.lossless_webp = fmt == "WEBP" and webp_is_lossless(data)
    picture.palette_indices = palette_indices
    picture.exif = file_exif(pil, fmt, data)
    # Made true of the picture as read at once: the face regions it draws lie on the file's stored
    # pixels, and the orientation that turned those comes from EXIF or, where Pillow finds it
    # there, from the packet itself.
    packet = file_xmp(pil, fmt, data)
    picture.xmp = packet and xmp_packet(packet, size=(picture.width, picture.height), turned=orientation)
    picture.iptc = file_iptc(pil, fmt, data)
    return picture


class ImageOverPixelLimit(InputImageError):
    """An image over the pixel limit. The hint names --max-pixels, which the inference commands
    have; a caller without that option gives its own hint with :meth:`with_hint`."""

    def __init__(self, path: Path, problem: str, hint: str):
        super().__init__(path, problem, hint)
        self.problem = problem

    def with_hint(self, hint: str) -> ImageOverPixelLimit:
        return ImageOverPixelLimit(self.path, self.problem, hint)


def _refuse_bad_size(p: Path, width: int, height: int, max_pixels: int) -> None:
    """Refuse, from the parsed header, an image of no pixels or of more than ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise InputImageError(p, f"image has zero size ({width}x{height})", "re-export the image")
    _refuse_over_limit(p, width, height, max_pixels)


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
    pil, fmt = readable_format(p, data)
    width, height = stored_size(pil, fmt)
    _refuse_bad_size(p, width, height, max_pixels)
    return (height, width) if exif_orientation(pil, fmt, data) >= 5 else (width, height)


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
        raise InputImageError(p, f"unsupported file type ({shown})", f"i2i reads {SUFFIX_LIST}")


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
    if head and not has_image_signature(head):
        readable_format(p, head)  # refused from its header: not an image, or one i2i cannot read
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
        with pil_strict():
            width, height = Image.open(file).size
    except Exception:  # Pillow raises a zoo of types for bad headers
        width = height = 0
    finally:
        file.seek(0)
    _refuse_over_limit(p, width, height, max_pixels)
    return width, height


def _to_picture(
    arr: np.ndarray, order: str, mode: str, fmt: str, pil: Image.Image, data: bytes, p: Path
) -> Picture:
    channels = channel_count(arr)
    alpha = None
    if channels == 4 and mode == "CMYK":  # OpenCV converts CMYK to BGR + an opaque 4th channel
        arr, channels = arr[..., :3], 3
    if channels in (2, 4) and fmt == "TIFF" and extra_samples(pil)[:1] == (0,):
        # ExtraSamples 0 is "unspecified data", not transparency: a film scanner's infrared
        # channel, say, which OpenCV hands over as a 4th channel like alpha. Taken for alpha it
        # made parts of the photo see-through.
        arr = arr[..., 0] if channels == 2 else arr[..., :3]
        channels -= 1
    grayscale = file_is_gray(pil, fmt, data) or channels in (1, 2)
    if grayscale:
        # Gray+alpha comes back from OpenCV as BGRA with equal colour channels.
        luma = arr if channels == 1 else arr[..., 0]
        rgb = np.stack((luma, luma, luma), axis=-1)
        if channels in (2, 4):
            alpha = np.ascontiguousarray(arr[..., -1])
        elif fmt == "PNG" and mode in GRAY_MODES and isinstance(pil.info.get("transparency"), int):
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
    (1-100) applies to JPEG and to WebP, which is lossless instead where the picture came from a
    lossless WebP; HEIF and AVIF have qualities of their own, as the same number means less
    loss there. Never overwrites ``picture.source``.
    """
    target = Path(path)
    suffix = target.suffix
    write_format(target, suffix)  # before the checks below: a file type i2i cannot write says so first
    from .batch import file_key

    if picture.source is not None and file_key(target) == file_key(picture.source):
        raise I2IError(
            f"{target}: refusing to overwrite the input image",
            "choose a different output file or folder",
        )
    if target.is_dir():
        raise I2IError(f"{target}: is a directory", "give an output file name with an image suffix")
    data = encode_image(picture, suffix, jpeg_quality=jpeg_quality, name=target)
    write_new_file(target, data)
    return target


def encode_image(picture: Picture, suffix: str, *, jpeg_quality: int = 95, name: str | os.PathLike[str] = "-") -> bytes:
    """The bytes :func:`write_image` would write for a file with this suffix (``.png``, ``.jpg``,
    ...), for a destination that is no file, such as a pipe. ``name`` names it in messages."""
    target = Path(name)
    fmt, ext = write_format(target, suffix)
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be between 1 and 100, got {jpeg_quality}")
    if picture.width == 0 or picture.height == 0:  # no format holds one (the gray+alpha PNG came out invalid)
        raise ValueError(f"cannot encode an empty picture ({picture.width}x{picture.height})")
    refuse_oversize(target, fmt, picture.width, picture.height)
    if fmt in PIL_CODED:
        return encode_pil_coded(target, picture, fmt)
    data = bytes(encode_pixels(target, picture, fmt, ext, int(jpeg_quality)))
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


def format_suffix(data: bytes) -> str | None:
    """The output suffix of the format ``data`` is in (``.jpg``, ``.png``, ...), from its header;
    None when it is no image i2i reads."""
    try:
        with pil_strict():
            found = Image.open(io.BytesIO(data)).format
    except Exception:  # Pillow raises a zoo of types for what is no image
        return None
    return SUFFIX_OF_FORMAT.get(READABLE_FORMATS.get(found or "", ""))


# --------------------------------------------------------------------------- float helpers


def to_float(picture: Picture) -> np.ndarray:
    """The RGB pixels as HxWx3 float32 in [0, 1]."""
    return np.divide(picture.rgb, np.float32(max_value(picture.rgb.dtype)), dtype=np.float32)


def alpha_to_float(picture: Picture) -> np.ndarray | None:
    """The alpha channel as HxW float32 in [0, 1], or None."""
    if picture.alpha is None:
        return None
    return np.divide(picture.alpha, np.float32(max_value(picture.alpha.dtype)), dtype=np.float32)


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
