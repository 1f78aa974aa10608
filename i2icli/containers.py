"""What OpenCV's encodings cannot hold, spliced into their bytes: a colour profile, an EXIF block,
an XMP packet, an IPTC-IIM block and a TIFF's alpha tag, each where its container (PNG, JPEG, WebP, TIFF) keeps it; the
gray+alpha PNG OpenCV cannot write at all; and what a file's bytes say without decoding it (PNG
chunks, a WebP's kind of data, a TIFF tag).

Pure bytes in, bytes out: no decoding, no Picture. The blocks spliced in come already made true of
the output (:mod:`i2icli.exif`, :mod:`i2icli.xmp`, :mod:`i2icli.iptc`); :mod:`i2icli.imageio` says what goes into which
file.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator

import numpy as np

# exif and xmp make the blocks and lay out TIFF directories; this module puts them into files. They
# never import it, so that one copy of the directory layout (exif's) serves both.
from .exif import (
    EXIF_HEADER,
    FIELD_SIZES,
    Directory,
    directory_bytes,
    directory_entries,
    first_directory,
    tiff_byte_order,
    tiff_exif_directory,
)
from .iptc import (
    IPTC_TAG,
    JPEG_PHOTOSHOP_HEADER,
    PNG_IPTC_KEYWORD,
    photoshop_resource,
    png_raw_profile_text,
)
from .xmp import JPEG_EXTENDED_XMP_HEADER, JPEG_XMP_HEADER, PNG_XMP_KEYWORD, XMP_TAG

__all__ = [
    "JPEG_MOST_EXIF_BYTES",
    "JPEG_MOST_XMP_BYTES",
    "png_chunk",
    "png_chunks",
    "png_gray_alpha",
    "png_itxt_body",
    "png_itxt_text",
    "heif_nclx",
    "png_text_chunk",
    "tiff_short_values",
    "tiff_with_alpha_tag",
    "tiff_with_exif",
    "tiff_with_field",
    "webp_is_lossless",
    "with_exif_block",
    "with_icc_profile",
    "with_iptc_datasets",
    "with_xmp_packet",
]

# --------------------------------------------------------------------------- metadata spliced in

# The longest EXIF block (header and all) one JPEG APP1 segment holds: its length field counts
# itself too, in 16 bits.
JPEG_MOST_EXIF_BYTES = 0xFFFF - 2
# And the longest XMP packet, after the segment's header.
JPEG_MOST_XMP_BYTES = JPEG_MOST_EXIF_BYTES - len(JPEG_XMP_HEADER)


def with_icc_profile(data: bytes, fmt: str, profile: bytes, *, grayscale: bool, size: tuple[int, int],
                     has_alpha: bool) -> bytes:
    """``data`` (OpenCV's encoding of a picture of ``size``, which cannot embed a profile) with
    ``profile`` added in the format's own way. TIFF and BMP outputs go without (OpenCV writes the
    TIFF's tags, and BMP has no place for one)."""
    # A profile describes one colour space (bytes 16-19 of its header). The pixels are RGB, or grey
    # where the format stores grey (WebP has none): a CMYK photo's profile, say, does not describe
    # them once they are RGB, and PNG and JPEG readers reject or misread a profile of another space.
    written = b"GRAY" if grayscale and fmt != "WEBP" else b"RGB "
    if profile[16:20] != written:
        return data
    if fmt == "PNG":  # an iCCP chunk right after IHDR (the first chunk: 8 + 25 bytes in)
        return data[:33] + png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(profile)) + data[33:]
    if fmt == "JPEG":  # APP2 "ICC_PROFILE" segments after SOI, at most 65519 profile bytes each
        parts = [profile[i : i + 65519] for i in range(0, len(profile), 65519)]
        segments = b"".join(
            b"\xff\xe2" + struct.pack(">H", 2 + 14 + len(part)) + b"ICC_PROFILE\x00" + bytes((n + 1, len(parts))) + part
            for n, part in enumerate(parts)
        )
        start = _jpeg_after_jfif(data)
        return data[:start] + segments + data[start:]
    if fmt == "WEBP":  # an ICCP chunk comes before the image data
        return _webp_extended(data, 0x20, size, has_alpha, first=_webp_chunk(b"ICCP", profile))
    return data


