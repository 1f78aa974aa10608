"""XMP packets where other writers put them, carried by `restore` as the usual ones are: a PNG's
tEXt or zTXt chunk; packets in UTF-16 or UTF-32; a JPEG's Extended XMP, the rest of a packet over
64 KB, which a JPEG output holds in the same way."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree

import cv2
import pytest
from conftest import restore_without_background
from PIL import Image
from test_exif_metadata import STORED, UPRIGHT, camera_exif
from test_xmp_metadata import CATALOGUED, NS, assert_kept_and_true, save, written_xmp

from i2icli.imageio import read_image, write_image
from i2icli.xmp import with_extended_xmp, xmp_packet


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunk(path: Path, kind: bytes, body: bytes, *, after_pixels: bool = False) -> Path:
    """A PNG of the photo, with its EXIF (Orientation 6), and the chunk given: right after the
    header, or after the pixel data."""
    buffer = io.BytesIO()
    Image.fromarray(STORED).save(buffer, "PNG", exif=camera_exif())
    png = buffer.getvalue()
    at = len(png) - 12 if after_pixels else 33
    path.write_bytes(png[:at] + png_chunk(kind, body) + png[at:])
    return path


def assert_decodes(path: Path) -> None:
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None
    with Image.open(path) as image:
        image.load()


# --------------------------------------------------------------------------- PNG tEXt and zTXt


@pytest.mark.parametrize("kind", [b"tEXt", b"zTXt"])
def test_a_png_s_packet_in_latin_1_text_is_read(tmp_path, kind):
    """As PNG gives tEXt and zTXt chunks (and Pillow writes one whose text fits): "Lübeck" in it is
    one byte, not UTF-8's two."""
    latin_1 = CATALOGUED.decode().replace("\ufeff", "").encode("latin-1")
    text = latin_1 if kind == b"tEXt" else b"\x00" + zlib.compress(latin_1)
    source = png_with_chunk(tmp_path / "in.png", kind, b"XML:com.adobe.xmp\x00" + text)
    assert_kept_and_true(read_image(source).xmp, 12, 20)


@pytest.mark.parametrize("kind", [b"tEXt", b"zTXt"])
@pytest.mark.parametrize("after_pixels", [False, True])
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_a_png_s_packet_in_a_text_chunk_reaches_each_format(tmp_path, kind, after_pixels, suffix):
    """As older writers put it, its UTF-8 as it is, before or after the pixel data."""
    text = CATALOGUED if kind == b"tEXt" else b"\x00" + zlib.compress(CATALOGUED)
    source = png_with_chunk(tmp_path / "in.png", kind, b"XML:com.adobe.xmp\x00" + text, after_pixels=after_pixels)
    out = write_image(tmp_path / f"out{suffix}", read_image(source))
    assert_kept_and_true(written_xmp(out), 12, 20)
    assert_decodes(out)


def test_an_itxt_packet_is_preferred_to_a_text_chunk_s(tmp_path):
    itxt = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + CATALOGUED
    source = png_with_chunk(tmp_path / "in.png", b"iTXt", itxt)
    png = source.read_bytes()
    old = CATALOGUED.replace(b"Grandma", b"Someone else")
    source.write_bytes(png[:33] + png_chunk(b"tEXt", b"XML:com.adobe.xmp\x00" + old) + png[33:])
    assert_kept_and_true(read_image(source).xmp, 12, 20)


@pytest.mark.parametrize("body", [
    b"XML:com.adobe.xmp\x00\x01" + zlib.compress(CATALOGUED),  # a compression method PNG does not define
    b"XML:com.adobe.xmp\x00\x00" + zlib.compress(CATALOGUED)[:-20],  # cut short
    b"Comment\x00" + CATALOGUED,  # another keyword's text
])
def test_a_text_chunk_that_does_not_hold_a_readable_packet_gives_none(tmp_path, body):
    # After the pixel data, where Pillow's parse of the header, which refuses some of them, does not reach.
    kind = b"zTXt" if body.startswith(b"XML") else b"tEXt"
    source = png_with_chunk(tmp_path / "in.png", kind, body, after_pixels=True)
    assert read_image(source).xmp is None


