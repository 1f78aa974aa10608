"""XMP packets where other writers put them, carried by `restore` as the usual ones are: a PNG's
tEXt or zTXt chunk."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import pytest
from PIL import Image
from typer.testing import CliRunner

from i2icli.cli.app import app
from i2icli.imageio import read_image, write_image
from test_exif_metadata import STORED, camera_exif
from test_xmp_metadata import CATALOGUED, assert_kept_and_true, written_xmp

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