def with_exif_block(data: bytes, fmt: str, block: bytes, *, size: tuple[int, int], has_alpha: bool) -> bytes:
    """``data`` (OpenCV's encoding of a picture of ``size``, which cannot embed metadata) with
    ``block`` (an EXIF block, ``Exif\\0\\0`` and all) added in the format's own way. (A TIFF takes
    it as :func:`tiff_with_exif` says; BMP has no place for it.) Call after
    :func:`with_icc_profile`: a JPEG's Exif APP1 goes in front of its ICC APP2 segments."""
    tiff = block[len(EXIF_HEADER):]  # PNG and WebP hold the TIFF structure alone
    if fmt == "PNG":  # before the pixel data, where readers that stop there find it too
        return data[:33] + png_chunk(b"eXIf", tiff) + data[33:]
    if fmt == "JPEG" and len(block) <= JPEG_MOST_EXIF_BYTES:  # one APP1 segment holds it, as readers expect
        start = _jpeg_after_jfif(data)  # the Exif APP1 right after SOI (and JFIF), before any ICC APP2
        return data[:start] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + data[start:]
    if fmt == "WEBP":
        return _webp_extended(data, 0x08, size, has_alpha, last=_webp_chunk(b"EXIF", tiff))
    return data


def with_xmp_packet(data: bytes, fmt: str, packet: bytes, *, size: tuple[int, int], has_alpha: bool,
                    extended: bytes = b"") -> bytes:
    """``data`` with ``packet`` (an XMP packet) added in the format's own way (BMP has no place for
    it). Call after :func:`with_exif_block`: a JPEG's XMP APP1 follows its Exif APP1, and a WebP's
    XMP chunk its EXIF chunk. ``extended``: a JPEG's Extended XMP (made by
    :func:`~i2icli.xmp.xmp_parts`, the packet naming its digest), in segments of its own after
    the packet's."""
    if fmt == "PNG":  # uncompressed, before the pixel data, as readers that stop there expect
        return data[:33] + png_chunk(b"iTXt", png_itxt_body(packet)) + data[33:]
    segment = JPEG_XMP_HEADER + packet
    # A packet too large for one segment is left out rather than written in a form readers reject:
    # xmp_parts moves what does not fit to the Extended XMP.
    if fmt == "JPEG" and len(packet) <= JPEG_MOST_XMP_BYTES:
        start = _jpeg_after_app1(data)  # after the Exif APP1, before any ICC APP2
        segments = b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + _jpeg_extended_xmp(extended)
        return data[:start] + segments + data[start:]
    if fmt == "WEBP":  # after the image data, and after an EXIF chunk
        return _webp_extended(data, 0x04, size, has_alpha, last=_webp_chunk(b"XMP ", packet))
    if fmt == "TIFF":  # type BYTE, as the TIFF/XMP specification gives the tag
        return tiff_with_field(data, XMP_TAG, 1, packet)
    return data


def with_iptc_datasets(data: bytes, fmt: str, datasets: bytes) -> bytes:
    """``data`` with ``datasets`` (an IPTC-IIM block) added in the format's own way: a JPEG's APP13
    segment holding it as Photoshop's one resource for it, a TIFF's IPTC-NAA tag, a PNG's "Raw
    profile type iptc" text. WebP and BMP have no place for it (a WebP's XMP packet holds the same
    fields, mostly). Call after :func:`with_xmp_packet`: Photoshop writes APP13 after the APP1
    segments and before the ICC profile's APP2."""
    if fmt == "PNG":  # compressed, as the hex digits are twice the bytes; before the pixel data
        body = PNG_IPTC_KEYWORD + b"\x00\x00" + zlib.compress(png_raw_profile_text(datasets))
        return data[:33] + png_chunk(b"zTXt", body) + data[33:]
    segment = JPEG_PHOTOSHOP_HEADER + photoshop_resource(datasets)
    # A block too large for one segment would be split over several, which few readers join: left
    # out (the datasets' lengths keep a sound one far smaller).
    if fmt == "JPEG" and len(segment) <= JPEG_MOST_EXIF_BYTES:
        start = _jpeg_after_app1(data)
        return data[:start] + b"\xff\xed" + struct.pack(">H", len(segment) + 2) + segment + data[start:]
    if fmt == "TIFF":  # type UNDEFINED, as TIFF/EP gives the tag
        return tiff_with_field(data, IPTC_TAG, 7, datasets)
    return data


# --------------------------------------------------------------------------- JPEG

