"""Tests for i2icli.imageio: gray+alpha and other unusual TIFFs, damaged files, what the C
libraries print, and writing at the formats' limits. Every fixture image is generated here;
nothing binary is committed."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from i2icli import atomic_files, codec_libraries, containers, image_decoding
from i2icli.atomic_files import write_text
from i2icli.errors import I2IError, InputImageError
from i2icli.imageio import Picture, read_image, write_image

H, W = 24, 40


def noisy(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, int(np.iinfo(dtype).max) + 1, shape, dtype=dtype)


def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk_after_header(png: bytes, kind: bytes, body: bytes) -> bytes:
    return png[:33] + png_chunk(kind, body) + png[33:]


def jpeg_with_scan_overwritten(shape=(64, 96, 3)) -> bytes:
    """A JPEG of full length whose entropy-coded data has bytes overwritten halfway: a photo
    damaged on a bad card, which libjpeg decodes to the end, partly garbled."""
    data = bytearray(encoded(noisy(shape), "JPEG", quality=90))
    middle = len(data) // 2
    data[middle : middle + 100] = b"\x12\x34" * 50
    return bytes(data)


def gray_alpha_picture(dtype=np.uint8) -> Picture:
    gray, alpha = noisy((H, W), dtype), noisy((H, W), dtype, seed=1)
    return Picture(np.stack([gray] * 3, axis=-1), alpha, grayscale=True)


# --------------------------------------------------------------------------- gray+alpha TIFF


def test_a_gray_alpha_picture_is_written_to_tiff_as_gray_alpha(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    picture = gray_alpha_picture()
    out = write_image(tmp_path / "la.tif", picture)
    assert Image.open(out).mode == "LA"
    with tifffile.TiffFile(out) as tiff:  # a decoder other than i2i's agrees
        page = tiff.pages[0]
        assert page.photometric == 1 and list(page.extrasamples) == [2]  # BlackIsZero, unassociated alpha
        stored = page.asarray()
    np.testing.assert_array_equal(stored[..., 0], picture.rgb[..., 0])
    np.testing.assert_array_equal(stored[..., 1], picture.alpha)
    back = read_image(out)
    assert back.grayscale
    np.testing.assert_array_equal(back.rgb, picture.rgb)
    np.testing.assert_array_equal(back.alpha, picture.alpha)


def test_a_tall_gray_alpha_tiff_is_written_in_several_strips(tmp_path):
    gray = noisy((3000, 400))
    picture = Picture(np.stack([gray] * 3, axis=-1), 255 - gray, grayscale=True)
    out = write_image(tmp_path / "tall.tif", picture)
    assert len(Image.open(out).tag_v2[273]) > 1  # StripOffsets
    back = read_image(out)
    np.testing.assert_array_equal(back.rgb, picture.rgb)
    np.testing.assert_array_equal(back.alpha, picture.alpha)


def test_a_16bit_gray_alpha_picture_keeps_its_depth_and_alpha_in_a_tiff(tmp_path):
    picture = gray_alpha_picture(np.uint16)
    back = read_image(write_image(tmp_path / "la16.tif", picture))
    assert back.bit_depth == 16
    np.testing.assert_array_equal(back.rgb, picture.rgb)
    np.testing.assert_array_equal(back.alpha, picture.alpha)


def test_a_16bit_gray_alpha_tiff_is_named_for_what_it_is_not_called_corrupt(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "la16.tif"
    tifffile.imwrite(path, noisy((H, W, 2), np.uint16), photometric="minisblack", extrasamples=["unassalpha"])
    with pytest.raises(InputImageError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "gray+alpha" in message and "corrupt" not in message and "PNG" in message


# --------------------------------------------------------------------------- damaged files, and the C libraries' stderr


@pytest.mark.parametrize(("kind", "body"), [(b"iCCP", b"x\x00\x00" + zlib.compress(b"no profile")),
                                            (b"sRGB", b"\x07"), (b"tEXt", b"\x00")],
                         ids=["short-icc", "bad-srgb", "empty-text"])
def test_libpng_s_complaints_about_metadata_stay_off_the_terminal(tmp_path, capfd, kind, body):
    pixels = noisy((H, W, 3))
    path = tmp_path / "photo.png"
    path.write_bytes(with_chunk_after_header(encoded(pixels, "PNG"), kind, body))
    picture = read_image(path)
    np.testing.assert_array_equal(picture.rgb, pixels)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("damage", ["cut-short", "bad-crc"])
def test_a_damaged_png_is_refused_in_one_line_with_nothing_else_on_the_terminal(tmp_path, capfd, damage):
    png = encoded(noisy((64, 96, 3)), "PNG")
    if damage == "cut-short":
        png = png[: len(png) * 2 // 3]
    else:  # a bit flipped inside the pixel data
        png = png[:-40] + bytes([png[-40] ^ 0xFF]) + png[-39:]
    path = tmp_path / "photo.png"
    path.write_bytes(png)
    with pytest.raises(InputImageError, match="corrupt or truncated"):
        read_image(path)
    assert capfd.readouterr().err == ""


def png_of_rows(pixels: np.ndarray, rows: int) -> bytes:
    """An RGB PNG, sound in every chunk, whose compressed pixel data holds only its first ``rows``."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def test_a_png_whose_pixel_data_stops_short_is_refused_not_read_with_black_rows(tmp_path, capfd):
    pixels = noisy((64, 96, 3))
    path = tmp_path / "photo.png"
    path.write_bytes(png_of_rows(pixels, 32))
    with pytest.raises(InputImageError, match="photo.png: .*corrupt or truncated"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_a_png_that_only_lacks_its_end_chunk_is_read_whole(tmp_path, capfd):
    pixels = noisy((64, 96, 3))
    path = tmp_path / "photo.png"
    path.write_bytes(png_of_rows(pixels, 64)[:-12])  # IEND is the last 12 bytes
    np.testing.assert_array_equal(read_image(path).rgb, pixels)
    assert capfd.readouterr().err == ""


def test_a_tiff_cut_short_read_through_pillow_leaves_nothing_on_the_terminal(tmp_path, capfd):
    # Gray+alpha, which Pillow decodes (through libtiff); its header comes first, so it survives the cut.
    tiff = write_image(tmp_path / "whole.tif", gray_alpha_picture()).read_bytes()
    path = tmp_path / "scan.tif"
    path.write_bytes(tiff[:-40])
    with pytest.raises(InputImageError, match="corrupt or truncated"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_a_tiff_with_damaged_strips_is_refused_not_read_as_noise(tmp_path, capfd):
    gradient = np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (64, 1, 3))
    ok, encoded_tiff = cv2.imencode(".tiff", gradient)  # LZW-compressed
    tiff = bytearray(encoded_tiff.tobytes())
    middle = len(tiff) // 2
    tiff[middle : middle + 40] = b"\x12\x34" * 20
    path = tmp_path / "scan.tif"
    path.write_bytes(bytes(tiff))
    with pytest.raises(InputImageError, match="scan.tif: .*corrupt or truncated"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_a_jpeg_damaged_inside_is_read_with_one_warning_naming_it(tmp_path, capfd, caplog):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_with_scan_overwritten())
    with caplog.at_level("WARNING"):
        picture = read_image(path)
    assert picture.rgb.shape == (64, 96, 3)
    [record] = caplog.records
    message = record.getMessage()
    assert "photo.jpg" in message and "damaged" in message and "\n" not in message
    assert capfd.readouterr().err == ""  # libjpeg's own line is kept off stderr


def test_a_sound_jpeg_gives_no_warning(tmp_path, capfd, caplog):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encoded(noisy((64, 96, 3)), "JPEG", quality=90))
    with caplog.at_level("WARNING"):
        read_image(path)
    assert not caplog.records
    assert capfd.readouterr().err == ""


