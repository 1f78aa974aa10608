"""XMP packets where other writers put them, carried by `restore` as the usual ones are: a PNG's
tEXt or zTXt chunk; packets in UTF-16 or UTF-32."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree

import cv2
import pytest
from PIL import Image
from typer.testing import CliRunner

from i2icli.cli.app import app
from i2icli.imageio import read_image, write_image
from i2icli.xmp import xmp_packet
from test_exif_metadata import STORED, UPRIGHT, camera_exif
from test_xmp_metadata import CATALOGUED, assert_kept_and_true, save, written_xmp

runner = CliRunner()


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


# --------------------------------------------------------------------------- the command


def _restore(*args: str):
    return runner.invoke(app, ["restore", *args, "--device", "cpu", "--bg-model", "none", "--parser", "none"],
                         catch_exceptions=False)


def test_restore_carries_a_text_chunk_s_packet_and_strip_metadata_leaves_it_out(tiny_env, tmp_path):
    source = png_with_chunk(tmp_path / "old.png", b"tEXt", b"XML:com.adobe.xmp\x00" + CATALOGUED)
    result = _restore(str(source), "-o", str(tmp_path / "kept.jpg"))
    assert result.exit_code == 0, result.output
    assert_kept_and_true(written_xmp(tmp_path / "kept.jpg"), 24, 40)  # upscaled twice
    result = _restore(str(source), "-o", str(tmp_path / "stripped.jpg"), "--strip-metadata")
    assert result.exit_code == 0, result.output
    assert written_xmp(tmp_path / "stripped.jpg") is None and b"Grandma" not in (tmp_path / "stripped.jpg").read_bytes()
