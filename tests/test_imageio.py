"""Tests for i2icli.imageio. Every fixture image is generated here; nothing binary is committed."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from i2icli import atomic_files, image_decoding, image_encoding, imageio, pixels
from i2icli.errors import I2IError, InputImageError
from i2icli.imageio import (
    SUPPORTED_SUFFIXES,
    Picture,
    alpha_to_float,
    from_float,
    read_image,
    to_float,
    write_image,
)

H, W = 24, 40  # non-square, multiples of 8 (JPEG blocks stay aligned under rotation)
LOSSLESS = (".png", ".tif", ".tiff", ".bmp")
LOSSY = (".jpg", ".jpeg", ".webp")


# --------------------------------------------------------------------------- helpers


def smooth_rgb(h: int = H, w: int = W, dtype=np.uint8) -> np.ndarray:
    """An asymmetric, smooth RGB image (lossy codecs reproduce it closely)."""
    top = np.iinfo(dtype).max
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    chans = (x * 0.9 + 0.05 + 0 * y, y * 0.8 + 0.1 + 0 * x, (x * y) * 0.7 + 0.2)
    return np.rint(np.stack(chans, axis=-1) * top).astype(dtype)


def noisy(shape, dtype=np.uint8, seed=0, low=0) -> np.ndarray:
    top = int(np.iinfo(dtype).max)
    return np.random.default_rng(seed).integers(low, top + 1, shape, dtype=dtype)


def blocks(h: int = H, w: int = W, seed=1) -> np.ndarray:
    """8x8 blocks of random flat colours: block means survive JPEG well."""
    cells = np.random.default_rng(seed).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(cells, 8, axis=0), 8, axis=1)


def block_means(a: np.ndarray) -> np.ndarray:
    h, w, c = a.shape
    return a.reshape(h // 8, 8, w // 8, 8, c).astype(np.float32).mean(axis=(1, 3))


def one_line(err: Exception, path: Path) -> str:
    text = str(err)
    assert "\n" not in text and "\r" not in text, text
    assert path.name in text, text
    return text


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# The eight EXIF orientations as plain numpy, independent of the module under test.
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# --------------------------------------------------------------------------- round trips


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".tif", ".tiff", ".bmp"}


@pytest.mark.parametrize("suffix", LOSSLESS + LOSSY)
def test_rgb8_round_trip(tmp_path, suffix):
    rgb = smooth_rgb()
    out = write_image(tmp_path / f"out{suffix}", Picture(rgb=rgb))
    assert out == tmp_path / f"out{suffix}"
    pic = read_image(out)
    assert pic.rgb.dtype == np.uint8 and pic.bit_depth == 8
    assert (pic.height, pic.width) == (H, W)
    assert pic.alpha is None and not pic.grayscale and pic.source == out
    if suffix in LOSSLESS:
        np.testing.assert_array_equal(pic.rgb, rgb)
    else:
        assert np.abs(pic.rgb.astype(int) - rgb).mean() < 3
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_rgba8_round_trip_exact(tmp_path, suffix):
    rgb, alpha = noisy((H, W, 3)), noisy((H, W), seed=5)
    pic = read_image(write_image(tmp_path / f"a{suffix}", Picture(rgb=rgb, alpha=alpha)))
    np.testing.assert_array_equal(pic.rgb, rgb)
    np.testing.assert_array_equal(pic.alpha, alpha)
    assert Image.open(tmp_path / f"a{suffix}").mode == "RGBA"


def test_rgba_webp_keeps_alpha_exactly(tmp_path):
    rgb, alpha = smooth_rgb(), noisy((H, W), seed=5, low=1)  # no fully transparent pixels
    pic = read_image(write_image(tmp_path / "a.webp", Picture(rgb=rgb, alpha=alpha)))
    np.testing.assert_array_equal(pic.alpha, alpha)  # lossy WebP still codes alpha losslessly
    assert np.abs(pic.rgb.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_dropped_for_jpeg_and_bmp(tmp_path, suffix):
    rgb = smooth_rgb()
    pic = read_image(write_image(tmp_path / f"a{suffix}", Picture(rgb=rgb, alpha=noisy((H, W)))))
    assert pic.alpha is None
    assert np.abs(pic.rgb.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_16bit_rgb_preserved_exactly(tmp_path, suffix, with_alpha):
    rgb = noisy((H, W, 3), np.uint16)
    alpha = noisy((H, W), np.uint16, seed=3) if with_alpha else None
    pic = read_image(write_image(tmp_path / f"d{suffix}", Picture(rgb=rgb, alpha=alpha)))
    assert pic.rgb.dtype == np.uint16 and pic.bit_depth == 16
    np.testing.assert_array_equal(pic.rgb, rgb)
    if with_alpha:
        np.testing.assert_array_equal(pic.alpha, alpha)
    else:
        assert pic.alpha is None


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray_preserved_exactly(tmp_path, suffix):
    gray = noisy((H, W), np.uint16)
    Image.fromarray(gray).save(tmp_path / f"g{suffix}")  # Pillow writes I;16
    pic = read_image(tmp_path / f"g{suffix}")
    assert pic.grayscale and pic.bit_depth == 16
    np.testing.assert_array_equal(pic.rgb, np.stack([gray] * 3, axis=-1))
    out = write_image(tmp_path / f"back{suffix}", pic)
    assert Image.open(out).mode.startswith("I;16")
    np.testing.assert_array_equal(read_image(out).rgb, pic.rgb)


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp"])
def test_16bit_to_8bit_formats(tmp_path, suffix):
    rgb16 = smooth_rgb(dtype=np.uint16)
    pic = read_image(write_image(tmp_path / f"d{suffix}", Picture(rgb=rgb16)))
    assert pic.rgb.dtype == np.uint8
    expected = np.rint(rgb16 / 257.0)
    assert np.abs(pic.rgb - expected).mean() < (0.01 if suffix == ".bmp" else 3)


def test_16_to_8_rounding_is_exact():
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(pixels.to_8bit(v), expected)
    np.testing.assert_array_equal(pixels.to_8bit(np.stack([v] * 3, -1)), np.stack([expected] * 3, -1))


# --------------------------------------------------------------------------- grayscale


def test_grayscale_read(tmp_path):
    gray = noisy((H, W))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    pic = read_image(tmp_path / "g.png")
    assert pic.grayscale and pic.alpha is None and pic.rgb.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(pic.rgb[..., c], gray)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".jpg"])
def test_grayscale_stays_single_channel_on_write(tmp_path, suffix):
    gray = smooth_rgb()[..., 0]
    pic = Picture(rgb=np.stack([gray] * 3, -1), grayscale=True)
    out = write_image(tmp_path / f"g{suffix}", pic)
    assert Image.open(out).mode == "L"
    back = read_image(out)
    assert back.grayscale
    if suffix == ".jpg":
        assert np.abs(back.rgb[..., 0].astype(int) - gray).mean() < 2
    else:
        np.testing.assert_array_equal(back.rgb[..., 0], gray)


def test_grayscale_webp_becomes_rgb(tmp_path):
    """WebP has no grayscale mode: the file is RGB with (near) equal channels."""
    gray = smooth_rgb()[..., 0]
    out = write_image(tmp_path / "g.webp", Picture(rgb=np.stack([gray] * 3, -1), grayscale=True))
    back = read_image(out)
    assert not back.grayscale
    assert np.abs(back.rgb.astype(int) - gray[..., None]).mean() < 3


def test_grayscale_picture_with_colour_channels_written_as_luma(tmp_path):
    rgb = noisy((H, W, 3))  # e.g. a colour model ran on a grayscale photo
    out = write_image(tmp_path / "g.png", Picture(rgb=rgb, grayscale=True))
    assert Image.open(out).mode == "L"
    np.testing.assert_array_equal(read_image(out).rgb[..., 0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_gray_alpha_png_read_and_written(tmp_path):
    la = noisy((H, W, 2))
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    pic = read_image(tmp_path / "la.png")
    assert pic.grayscale
    np.testing.assert_array_equal(pic.rgb[..., 1], la[..., 0])
    np.testing.assert_array_equal(pic.alpha, la[..., 1])
    out = write_image(tmp_path / "out.png", pic)
    assert Image.open(out).mode == "LA"
    back = read_image(out)
    assert back.grayscale
    np.testing.assert_array_equal(back.rgb, pic.rgb)
    np.testing.assert_array_equal(back.alpha, pic.alpha)


def test_gray_alpha_16bit_png(tmp_path):
    gray, alpha = noisy((H, W), np.uint16), noisy((H, W), np.uint16, seed=9)
    out = write_image(tmp_path / "la16.png", Picture(np.stack([gray] * 3, -1), alpha, grayscale=True))
    # An independent decoder (libpng via cv2.imread) agrees with our hand-made PNG.
    raw = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (H, W, 4)
    np.testing.assert_array_equal(raw[..., 0], gray)
    np.testing.assert_array_equal(raw[..., 3], alpha)
    Image.open(out).load()  # Pillow accepts it too (CRCs, zlib stream)
    back = read_image(out)
    assert back.grayscale and back.bit_depth == 16
    np.testing.assert_array_equal(back.rgb[..., 2], gray)
    np.testing.assert_array_equal(back.alpha, alpha)


def test_gray_alpha_tiff_from_pillow(tmp_path):
    """OpenCV drops the alpha of Pillow's LA TIFFs; the reader falls back to Pillow."""
    la = noisy((H, W, 2))
    Image.fromarray(la, "LA").save(tmp_path / "la.tif")
    pic = read_image(tmp_path / "la.tif")
    assert pic.grayscale
    np.testing.assert_array_equal(pic.rgb[..., 0], la[..., 0])
    np.testing.assert_array_equal(pic.alpha, la[..., 1])
    back = read_image(write_image(tmp_path / "out.tif", pic))  # stored as gray+alpha
    np.testing.assert_array_equal(back.rgb, pic.rgb)
    np.testing.assert_array_equal(back.alpha, pic.alpha)


