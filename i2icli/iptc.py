"""IPTC-IIM blocks as i2i carries them from a photo into its outputs: the captions, keywords,
byline and copyright that older cataloguing software and news agencies write, each dataset's bytes
as they were.

Pure bytes in, bytes out (no image decoding), as :mod:`i2icli.exif` is: :mod:`i2icli.image_metadata`
reads a file's block (from a JPEG's Photoshop resources, a TIFF's tag or a PNG's text), and
:mod:`i2icli.containers` splices it into the encodings it writes.
"""

from __future__ import annotations

import struct

IPTC_TAG = 33723  # a TIFF's (IPTC-NAA)
PHOTOSHOP_TAG = 34377  # a TIFF's Photoshop resources, which may hold the block too
JPEG_PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"  # a JPEG APP13 segment's
PNG_IPTC_KEYWORD = b"Raw profile type iptc"  # a PNG text chunk's, as ImageMagick and ExifTool write it

_DATASET_MARK = 0x1C
# The Photoshop resource that holds the block; the others (a thumbnail of the unrestored picture,
# print settings, paths drawn on the old pixels) are not carried.
_IPTC_RESOURCE = 0x0404
# The signatures a Photoshop resource may start with: Photoshop's own and those of older writers.
_RESOURCE_SIGNATURES = (b"8BIM", b"PHUT", b"AgHg", b"DCSR")
# The records kept: the envelope (1: among others the character set the text is in) and the
# application record (2: caption, keywords, byline, copyright...). The others describe the file as
# it was (3: its pixel sizes and colours) or hold the picture itself (7 to 9).
_KEPT_RECORDS = frozenset({1, 2})
# The application record's preview of the unrestored picture, and what says how it is stored.
_PREVIEW_DATASETS = frozenset({200, 201, 202})
# An extended dataset length gives the number of bytes its length takes: more than four is no
# length a block of a file could hold.
_MOST_LENGTH_BYTES = 4


def iptc_datasets(raw: bytes) -> bytes | None:
    """The datasets of ``raw`` (an IPTC-IIM block) that describe the photo, each one's bytes as
    they were: records 1 and 2, without the preview. None where the block does not parse (a
    dataset that does not start where the one before it ends, or runs past the block's end) or
    holds none of those. Zeros after the last dataset (a TIFF's tag padded to whole LONGs) are
    padding."""
    kept = bytearray()
    position = 0
    while position < len(raw):
        if raw[position] != _DATASET_MARK:
            if raw[position:].strip(b"\x00"):
                return None
            break
        if position + 5 > len(raw):
            return None
        record, number, length = struct.unpack_from(">BBH", raw, position + 1)
        start = position + 5
        if length & 0x8000:  # an extended dataset: the length is in the next (length & 0x7FFF) bytes
            length_bytes = length & 0x7FFF
            if not 1 <= length_bytes <= _MOST_LENGTH_BYTES or start + length_bytes > len(raw):
                return None
            length = int.from_bytes(raw[start : start + length_bytes], "big")
            start += length_bytes
        end = start + length
        if end > len(raw):
            return None
        if record in _KEPT_RECORDS and not (record == 2 and number in _PREVIEW_DATASETS):
            kept += raw[position:end]
        position = end
    return bytes(kept) or None


def photoshop_iptc(resources: bytes) -> bytes | None:
    """The IPTC-IIM block among ``resources`` (Photoshop's image resources, as a JPEG's APP13
    segments or a TIFF's tag hold them), as it is; None where there is none or the resources do not
    parse before it."""
    position = 0
    while position + 12 <= len(resources):
        if resources[position : position + 4] not in _RESOURCE_SIGNATURES:
            return None
        (identifier,) = struct.unpack_from(">H", resources, position + 4)
        name_length = resources[position + 6]
        name_end = position + 6 + name_length + 1
        name_end += name_end % 2  # the name (a Pascal string) is padded to an even length
        if name_end + 4 > len(resources):
            return None
        (size,) = struct.unpack_from(">I", resources, name_end)
        start = name_end + 4
        if start + size > len(resources):
            return None
        if identifier == _IPTC_RESOURCE:
            return resources[start : start + size]
        position = start + size + size % 2
    return None


def photoshop_resource(datasets: bytes) -> bytes:
    """``datasets`` as Photoshop's image resource 0x0404, the one resource an APP13 segment of
    i2i's holds: no name, its data padded to an even length."""
    return (b"8BIM" + struct.pack(">HHI", _IPTC_RESOURCE, 0, len(datasets)) + datasets
            + bytes(len(datasets) % 2))


def png_raw_profile_text(datasets: bytes) -> bytes:
    """``datasets`` as the text of a PNG's "Raw profile type iptc" chunk, as ImageMagick writes one:
    a line naming the profile, one giving its length, then its bytes in hex, 36 to a line. Held as
    Photoshop resources, as ExifTool reads it."""
    profile = photoshop_resource(datasets)
    lines = [profile[at : at + 36].hex() for at in range(0, len(profile), 36)]
    return ("\niptc\n" + f"{len(profile):8d}\n" + "\n".join(lines) + "\n").encode("ascii")


def png_raw_profile_iptc(text: bytes) -> bytes | None:
    """The IPTC-IIM block in the text of a PNG's "Raw profile type iptc" chunk: the hex digits after
    the line naming the profile and the one giving its length, as raw datasets (ImageMagick's) or
    as Photoshop resources (ExifTool's). None where it does not read as such."""
    lines = text.lstrip(b"\n").split(b"\n", 2)
    if len(lines) < 3:
        return None
    try:
        length = int(lines[1])
        profile = bytes.fromhex(lines[2].decode("ascii"))
    except ValueError:
        return None
    if len(profile) < length:
        return None
    profile = profile[:length]
    return profile if profile[:1] == bytes((_DATASET_MARK,)) else photoshop_iptc(profile)
