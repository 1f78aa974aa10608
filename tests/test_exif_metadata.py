"""A photo's EXIF metadata (date taken, camera, GPS) in the outputs: kept by `restore`, made true
for the new file (upright, no thumbnail of the old picture, its own size), left out on request and
by the commands that make new pictures."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms
from typer.testing import CliRunner

from cocosnet_checkpoints import write_checkpoint_dir
from i2icli.cli.app import app
from i2icli.imageio import Picture, encode_image, read_image, write_image

runner = CliRunner()

# Stored 20 wide and 12 high, with a white block in the top-left corner; Orientation 6 says "turn
# it a quarter clockwise to show it", so upright it is 12 x 20 with the block in the top-right.
STORED = np.full((12, 20, 3), 40, np.uint8)
STORED[:4, :6] = 255
UPRIGHT = np.ascontiguousarray(np.rot90(STORED, k=-1))
TAKEN = "2001:02:03 04:05:06"
GPS = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 0.0)}
THUMBNAIL_MARK = b"old unrestored thumbnail"


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def camera_exif(orientation: int = 6, width: int = 20, height: int = 12) -> bytes:
    """An EXIF block as a camera writes one: camera and copyright in the main directory, the date
    taken and pixel sizes in the Exif one, a GPS position, and a thumbnail (a second directory)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "EOS 5D", orientation
    exif[0x0100], exif[0x0101] = width, height
    exif[0x8298] = "Jane Doe"
    exif[0x8769] = {0x9003: TAKEN, 0xA002: width, 0xA003: height}
    exif[0x8825] = GPS
    tiff = bytearray(exif.tobytes()[6:])
    order = "<" if tiff[:2] == b"II" else ">"
    (first,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, first)
    tiff += bytes(len(tiff) % 2)
    thumbnail_at = len(tiff)
    struct.pack_into(order + "I", tiff, first + 2 + 12 * count, thumbnail_at)  # the main directory's "next"
    thumbnail = b"\xff\xd8" + THUMBNAIL_MARK + b"\xff\xd9"  # stands in for a small JPEG
    tiff += struct.pack(order + "H", 2)
    tiff += struct.pack(order + "HHII", 0x0201, 4, 1, thumbnail_at + 30) + struct.pack(order + "HHII", 0x0202, 4, 1, len(thumbnail))
    tiff += struct.pack(order + "I", 0) + thumbnail
    return b"Exif\x00\x00" + bytes(tiff)


def save(path: Path, pixels: np.ndarray, exif: bytes, **extra) -> Path:
    options = {"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {"lossless": True} if path.suffix == ".webp" else {}
    Image.fromarray(pixels).save(path, exif=exif, **options, **extra)
    return path


def written_exif(path: Path) -> Image.Exif:
    with Image.open(path) as image:
        exif = image.getexif()
        for directory in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.IFD1):
            exif.get_ifd(directory)  # read now: a TIFF's are read from the file, closed after this
        return exif


def assert_true_for(path: Path, width: int, height: int) -> None:
    """The camera's metadata is there, and what it says of the file is true of this one."""
    exif = written_exif(path)
    assert (exif[0x010F], exif[0x0110], exif[0x8298]) == ("Canon", "EOS 5D", "Jane Doe")
    assert exif.get_ifd(ExifTags.IFD.Exif)[0x9003] == TAKEN
    assert exif.get_ifd(ExifTags.IFD.GPSInfo) == GPS
    assert exif[0x0112] == 1  # the pixels are written upright
    assert (exif[0x0100], exif[0x0101]) == (width, height)
    assert (exif.get_ifd(ExifTags.IFD.Exif)[0xA002], exif.get_ifd(ExifTags.IFD.Exif)[0xA003]) == (width, height)
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {} and THUMBNAIL_MARK not in path.read_bytes()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_a_round_trip_keeps_the_metadata_and_makes_it_true(tmp_path, suffix):
    source = save(tmp_path / f"in{suffix}", STORED, camera_exif())
    picture = read_image(source)
    if suffix != ".jpg":
        np.testing.assert_array_equal(picture.rgb, UPRIGHT)
    out = write_image(tmp_path / f"out{suffix}", picture)
    assert_true_for(out, 12, 20)
    # Upright as stored: no reader turns it again, and the pixels are those written without EXIF.
    bare = np.frombuffer(encode_image(dataclasses.replace(picture, exif=None), suffix), np.uint8)
    expected = cv2.imdecode(bare, cv2.IMREAD_UNCHANGED)
    assert expected.shape[:2] == (20, 12)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), expected)
    np.testing.assert_array_equal(cv2.imread(str(out)), expected)  # this one applies the EXIF orientation
    with Image.open(out) as image, Image.open(io.BytesIO(bare.tobytes())) as without:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(without.convert("RGB")))
    np.testing.assert_array_equal(read_image(out).rgb, read_image(tmp_path / f"bare{suffix}", data=bare.tobytes()).rgb)