def test_gray_png_with_trns_colour_key(tmp_path):
    gray = noisy((H, W))
    Image.fromarray(gray, "L").save(tmp_path / "t.png", transparency=7)
    pic = read_image(tmp_path / "t.png")
    assert pic.grayscale
    np.testing.assert_array_equal(pic.alpha, np.where(gray == 7, 0, 255))



@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_gray_png_with_trns_colour_key(tmp_path, bits):
    """PNG optimisers store few-toned grey images at 2 or 4 bits with a transparent tone. The key is
    in that scale (0-3, 0-15) and the pixels were compared with it after scaling to 0-255: the
    transparency was lost."""
    top = 2**bits - 1
    stored = np.random.default_rng(0).integers(0, top + 1, (H, W), dtype=np.uint8)
    per_byte = 8 // bits
    packed = np.zeros((H, W // per_byte), np.uint8)
    for n in range(per_byte):
        packed |= stored[:, n::per_byte] << (8 - bits * (n + 1))
    rows = np.hstack([np.zeros((H, 1), np.uint8), packed]).tobytes()  # filter type 0 on each row
    ihdr = struct.pack(">IIBBBBB", W, H, bits, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"tRNS", struct.pack(">H", 1))
            + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))
    (tmp_path / "key.png").write_bytes(data)
    pic = read_image(tmp_path / "key.png")
    assert pic.grayscale
    np.testing.assert_array_equal(pic.rgb[..., 0], stored.astype(np.int32) * 255 // top)
    np.testing.assert_array_equal(pic.alpha, np.where(stored == 1, 0, 255))


# --------------------------------------------------------------------------- palette, CMYK, odd modes


def test_palette_png(tmp_path):
    src = Image.fromarray(blocks()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    src.save(tmp_path / "p.png")
    pic = read_image(tmp_path / "p.png")
    assert not pic.grayscale and pic.alpha is None
    np.testing.assert_array_equal(pic.rgb, np.asarray(src.convert("RGB")))
    np.testing.assert_array_equal(pic.palette_indices, np.asarray(src))  # what label maps are read from


def test_only_palette_files_carry_palette_indices(tmp_path):
    Image.fromarray(blocks()).save(tmp_path / "rgb.png")
    assert read_image(tmp_path / "rgb.png").palette_indices is None


@pytest.mark.parametrize("orientation", [3, 6])
def test_palette_indices_are_upright(tmp_path, orientation):
    src = Image.fromarray(blocks()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    src.save(tmp_path / "p.png", exif=exif.tobytes())
    pic = read_image(tmp_path / "p.png")
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "p.png")))
    assert pic.palette_indices.shape == pic.rgb.shape[:2] == upright.shape
    np.testing.assert_array_equal(pic.palette_indices, upright)


