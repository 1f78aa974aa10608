"""Defects found in carrying a photo's metadata into `restore`'s outputs, each with the case that
showed it."""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image

from i2icli.imageio import Picture, encode_image

TAKEN = "2001:02:03 04:05:06"


def _camera_exif_with_maker_note(maker_note_bytes: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Canon", 1
    exif[0x8769] = {0x9003: TAKEN, 0x927C: b"M" * maker_note_bytes}
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.5)}
    return exif.tobytes()


def _picture(exif: bytes | None = None, xmp: bytes | None = None) -> Picture:
    return Picture(rgb=np.full((12, 20, 3), 90, np.uint8), alpha=None, grayscale=False, source=None,
                   exif=exif, xmp=xmp)


def test_a_jpeg_keeps_the_date_and_place_of_a_block_too_large_for_its_segment():
    """A TIFF from a raw converter, whose maker note alone is 70 KB, restored to JPEG: one APP1
    segment holds 64 KB, so the whole block was left out, date taken and GPS position with it. The
    maker note (the camera's own data) is what is left out now; PNG keeps it all."""
    exif = _camera_exif_with_maker_note(70_000)
    with Image.open(io.BytesIO(encode_image(_picture(exif), ".jpg"))) as image:
        written = image.getexif()
        assert written[0x010F] == "Canon"
        assert written.get_ifd(ExifTags.IFD.Exif)[0x9003] == TAKEN
        assert 0x927C not in written.get_ifd(ExifTags.IFD.Exif)
        assert written.get_ifd(ExifTags.IFD.GPSInfo)[1] == "N"
    with Image.open(io.BytesIO(encode_image(_picture(exif), ".png"))) as image:
        assert len(image.getexif().get_ifd(ExifTags.IFD.Exif)[0x927C]) == 70_000


def test_a_jpeg_keeps_a_maker_note_that_fits():
    exif = _camera_exif_with_maker_note(30_000)
    with Image.open(io.BytesIO(encode_image(_picture(exif), ".jpg"))) as image:
        assert len(image.getexif().get_ifd(ExifTags.IFD.Exif)[0x927C]) == 30_000


def _restore(*args: str):
    from typer.testing import CliRunner

    from i2icli.cli.app import app

    return CliRunner().invoke(app, ["restore", *args, "--device", "cpu", "--bg-model", "none", "--parser", "none"],
                              catch_exceptions=False)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_a_bmp_output_says_once_that_the_photos_metadata_is_left_out(tiny_env, tmp_path):
    """`--ext bmp` left out the date taken, GPS position and rating of every photo without a word,
    where lost transparency is warned of: said now, once for the run, not once per photo."""
    from test_exif_metadata import STORED, camera_exif, save

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        save(photos / name, STORED, camera_exif())
    Image.fromarray(STORED).save(photos / "c.png")  # none to lose
    result = _restore(str(photos), "-o", str(tmp_path / "out"), "--ext", "bmp")
    assert result.exit_code == 0, result.output
    warnings = [line for line in _warnings(result.stderr) if "metadata" in line]
    assert len(warnings) == 1 and "a BMP file holds no EXIF, IPTC or XMP metadata" in warnings[0], result.stderr
    assert "--ext png" in warnings[0]

    for quiet in (["--strip-metadata"], ["--ext", "png"]):
        result = _restore(str(photos), "-o", str(tmp_path / "quiet"), "--ext", "bmp", *quiet)
        assert result.exit_code == 0, result.output
        assert not [line for line in _warnings(result.stderr) if "metadata" in line], result.stderr


def test_a_bmp_output_of_a_photo_without_metadata_warns_of_nothing(tiny_env, tmp_path):
    source = tmp_path / "plain.jpg"
    Image.fromarray(np.full((12, 20, 3), 90, np.uint8)).save(source)
    result = _restore(str(source), "-o", str(tmp_path / "plain.bmp"))
    assert result.exit_code == 0 and not _warnings(result.stderr), result.stderr


def test_a_tiff_s_maker_note_past_its_pixels_is_not_moved_there_in_other_formats(tmp_path):
    """A TIFF keeps its EXIF directory, maker note and all, wherever it likes: i2i's own TIFF
    outputs put it past the pixel data. Carried into a PNG or WebP, the note was laid out as far
    on as it was, behind that many zero bytes: a 4 MB TIFF gave a 4 MB eXIf chunk (a 1 MB WebP
    came out at 5 MB), and a JPEG lost the block whole."""
    from i2icli.imageio import read_image

    pixels = np.random.default_rng(0).integers(0, 256, (160, 160, 3), np.uint8)  # past 64 KB, compressed
    exif = _camera_exif_with_maker_note(100)
    tiff = tmp_path / "master.tif"
    tiff.write_bytes(encode_image(Picture(rgb=pixels, alpha=None, grayscale=False, source=None, exif=exif), ".tif"))
    assert tiff.read_bytes().find(b"M" * 100) > 70_000
    picture = read_image(tiff)
    for suffix in (".png", ".webp", ".jpg"):
        data = encode_image(picture, suffix)
        with Image.open(io.BytesIO(data)) as image:
            assert image.getexif().get_ifd(ExifTags.IFD.Exif)[0x927C] == b"M" * 100, suffix
        assert len(bytes(image.info["exif"])) < 1000, suffix


