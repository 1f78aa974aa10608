"""Tests for i2icli.imageio: gray+alpha TIFFs, damaged files, and what the C libraries print.
Every fixture image is generated here; nothing binary is committed."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from i2icli.errors import InputImageError
from i2icli.imageio import Picture, read_image, write_image

H, W = 24, 40


def noisy(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, int(np.iinfo(dtype).max) + 1, shape, dtype=dtype)


def gray_alpha_picture(dtype=np.uint8) -> Picture:
    gray, alpha = noisy((H, W), dtype), noisy((H, W), dtype, seed=1)
    return Picture(np.stack([gray] * 3, axis=-1), alpha, grayscale=True)


# --------------------------------------------------------------------------- gray+alpha TIFF


def test_a_gray_alpha_picture_is_written_to_tiff_as_gray_alpha(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    picture = gray_alpha_picture()
    out = write_image(tmp_path / "la.tif", picture)
    assert Image.open(out).mode == "LA"
    with tifffile.TiffFile(out) as tiff:  # an independent decoder agrees with the hand-made file
        page = tiff.pages[0]
        assert page.photometric == 1 and list(page.extrasamples) == [2]  # BlackIsZero, alpha
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