def test_palette_png_with_transparency(tmp_path):
    src = Image.fromarray(blocks()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    src.save(tmp_path / "pt.png", transparency=3)
    rgba = np.asarray(Image.open(tmp_path / "pt.png").convert("RGBA"))
    pic = read_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(pic.rgb, rgba[..., :3])
    np.testing.assert_array_equal(pic.alpha, rgba[..., 3])
    assert (pic.alpha == 0).any()


def test_bilevel_png(tmp_path):
    bits = noisy((H, W)) > 127
    Image.fromarray(bits).save(tmp_path / "b.png")
    pic = read_image(tmp_path / "b.png")
    assert pic.grayscale
    np.testing.assert_array_equal(pic.rgb[..., 0], np.where(bits, 255, 0))


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_reads_as_rgb_without_alpha(tmp_path, suffix):
    Image.fromarray(blocks()).convert("CMYK").save(tmp_path / f"c{suffix}")
    pic = read_image(tmp_path / f"c{suffix}")
    assert pic.alpha is None and not pic.grayscale and pic.rgb.shape == (H, W, 3)
    # The colours are Pillow's own CMYK -> RGB conversion (exact, or within JPEG's loss).
    expected = np.asarray(Image.open(tmp_path / f"c{suffix}").convert("RGB")).astype(np.int16)
    assert np.abs(pic.rgb.astype(np.int16) - expected).max() <= (0 if suffix != ".jpg" else 8)
    assert np.abs(pic.rgb.astype(np.int16) - blocks().astype(np.int16)).mean() < 8  # and the picture's own colours


def test_float_tiff_refused(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.ones((4, 4), np.float32)).save(path)
    with pytest.raises(InputImageError) as e:
        read_image(path)
    assert "8- and 16-bit" in one_line(e.value, path)


def test_content_wins_over_suffix_and_case(tmp_path):
    rgb = noisy((H, W, 3))
    Image.fromarray(rgb).save(tmp_path / "really_png.JPG", format="PNG")
    np.testing.assert_array_equal(read_image(tmp_path / "really_png.JPG").rgb, rgb)


def test_non_ascii_paths(tmp_path):
    rgb = noisy((H, W, 3))
    out = write_image(tmp_path / "фото ☀" / "снимок é.png", Picture(rgb=rgb))
    np.testing.assert_array_equal(read_image(out).rgb, rgb)


# --------------------------------------------------------------------------- EXIF orientation


def test_orientation_table_matches_pillow():
    img = Image.fromarray(noisy((H, W, 3)))
    for o, f in ORIENT.items():
        tagged = img.copy()
        tagged.getexif()[0x0112] = o
        tagged.info["exif"] = tagged.getexif().tobytes()
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(tagged)), f(np.asarray(img)))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_exif_orientation_exact(tmp_path, fmt, orientation):
    rgb = noisy((H, W, 3))
    path = tmp_path / f"o.{fmt.lower()}"
    extra = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(rgb).save(path, format=fmt, exif=exif_with(orientation), **extra)
    pic = read_image(path)
    np.testing.assert_array_equal(pic.rgb, ORIENT[orientation](rgb))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path, orientation):
    rgb = blocks()
    path = tmp_path / "o.jpg"
    Image.fromarray(rgb).save(path, quality=95, subsampling=0, exif=exif_with(orientation))
    pic = read_image(path)
    expected = ORIENT[orientation](rgb)
    assert pic.rgb.shape == expected.shape
    assert np.abs(block_means(pic.rgb) - block_means(expected)).max() < 6


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_exif_orientation_applies_to_alpha(tmp_path, orientation):
    rgba = noisy((H, W, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "o.png", exif=exif_with(orientation))
    pic = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(pic.alpha, ORIENT[orientation](rgba[..., 3]))
    np.testing.assert_array_equal(pic.rgb, ORIENT[orientation](rgba[..., :3]))


@pytest.mark.parametrize("orientation", [2, 6])
def test_exif_orientation_16bit_tiff(tmp_path, orientation):
    gray = noisy((H, W), np.uint16)
    Image.fromarray(gray).save(tmp_path / "o.tif", tiffinfo={0x0112: orientation})
    pic = read_image(tmp_path / "o.tif")
    np.testing.assert_array_equal(pic.rgb[..., 0], ORIENT[orientation](gray))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_exif_orientation_png_exif_after_idat(tmp_path):
    rgb = noisy((H, W, 3))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    data = buf.getvalue()
    assert data.endswith(_png_chunk(b"IEND", b""))
    exif = exif_with(6)
    exif = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    data = data[:-12] + _png_chunk(b"eXIf", exif) + data[-12:]
    (tmp_path / "late.png").write_bytes(data)
    np.testing.assert_array_equal(read_image(tmp_path / "late.png").rgb, ORIENT[6](rgb))


def test_corrupt_exif_is_not_fatal(tmp_path):
    rgb = blocks()
    Image.fromarray(rgb).save(tmp_path / "e.jpg", exif=b"Exif\x00\x00this is not tiff")
    pic = read_image(tmp_path / "e.jpg")
    assert pic.rgb.shape == rgb.shape


# --------------------------------------------------------------------------- bad inputs


def _png_bytes(shape=(H, W, 3)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noisy(shape)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes() -> bytes:
    return cv2.imencode(".jpg", noisy((64, 64, 3)))[1].tobytes()


BAD_INPUTS = {
    "missing": lambda d: d / "nope.png",
    "directory": lambda d: (d / "folder.png").mkdir() or d / "folder.png",
    "directory_no_suffix": lambda d: (d / "folder").mkdir() or d / "folder",
    "garbage_jpg": lambda d: (d / "g.jpg").write_bytes(noisy(4096).tobytes()) and d / "g.jpg",
    "truncated_png": lambda d: (d / "t.png").write_bytes(_png_bytes((64, 64, 3))[:3000]) and d / "t.png",
    "truncated_jpeg": lambda d: (d / "t.jpg").write_bytes(_jpeg_bytes()[:2000]) and d / "t.jpg",
    "zero_bytes": lambda d: (d / "z.png").write_bytes(b"") or d / "z.png",
    "text_as_png": lambda d: (d / "notes.png").write_text("just some text\n") and d / "notes.png",
    "unsupported_suffix": lambda d: (d / "a.gif").write_bytes(b"GIF89a") and d / "a.gif",
    "gif_content": lambda d: Image.new("RGB", (4, 4)).save(d / "anim.png", format="GIF") or d / "anim.png",
    "header_only": lambda d: (d / "h.png").write_bytes(_png_bytes()[:40]) and d / "h.png",
}


BAD_INPUT_WORDS = {
    "missing": "no such file",
    "directory": "is a directory",
    "directory_no_suffix": "is a directory",
    "garbage_jpg": "not an image file",
    "truncated_png": "corrupt or truncated",
    "truncated_jpeg": "corrupt or truncated",
    "zero_bytes": "empty",
    "text_as_png": "not an image file",
    "unsupported_suffix": "unsupported file type",
    "gif_content": "is an image in GIF format",  # not "is a GIF image", which read "is a AVIF image"
    "header_only": "corrupt or truncated",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_raise_one_line_error(tmp_path, case):
    path = BAD_INPUTS[case](tmp_path)
    with pytest.raises(InputImageError) as e:
        read_image(path)
    assert BAD_INPUT_WORDS[case] in one_line(e.value, path)
    assert e.value.path == path


def test_too_many_pixels_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(noisy((20, 30, 3))).save(path)

    def boom(data):
        raise AssertionError("decoded a too-large image")

    monkeypatch.setattr(image_decoding, "_decode_cv2", boom)
    with pytest.raises(InputImageError) as e:
        read_image(path, max_pixels=100)
    text = one_line(e.value, path)
    assert "30x20" in text and "100" in text and "--max-pixels" in text


def test_huge_header_reports_our_limit_not_pillows(tmp_path, monkeypatch):
    """A 40000x40000 PNG header trips Pillow's bomb guard; we must report our own limit."""
    ihdr = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 10))
    path = tmp_path / "bomb.png"
    path.write_bytes(data + _png_chunk(b"IEND", b""))
    monkeypatch.setattr(image_decoding, "_decode_cv2", lambda data: pytest.fail("decoded"))
    with pytest.raises(InputImageError) as e:
        read_image(path)
    text = one_line(e.value, path)
    assert "1,600,000,000" in text and "200,000,000" in text and "--max-pixels" in text
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global guard is restored


def _counting_reads(stream_type: type, sizes: list[int]) -> type:
    """``stream_type`` that records the size of every read."""

    class Counting(stream_type):
        def read(self, size=-1):
            data = super().read(size)
            sizes.append(len(data))
            return data

    return Counting


def test_a_file_over_the_pixel_limit_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    """A scan of several GB was read into memory in full before its header was checked. Here the
    file is sparse (256 MB of nothing after a header claiming 40000x40000 pixels)."""
    ihdr = struct.pack(">IIBBBBB", 40_000, 40_000, 16, 6, 0, 0, 0)
    path = tmp_path / "scan.png"
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + struct.pack(">I", 2**28) + b"IDAT")
        file.truncate(2**28)
    largest_read: list[int] = []
    reader = _counting_reads(io.BufferedReader, largest_read)
    monkeypatch.setattr(imageio, "open", lambda name, mode="rb": reader(io.FileIO(name, "r")), raising=False)
    with pytest.raises(InputImageError, match="over the limit of 200,000,000"):
        read_image(path)
    assert 0 < max(largest_read) < 2**20