@pytest.mark.parametrize("source_suffix", [".jpg", ".png", ".webp", ".tif"])
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_each_readable_format_gives_its_metadata_to_each_format_written(tmp_path, source_suffix, suffix):
    source = save(tmp_path / f"in{source_suffix}", STORED, camera_exif())
    assert_true_for(write_image(tmp_path / f"out{suffix}", read_image(source)), 12, 20)


def test_a_tiff_s_own_layout_tags_are_not_taken_for_metadata(tmp_path):
    """A TIFF keeps its EXIF tags among those that lay out its pixels (strips, samples,
    compression): copied into a JPEG's EXIF they would describe data that is not there."""
    source = save(tmp_path / "scan.tif", STORED, camera_exif(orientation=1))
    out = write_image(tmp_path / "out.jpg", read_image(source))
    exif = written_exif(out)
    assert exif[0x010F] == "Canon" and exif.get_ifd(ExifTags.IFD.Exif)[0x9003] == TAKEN
    assert not {273, 278, 279, 258, 259, 262, 277, 284} & set(exif)


def _segments(jpeg: bytes) -> list[bytes]:
    """The JPEG's markers up to the start of the scan, with the identifier of each APPn segment."""
    found, at = [], 2
    assert jpeg[:2] == b"\xff\xd8"
    while jpeg[at : at + 2] != b"\xff\xda":
        marker, (length,) = jpeg[at : at + 2], struct.unpack(">H", jpeg[at + 2 : at + 4])
        found.append(marker + (jpeg[at + 4 : at + 10] if 0xE0 <= marker[1] <= 0xEF else b""))
        at += 2 + length
    return found


def test_a_jpeg_s_exif_segment_comes_first_as_the_standard_wants(tmp_path):
    """APP1 Exif right after SOI and JFIF's APP0, before the ICC profile's APP2 segments."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = save(tmp_path / "in.jpg", STORED, camera_exif(), icc_profile=profile)
    out = write_image(tmp_path / "out.jpg", read_image(source))
    segments = _segments(out.read_bytes())
    assert segments[0].startswith(b"\xff\xe0JFIF") and segments[1] == b"\xff\xe1Exif\x00\x00"
    assert segments[2].startswith(b"\xff\xe2ICC_PR")
    with Image.open(out) as image:
        assert image.info["icc_profile"] == profile
    assert_true_for(out, 12, 20)


def _png_with_chunk_before_end(png: bytes, kind: bytes, body: bytes) -> bytes:
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:-12] + chunk + png[-12:]


def test_a_png_s_exif_after_its_pixels_is_found(tmp_path):
    """PNG allows the eXIf chunk after the pixel data; read from the header alone it is not seen."""
    buffer = io.BytesIO()
    Image.fromarray(STORED).save(buffer, "PNG")
    source = tmp_path / "late.png"
    source.write_bytes(_png_with_chunk_before_end(buffer.getvalue(), b"eXIf", camera_exif()[6:]))
    picture = read_image(source)
    np.testing.assert_array_equal(picture.rgb, UPRIGHT)
    assert_true_for(write_image(tmp_path / "out.png", picture), 12, 20)


def _field_types(block: bytes) -> dict[int, tuple[int, bytes]]:
    """The main and Exif directories' fields of a little-endian EXIF block: tag -> (type, value bytes)."""
    tiff = block[6:] if block.startswith(b"Exif") else block
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 10: 8}
    fields: dict[int, tuple[int, bytes]] = {}
    directories = [struct.unpack_from("<I", tiff, 4)[0]]
    while directories:
        at = directories.pop()
        (count,) = struct.unpack_from("<H", tiff, at)
        for entry in range(at + 2, at + 2 + 12 * count, 12):
            tag, kind, values, inline = struct.unpack_from("<HHI4s", tiff, entry)
            length = sizes[kind] * values
            value = inline[:length] if length <= 4 else tiff[struct.unpack("<I", inline)[0]:][:length]
            if tag == 0x8769:
                directories.append(struct.unpack("<I", inline)[0])
            else:
                fields[tag] = (kind, value)
    return fields