# --------------------------------------------------------------------------- UTF-16 and UTF-32

# Each encoding XMP allows besides UTF-8, with a byte order mark or known by how "<" is written.
WIDE_ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@pytest.mark.parametrize("encoding", WIDE_ENCODINGS)
@pytest.mark.parametrize(("source_suffix", "suffix"), [(".jpg", ".png"), (".webp", ".tif"), (".jpg", ".webp"),
                                                      (".webp", ".jpg")])
def test_a_wide_packet_is_read_and_written_as_utf_8(tmp_path, encoding, source_suffix, suffix):
    source = save(tmp_path / f"in{source_suffix}", STORED, CATALOGUED.decode().encode(encoding))
    out = write_image(tmp_path / f"out{suffix}", read_image(source))
    packet = written_xmp(out)
    assert_kept_and_true(packet, 12, 20)
    assert packet.decode("utf-8").count("Lübeck") == 1 and b"\x00" not in packet
    assert_decodes(out)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-be"])
def test_a_tiff_s_wide_packet_is_read(tmp_path, encoding):
    """(Its orientation as the file's EXIF gives it: Pillow looks for one in a TIFF's packet only
    where that is UTF-8.)"""
    packet = CATALOGUED.decode().replace('tiff:Orientation="6"', 'tiff:Orientation="1"')
    out = write_image(tmp_path / "out.png", read_image(save(tmp_path / "in.tif", UPRIGHT, packet.encode(encoding))))
    root = ElementTree.fromstring(written_xmp(out))
    assert [li.text for li in root.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li")][:2] == [
        "Grandma", "Lake & boats"]
    assert b'photoshop:City="L\xc3\xbcbeck"' in written_xmp(out)


def test_a_wide_packet_s_declared_encoding_is_made_utf_8():
    declared = '<?xml version="1.0" encoding="UTF-16"?>\n' + CATALOGUED.decode()
    picture_packet = xmp_packet(declared.encode("utf-16"), size=(12, 20), turned=6)
    assert_kept_and_true(picture_packet, 12, 20)


def test_a_png_s_wide_packet_in_a_text_chunk_is_read(tmp_path):
    source = png_with_chunk(tmp_path / "in.png", b"tEXt", b"XML:com.adobe.xmp\x00" + CATALOGUED.decode().encode("utf-16"))
    assert_kept_and_true(read_image(source).xmp, 12, 20)


@pytest.mark.parametrize("raw", [
    "<x:xmpmeta>\udc00</x:xmpmeta>".encode("utf-16-le", "surrogatepass"),  # a lone surrogate
    b"\xff\xfe\x00\xd8\x00",  # cut inside a surrogate pair
])
def test_a_wide_packet_that_does_not_decode_is_left_out(raw):
    assert xmp_packet(raw, size=(12, 20)) is None


# --------------------------------------------------------------------------- JPEG Extended XMP

EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"
# As Lightroom moves them there: the develop settings, here a tone curve long enough to take two
# segments, and a headline.
CURVE_POINTS = 3500
CURVE = "".join(f"<rdf:li>{index}, {index}</rdf:li>" for index in range(CURVE_POINTS))
EXTENDED = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
    'xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" photoshop:Headline="Lake day">'
    f"<crs:ToneCurvePV2012><rdf:Seq>{CURVE}</rdf:Seq></crs:ToneCurvePV2012>"
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
).encode()
DIGEST = hashlib.md5(EXTENDED).hexdigest().upper().encode()
NS_CRS = "{http://ns.adobe.com/camera-raw-settings/1.0/}"
NS_PHOTOSHOP = "{http://ns.adobe.com/photoshop/1.0/}"


def extension_segments(extended: bytes, digest: bytes, piece: int = 40_000) -> list[bytes]:
    return [b"\xff\xe1" + struct.pack(">H", 2 + len(EXTENSION) + 40 + len(extended[at : at + piece])) + EXTENSION
            + digest + struct.pack(">II", len(extended), at) + extended[at : at + piece]
            for at in range(0, len(extended), piece)]


