"""Reading an image file's metadata: its EXIF orientation and block, XMP packet, IPTC datasets and
colour profile (or the one its nclx colour description calls for), each found where its format
keeps it. The byte-level parsing is :mod:`i2icli.exif`'s, :mod:`i2icli.xmp`'s, :mod:`i2icli.iptc`'s,
:mod:`i2icli.icc`'s and :mod:`i2icli.containers`'s; this module only knows where to look.
"""

from __future__ import annotations

import itertools
import logging
import struct
from pathlib import Path

from PIL import Image

from .codec_libraries import pil_strict
from .containers import heif_nclx, png_chunks, png_itxt_text, png_text_chunk
from .exif import ORIENTATION_TAG, exif_block, first_directory, tiff_byte_order
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
from .xmp import JPEG_EXTENDED_XMP_HEADER, PNG_XMP_KEYWORD, with_extended_xmp


def file_icc_profile(p: Path, pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
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


def exif_orientation(pil: Image.Image, fmt: str, data: bytes) -> int:
    """EXIF orientation 1-8 (1 when absent or unreadable: bad metadata is not fatal).

    A HEIF file's orientation is its own rotation and mirroring (irot, imir), which libheif applies
    as it decodes: an EXIF orientation inside says the same again, or is stale, and applied too it
    turned the photo twice. Pillow decodes an AVIF as stored and gives the file's rotation and
    mirroring as this tag, in place of any the EXIF block held."""
    if fmt == "HEIF":
        return 1
    try:
        with pil_strict():
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


def file_exif(pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
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


def file_xmp(pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
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


def file_iptc(pil: Image.Image, fmt: str, data: bytes) -> bytes | None:
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