# The most Extended XMP one APP1 segment holds, after its header, the digest, the whole's length
# and the piece's offset.
_JPEG_MOST_EXTENDED_XMP_BYTES = JPEG_MOST_EXIF_BYTES - len(JPEG_EXTENDED_XMP_HEADER) - 32 - 8


def _jpeg_extended_xmp(extended: bytes) -> bytes:
    """``extended`` (a JPEG's Extended XMP) as the APP1 segments that hold it, each naming the
    whole by its digest (uppercase hex MD5), its length and the piece's offset."""
    digest = hashlib.md5(extended).hexdigest().upper().encode()
    segments = bytearray()
    for offset in range(0, len(extended), _JPEG_MOST_EXTENDED_XMP_BYTES):
        body = (JPEG_EXTENDED_XMP_HEADER + digest + struct.pack(">II", len(extended), offset)
                + extended[offset : offset + _JPEG_MOST_EXTENDED_XMP_BYTES])
        segments += b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return bytes(segments)



def _jpeg_after_jfif(data: bytes) -> int:
    """Where a segment goes in OpenCV's JPEG: after SOI and the JFIF APP0 segment, which readers
    expect first."""
    return 4 + struct.unpack(">H", data[4:6])[0] if data[2:4] == b"\xff\xe0" else 2


def _jpeg_after_app1(data: bytes) -> int:
    """Where a segment goes after the APP1 segments (Exif) that follow SOI and JFIF."""
    start = _jpeg_after_jfif(data)
    while data[start : start + 2] == b"\xff\xe1":
        start += 2 + struct.unpack(">H", data[start + 2 : start + 4])[0]
    return start


# --------------------------------------------------------------------------- WebP


def _webp_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + bytes(len(body) % 2)


def _webp_extended(data: bytes, flag: int, size: tuple[int, int], has_alpha: bool, *, first: bytes = b"",
                   last: bytes = b"") -> bytes:
    """``data``, a WebP of ``size`` (width, height), in the extended layout (a VP8X header) with
    ``flag`` set in the header, ``first`` right after the header and ``last`` at the end: the places
    the format gives metadata chunks (ICCP before the image data, EXIF after it)."""
    chunks = data[12:]
    if chunks[:4] == b"VP8X":
        header, rest = bytearray(chunks[:18]), chunks[18:]
    else:
        width, height = size
        header = bytearray(b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
                           + (height - 1).to_bytes(3, "little"))
        header[8] = 0x10 if has_alpha else 0
        rest = chunks
    header[8] |= flag
    body = b"WEBP" + bytes(header) + first + rest + last
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_is_lossless(data: bytes) -> bool:
    """Whether a WebP file's image is VP8L (lossless) data rather than VP8 (lossy): the first of
    the two chunk kinds in the file (an extended file puts ICCP, EXIF, ALPH chunks before it)."""
    position = 12
    while position + 8 <= len(data):
        kind = data[position:position + 4]
        if kind in (b"VP8L", b"VP8 "):
            return kind == b"VP8L"
        size = struct.unpack("<I", data[position + 4:position + 8])[0]
        position += 8 + size + (size & 1)
    return False


# --------------------------------------------------------------------------- TIFF


def tiff_with_alpha_tag(data: bytes) -> bytes:
    """``data``, a TIFF from OpenCV with a fourth sample, with the ExtraSamples tag (338) that says
    that sample is (unassociated) alpha: OpenCV leaves it out, so readers warn that the samples do
    not add up and strict ones take the fourth for an unspecified channel. The values the first
    directory points at stay where they are."""
    order = tiff_byte_order(data)
    if order is None:  # (a BigTIFF, for outputs over 4 GB: left as it is)
        return data
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    # Each entry's four value bytes as they are (the value, or the offset of one), so the copied
    # directory keeps them in place.
    entries = list(directory_entries(data, ifd, order))
    if any(tag == 338 for tag, *_ in entries):
        return data
    # One SHORT, 2 = unassociated alpha.
    alpha = (338, 3, 1, struct.pack(order + "H", 2))
    return _with_first_directory(data, order, Directory([*entries, alpha], {}))


def tiff_with_exif(data: bytes, raw: bytes, size: tuple[int, int]) -> bytes:
    """``data``, a TIFF of ``size`` (width, height), with the fields of ``raw`` (an EXIF block) in
    its first directory (where a TIFF keeps them) and the Exif and GPS directories they point to,
    made true of this file as in :func:`~i2icli.exif.exif_block`; the file's own fields win over the
    block's (its size, say)."""
    order = tiff_byte_order(data)
    if order is None:  # (a BigTIFF, for outputs over 4 GB: left as it is)
        return data
    exif = tiff_exif_directory(raw, size, order)
    if exif is None:
        return data
    own = first_directory(data, order)
    taken = {tag for tag, *_ in own.fields}
    merged = Directory(own.fields + [field for field in exif.fields if field[0] not in taken], exif.below)
    return _with_first_directory(data, order, merged)