def jpeg_with_extended_xmp(path: Path, segments: list[bytes], *, digest: bytes = DIGEST) -> Path:
    """A JPEG of the photo whose packet names ``digest`` as its Extended XMP's, and ``segments``
    after the packet's."""
    save(path, STORED, CATALOGUED.replace(b"0123456789ABCDEF0123456789ABCDEF", digest))
    jpeg = path.read_bytes()
    xmp_at = jpeg.index(b"http://ns.adobe.com/xap/1.0/") - 4
    at = xmp_at + 2 + struct.unpack(">H", jpeg[xmp_at + 2 : xmp_at + 4])[0]
    path.write_bytes(jpeg[:at] + b"".join(segments) + jpeg[at:])
    return path


def assert_extended_kept(packet: bytes | None) -> None:
    root = ElementTree.fromstring(packet)
    curve = root.findall(f".//{NS_CRS}ToneCurvePV2012//{{http://www.w3.org/1999/02/22-rdf-syntax-ns#}}li")
    assert [li.text for li in curve] == [f"{index}, {index}" for index in range(CURVE_POINTS)]
    assert [element.get(f"{NS_PHOTOSHOP}Headline") for element in root.iter()
            if element.get(f"{NS_PHOTOSHOP}Headline")] == ["Lake day"]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_a_jpeg_s_extended_xmp_is_joined_to_its_packet(tmp_path, suffix):
    segments = extension_segments(EXTENDED, DIGEST)
    assert len(segments) == 3
    # In any order, one of them twice: the offsets put them together.
    source = jpeg_with_extended_xmp(tmp_path / "in.jpg", [segments[2], segments[0], segments[1], segments[0]])
    picture = read_image(source)
    assert_kept_and_true(picture.xmp, 12, 20)
    assert_extended_kept(picture.xmp)
    out = write_image(tmp_path / f"out{suffix}", picture)
    assert_kept_and_true(written_xmp(out), 12, 20)  # one packet: these formats have room for it
    assert_extended_kept(written_xmp(out))
    assert_decodes(out)


@pytest.mark.parametrize("segments", [
    extension_segments(EXTENDED, DIGEST)[:1] + extension_segments(EXTENDED, DIGEST)[2:],  # a gap
    extension_segments(EXTENDED, DIGEST)[:2],  # short of the length they give
    extension_segments(EXTENDED, b"0" * 32),  # another packet's
    extension_segments(EXTENDED.replace(b"Lake day", b"Lake dax"), DIGEST),  # not what the digest is of
    extension_segments(EXTENDED, DIGEST, piece=30_000)[:2] + extension_segments(EXTENDED, DIGEST)[1:],  # overlapping
    extension_segments(EXTENDED[:-10] + b"<broken", DIGEST),  # does not parse (and is not the digest's)
])
def test_extended_xmp_that_is_not_whole_is_left_out_and_the_packet_kept(tmp_path, segments):
    picture = read_image(jpeg_with_extended_xmp(tmp_path / "in.jpg", segments))
    assert_kept_and_true(picture.xmp, 12, 20)
    assert b"Lake day" not in picture.xmp and b"ToneCurve" not in picture.xmp


def test_crafted_lengths_and_offsets_are_bounded_by_the_pieces_there_are():
    standard = CATALOGUED.replace(b"0123456789ABCDEF0123456789ABCDEF", DIGEST)
    crafted = [DIGEST + struct.pack(">II", 0xFFFFFFFF, 0xFFFFFF00) + b"x",
               DIGEST + struct.pack(">II", 0xFFFFFFFF, 0) + EXTENDED, DIGEST[:20]]
    assert with_extended_xmp(standard, crafted) == standard


def test_extended_xmp_that_is_its_digest_s_but_does_not_parse_is_left_out(tmp_path):
    broken = EXTENDED[:-10]
    digest = hashlib.md5(broken).hexdigest().upper().encode()
    picture = read_image(jpeg_with_extended_xmp(tmp_path / "in.jpg", extension_segments(broken, digest), digest=digest))
    assert_kept_and_true(picture.xmp, 12, 20)
    assert b"ToneCurve" not in picture.xmp


