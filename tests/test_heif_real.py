"""HEIC files built as phones build them: a colour description (nclx) in place of an ICC profile,
HDR transfers, pictures in 512x512 tiles, several pictures of which the primary is not the first,
EXIF orientation beside the file's own rotation."""

from __future__ import annotations

import io
import logging

import numpy as np
import pillow_heif
import pytest
from conftest import traced_peak
from PIL import Image, ImageCms

from i2icli.imageio import Picture, image_size, read_image, write_image

pillow_heif.register_heif_opener()
pytestmark = pytest.mark.skipif(not pillow_heif.libheif_info().get("HEIF"), reason="this libheif has no HEIC encoder")

# H.273 code points as iPhones write them: Display P3 primaries, the sRGB curve, BT.601 matrix.
DISPLAY_P3 = {"color_primaries": 12, "transfer_characteristics": 13, "matrix_coefficients": 6, "full_range_flag": 1}
# Linear Display P3 -> linear sRGB (both D65), as published for the two spaces.
P3_TO_SRGB = np.array([[1.2249, -0.2247, 0.0], [-0.0420, 1.0419, 0.0], [-0.0197, -0.0786, 1.0979]])
COLOURS = np.array([[[200, 120, 60], [128, 128, 128], [100, 200, 150], [30, 60, 220]]], np.uint8)


def srgb_decoded(values: np.ndarray) -> np.ndarray:
    v = values / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encoded(linear: np.ndarray) -> np.ndarray:
    v = np.clip(linear, 0, 1)
    return np.round(255 * np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055))


def shown_as_srgb(pixels: np.ndarray, profile: bytes) -> np.ndarray:
    """What a colour-managed viewer shows of ``pixels`` described by ``profile``, in sRGB."""
    transform = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB"),
                                        "RGB", "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    return np.array(ImageCms.applyTransform(Image.fromarray(pixels), transform))


def test_a_display_p3_heic_keeps_its_colours_in_every_output(tmp_path):
    """An iPhone's HEIC says Display P3 by its nclx box alone: the picture read carries a profile
    saying so, and a PNG or JPEG written from it shows the colours a P3 screen shows, not sRGB's."""
    photo = np.repeat(np.repeat(COLOURS, 16, axis=0), 16, axis=1)
    path = tmp_path / "IMG_0001.HEIC"
    Image.fromarray(photo).save(path, "HEIF", quality=-1, chroma=444, **DISPLAY_P3)
    assert "icc_profile" not in pillow_heif.open_heif(path).info  # as the phone writes it
    picture = read_image(path)
    assert picture.icc_profile is not None
    assert "Display P3" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(picture.icc_profile)))
    expected = srgb_encoded(srgb_decoded(COLOURS.astype(np.float64)) @ P3_TO_SRGB.T)
    assert np.abs(shown_as_srgb(COLOURS, picture.icc_profile).astype(int) - expected).max() <= 1
    for suffix in (".png", ".jpg", ".webp", ".heic", ".avif"):
        out = write_image(tmp_path / f"out{suffix}", picture)
        with Image.open(out) as written:
            assert written.info.get("icc_profile") == picture.icc_profile, suffix
        assert np.abs(read_image(out).rgb.astype(int) - photo).mean() < 3, suffix


def test_an_srgb_heic_gets_no_profile(tmp_path):
    path = tmp_path / "srgb.heic"
    Image.fromarray(COLOURS).save(path, "HEIF", color_primaries=1, transfer_characteristics=13)
    assert read_image(path).icc_profile is None


@pytest.mark.parametrize("transfer, name", [(16, "PQ"), (18, "HLG")])
def test_an_hdr_heic_is_read_as_stored_with_a_warning(tmp_path, caplog, transfer, name):
    """No ICC profile says PQ or HLG: the samples are read as they are (10 bits into 16), with no
    profile that would misdescribe them, and the user is told that no tone mapping is done."""
    level = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    hdr = pillow_heif.from_bytes("RGB;16", (48, 32), np.stack([level] * 3, axis=-1).tobytes())
    path = tmp_path / "hdr.heic"
    hdr.save(path, quality=-1, color_primaries=9, transfer_characteristics=transfer, matrix_coefficients=9)
    with caplog.at_level(logging.WARNING, logger="i2icli.image_metadata"):
        picture = read_image(path)
    assert picture.rgb.dtype == np.uint16 and picture.icc_profile is None
    assert f"is an HDR photo ({name})" in caplog.text and "without tone mapping" in caplog.text