def _little_endian_exif(main: list[tuple[int, int, bytes]], exif: list[tuple[int, int, bytes]]) -> bytes:
    """An EXIF block of (tag, type, value bytes) fields, values laid out after both directories."""
    main = [*main, (0x8769, 4, b"")]
    data_at = 8 + (2 + 12 * len(main) + 4) + (2 + 12 * len(exif) + 4)
    tables, values = [], b""
    exif_at = 8 + 2 + 12 * len(main) + 4
    for fields in (main, exif):
        table = struct.pack("<H", len(fields))
        for tag, kind, value in sorted(fields):
            count = len(value) // {2: 1, 3: 2, 4: 4, 7: 1, 10: 8}[kind] if tag != 0x8769 else 1
            if tag == 0x8769:
                value = struct.pack("<I", exif_at)
            if len(value) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")
            else:
                table += struct.pack("<HHII", tag, kind, count, data_at + len(values))
                values += value + bytes(len(value) % 2)
        tables.append(table + struct.pack("<I", 0))
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + b"".join(tables) + values


def test_every_field_keeps_its_type_and_bytes(tmp_path):
    """Rewritten through Pillow's Image.Exif, fields came out with types guessed from their values:
    a positive exposure bias (SRATIONAL) as RATIONAL, and the "©" of a copyright as "??"."""
    copyright_ = "© 2020 Jane Doe".encode() + b"\x00"
    main = [(0x010F, 2, b"Canon\x00"), (0x8298, 2, copyright_), (0x0112, 3, struct.pack("<H", 8))]
    exif = [(0x9000, 7, b"0232"), (0x9204, 10, struct.pack("<ii", 1, 3)), (0x9003, 2, TAKEN.encode() + b"\x00"),
            (0xA002, 4, struct.pack("<I", 20)), (0xA003, 3, struct.pack("<H", 12))]
    source = save(tmp_path / "in.jpg", STORED, _little_endian_exif(main, exif))
    out = write_image(tmp_path / "out.png", read_image(source))
    with Image.open(out) as image:
        fields = _field_types(image.info["exif"])
    assert fields[0x8298] == (2, copyright_) and fields[0x010F] == (2, b"Canon\x00")
    assert fields[0x9000] == (7, b"0232") and fields[0x9204] == (10, struct.pack("<ii", 1, 3))
    assert fields[0x9003] == (2, TAKEN.encode() + b"\x00")
    assert fields[0x0112] == (3, struct.pack("<H", 1))
    assert fields[0xA002] == (4, struct.pack("<I", 12)) and fields[0xA003] == (4, struct.pack("<I", 20))


@pytest.mark.parametrize("exif", [
    b"Exif\x00\x00" + b"not a TIFF header at all",
    b"Exif\x00\x00MM\x00*\x00\x00\xff\xff",  # the main directory lies past the end
    b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x01\x01",  # a directory cut off after its count
])
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_metadata_that_cannot_be_read_is_left_out(tmp_path, exif, suffix):
    source = save(tmp_path / "in.jpg", STORED, exif)
    picture = read_image(source)
    out = write_image(tmp_path / f"out{suffix}", picture)
    assert out.read_bytes() == encode_image(dataclasses.replace(picture, exif=None), suffix)  # as without any
    with Image.open(out) as image:
        image.load()