def test_a_piped_image_over_the_pixel_limit_is_refused_from_its_first_megabyte():
    ihdr = struct.pack(">IIBBBBB", 40_000, 40_000, 16, 6, 0, 0, 0)
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + struct.pack(">I", 2**28) + b"IDAT"
    read: list[int] = []
    with pytest.raises(InputImageError, match="-: image is 40000x40000 .* over the limit of 200,000,000"):
        imageio.read_stream(_counting_reads(io.BytesIO, read)(header + bytes(2**24)), "-")
    assert sum(read) == 2**20
    small = io.BytesIO(_png_bytes())
    assert imageio.read_stream(small, "-") == small.getvalue()


class _Endless(io.RawIOBase):
    """A pipe that never ends (``yes |``, ``cat /dev/zero |``): ``start``, then ``filler`` for
    ever. Counts the bytes handed out."""

    def __init__(self, start: bytes, filler: bytes):
        self.start, self.filler, self.handed_out = start, filler, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.start[self.handed_out:self.handed_out + len(buffer)]
        data += self.filler * (-(-(len(buffer) - len(data)) // len(self.filler)))
        data = data[:len(buffer)]
        buffer[:len(data)] = data
        self.handed_out += len(data)
        return len(data)


@pytest.mark.parametrize("filler", [b"y\n", bytes(1)])
def test_an_endless_pipe_that_is_no_image_is_refused_from_its_first_megabyte(filler):
    """Before, the whole stream was read into memory first: `yes | i2i restore -` never ended."""
    pipe = _Endless(b"", filler)
    with pytest.raises(InputImageError, match="-: is not an image file"):
        imageio.read_stream(io.BufferedReader(pipe), "-")
    assert pipe.handed_out <= 2**20 + io.DEFAULT_BUFFER_SIZE


def test_a_piped_image_of_another_format_is_named_from_its_header():
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    pipe = _Endless(gif.getvalue(), bytes(1))
    with pytest.raises(InputImageError, match="-: is an image in GIF format, which i2i cannot read"):
        imageio.read_stream(io.BufferedReader(pipe), "-")
    assert pipe.handed_out <= 2**20 + io.DEFAULT_BUFFER_SIZE


def test_an_image_followed_by_an_endless_stream_is_refused_past_what_the_image_could_take():
    pipe = _Endless(_png_bytes(), bytes(1))
    with pytest.raises(InputImageError, match=r"-: goes on past 64 MB, far more than a \d+x\d+ image takes"):
        imageio.read_stream(io.BufferedReader(pipe), "-")
    assert pipe.handed_out <= 2**26 + 2**24 + 2**20 + io.DEFAULT_BUFFER_SIZE


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tif"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_image_size_is_the_size_read_image_gives(tmp_path, suffix, orientation):
    path = tmp_path / f"photo{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(path, **({} if suffix == ".bmp" else {"exif": exif.tobytes()}))
    picture = read_image(path)
    assert imageio.image_size(path) == (picture.width, picture.height)
    assert imageio.image_size(path)[0] == (30 if orientation in (6, 8) and suffix != ".bmp" else 50)


def test_image_size_finds_a_png_orientation_stored_after_the_pixels(tmp_path):
    path = tmp_path / "late.png"
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(path)
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = exif.tobytes()
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + _png_chunk(b"eXIf", raw) + data[end:])
    assert imageio.image_size(path) == (30, 50)


def test_image_size_decodes_no_pixels(tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(path)
    monkeypatch.setattr(image_decoding, "_decode_cv2", lambda data: pytest.fail("decoded"))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    assert imageio.image_size(path) == (50, 30)


def test_error_message_for_missing_file_is_helpful(tmp_path):
    path = tmp_path / "holiday.jpg"
    with pytest.raises(InputImageError) as e:
        read_image(path)
    assert one_line(e.value, path) == f"{path}: no such file (check the path)"


# --------------------------------------------------------------------------- atomic writing


def test_write_creates_parents_and_leaves_no_temp(tmp_path):
    out = write_image(tmp_path / "a" / "b" / "c.png", Picture(rgb=noisy((H, W, 3))))
    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["c.png"]


def test_temp_file_is_hidden_beside_target_with_same_suffix(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", spy)
    write_image(tmp_path / "x.webp", Picture(rgb=smooth_rgb()))
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".webp"
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("stem", ["あ" * 80, "😀" * 60], ids=["japanese", "emoji"])
def test_a_long_name_in_a_wide_script_can_be_written(tmp_path, stem):
    """The temp name took the stem's first 100 characters: in Japanese or emoji that is 300-400
    bytes, over the 255-byte limit on a name, so a name that fits failed with "File name too long"."""
    target = tmp_path / f"{stem}.png"
    assert len(os.fsencode(target.name)) <= 255
    write_image(target, Picture(rgb=smooth_rgb()))
    np.testing.assert_array_equal(read_image(target).rgb, smooth_rgb())
    assert no_temp_files(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_written_file_respects_umask(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    out = write_image(tmp_path / "p.png", Picture(rgb=smooth_rgb()))
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_overwrites_existing_target_atomically(tmp_path):
    target = tmp_path / "t.png"
    target.write_bytes(b"old")
    write_image(target, Picture(rgb=smooth_rgb()))
    np.testing.assert_array_equal(read_image(target).rgb, smooth_rgb())
    assert no_temp_files(tmp_path)


def test_encoder_failure_keeps_target(tmp_path, monkeypatch):
    target = tmp_path / "t.png"
    target.write_bytes(b"precious")
    monkeypatch.setattr(image_encoding.cv2, "imencode", lambda *a, **k: (False, None))
    with pytest.raises(I2IError) as e:
        write_image(target, Picture(rgb=smooth_rgb()))
    one_line(e.value, target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_failure_while_writing_removes_temp_and_keeps_target(tmp_path, monkeypatch, exc):
    target = tmp_path / "t.jpg"
    target.write_bytes(b"precious")

    def fail(fd):
        raise exc

    monkeypatch.setattr(atomic_files.os, "fsync", fail)
    with pytest.raises(I2IError if isinstance(exc, OSError) else KeyboardInterrupt) as e:
        write_image(target, Picture(rgb=smooth_rgb()))
    if isinstance(exc, OSError):  # the cause, and what to do about it
        assert "No space left" in one_line(e.value, target) and "free some space" in str(e.value)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["t.jpg"]


def test_refuses_to_overwrite_source(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(noisy((H, W, 3))).save(src)
    before = src.read_bytes()
    pic = read_image(src)
    (tmp_path / "sub").mkdir()
    for target in (src, tmp_path / "sub" / ".." / "in.png"):
        with pytest.raises(I2IError) as e:
            write_image(target, pic)
        assert "overwrite the input" in one_line(e.value, target)
    try:
        (tmp_path / "link.png").symlink_to(src)
    except OSError:
        pass
    else:
        with pytest.raises(I2IError):
            write_image(tmp_path / "link.png", pic)
    assert src.read_bytes() == before
    # A processed picture keeps its source, so the guard still holds after from_float.
    with pytest.raises(I2IError):
        write_image(src, from_float(to_float(pic), None, pic))
    write_image(tmp_path / "out.png", pic)  # any other path is fine


def test_write_rejects_bad_targets(tmp_path):
    pic = Picture(rgb=smooth_rgb())
    with pytest.raises(I2IError) as e:
        write_image(tmp_path / "x.gif", pic)
    one_line(e.value, tmp_path / "x.gif")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(I2IError):
        write_image(tmp_path / "d.png", pic)
    with pytest.raises(ValueError):
        write_image(tmp_path / "q.jpg", pic, jpeg_quality=0)
    (tmp_path / "notes").write_text("a file where a folder is wanted")
    with pytest.raises(I2IError, match="notes is a file, so the folder cannot be made"):
        write_image(tmp_path / "notes" / "deeper" / "out.png", pic)


def test_jpeg_quality_is_used(tmp_path):
    rgb = noisy((64, 64, 3))
    small = write_image(tmp_path / "lo.jpg", Picture(rgb=rgb), jpeg_quality=20).stat().st_size
    large = write_image(tmp_path / "hi.jpg", Picture(rgb=rgb)).stat().st_size
    assert small < large


# --------------------------------------------------------------------------- Picture and float helpers


def test_picture_validates():
    with pytest.raises(ValueError):
        Picture(rgb=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        Picture(rgb=np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        Picture(rgb=np.zeros((4, 4, 3), np.uint8), alpha=np.zeros((4, 4), np.uint16))
    pic = Picture(rgb=np.zeros((4, 5, 3), np.uint16), source="x.png")
    assert (pic.height, pic.width, pic.bit_depth, pic.source) == (4, 5, 16, Path("x.png"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_float_round_trip_exact(dtype):
    pic = Picture(rgb=noisy((H, W, 3), dtype), alpha=noisy((H, W), dtype, seed=4), source=Path("s.png"))
    f, a = to_float(pic), alpha_to_float(pic)
    assert f.dtype == np.float32 and a.dtype == np.float32
    assert 0.0 <= f.min() and f.max() <= 1.0
    back = from_float(f, a, pic)
    np.testing.assert_array_equal(back.rgb, pic.rgb)
    np.testing.assert_array_equal(back.alpha, pic.alpha)
    assert back.source == pic.source and back.rgb.dtype == dtype


def test_from_float_clips_rounds_and_handles_nan():
    like = Picture(rgb=np.zeros((1, 1, 3), np.uint8))
    values = np.array([[[-0.5, 1.5, np.nan], [0.5, 1 / 255 * 0.49, 1 / 255 * 0.51]]], np.float32)
    out = from_float(values, None, like)
    np.testing.assert_array_equal(out.rgb, [[[0, 255, 0], [128, 0, 1]]])
    assert out.alpha is None and out.rgb.shape == (1, 2, 3)


def test_from_float_keeps_grayscale():
    like = Picture(rgb=np.zeros((2, 2, 3), np.uint16), grayscale=True)
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[..., 0] = 1.0  # pure red
    out = from_float(rgb, np.ones((2, 3), np.float32), like)
    assert out.grayscale and out.rgb.dtype == np.uint16
    assert (out.rgb == round(0.299 * 65535)).all()
    assert (out.alpha == 65535).all()


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_exif_orientation_pillow_fallback_tiff(tmp_path, orientation):
    """The Pillow fallback (gray+alpha TIFF) must orient exactly once, like the cv2 path."""
    la = noisy((H, W, 2))
    Image.fromarray(la, "LA").save(tmp_path / "o.tif", tiffinfo={0x0112: orientation})
    pic = read_image(tmp_path / "o.tif")
    np.testing.assert_array_equal(pic.rgb[..., 0], ORIENT[orientation](la[..., 0]))
    np.testing.assert_array_equal(pic.alpha, ORIENT[orientation](la[..., 1]))


# JPEG has no alpha; WebP stores grey as RGB, which a grey profile does not describe (none is written).
@pytest.mark.parametrize(("suffix", "kind"), [(".png", "rgb"), (".png", "rgba"), (".png", "gray"), (".png", "gray+alpha"),
                                              (".jpg", "rgb"), (".jpg", "gray"), (".webp", "rgb"), (".webp", "rgba")])
def test_the_colour_profile_is_kept(tmp_path, suffix, kind):
    """A photo in another colour space (Adobe RGB, a phone's Display P3) keeps its ICC profile,
    so colour-managed viewers show the output's colours as they showed the input's."""
    from PIL import ImageCms

    gray = kind.startswith("gray")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if gray:  # a grey image takes a one-channel profile, as PNG requires: one in name stands in here
        profile = _of_colour_space(profile, b"GRAY")
    image = blocks()
    mode = {"rgb": "RGB", "rgba": "RGBA", "gray": "L", "gray+alpha": "LA"}[kind]
    source = Image.fromarray(image).convert(mode)
    source.save(tmp_path / f"in{suffix}", icc_profile=profile)
    picture = read_image(tmp_path / f"in{suffix}")
    assert picture.icc_profile == profile
    out = write_image(tmp_path / f"out{suffix}", dataclasses.replace(picture, source=None))
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == profile
        written.load()  # the file is still valid: every pixel decodes
    again = read_image(out)
    assert again.icc_profile == profile and (again.alpha is None) == (picture.alpha is None)
    assert np.abs(again.rgb.astype(int) - picture.rgb.astype(int)).mean() < (1 if suffix == ".png" else 6)
    # OpenCV, which i2i decodes with, reads it too.
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED) is not None


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("icc", [False, True])
def test_a_lossless_webp_stays_lossless_and_a_lossy_one_lossy(tmp_path, alpha, icc):
    """Re-saving a lossless WebP master at quality 95 would make it lossy for good."""
    image = Image.fromarray(blocks())
    if alpha:  # a real one: libwebp drops an alpha channel that is opaque everywhere
        image.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))))
    extra = {"icc_profile": ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()} if icc else {}
    image.save(tmp_path / "master.webp", lossless=True, **extra)  # an extended (VP8X) file with an ICCP chunk first
    image.save(tmp_path / "photo.webp", quality=80, **extra)
    master, photo = read_image(tmp_path / "master.webp"), read_image(tmp_path / "photo.webp")
    assert master.lossless_webp and not photo.lossless_webp
    for picture, name in ((master, "master"), (photo, "photo")):
        out = write_image(tmp_path / f"{name}_out.webp", dataclasses.replace(picture, source=None))
        again = read_image(out)
        assert again.lossless_webp == picture.lossless_webp
        if picture.lossless_webp:
            np.testing.assert_array_equal(again.rgb, picture.rgb)
            assert (again.alpha is None) == (not alpha)
    # Written as another format it is an ordinary picture again; written from a PNG, WebP is lossy.
    write_image(tmp_path / "from_png.webp", Picture(rgb=blocks()))
    assert not read_image(tmp_path / "from_png.webp").lossless_webp


def test_an_rgba_tiff_keeps_its_colours_under_partial_transparency(tmp_path):
    """OpenCV decodes 8-bit RGBA TIFFs through libtiff's RGBA interface, which multiplies the
    colours by the alpha: a TIFF with a soft cut-out edge came back darker there."""
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., :3] = (200, 100, 50)
    pixels[..., 3] = np.array([0, 64, 128, 255], np.uint8)[None, :]
    Image.fromarray(pixels, "RGBA").save(tmp_path / "cutout.tif")  # alpha marked unassociated, as is usual
    picture = read_image(tmp_path / "cutout.tif")
    np.testing.assert_array_equal(picture.rgb, pixels[..., :3])
    np.testing.assert_array_equal(picture.alpha, pixels[..., 3])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_an_rgba_tiff_written_says_its_fourth_sample_is_alpha(tmp_path, dtype):
    """Without the ExtraSamples tag readers warn that the samples do not add up, and strict ones
    take the fourth for an unspecified channel rather than transparency."""
    rng = np.random.default_rng(0)
    peak = np.iinfo(dtype).max
    picture = Picture(rgb=rng.integers(0, peak, (9, 7, 3), dtype=dtype), alpha=rng.integers(0, peak, (9, 7), dtype=dtype))
    write_image(tmp_path / "out.tif", picture)
    with Image.open(tmp_path / "out.tif") as written:
        assert written.tag_v2.get(338) == (2,)  # unassociated alpha
    again = read_image(tmp_path / "out.tif")
    np.testing.assert_array_equal(again.rgb, picture.rgb)
    np.testing.assert_array_equal(again.alpha, picture.alpha)


def _of_colour_space(profile: bytes, space: bytes) -> bytes:
    """``profile`` with another data colour space in its header (bytes 16-19)."""
    return profile[:16] + space + profile[20:]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_a_cmyk_photo_s_profile_is_not_put_on_its_rgb_output(tmp_path, suffix):
    """A CMYK JPEG's profile (print JPEGs carry one) described CMYK samples, not the RGB ones i2i
    writes: embedded in the output, colour-managed readers reject or misread it."""
    from PIL import ImageCms

    rgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(blocks()).convert("CMYK").save(tmp_path / "print.jpg", icc_profile=_of_colour_space(rgb_profile, b"CMYK"))
    picture = read_image(tmp_path / "print.jpg")
    out = write_image(tmp_path / f"out{suffix}", dataclasses.replace(picture, source=None))
    with Image.open(out) as written:
        assert written.mode == "RGB" and "icc_profile" not in written.info
    # Likewise an RGB profile on a grey picture that is written grey.
    write_image(tmp_path / "grey.png", Picture(rgb=blocks(), grayscale=True, icc_profile=rgb_profile))
    with Image.open(tmp_path / "grey.png") as written:
        assert written.mode == "L" and "icc_profile" not in written.info


def test_no_profile_no_change(tmp_path):
    write_image(tmp_path / "plain.png", Picture(rgb=blocks()))
    with Image.open(tmp_path / "plain.png") as written:
        assert "icc_profile" not in written.info
    # A grey picture written as WebP (stored as RGB there) does not carry its grey profile.
    write_image(tmp_path / "grey.webp", Picture(rgb=blocks(), grayscale=True, icc_profile=b"grey profile"))
    with Image.open(tmp_path / "grey.webp") as written:
        assert "icc_profile" not in written.info


def test_a_float_rgb_tiff_is_named_for_its_samples_not_called_corrupt(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "float.tif", np.random.default_rng(0).random((8, 8, 3), dtype=np.float32), photometric="rgb")
    with pytest.raises(InputImageError, match="floating-point samples"):
        read_image(tmp_path / "float.tif")


def test_a_cameras_second_picture_is_no_page(tmp_path, caplog):
    """MPO: phones and cameras store a preview or depth map after the photo."""
    first, second = Image.fromarray(blocks()), Image.fromarray(blocks(seed=2))
    first.save(tmp_path / "photo.jpg", format="MPO", save_all=True, append_images=[second], quality=95)
    with Image.open(tmp_path / "photo.jpg") as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    with caplog.at_level("WARNING"):
        picture = read_image(tmp_path / "photo.jpg")
    assert not caplog.records
    with Image.open(tmp_path / "photo.jpg") as opened:  # the first picture, as Pillow decodes it
        expected = np.asarray(opened.convert("RGB")).astype(int)
    assert np.abs(picture.rgb.astype(int) - expected).mean() < 2


def test_a_named_pipe_is_refused_instead_of_waited_on(tmp_path):
    import os

    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    with pytest.raises(InputImageError, match="is not a regular file"):
        read_image(fifo)  # would block for ever, waiting for a writer


def test_a_16bit_tiff_with_its_channels_in_separate_planes_is_refused_not_scrambled(tmp_path):
    """Photoshop's "per channel" pixel order: OpenCV and Pillow both decoded the 16-bit planes as if
    interleaved, and the photo came back as noise without a word."""
    import tifffile

    rgb16 = noisy((H, W, 3), np.uint16)
    tifffile.imwrite(tmp_path / "planes.tif", np.moveaxis(rgb16, -1, 0), planarconfig="separate", photometric="rgb")
    with pytest.raises(InputImageError) as e:
        read_image(tmp_path / "planes.tif")
    assert "separate planes" in one_line(e.value, tmp_path / "planes.tif")
    # 8-bit planes are decoded right, and read as before.
    rgb8 = noisy((H, W, 3))
    tifffile.imwrite(tmp_path / "planes8.tif", np.moveaxis(rgb8, -1, 0), planarconfig="separate", photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "planes8.tif").rgb, rgb8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_an_unspecified_extra_tiff_sample_is_no_alpha(tmp_path, dtype):
    """ExtraSamples 0 (a scanner's infrared channel, say) was taken for alpha: the restored photo
    came out partly see-through."""
    import tifffile

    pixels = noisy((H, W, 4), dtype)
    tifffile.imwrite(tmp_path / "rgbi.tif", pixels, photometric="rgb", extrasamples=[0])
    picture = read_image(tmp_path / "rgbi.tif")
    assert picture.alpha is None
    np.testing.assert_array_equal(picture.rgb, pixels[..., :3])
    tifffile.imwrite(tmp_path / "rgba.tif", pixels, photometric="rgb", extrasamples=[2])  # declared alpha stays alpha
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.tif").alpha, pixels[..., 3])