def _png_with_exif_text(path, pixels: np.ndarray, exif: bytes, *, exif_chunk: bytes | None = None):
    """A PNG as ImageMagick wrote them before the eXIf chunk: the block in hex in a zTXt chunk."""
    import zlib

    from i2icli.containers import png_chunk

    Image.fromarray(pixels).save(path)
    plain = path.read_bytes()
    digits = exif.hex().encode()
    text = b"\nexif\n" + str(len(exif)).encode().rjust(8) + b"\n" + b"\n".join(
        digits[start : start + 72] for start in range(0, len(digits), 72)) + b"\n"
    chunks = png_chunk(b"zTXt", b"Raw profile type exif\x00\x00" + zlib.compress(text))
    if exif_chunk is not None:
        chunks = png_chunk(b"eXIf", exif_chunk[6:]) + chunks
    path.write_bytes(plain[:33] + chunks + plain[33:])
    return path


def test_a_png_s_exif_in_a_text_chunk_is_kept_and_its_pixels_are_shown_as_stored(tmp_path):
    """A JPEG turned into a PNG by ImageMagick keeps its EXIF as hex text ("Raw profile type
    exif"): its date taken and GPS position were left out of the restored photo. They are kept
    now; its orientation, which browsers do not read either, is not applied."""
    from test_exif_metadata import GPS, STORED, camera_exif

    from i2icli.imageio import read_image

    picture = read_image(_png_with_exif_text(tmp_path / "converted.png", STORED, camera_exif(orientation=6)))
    assert picture.rgb.shape == STORED.shape
    with Image.open(io.BytesIO(encode_image(picture, ".png"))) as image:
        written = image.getexif()
        assert written[0x010F] == "Canon" and written[0x0112] == 1
        assert written.get_ifd(ExifTags.IFD.Exif)[0x9003] == "2001:02:03 04:05:06"
        assert written.get_ifd(ExifTags.IFD.GPSInfo) == GPS
        assert image.size == (20, 12)


def test_a_png_s_exif_chunk_wins_over_its_exif_text(tmp_path):
    from test_exif_metadata import STORED, camera_exif

    from i2icli.imageio import read_image

    chunk = camera_exif(orientation=3)
    text = Image.Exif()
    text[0x010F] = "Other"
    path = _png_with_exif_text(tmp_path / "both.png", STORED, text.tobytes(), exif_chunk=chunk)
    picture = read_image(path)
    assert np.array_equal(picture.rgb, STORED[::-1, ::-1])  # turned by the eXIf chunk's orientation
    with Image.open(io.BytesIO(encode_image(picture, ".jpg"))) as image:
        assert image.getexif()[0x010F] == "Canon"


def test_a_jpeg_keeps_the_rating_and_keywords_of_a_packet_too_large_for_its_segment():
    """A PNG or TIFF master saved from Photoshop lists every document ever pasted into it in its
    packet (photoshop:DocumentAncestors, over 64 KB in some): restored to JPEG, the whole packet
    was left out, rating and keywords with it. The history is what is left out now."""
    ancestors = "".join(f"<rdf:li>xmp.did:{index:064x}</rdf:li>" for index in range(2000))
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmp:Rating="5">'
        '<dc:subject><rdf:Bag><rdf:li>Großmutter</rdf:li></rdf:Bag></dc:subject>'
        f'<photoshop:DocumentAncestors><rdf:Bag>{ancestors}</rdf:Bag></photoshop:DocumentAncestors>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>'
    ).encode()
    assert len(packet) > 70_000
    with Image.open(io.BytesIO(encode_image(_picture(xmp=packet), ".jpg"))) as image:
        written = image.info["xmp"].decode()
    assert 'xmp:Rating="5"' in written and "Großmutter" in written and "DocumentAncestors" not in written
    with Image.open(io.BytesIO(encode_image(_picture(xmp=packet), ".png"))) as image:
        assert b"DocumentAncestors" in image.info["xmp"]


def test_fields_that_point_at_the_same_bytes_over_and_over_are_not_laid_out_each_time():
    """An EXIF block whose fields all point at the same 30 KB: each was laid out on its own, so a
    segment that fits a JPEG came out as megabytes (4,000 such fields in 60 KB: 240 MB, and minutes
    of copying). Once the values come to more than the block, the rest are left out."""
    import struct

    fields, shared = 200, 30_000
    tiff = bytearray(b"II*\x00" + struct.pack("<IH", 8, fields))
    for index in range(fields):
        tiff += struct.pack("<HHII", 0x9000 + index, 7, shared, 8)  # UNDEFINED, all at offset 8
    tiff += bytes(4 + max(0, 8 + shared - len(tiff) - 4))
    data = encode_image(_picture(b"Exif\x00\x00" + bytes(tiff)), ".png")
    assert len(data) < 3 * len(tiff)
    with Image.open(io.BytesIO(data)) as image:
        assert 0 < len(image.getexif()) < fields
