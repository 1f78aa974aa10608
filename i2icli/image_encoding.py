"""Encoding a picture's pixels per output format: OpenCV for most, Pillow for the gray+alpha TIFF,
Pillow and pillow-heif for HEIF and AVIF (with their metadata, which their encoders take); and what
each format cannot hold (a side over its limit, a HEIC without an encoder), refused before the work.
:func:`i2icli.imageio.encode_image` splices the metadata into OpenCV's encodings.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from .codec_libraries import c_library_messages, quiet_cv2, register_heif_opener
from .containers import png_gray_alpha
from .errors import I2IError
from .exif import exif_block
from .image_decoding import SUFFIX_LIST
from .pixels import to_8bit
from .xmp import xmp_parts

if TYPE_CHECKING:
    from .imageio import Picture


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
SUFFIX_OF_FORMAT = {fmt: suffix for suffix, (fmt, _) in reversed(_WRITE_FORMATS.items())}
_KEEPS_16BIT = frozenset({"PNG", "TIFF"})
_KEEPS_ALPHA = frozenset({"PNG", "TIFF", "WEBP", "HEIF", "AVIF"})
# libavif refuses to decode an AVIF over 32768 pixels a side, so a longer one would be written
# unreadable; libheif reads HEIC that size, and no larger was checked to come back.
_MAX_SIDE = {"JPEG": 65_535, "WEBP": 16_383, "AVIF": 32_768, "HEIF": 32_768}
# Quality per format: the same number means less loss in HEVC than in JPEG, so HEIC at JPEG's 95 was
# a file three times the JPEG's. Measured with benchmarks/heif_read.py --qualities against JPEG 95
# (PSNR / PSNR of the sharpest tenth, the edges; size):
#   12 MP photo-like picture: JPEG 95 38.5 / 37.9 dB, 2.6 MB; HEIC 95 40.5 dB, 8.1 MB; HEIC 75
#   40.3 / 40.3 dB, 6.1 MB. A restored-photo stand-in (examples/old_photo.jpg, 2x Lanczos): JPEG 95
#   48.4 / 46.7 dB; HEIC 95 53.8 / 51.7 dB; HEIC 75 49.8 / 48.0 dB, 55% smaller; HEIC 70 falls to
#   48.5 / 46.6 dB. So 75, the lowest that stays above JPEG 95 on both, with a dB to spare.
# AVIF stays at 95: on the restored stand-in it is already under JPEG 95 (47.0 / 46.4 dB, it takes
# 100 to pass 48.4), and at 90 it drops to 46.0 / 45.2 dB; its 12 MP file, 5.4 MB, is the
# picture's noise kept (41.4 dB).
PIL_CODED_QUALITY = {"HEIF": 75, "AVIF": 95}


def write_format(target: Path, suffix: str) -> tuple[str, str]:
    """(container, OpenCV extension) for an output suffix, or the error naming ``target``."""
    if suffix.lower() not in _WRITE_FORMATS:
        shown = f"'{suffix}'" if suffix else "no suffix"
        raise I2IError(f"{target}: cannot write this file type ({shown})", f"use one of {SUFFIX_LIST}")
    return _WRITE_FORMATS[suffix.lower()]


def check_output_size(path: str | os.PathLike[str], width: int, height: int, *, suffix: str | None = None) -> None:
    """Raise if an image of ``width`` x ``height`` cannot be written in ``path``'s format, or in the
    format of ``suffix`` (for an output that is no file; JPEG, WebP, HEIF and AVIF cap each side; a
    libheif without an encoder writes no HEIF). Commands
    ask before the work, rather than find out when saving it."""
    target = Path(path)
    chosen = (target.suffix if suffix is None else suffix).lower()
    fmt = _WRITE_FORMATS.get(chosen, ("", ""))[0]
    refuse_oversize(target, fmt, width, height)
    if fmt == "HEIF":  # before the work too: the photo would be restored only to fail when saved
        refuse_missing_heif_encoder(target)


def refuse_oversize(target: Path, fmt: str, width: int, height: int) -> None:
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise I2IError(f"{target}: {width}x{height} is too large for {fmt} (at most {limit} pixels a side)",
                       "write PNG or TIFF instead")


def _luma(rgb: np.ndarray) -> np.ndarray:
    """The single channel of a grayscale picture: exact if the channels are still equal."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # ITU-R BT.601 weights


def encode_pixels(target: Path, picture: Picture, fmt: str, ext: str, quality: int) -> bytes | np.ndarray:
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
    with quiet_cv2():
        try:
            ok, buf = cv2.imencode(ext, pixels, params)
        except cv2.error:
            ok, buf = False, None
    if not ok or buf is None:
        raise I2IError(f"{target}: could not encode the image as {fmt}", "try writing PNG instead")
    return buf


def encode_pil_coded(target: Path, picture: Picture, fmt: str, quality: int | None = None) -> bytes:
    """A HEIF (HEIC) or AVIF file through Pillow (pillow-heif for HEIF), whose encoders take the
    colour profile, EXIF block and XMP packet themselves: made true of the output as for the other
    formats (upright, so no rotation is written; no thumbnail; its size). HEIF has no place for IPTC
    datasets. A 16-bit picture (a 10-bit HEIC read, say) is written as a 10-bit HEIC, so that
    restoring a phone's HDR photo keeps its depth; AVIF gets 8 bits, all Pillow writes. ``quality``
    defaults to the format's own (:data:`PIL_CODED_QUALITY`)."""
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
    options: dict[str, object] = {"quality": PIL_CODED_QUALITY[fmt] if quality is None else quality}
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
        refuse_missing_heif_encoder(target)
    buffer = io.BytesIO()
    try:
        with c_library_messages():
            if deep:  # Pillow has no 16-bit colour image: pillow-heif takes the samples itself
                import pillow_heif

                mode = "L;16" if pixels.ndim == 2 else "RGB;16" if pixels.shape[2] == 3 else "RGBA;16"
                pillow_heif.from_bytes(mode, size, pixels.tobytes()).save(buffer, **options)
            else:
                Image.fromarray(pixels).save(buffer, fmt, **options)
    except Exception:  # the encoders' errors come as several types
        raise I2IError(f"{target}: could not encode the image as {fmt}", "try writing PNG instead") from None
    return buffer.getvalue()


def refuse_missing_heif_encoder(target: Path) -> None:
    """Refuse to write HEIC to ``target`` where libheif cannot encode it. pillow-heif's wheels
    carry libheif with an HEVC encoder (x265); a build without one reads HEIC but cannot write it."""
    register_heif_opener()
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
