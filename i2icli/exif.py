"""EXIF blocks as i2i carries them from a photo into its outputs: read field by field, made true of
the output (upright, no thumbnail, the output's size) and laid out again.

Pure bytes in, bytes out (no image decoding): :mod:`i2icli.image_metadata` reads a file's block, and
:mod:`i2icli.containers` splices the rebuilt one into the encodings it writes, laying out TIFF
directories with the pieces here.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

ORIENTATION_TAG = 0x0112
EXIF_HEADER = b"Exif\x00\x00"
_EXIF_POINTER, _GPS_POINTER, _INTEROP_POINTER = 0x8769, 0x8825, 0xA005
# A camera's own block (lens, focus points, serial numbers), in a layout of its own: most makers'
# (Canon's, Sony's, Olympus', Panasonic's...) point into it with offsets from the TIFF header, which
# stay true only where it stays. It is laid out where it was whenever nothing before it is in the way
# and it is not far on.
_MAKER_NOTE = 0x927C
# How far on a maker note is moved to stay where it was. A JPEG's block is 64 KB at most; a TIFF's
# note may lie past its pixel data, megabytes on, and zeros that long would outweigh the picture
# (and make the block too large for a JPEG): it then follows the fields, as the rest do.
_MOST_MAKER_NOTE_SHIFT = 2**16
# The directories an EXIF block may hold below its main one, by the tag that points to each.
_SUB_DIRECTORIES = {_EXIF_POINTER: (_INTEROP_POINTER,), _GPS_POINTER: (), _INTEROP_POINTER: ()}
# Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED,
# SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE, IFD).
FIELD_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_SHORT, _LONG = 3, 4
_IMAGE_WIDTH, _IMAGE_LENGTH = 0x0100, 0x0101
_PIXEL_X_DIMENSION, _PIXEL_Y_DIMENSION = 0xA002, 0xA003
_ORIENTATION_AND_SIZE = frozenset({ORIENTATION_TAG, _IMAGE_WIDTH, _IMAGE_LENGTH})
# Main-directory tags that describe the bytes of the file they are in, not the photo: a TIFF's
# strips, tiles and sample layout, the pointers to a thumbnail (JPEGInterchangeFormat) or to
# sub-images, and blocks carried otherwise or not at all: the XMP packet (700) is carried on its
# own, made true of the output by i2icli.xmp, and so is the IPTC-IIM block (33723), by i2icli.iptc;
# Photoshop's resources (34377) repeat the orientation, size and thumbnail, which would then be untrue.
_TIFF_LAYOUT_TAGS = frozenset({
    254, 255, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284, 290, 291, 292, 293, 301,
    317, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, *range(512, 522), 529, 530, 531, 532,
    700, 33723, 34377, 34675, 37724,
})


@dataclass
class Directory:
    """One directory (IFD) of an EXIF block or a TIFF file: its fields as (tag, type, count, value
    bytes), in its byte order, and the directories it points to, by pointer tag."""

    fields: list[tuple[int, int, int, bytes]]
    below: dict[int, Directory]
    # Where the maker note's value was, from the TIFF header: see _MAKER_NOTE.
    maker_note_at: int | None = None


def exif_block(raw: bytes, *, size: tuple[int, int] | None = None, most_bytes: int | None = None) -> bytes | None:
    """``raw`` (an EXIF block, with or without its "Exif" header, or a TIFF file) rebuilt as an EXIF
    block with the header: the main directory without the TIFF layout tags, and the Exif, GPS and
    interop directories, every field's type and bytes as they were. The thumbnail (the second
    directory) is left out; with ``size`` (width, height), the orientation is reset to upright and
    the pixel dimensions are made that size. None where the block cannot be read or holds nothing.
    With ``most_bytes`` (a JPEG segment's room), a block that would be longer goes without its
    maker note, which is what makes a block that large (a camera's own data, of tens of kilobytes):
    the date taken, camera, exposure and GPS position are kept. None where it is still too long.

    It is rebuilt field by field rather than through Pillow's ``Image.Exif``, which writes a field
    its tables give no type with one guessed from the value, and text as ASCII: a positive exposure
    bias (SRATIONAL) came out as RATIONAL, and a copyright's "©" as "??"."""
    found = _exif_directory(raw, size)
    if found is None:
        return None
    main, order = found
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    block = EXIF_HEADER + header + directory_bytes(main, 8, order)
    if most_bytes is None or len(block) <= most_bytes:
        return block
    for directory in (main, *main.below.values()):
        directory.fields = [field for field in directory.fields if field[0] != _MAKER_NOTE]
        directory.maker_note_at = None
    block = EXIF_HEADER + header + directory_bytes(main, 8, order)
    return block if len(block) <= most_bytes else None


def _exif_directory(raw: bytes, size: tuple[int, int] | None) -> tuple[Directory, str] | None:
    """:func:`exif_block`'s main directory, and the block's byte order ("<" or ">")."""
    tiff = raw[len(EXIF_HEADER):] if raw.startswith(EXIF_HEADER) else raw
    order = tiff_byte_order(tiff)
    if order is None:
        return None
    try:
        (first,) = struct.unpack_from(order + "I", tiff, 4)
        main = _read_directory(tiff, first, order, (_EXIF_POINTER, _GPS_POINTER), _TIFF_LAYOUT_TAGS)
    except struct.error:  # the main directory lies outside the block: nothing to trust in it
        return None
    if size is not None:
        width, height = size
        _set_fields(main, order,
                    {ORIENTATION_TAG: (_SHORT, 1), _IMAGE_WIDTH: (_LONG, width), _IMAGE_LENGTH: (_LONG, height)})
        if _EXIF_POINTER in main.below:
            _set_fields(main.below[_EXIF_POINTER], order,
                        {_PIXEL_X_DIMENSION: (_LONG, width), _PIXEL_Y_DIMENSION: (_LONG, height)})
    if not main.below and all(tag in _ORIENTATION_AND_SIZE for tag, *_ in main.fields):
        return None  # nothing about the photo: a plain TIFF's sizes, say
    return main, order


def _read_directory(tiff: bytes, offset: int, order: str, pointers: tuple[int, ...],
                    left_out: frozenset[int] = frozenset(), room: list[int] | None = None) -> Directory:
    """The directory at ``offset``, following ``pointers`` to the ones below it. A field whose
    value lies outside the block, or of a type TIFF does not define, is left out, and so is a
    directory below that cannot be read: the rest is still sound. ``room``: how many value bytes
    are still taken, shared with the directories below; a sound block holds each value once, so
    fields that point at the same bytes over and over (a 60 KB JPEG segment's came to 240 MB, laid
    out again) are left out once their values come to more than the block."""
    room = [len(tiff)] if room is None else room
    directory = Directory([], {})
    for tag, kind, values, inline in directory_entries(tiff, offset, order):
        if tag in left_out:
            continue
        if tag in pointers:
            with contextlib.suppress(struct.error):
                # A LONG or IFD as TIFF gives the pointers; some writers use a SHORT, whose two
                # bytes come first (the top of a LONG, in a big-endian block).
                (below,) = struct.unpack_from(order + ("H" if kind == _SHORT else "I"), inline)
                sub_directory = _read_directory(tiff, below, order, _SUB_DIRECTORIES[tag], room=room)
                if sub_directory.fields or sub_directory.below:
                    directory.below[tag] = sub_directory
            continue
        length = FIELD_SIZES.get(kind, 0) * values
        if length <= 4:
            value = inline[:length]
        else:
            (at,) = struct.unpack(order + "I", inline)
            value = tiff[at : at + length]
            if tag == _MAKER_NOTE:
                directory.maker_note_at = at
        if length and len(value) == length and (length <= 4 or length <= room[0]):
            room[0] -= length if length > 4 else 0
            directory.fields.append((tag, kind, values, value))
    return directory


def directory_entries(tiff: bytes, offset: int, order: str) -> Iterator[tuple[int, int, int, bytes]]:
    """The entries of the directory at ``offset``, one at a time as they are read: (tag, type,
    count, its four value bytes as stored: the value, or the offset of one). A directory cut short
    raises :class:`struct.error` at the first entry that is not there."""
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    for entry in range(offset + 2, offset + 2 + 12 * count, 12):
        yield struct.unpack_from(order + "HHI4s", tiff, entry)


def _set_fields(directory: Directory, order: str, values: dict[int, tuple[int, int]]) -> None:
    """Give the fields of ``values`` (tag: (type, number)) that ``directory`` has those values."""
    directory.fields = [
        (tag, values[tag][0], 1, struct.pack(order + ("H" if values[tag][0] == _SHORT else "I"), values[tag][1]))
        if tag in values else (tag, kind, count, value)
        for tag, kind, count, value in directory.fields
    ]


def directory_bytes(directory: Directory, start: int, order: str) -> bytes:
    """``directory`` laid out at ``start`` (from the TIFF header): its entries in tag order, then
    the values longer than four bytes (the maker note first, where it was when that is still
    ahead), then the directories below it, each on a word boundary."""
    values_start = start + 2 + 12 * (len(directory.fields) + len(directory.below)) + 4
    # By the field's place in the directory, not its tag: a damaged block may repeat a tag.
    out_of_line = sorted((index for index, (*_, value) in enumerate(directory.fields) if len(value) > 4),
                         key=lambda index: directory.fields[index][0] != _MAKER_NOTE)
    values, value_at = bytearray(), {}
    for index in out_of_line:
        tag, _kind, _count, value = directory.fields[index]
        at = values_start + len(values)
        if tag == _MAKER_NOTE and directory.maker_note_at is not None \
                and at <= directory.maker_note_at <= at + _MOST_MAKER_NOTE_SHIFT:
            values += bytes(directory.maker_note_at - at)
            at = directory.maker_note_at
        value_at[index] = at
        values += value + bytes((at + len(value)) % 2)
    below, pointer_fields = bytearray(), []
    for tag, sub_directory in directory.below.items():
        at = values_start + len(values) + len(below)
        pointer_fields.append((tag, _LONG, 1, struct.pack(order + "I", at)))
        below += directory_bytes(sub_directory, at, order)
    entries = sorted([(field, value_at.get(index)) for index, field in enumerate(directory.fields)]
                     + [(field, None) for field in pointer_fields], key=lambda entry: entry[0][0])
    table = struct.pack(order + "H", len(entries))
    for (tag, kind, count, value), at in entries:
        if at is None:
            table += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")
        else:
            table += struct.pack(order + "HHII", tag, kind, count, at)
    return table + struct.pack(order + "I", 0) + bytes(values) + bytes(below)


def first_directory(data: bytes, order: str) -> Directory:
    """A TIFF's first directory, every field as it is: the offsets in it (of its strips, or of
    directories below) stay true as long as the bytes before the end of the file do not move."""
    (first,) = struct.unpack_from(order + "I", data, 4)
    return _read_directory(data, first, order, ())


def tiff_exif_directory(raw: bytes, size: tuple[int, int], order: str) -> Directory | None:
    """The main directory of ``raw`` (an EXIF block) made true of a TIFF of ``size`` as in
    :func:`exif_block`, its numbers in the TIFF's byte ``order``; None where it holds nothing."""
    found = _exif_directory(raw, size)
    if found is None:
        return None
    main, block_order = found
    return main if block_order == order else _in_byte_order(main)


def tiff_byte_order(data: bytes) -> str | None:
    """A classic TIFF's byte order, as :mod:`struct` writes it ("<" or ">"); None for other bytes
    (a BigTIFF among them)."""
    return {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])


# Bytes of each number in a value of each TIFF field type that holds numbers (a RATIONAL is two).
_NUMBER_SIZES = {3: 2, 4: 4, 5: 4, 8: 2, 9: 4, 10: 4, 11: 4, 12: 8, 13: 4}


def _in_byte_order(directory: Directory) -> Directory:
    """``directory`` with the numbers of its values (and of those below it) in the other byte order."""
    def swapped(kind: int, value: bytes) -> bytes:
        size = _NUMBER_SIZES.get(kind)
        return value if size is None else b"".join(value[at : at + size][::-1] for at in range(0, len(value), size))

    return Directory([(tag, kind, count, swapped(kind, value)) for tag, kind, count, value in directory.fields],
                      {tag: _in_byte_order(below) for tag, below in directory.below.items()})