def _decoder_that_prints(line: bytes):
    real = cv2.imdecode

    def imdecode(*args):
        os.write(2, line)  # as the C library does: straight to the file descriptor
        return real(*args)

    return imdecode


def test_a_jpeg_cut_short_is_refused_where_the_decoder_fills_in_the_rest(tmp_path, capfd, monkeypatch):
    """OpenCV 4's libjpeg decodes a cut JPEG, greying the missing rows, and only prints that the
    file ended early; OpenCV 5 fails it. Either way the file is refused."""
    monkeypatch.setattr(image_decoding.cv2, "imdecode", _decoder_that_prints(b"Premature end of JPEG file\n"))
    path = tmp_path / "photo.jpg"
    path.write_bytes(encoded(noisy((64, 96, 3)), "JPEG", quality=90))
    with pytest.raises(InputImageError, match="photo.jpg: .*truncated"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_what_is_not_the_libraries_is_passed_on(tmp_path, capfd, monkeypatch):
    """Another thread's output (the progress bar, a result's line) written while a file decodes."""
    monkeypatch.setattr(image_decoding.cv2, "imdecode", _decoder_that_prints(b"\r 3/10 restoring\n"))
    path = tmp_path / "photo.png"
    path.write_bytes(encoded(noisy((H, W, 3)), "PNG"))
    read_image(path)
    assert capfd.readouterr().err == "\r 3/10 restoring\n"


# --------------------------------------------------------------------------- premultiplied (associated) alpha


def premultiplied(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    top = np.iinfo(colour.dtype).max
    scaled = colour.astype(np.float64) * alpha[..., None].astype(np.float64) / top
    return np.rint(scaled).astype(colour.dtype)


def test_a_16bit_tiff_with_premultiplied_alpha_comes_back_with_its_colours_straight(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    colour, alpha = noisy((H, W, 3), np.uint16), noisy((H, W), np.uint16, seed=3)
    alpha[0, 0], alpha[0, 1] = 0, 65535
    path = tmp_path / "render.tif"
    tifffile.imwrite(path, np.dstack([premultiplied(colour, alpha), alpha]), photometric="rgb",
                     extrasamples=["assocalpha"])
    picture = read_image(path)
    assert picture.bit_depth == 16
    np.testing.assert_array_equal(picture.alpha, alpha)
    visible = alpha > 2**12  # where the premultiplied samples keep enough precision to compare
    error = np.abs(picture.rgb.astype(np.int64) - colour)[visible]
    assert error.max() <= 65535 / 2**12
    np.testing.assert_array_equal(picture.rgb[0, 1], colour[0, 1])
    np.testing.assert_array_equal(picture.rgb[0, 0], [0, 0, 0])


def test_a_gray_tiff_with_premultiplied_alpha_is_read_not_called_corrupt(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    gray = np.full((H, W), 100, np.uint8)
    alpha = np.full((H, W), 128, np.uint8)
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, np.dstack([premultiplied(gray[..., None], alpha)[..., 0], alpha]),
                     photometric="minisblack", extrasamples=["assocalpha"])
    picture = read_image(path)
    assert picture.grayscale
    np.testing.assert_array_equal(picture.alpha, alpha)
    assert np.abs(picture.rgb.astype(int) - 100).max() <= 1


# --------------------------------------------------------------------------- scanners' TIFFs


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_white_is_zero_gray_tiff_is_read_as_its_picture_not_its_negative(tmp_path, dtype):
    tifffile = pytest.importorskip("tifffile")
    gray = noisy((H, W), dtype)
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, np.iinfo(dtype).max - gray, photometric="miniswhite")
    picture = read_image(path)
    assert picture.grayscale and picture.rgb.dtype == dtype
    np.testing.assert_array_equal(picture.rgb[..., 0], gray)


def test_a_16bit_cmyk_tiff_is_named_for_what_it_is_not_called_corrupt(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "print.tif"
    tifffile.imwrite(path, noisy((H, W, 4), np.uint16), photometric="separated")
    with pytest.raises(InputImageError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "CMYK" in message and "corrupt" not in message and "\n" not in message


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_an_empty_picture_is_refused_rather_than_written_as_an_invalid_file(tmp_path, suffix, shape):
    empty = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match="empty"):
        write_image(tmp_path / f"out{suffix}", Picture(np.stack([empty] * 3, axis=-1), empty, grayscale=True))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_text_file_that_cannot_be_written_is_named_with_what_to_do_and_leaves_nothing(tmp_path, monkeypatch, error):
    target = tmp_path / "scores.json"
    target.write_text("earlier")

    def fail(fd):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(atomic_files.os, "fsync", fail)
    with pytest.raises(I2IError) as caught:
        write_text(target, "{}")
    message = str(caught.value)
    assert message.startswith(f"{target}: cannot write") and ".tmp" not in message
    assert caught.value.hint  # what to do: free space, or write elsewhere
    assert target.read_text() == "earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_a_collection_of_the_libraries_lines_inside_another_keeps_each_its_own(capfd):
    with codec_libraries.c_library_messages() as outer:
        os.write(2, b"libpng warning: outer\n")
        with codec_libraries.c_library_messages() as inner:
            os.write(2, b"libpng warning: inner\nsomeone else's line\n")
    assert outer == ["libpng warning: outer"] and inner == ["libpng warning: inner"]
    assert capfd.readouterr().err == "someone else's line\n"


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_an_upright_output_carries_no_orientation_to_turn_it_again(tmp_path, suffix):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    Image.fromarray(noisy((H, W, 3))).save(tmp_path / "photo.jpg", exif=exif.tobytes())
    picture = read_image(tmp_path / "photo.jpg")
    assert (picture.height, picture.width) == (W, H)
    with Image.open(write_image(tmp_path / f"out{suffix}", picture)) as written:
        assert written.size == (H, W)
        assert written.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1)])
def test_a_picture_one_pixel_high_or_wide_round_trips(tmp_path, suffix, shape):
    pixels = noisy((*shape, 3))
    back = read_image(write_image(tmp_path / f"thin{suffix}", Picture(pixels)))
    assert back.rgb.shape == pixels.shape
    if suffix in (".png", ".tif", ".bmp"):
        np.testing.assert_array_equal(back.rgb, pixels)


def test_a_large_gray_alpha_png_spreads_its_data_over_several_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(containers, "_IDAT_BYTES", 1000)  # stands for the 2 GB a chunk may hold
    picture = gray_alpha_picture()
    out = write_image(tmp_path / "la.png", picture)
    assert out.read_bytes().count(b"IDAT") > 1
    back = read_image(out)
    np.testing.assert_array_equal(back.rgb, picture.rgb)
    np.testing.assert_array_equal(back.alpha, picture.alpha)