def ramps(height: int, width: int) -> np.ndarray:
    """A picture whose every region differs from every other: a tile misplaced or repeated shows."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 64 * 4], axis=-1).astype(np.uint8)


def phone_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0112] = orientation
    return exif.tobytes()


def test_a_tiled_heic_is_read_whole_and_turned_once(tmp_path):
    """iPhones store a photo as a grid of tiles, its rotation as the file's own (irot) with the
    EXIF orientation saying it again: the picture read is the whole grid, turned once."""
    stored = ramps(200, 320)
    path = tmp_path / "IMG_0002.HEIC"
    Image.fromarray(stored).save(path, "HEIF", quality=-1, chroma=444, tile_size=128, exif=phone_exif(6))
    assert b"grid" in path.read_bytes()  # tiled, 3x2
    assert Image.open(path).info["original_orientation"] == 6
    picture = read_image(path)
    upright = np.rot90(stored, -1)
    assert picture.rgb.shape == upright.shape and np.abs(picture.rgb.astype(int) - upright).mean() < 2
    assert image_size(path) == (200, 320)
    assert picture.exif and b"PhoneMaker" in picture.exif


def test_the_primary_picture_is_read_though_it_is_not_the_first(tmp_path, caplog, monkeypatch):
    """A burst, or an edit saved beside the original: of the pictures in a HEIC, the one the file
    names primary is the photo, wherever it lies; its thumbnail never is."""
    monkeypatch.setattr(pillow_heif.options, "THUMBNAILS", True)  # written, and seen by every reader
    other = pillow_heif.from_bytes("RGB", (32, 24), np.full((24, 32, 3), 40, np.uint8).tobytes())
    photo = ramps(64, 96)
    other.add_frombytes("RGB", (96, 64), photo.tobytes())
    path = tmp_path / "burst.heic"
    other.save(path, quality=-1, chroma=444, primary_index=1, thumbnails=[24])
    assert pillow_heif.open_heif(path).primary_index == 1 and pillow_heif.open_heif(path)[1].info["thumbnails"]
    with caplog.at_level(logging.WARNING, logger="i2icli.imageio"):
        picture = read_image(path)
    assert picture.rgb.shape == photo.shape and np.abs(picture.rgb.astype(int) - photo).mean() < 2
    assert image_size(path) == (96, 64)
    assert "holds 2 pictures; only its primary one is used" in caplog.text


@pytest.mark.parametrize("deep", [False, True], ids=["8-bit", "16-bit"])
def test_a_heic_output_asks_x265_for_its_fast_preset_and_halved_chroma(tmp_path, monkeypatch, deep):
    """libheif's own choice, x265's "slow" preset, took half a minute and more for a 12 MP photo,
    for a file 1% smaller. Chroma stays 4:2:0: Windows and macOS show a 4:4:4 HEIC wrong or not
    at all."""
    import pillow_heif.as_plugin
    import pillow_heif.heif

    asked: list[dict] = []

    class RecordingEncoder(pillow_heif.heif.CtxEncode):
        def __init__(self, compression_format, **kwargs):
            asked.append(kwargs)
            super().__init__(compression_format, **kwargs)

    monkeypatch.setattr(pillow_heif.heif, "CtxEncode", RecordingEncoder)
    monkeypatch.setattr(pillow_heif.as_plugin, "CtxEncode", RecordingEncoder)
    rgb = (ramps(32, 48).astype(np.uint16) * 257) if deep else ramps(32, 48)
    out = write_image(tmp_path / "out.heic", Picture(rgb=rgb))
    assert [kwargs.get("enc_params") for kwargs in asked] == [{"preset": "fast"}]
    assert pillow_heif.open_heif(out).info["chroma"] == 420


def test_a_10_bit_heic_with_alpha_and_both_rotations_is_read_deep_upright_and_see_through(tmp_path):
    """A phone's 10-bit HEIC of a cutout, turned by irot with EXIF orientation 6 beside it: 16
    bits a sample, alpha kept, turned once."""
    level = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    alpha = np.where(np.arange(48) < 16, 0, 65535).astype(np.uint16)[None].repeat(32, axis=0)
    stored = np.stack([level, level[::-1], level[:, ::-1], alpha], axis=-1)
    path = tmp_path / "cutout.heic"
    pillow_heif.from_bytes("RGBA;16", (48, 32), stored.tobytes()).save(path, quality=-1, chroma=444,
                                                                        exif=phone_exif(6))
    assert pillow_heif.open_heif(path).info["bit_depth"] == 10
    picture = read_image(path)
    upright = np.rot90(stored, -1)
    assert picture.rgb.dtype == np.uint16 and picture.alpha is not None
    assert np.abs(picture.rgb.astype(int) - upright[..., :3]).mean() < 257
    assert np.array_equal(picture.alpha, upright[..., 3])


def test_a_10_bit_heic_is_widened_to_16_bits_without_extra_copies(tmp_path):
    """A 48 MP 10-bit photo is 290 MB at 16 bits: copied out of libheif's buffer and then shifted,
    it was held twice over besides libheif's own. (tracemalloc sees numpy's arrays, not libheif's.)"""
    level = (np.arange(128 * 192).reshape(128, 192) % 1024 * 64).astype(np.uint16)
    path = tmp_path / "ten.heic"
    pillow_heif.from_bytes("RGB;16", (192, 128), np.stack([level] * 3, axis=-1).tobytes()).save(path, quality=-1)
    read_image(path)  # the first read imports and registers what reading needs
    picture, peak = traced_peak(lambda: read_image(path))
    assert picture.rgb.dtype == np.uint16 and picture.rgb.flags.writeable
    assert peak < 1.5 * picture.rgb.nbytes