def jpeg_segments(jpeg: bytes) -> list[bytes]:
    """The bodies of a JPEG's APP1 segments, in order."""
    segments, at = [], 2
    while jpeg[at : at + 2] != b"\xff\xda":
        (length,) = struct.unpack(">H", jpeg[at + 2 : at + 4])
        if jpeg[at + 1] == 0xE1:
            segments.append(jpeg[at + 4 : at + 2 + length])
        at += 2 + length
    return segments


def test_a_jpeg_output_holds_a_packet_too_large_for_its_segment_as_extended_xmp(tmp_path):
    """What the editing history does not make too large (develop settings, say) is split as XMP
    gives: the largest properties to Extended XMP segments, named by the MD5 digest of the whole;
    the rating, keywords and captions stay in the packet, for readers that do not join them."""
    picture = read_image(jpeg_with_extended_xmp(tmp_path / "in.jpg", extension_segments(EXTENDED, DIGEST)))
    out = write_image(tmp_path / "out.jpg", picture)
    segments = jpeg_segments(out.read_bytes())
    packet = next(body[29:] for body in segments if body.startswith(b"http://ns.adobe.com/xap/1.0/\x00"))
    pieces = [body[len(EXTENSION):] for body in segments if body.startswith(EXTENSION)]
    assert len(pieces) == 2 and len(packet) < 65_503
    root = ElementTree.fromstring(packet)
    assert root.find(".//dc:subject", NS) is not None and b'xmp:Rating="4"' in packet and b"ToneCurve" not in packet
    digest = root.find(".//rdf:Description", NS).get(f"{{{NS['xmpNote']}}}HasExtendedXMP")
    extended = b"".join(piece[40:] for piece in sorted(pieces, key=lambda piece: struct.unpack(">I", piece[36:40])))
    assert all(piece[:32].decode() == digest and struct.unpack(">I", piece[32:36])[0] == len(extended) for piece in pieces)
    assert hashlib.md5(extended).hexdigest().upper() == digest
    assert b"ToneCurve" in extended and not extended.startswith(b"<?xpacket")  # a whole serialization, unwrapped
    # i2i (and any reader that follows the digest) reads it all back.
    again = read_image(out).xmp
    assert_kept_and_true(again, 12, 20)
    assert_extended_kept(again)
    assert_decodes(out)


# --------------------------------------------------------------------------- the command


def test_restore_carries_a_text_chunk_s_packet_and_strip_metadata_leaves_it_out(tiny_env, tmp_path):
    source = png_with_chunk(tmp_path / "old.png", b"tEXt", b"XML:com.adobe.xmp\x00" + CATALOGUED)
    result = restore_without_background(str(source), "-o", str(tmp_path / "kept.jpg"))
    assert result.exit_code == 0, result.output
    assert_kept_and_true(written_xmp(tmp_path / "kept.jpg"), 24, 40)  # upscaled twice
    result = restore_without_background(str(source), "-o", str(tmp_path / "stripped.jpg"), "--strip-metadata")
    assert result.exit_code == 0, result.output
    assert written_xmp(tmp_path / "stripped.jpg") is None and b"Grandma" not in (tmp_path / "stripped.jpg").read_bytes()


def test_restore_carries_a_jpeg_s_extended_xmp_and_strip_metadata_leaves_it_out(tiny_env, tmp_path):
    source = jpeg_with_extended_xmp(tmp_path / "big.jpg", extension_segments(EXTENDED, DIGEST))
    result = restore_without_background(str(source), "-o", str(tmp_path / "kept.jpg"))
    assert result.exit_code == 0, result.output
    assert_extended_kept(read_image(tmp_path / "kept.jpg").xmp)
    result = restore_without_background(str(source), "-o", str(tmp_path / "stripped.jpg"), "--strip-metadata")
    assert result.exit_code == 0, result.output
    stripped = (tmp_path / "stripped.jpg").read_bytes()
    assert EXTENSION not in stripped and b"ToneCurve" not in stripped and written_xmp(tmp_path / "stripped.jpg") is None