def tiff_with_field(data: bytes, tag: int, kind: int, value: bytes) -> bytes:
    """``data``, a TIFF, with the field ``tag`` of type ``kind`` holding ``value`` (bytes, in the
    file's byte order) in its first directory, in place of any it had."""
    order = tiff_byte_order(data)
    if order is None:  # (a BigTIFF: left as it is)
        return data
    own = first_directory(data, order)
    fields = [field for field in own.fields if field[0] != tag]
    fields.append((tag, kind, len(value) // FIELD_SIZES[kind], value))
    return _with_first_directory(data, order, Directory(fields, {}))


def _with_first_directory(data: bytes, order: str, directory: Directory) -> bytes:
    """``data`` with ``directory`` laid out at its end and made its first: rewriting it in place
    would move the bytes after it, and the offsets that point at them. The old one stays, unread.
    OpenCV writes a single directory, so the new one points to no next one."""
    data += bytes(len(data) % 2)  # a directory starts on a word boundary
    return data[:4] + struct.pack(order + "I", len(data)) + data[8:] + directory_bytes(directory, len(data), order)


def tiff_short_values(data: bytes, wanted: int) -> tuple[int, ...]:
    """The SHORT values of one tag on a (classic) TIFF's first page, read from the bytes: for
    files Pillow cannot open, to say why. () when absent or unreadable."""
    order = tiff_byte_order(data)
    if order is None:
        return ()
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        for tag, kind, values, inline in directory_entries(data, ifd, order):
            if tag == wanted and kind == 3:
                where = inline if values <= 2 else data[struct.unpack(order + "I", inline)[0]:][: 2 * values]
                return struct.unpack(order + "H" * values, where[: 2 * values])
    except struct.error:
        return ()
    return ()


# --------------------------------------------------------------------------- PNG


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes, wanted: bytes) -> Iterator[bytes]:
    """The bodies of a PNG's chunks of the kind ``wanted``, found from the bytes without decoding
    the image (nor copying its pixel data): metadata may come after the pixel data, where Pillow's
    header parse does not reach."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND":
            break
        if kind == wanted:
            yield data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def png_itxt_body(packet: bytes) -> bytes:
    """An uncompressed ``iTXt`` chunk's body holding ``packet``: XMP's keyword, no language, no
    translated keyword."""
    return PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet


# Packets are a few kilobytes; a compressed chunk that inflates past this is no packet.
_MOST_INFLATED_BYTES = 16 * 2**20


def _inflated(compressed: bytes) -> bytes | None:
    """``compressed`` (zlib's stream) inflated, or None where it is no stream or inflates past
    :data:`_MOST_INFLATED_BYTES`."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(compressed, _MOST_INFLATED_BYTES)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else text


def png_text_chunk(kind: bytes, body: bytes, keyword: bytes) -> bytes | None:
    """The text of a PNG ``tEXt`` or ``zTXt`` chunk's ``body`` (``kind`` says which) when its keyword
    is ``keyword``, inflated where the chunk is compressed; None for other chunks and ones that
    cannot be read."""
    found, _, rest = body.partition(b"\x00")
    if found != keyword:
        return None
    if kind == b"tEXt":
        return rest
    if kind != b"zTXt" or rest[:1] != b"\x00":  # compression method 0, the one PNG defines
        return None
    return _inflated(rest[1:])


def png_itxt_text(body: bytes) -> bytes | None:
    """The text of a PNG ``iTXt`` chunk's ``body`` when its keyword is XMP's, inflated where the
    chunk is compressed; None for other chunks and ones that cannot be read."""
    keyword, _, rest = body.partition(b"\x00")
    if keyword != PNG_XMP_KEYWORD or len(rest) < 2:
        return None
    compressed, method, rest = rest[0], rest[1], rest[2:]
    _language, _, rest = rest.partition(b"\x00")
    _translated_keyword, _, text = rest.partition(b"\x00")
    if not compressed:
        return text
    return _inflated(text) if method == 0 else None


_IDAT_BYTES = 2**30


def png_gray_alpha(gray: np.ndarray, alpha: np.ndarray) -> bytes:
    """A PNG of colour type 4 (gray+alpha), 8 or 16 bits: OpenCV cannot write 2 channels
    and Pillow cannot write 16-bit gray+alpha. Rows use the Sub filter, streamed in chunks."""
    height, width = gray.shape
    depth = 16 if gray.dtype == np.uint16 else 8
    bpp = 2 * (depth // 8)  # bytes per pixel
    big = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)

    out = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0))]
    compressor = zlib.compressobj(6)
    idat: list[bytes] = []
    rows_per_step = max(1, (4 << 20) // max(1, width * bpp))
    for top in range(0, height, rows_per_step):
        g, a = gray[top : top + rows_per_step], alpha[top : top + rows_per_step]
        inter = np.empty(g.shape + (2,), big)
        inter[..., 0], inter[..., 1] = g, a
        raw = inter.view(np.uint8).reshape(len(g), width * bpp)
        rows = np.empty((len(g), width * bpp + 1), np.uint8)
        rows[:, 0] = 1  # filter type Sub
        rows[:, 1 : 1 + bpp] = raw[:, :bpp]
        np.subtract(raw[:, bpp:], raw[:, :-bpp], out=rows[:, 1 + bpp :])  # wraps mod 256
        idat.append(compressor.compress(rows.tobytes()))
    idat.append(compressor.flush())
    compressed = b"".join(idat)
    # A chunk holds at most 2**31 - 1 bytes: a large picture's data goes in several IDATs.
    out.extend(png_chunk(b"IDAT", compressed[start : start + _IDAT_BYTES])
               for start in range(0, len(compressed), _IDAT_BYTES))
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)


