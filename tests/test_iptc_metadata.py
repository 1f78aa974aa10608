"""A photo's IPTC-IIM datasets (captions, keywords, byline, copyright of older cataloguing software
and news agencies) in the outputs: kept by `restore` where the format has a place for them, each
dataset's bytes as they were, without the Photoshop resources that show the unrestored picture;
left out on request and when they do not parse."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import restore_without_background
from PIL import Image, IptcImagePlugin, PngImagePlugin, TiffImagePlugin
from test_exif_metadata import STORED, camera_exif

from i2icli.imageio import Picture, encode_image, read_image, write_image
from i2icli.iptc import iptc_datasets, photoshop_iptc, png_raw_profile_iptc

CAPTION = "Summer at the lake, Lübeck, 1952".encode()
PREVIEW_MARK = b"old unrestored preview"
THUMBNAIL_MARK = b"old unrestored thumbnail"


def dataset(record: int, number: int, value: bytes) -> bytes:
    return struct.pack(">BBBH", 0x1C, record, number, len(value)) + value


# As a news agency's software writes them: the character set (UTF-8) in the envelope record, then the
# caption, two keywords, byline and copyright; and a preview of the picture, which is not carried.
CATALOGUED = b"".join([
    dataset(1, 90, b"\x1b%G"),
    dataset(2, 0, b"\x00\x04"),
    dataset(2, 120, CAPTION),
    dataset(2, 25, b"Grandma"),
    dataset(2, 25, b"Lake & boats"),
    dataset(2, 80, b"Jane Doe"),
    dataset(2, 116, "© Doe family".encode()),
    dataset(2, 202, PREVIEW_MARK),
])
KEPT = CATALOGUED[: CATALOGUED.index(dataset(2, 202, PREVIEW_MARK))]


def resource(identifier: int, data: bytes, name: bytes = b"") -> bytes:
    pascal = bytes((len(name),)) + name
    pascal += bytes(len(pascal) % 2)
    return b"8BIM" + struct.pack(">H", identifier) + pascal + struct.pack(">I", len(data)) + data + bytes(len(data) % 2)


def photoshop_resources(datasets: bytes) -> bytes:
    """As Photoshop writes them: resolution, the IPTC block, and a thumbnail of the picture."""
    return (resource(0x03ED, bytes(16), b"res") + resource(0x0404, datasets)
            + resource(0x040C, b"\xff\xd8" + THUMBNAIL_MARK + b"\xff\xd9"))


def png_raw_profile(profile: bytes) -> str:
    hex_digits = profile.hex()
    return "\niptc\n" + f"{len(profile):8d}\n" + "\n".join(hex_digits[at : at + 72] for at in range(0, len(hex_digits), 72)) + "\n"


def save(path: Path, pixels: np.ndarray, datasets: bytes, *, as_resources: bool = False) -> Path:
    """``pixels`` saved as ``path`` with the photo's EXIF and ``datasets`` where the format keeps
    them: a JPEG's APP13 Photoshop resources (a thumbnail among them), a TIFF's IPTC-NAA tag, a
    PNG's compressed "Raw profile type iptc" text (raw datasets as ImageMagick writes them, or
    Photoshop resources, ``as_resources``, as ExifTool does)."""
    extra = {}
    if path.suffix == ".png":
        info = PngImagePlugin.PngInfo()
        profile = photoshop_resources(datasets) if as_resources else datasets
        info.add_text("Raw profile type iptc", png_raw_profile(profile), zip=True)
        extra["pnginfo"] = info
    elif path.suffix == ".tif":
        fields = TiffImagePlugin.ImageFileDirectory_v2()
        fields[33723], fields.tagtype[33723] = datasets, 7
        extra["tiffinfo"] = fields
    Image.fromarray(pixels).save(path, exif=camera_exif(), **extra)
    if path.suffix == ".jpg":
        add_photoshop_segment(path, datasets)
    return path


def add_photoshop_segment(jpeg_path: Path, datasets: bytes) -> None:
    """Put ``datasets`` into the JPEG at ``jpeg_path`` as Photoshop resources in an APP13 segment."""
    jpeg = jpeg_path.read_bytes()
    segment = b"Photoshop 3.0\x00" + photoshop_resources(datasets)
    jpeg_path.write_bytes(jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:])


def written_iptc(path: Path) -> bytes | None:
    """The datasets a reader other than i2i finds in ``path``: Pillow's for JPEG and TIFF; the PNG
    text read here."""
    with Image.open(path) as image:
        image.load()
        if image.format == "PNG":
            text = image.info.get("Raw profile type iptc")
            if text is None:
                return None
            _, name, length, digits = text.split("\n", 3)
            profile = bytes.fromhex(digits)[: int(length)]
            assert name == "iptc" and profile.startswith(b"8BIM\x04\x04")  # as ExifTool reads it
            return photoshop_iptc(profile)
        if image.format == "JPEG":
            resources = image.info.get("photoshop", {})
            assert set(resources) <= {0x0404}  # none of the others: the thumbnail shows the old picture
        found = IptcImagePlugin.getiptcinfo(image)
    if found is None:
        return None
    return KEPT if all(found.get(key) == value for key, value in _PILLOW_VIEW.items()) else b"?"


# The datasets as Pillow gives them, by (record, number).
_PILLOW_VIEW = {(2, 120): CAPTION, (2, 25): [b"Grandma", b"Lake & boats"], (2, 80): b"Jane Doe",
                (2, 116): "© Doe family".encode()}


def assert_decodes(path: Path) -> None:
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None
    with Image.open(path) as image:
        image.load()


@pytest.mark.parametrize(("source_suffix", "as_resources"),
                         [(".jpg", False), (".tif", False), (".png", False), (".png", True)])
def test_the_photo_s_datasets_are_read_as_they_are_without_the_preview(tmp_path, source_suffix, as_resources):
    picture = read_image(save(tmp_path / f"in{source_suffix}", STORED, CATALOGUED, as_resources=as_resources))
    assert picture.iptc == KEPT


@pytest.mark.parametrize("source_suffix", [".jpg", ".tif", ".png"])
@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".png"])
def test_each_format_that_holds_them_keeps_them(tmp_path, source_suffix, suffix):
    out = write_image(tmp_path / f"out{suffix}", read_image(save(tmp_path / f"in{source_suffix}", STORED, CATALOGUED)))
    assert written_iptc(out) == KEPT
    assert read_image(out).iptc == KEPT  # and again from i2i's own output
    assert PREVIEW_MARK not in out.read_bytes() and THUMBNAIL_MARK not in out.read_bytes()
    assert_decodes(out)


def test_a_tiff_holds_them_in_their_own_tag_not_among_the_exif_fields(tmp_path):
    out = write_image(tmp_path / "out.jpg", read_image(save(tmp_path / "in.tif", STORED, CATALOGUED)))
    with Image.open(out) as image:
        assert 33723 not in image.getexif()  # the Exif APP1 holds no copy of them
    assert out.read_bytes().count(CAPTION) == 1


def test_a_tiff_s_tag_written_as_longs_is_read(tmp_path):
    """As Photoshop writes the tag: type LONG, the datasets' bytes as they are, padded with zeros
    to whole LONGs."""
    padded = KEPT + bytes(-len(KEPT) % 4)
    source = save(tmp_path / "in.tif", STORED, padded)
    tiff = bytearray(source.read_bytes())
    (directory,) = struct.unpack_from("<I", tiff, 4)
    (count,) = struct.unpack_from("<H", tiff, directory)
    entry = next(at for at in range(directory + 2, directory + 2 + 12 * count, 12)
                 if struct.unpack_from("<H", tiff, at)[0] == 33723)
    struct.pack_into("<HI", tiff, entry + 2, 4, len(padded) // 4)
    source.write_bytes(bytes(tiff))
    assert read_image(source).iptc == KEPT


def test_a_block_too_large_for_a_jpeg_segment_is_left_out_of_a_jpeg_only():
    large = KEPT + b"".join(dataset(2, 25, bytes([65 + index]) * 30_000) for index in range(3))
    assert iptc_datasets(large) == large
    jpeg = encode_image(Picture(rgb=STORED, iptc=large), ".jpg")
    assert b"Photoshop 3.0" not in jpeg
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
    png = encode_image(Picture(rgb=STORED, iptc=large), ".png")
    assert read_image("large.png", data=png).iptc == large


def test_a_webp_and_a_bmp_have_no_place_for_them(tmp_path):
    picture = read_image(save(tmp_path / "in.jpg", STORED, CATALOGUED))
    for suffix in (".webp", ".bmp"):
        out = write_image(tmp_path / f"out{suffix}", picture)
        assert CAPTION not in out.read_bytes()
        assert_decodes(out)


def test_a_jpeg_s_app13_holds_the_one_resource_after_the_app1_segments():
    jpeg = encode_image(Picture(rgb=STORED, exif=camera_exif(), iptc=KEPT), ".jpg")
    at = jpeg.index(b"\xff\xed")
    assert jpeg.index(b"Exif\x00\x00") < at
    (length,) = struct.unpack(">H", jpeg[at + 2 : at + 4])
    assert jpeg[at + 4 : at + 2 + length] == b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(KEPT)) + KEPT + bytes(len(KEPT) % 2)


@pytest.mark.parametrize("raw", [
    CATALOGUED[:-3],  # the last dataset runs past the block's end
    b"\x1c\x02\x78\xff\xff" + b"x" * 10,  # an extended length whose length bytes run past it
    b"\x1c\x02\x78\x80\x09" + b"\xff" * 9,  # an extended length of nine bytes: no length a file holds
    KEPT + b"junk",  # bytes after the datasets that are none
    b"",
    dataset(3, 20, b"\x00\x14") + dataset(8, 10, b"pixels"),  # nothing that describes the photo
])
def test_a_block_that_does_not_parse_is_left_out(raw):
    assert iptc_datasets(raw) is None


def test_zeros_after_the_datasets_are_padding():
    assert iptc_datasets(KEPT + bytes(3)) == KEPT


def test_an_extended_length_is_bounded_by_the_block():
    """A length of 2**32 - 1 in an extended dataset ends the parse, without reading or allocating
    that much."""
    assert iptc_datasets(KEPT + b"\x1c\x02\x78\x80\x04\xff\xff\xff\xff" + b"x") is None
    assert iptc_datasets(dataset(2, 120, b"") + b"\x1c\x02\x78\x80\x02\x00\x03abc") == (
        dataset(2, 120, b"") + b"\x1c\x02\x78\x80\x02\x00\x03abc")


@pytest.mark.parametrize("resources", [
    b"8BIM\x04\x04\x00\x00\xff\xff\xff\xff" + KEPT,  # a size past the end
    b"8BIM\x03\xed\xff" + b"x" * 8,  # a name past the end
    b"NOPE\x04\x04\x00\x00" + struct.pack(">I", len(KEPT)) + KEPT,  # no resource signature
    resource(0x040C, b"thumbnail"),  # none
])
def test_photoshop_resources_that_do_not_hold_a_readable_block_give_none(resources):
    assert photoshop_iptc(resources) is None


def test_a_damaged_block_is_left_out_of_a_file_and_the_rest_kept(tmp_path):
    picture = read_image(save(tmp_path / "in.jpg", STORED, CATALOGUED[:-3]))
    assert picture.iptc is None and picture.exif is not None
    out = write_image(tmp_path / "out.png", picture)
    assert written_iptc(out) is None
    assert_decodes(out)


@pytest.mark.parametrize("text", [b"\niptc\n  nonsense\n1c02", b"\niptc\n      99\n1c0278", b"\niptc\n", b"\niptc\n 4\nzz"])
def test_a_png_raw_profile_that_does_not_read_gives_none(text):
    assert png_raw_profile_iptc(text) is None


def test_a_png_s_text_after_its_pixels_is_found(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(STORED).save(buffer, "PNG")
    body = b"Raw profile type iptc\x00" + png_raw_profile(CATALOGUED).encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    png = buffer.getvalue()
    source = tmp_path / "late.png"
    source.write_bytes(png[:-12] + chunk + png[-12:])
    assert read_image(source).iptc == KEPT


# --------------------------------------------------------------------------- the command


def test_restore_keeps_the_photo_s_captions_and_keywords(tiny_env, tmp_path):
    source = save(tmp_path / "catalogued.jpg", STORED, CATALOGUED)
    result = restore_without_background(str(source), "-o", str(tmp_path / "restored.tif"), "--upscale", "2")
    assert result.exit_code == 0, result.output
    assert written_iptc(tmp_path / "restored.tif") == KEPT


def test_strip_metadata_leaves_them_out(tiny_env, tmp_path):
    source = save(tmp_path / "holiday.jpg", STORED, CATALOGUED)
    result = restore_without_background(str(source), "-o", str(tmp_path / "out"), "--strip-metadata")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "holiday.jpg"
    assert written_iptc(out) is None
    assert CAPTION not in out.read_bytes() and b"Photoshop 3.0" not in out.read_bytes()


def test_a_bmp_output_says_that_the_captions_are_left_out(tiny_env, tmp_path):
    """A photo whose only metadata is its IPTC datasets: a BMP output leaves them out, and says so."""
    source = tmp_path / "captioned.jpg"
    Image.fromarray(STORED).save(source)
    add_photoshop_segment(source, CATALOGUED)
    result = restore_without_background(str(source), "-o", str(tmp_path / "out.bmp"))
    assert result.exit_code == 0, result.output
    assert "a BMP file holds no EXIF, IPTC or XMP metadata" in result.stderr