def test_a_field_pointing_outside_the_block_is_left_out_and_the_rest_kept(tmp_path):
    main = [(0x010F, 2, b"Canon\x00"), (0x0110, 2, b"EOS 5D\x00")]
    block = bytearray(_little_endian_exif(main, [(0x9003, 2, TAKEN.encode() + b"\x00")]))
    model_entry = block.index(struct.pack("<HHI", 0x0110, 2, 7)) + 8
    struct.pack_into("<I", block, model_entry, 60_000)  # its value "lies" past the end
    source = save(tmp_path / "in.jpg", STORED, bytes(block))
    exif = written_exif(write_image(tmp_path / "out.jpg", read_image(source)))
    assert exif[0x010F] == "Canon" and 0x0110 not in exif and exif.get_ifd(ExifTags.IFD.Exif)[0x9003] == TAKEN


def test_a_bmp_output_is_written_as_before(tmp_path):
    """BMP has no place for metadata."""
    picture = read_image(save(tmp_path / "in.png", STORED, camera_exif()))
    assert encode_image(picture, ".bmp") == encode_image(dataclasses.replace(picture, exif=None), ".bmp")


def test_a_picture_without_metadata_is_written_as_before(tmp_path):
    picture = read_image(save(tmp_path / "in.png", UPRIGHT, b""))
    assert picture.exif is None
    out = write_image(tmp_path / "out.jpg", Picture(rgb=UPRIGHT))
    with Image.open(out) as image:
        assert "exif" not in image.info


# --------------------------------------------------------------------------- the commands


def _restore(*args: str):
    return run("restore", *args, "--device", "cpu", "--bg-model", "none", "--parser", "none")


def test_restore_keeps_a_turned_photo_s_metadata_true_and_its_picture_upright(tiny_env, tmp_path):
    """A phone photo stored sideways (Orientation 6), restored to PNG: shown upright, and its EXIF
    says so, rather than making viewers turn the upright pixels once more."""
    source = save(tmp_path / "phone.jpg", STORED, camera_exif())
    result = _restore(str(source), "-o", str(tmp_path / "restored.png"), "--upscale", "2")
    assert result.exit_code == 0, result.output
    out = tmp_path / "restored.png"
    assert_true_for(out, 24, 40)
    restored = read_image(out).rgb
    assert restored.shape == (40, 24, 3)
    assert restored[:6, -10:].mean() > 200 and restored[-10:, :6].mean() < 100  # the block is top-right
    with Image.open(out) as image:
        assert image.size == (24, 40)


def test_restore_leaves_out_metadata_it_cannot_read(tiny_env, tmp_path):
    source = save(tmp_path / "odd.jpg", STORED, b"Exif\x00\x00MM\x00*\x00\x00\xff\xff")
    result = _restore(str(source), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    assert [line[0] for line in result.stderr.splitlines()] == ["✓"], result.stderr  # no warning, no error
    with Image.open(tmp_path / "out" / "odd.jpg") as image:
        assert "exif" not in image.info and image.size == (40, 24)


def test_strip_metadata_leaves_out_the_exif_but_keeps_the_colour_profile(tiny_env, tmp_path):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = save(tmp_path / "holiday.jpg", STORED, camera_exif(), icc_profile=profile)
    result = _restore(str(source), "-o", str(tmp_path / "out"), "--strip-metadata", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 1
    out = tmp_path / "out" / "holiday.jpg"
    with Image.open(out) as image:
        assert "exif" not in image.info and len(image.getexif()) == 0
        assert image.info["icc_profile"] == profile and image.size == (24, 40)  # still upright
    assert b"Canon" not in out.read_bytes()


def test_exemplar_draws_a_new_picture_and_gives_it_none_of_the_exemplar_s_metadata(tmp_path):
    from test_exemplar_cli import _pose

    checkpoint = write_checkpoint_dir(tmp_path / "deepfashionhd")
    rng = np.random.default_rng(0)
    exemplar = save(tmp_path / "model.jpg", rng.integers(0, 255, (110, 75, 3), dtype=np.uint8),
                    camera_exif(orientation=1, width=75, height=110))
    assert read_image(exemplar).exif is not None
    result = run("exemplar", str(_pose(tmp_path / "target.json", 5)), str(exemplar), "--exemplar-pose",
                 str(_pose(tmp_path / "model.json")), "-o", str(tmp_path / "x.jpg"), "--save-warps",
                 "--checkpoint", str(checkpoint), "--size", "64", "--iterations", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for name in ("x.jpg", "x_warp64.png"):
        with Image.open(tmp_path / name) as image:
            assert "exif" not in image.info, name