# --------------------------------------------------------------------------- HEIF and AVIF


def heif_nclx(data: bytes) -> dict[str, int] | None:
    """The colour description (``nclx`` colr box) of a HEIF or AVIF file's primary picture, as
    pillow-heif names its fields (``color_primaries``, ``transfer_characteristics``,
    ``matrix_coefficients``, ``full_range_flag``), from the bytes: Pillow's AVIF reader keeps it
    to itself. None when the file has none, or its boxes do not parse."""
    try:
        meta = next((body for kind, body in _iso_boxes(data) if kind == b"meta"), None)
        if meta is None:
            return None
        boxes = dict(_iso_boxes(meta[4:]))  # meta is a full box: version and flags first
        pitm, iprp = boxes.get(b"pitm"), boxes.get(b"iprp")
        if pitm is None or iprp is None:
            return None
        primary = struct.unpack_from(">H" if pitm[0] == 0 else ">I", pitm, 4)[0]
        inside = list(_iso_boxes(iprp))
        properties = next((list(_iso_boxes(body)) for kind, body in inside if kind == b"ipco"), [])
        for kind, body in inside:
            if kind != b"ipma":
                continue
            for index in _ipma_properties(body, primary):
                if 0 < index <= len(properties) and properties[index - 1][0] == b"colr":
                    colr = properties[index - 1][1]
                    if colr[:4] == b"nclx":
                        primaries, transfer, matrix, flags = struct.unpack_from(">HHHB", colr, 4)
                        return {"color_primaries": primaries, "transfer_characteristics": transfer,
                                "matrix_coefficients": matrix, "full_range_flag": flags >> 7}
    except (struct.error, IndexError):
        return None
    return None


def _ipma_properties(ipma: bytes, item: int) -> list[int]:
    """The (1-based) indices of the properties an ``ipma`` box associates with ``item``."""
    version, flags = ipma[0], int.from_bytes(ipma[1:4], "big")
    (count,) = struct.unpack_from(">I", ipma, 4)
    position = 8
    for _ in range(count):
        item_id = struct.unpack_from(">H" if version < 1 else ">I", ipma, position)[0]
        position += 2 if version < 1 else 4
        associations = ipma[position]
        position += 1
        wide = flags & 1
        indices = [(struct.unpack_from(">H", ipma, position + 2 * n)[0] & 0x7FFF) if wide
                   else ipma[position + n] & 0x7F for n in range(associations)]
        position += associations * (2 if wide else 1)
        if item_id == item:
            return indices
    return []


def _iso_boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each box in ``data``, an ISO base media file or a box's body."""
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        elif size == 0:
            size = len(data) - position
        if size < header:
            return
        yield kind, data[position + header : position + size]
        position += size
