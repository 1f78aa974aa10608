"""HEIC/HEIF and AVIF, the formats phones store photos in: read upright, at their depth, with their
alpha, profile and metadata; written by --ext auto, --ext avif and -o out.avif. The files are made
here with the same libraries (Pillow for AVIF, pillow-heif for HEIC)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
import pytest
from conftest import traced_peak
from PIL import Image, ImageCms
from typer.testing import CliRunner

from i2icli.cli.app import app
from i2icli.errors import I2IError, InputImageError
from i2icli.image_encoding import check_output_size
from i2icli.imageio import (
    SUPPORTED_SUFFIXES,
    ImageOverPixelLimit,
    Picture,
    encode_image,
    format_suffix,
    image_size,
    read_image,
    write_image,
)

pillow_heif.register_heif_opener()
runner = CliRunner()
HEIC_ENCODER = bool(pillow_heif.libheif_info().get("HEIF"))
needs_heic_encoder = pytest.mark.skipif(not HEIC_ENCODER, reason="this libheif build has no HEIC encoder")

FORMATS = [pytest.param("HEIF", ".heic", marks=needs_heic_encoder, id="heic"), pytest.param("AVIF", ".avif", id="avif")]
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/>'
       b"</rdf:RDF></x:xmpmeta>")


def blocks(height: int = 32, width: int = 48) -> np.ndarray:
    """Flat 8x8 blocks of distinct colours: lossy codecs keep them close, and every turn or mirror
    of the picture moves them visibly."""
    y, x = np.mgrid[0:height, 0:width] // 8
    return np.stack([(x * 40 + 20) % 256, (y * 60 + 30) % 256, ((x + y) * 25 + 10) % 256], axis=-1).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, fmt: str, **options) -> Path:
    """``pixels`` as ``fmt``, at the encoders' best (lossless for HEIC, 4:4:4 at quality 100 for AVIF)."""
    best = {"quality": -1, "chroma": 444} if fmt == "HEIF" else {"quality": 100, "subsampling": "4:4:4"}
    if pixels.ndim == 2:  # grey: the encoders store luma alone unless told to keep chroma
        best.pop("chroma" if fmt == "HEIF" else "subsampling")
    Image.fromarray(pixels).save(path, fmt, **{**best, **options})
    return path


def exif_with(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def close(a: np.ndarray, b: np.ndarray, tolerance: float = 3.0) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(np.int32) - b).mean()) < tolerance


# ------------------------------------------------------------------------ reading


def test_the_suffixes_are_read_in_any_case(tmp_path):
    assert {".heic", ".heif", ".avif"} <= SUPPORTED_SUFFIXES
    for name in ("IMG_1234.HEIC", "b.heif", "c.AVIF"):
        save(tmp_path / name, blocks(), "AVIF")  # the content decides what it is read as
        assert read_image(tmp_path / name).rgb.shape == (32, 48, 3)


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_pixels_are_read_close_to_the_source(tmp_path, fmt, suffix):
    source = blocks()
    picture = read_image(save(tmp_path / f"photo{suffix}", source, fmt))
    assert picture.rgb.dtype == np.uint8 and not picture.grayscale and picture.alpha is None
    assert close(picture.rgb, source)
    assert format_suffix((tmp_path / f"photo{suffix}").read_bytes()) == suffix


# The picture shown, upright, from the stored one, for each orientation.
UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("fmt, suffix", FORMATS)
@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_a_rotated_photo_is_turned_once(tmp_path, fmt, suffix, orientation):
    """Both encoders write the EXIF orientation as the file's own rotation and mirroring (irot,
    imir), and keep the EXIF block saying it too: libheif applies the first as it decodes, so the
    second, applied again, turned a HEIC twice."""
    stored = blocks()
    path = save(tmp_path / f"turned{suffix}", stored, fmt, exif=exif_with(orientation))
    if fmt == "HEIF":  # the EXIF block inside still says so
        assert Image.open(path).info["original_orientation"] == orientation
    picture = read_image(path)
    upright = np.ascontiguousarray(UPRIGHT[orientation](stored))
    assert close(picture.rgb, upright), (picture.rgb.shape, upright.shape)
    assert image_size(path) == (upright.shape[1], upright.shape[0])


@needs_heic_encoder
def test_a_heic_is_turned_once_whatever_its_exif_block_says(tmp_path, monkeypatch):
    """pillow-heif resets the EXIF orientation it hands over; where the tag still says 6, the
    rotation libheif applied is not applied again all the same."""
    import pillow_heif.as_plugin

    stored = blocks()
    path = save(tmp_path / "turned.heic", stored, "HEIF", exif=exif_with(6))
    monkeypatch.setattr(pillow_heif.as_plugin, "set_orientation", lambda info: None)
    assert Image.open(path).getexif()[0x0112] == 6
    assert close(read_image(path).rgb, np.ascontiguousarray(np.rot90(stored, -1)))


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_alpha_and_grey_are_kept(tmp_path, fmt, suffix):
    rgb = blocks()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :16] = 0
    alpha[:, 16:32] = 128
    picture = read_image(save(tmp_path / f"cutout{suffix}", np.dstack((rgb, alpha)), fmt))
    assert picture.alpha is not None and close(picture.alpha, alpha, 2.0)
    grey = blocks()[..., 0]
    picture = read_image(save(tmp_path / f"grey{suffix}", grey, fmt))
    assert picture.grayscale and close(picture.rgb[..., 0], grey)


def gradient16(height: int = 32, width: int = 48) -> np.ndarray:
    """1536 distinct levels a channel: more than 8 bits can tell apart."""
    level = (np.arange(height * width).reshape(height, width) * 40).astype(np.uint16)
    return np.stack([level, level[::-1], level[:, ::-1]], axis=-1)


def test_a_10_bit_heic_is_read_at_16_bits(tmp_path):
    source = gradient16()
    heif = pillow_heif.from_bytes("RGB;16", (48, 32), source.tobytes())
    heif.save(tmp_path / "hdr.heic", quality=-1, chroma=444)
    assert pillow_heif.open_heif(tmp_path / "hdr.heic").info["bit_depth"] == 10
    picture = read_image(tmp_path / "hdr.heic")
    assert picture.rgb.dtype == np.uint16
    assert len(np.unique(picture.rgb[..., 0])) > 256  # read at 8 bits, at most 256 levels are left
    assert float(np.abs(picture.rgb.astype(np.int64) - source).mean()) < 257
    white = pillow_heif.from_bytes("RGB;16", (16, 16), np.full((16, 16, 3), 65535, np.uint16).tobytes())
    white.save(tmp_path / "white.heic", quality=-1)
    assert read_image(tmp_path / "white.heic").rgb.min() == 65535  # the whole range, as a 16-bit PNG's


def test_a_10_bit_avif_is_read_at_8_bits(tmp_path):
    """Pillow decodes AVIF to 8 bits a sample: no more can be had from it."""
    ten_bits = gradient16() >> 6  # OpenCV takes a 10-bit AVIF's samples as they are stored, in BGR order
    ok, data = cv2.imencode(".avif", ten_bits, [cv2.IMWRITE_AVIF_DEPTH, 10, cv2.IMWRITE_AVIF_QUALITY, 100])
    assert ok
    (tmp_path / "hdr.avif").write_bytes(data.tobytes())
    picture = read_image(tmp_path / "hdr.avif")
    assert picture.rgb.dtype == np.uint8
    assert close(picture.rgb, (ten_bits[..., ::-1] * (255 / 1023)).round().astype(np.uint8), 3.0)


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_profile_exif_and_xmp_are_read(tmp_path, fmt, suffix):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = save(tmp_path / f"meta{suffix}", blocks(), fmt, exif=exif_with(), xmp=XMP, icc_profile=profile)
    picture = read_image(path)
    assert picture.icc_profile == profile
    assert picture.exif and b"PhoneMaker" in picture.exif
    assert picture.xmp and b'Rating="4"' in picture.xmp


def test_a_display_p3_avif_gets_the_profile_its_nclx_box_calls_for(tmp_path):
    """Pillow's AVIF reader keeps the colour description to itself: read from the file's boxes, a
    Display P3 AVIF without an ICC profile comes with one that says Display P3."""
    data = bytearray(save(tmp_path / "srgb.avif", blocks(), "AVIF").read_bytes())
    colr = data.index(b"colrnclx") + 8
    assert data[colr:colr + 4] == b"\x00\x01\x00\x0d"  # BT.709 primaries, sRGB's curve
    data[colr:colr + 2] = b"\x00\x0c"  # Display P3's primaries, as a phone writes them
    (tmp_path / "p3.avif").write_bytes(bytes(data))
    assert read_image(tmp_path / "srgb.avif").icc_profile is None
    profile = read_image(tmp_path / "p3.avif").icc_profile
    assert profile is not None
    assert "Display P3" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile)))


def test_the_colour_description_of_a_cut_file_is_none_not_an_error(tmp_path):
    from i2icli.containers import heif_nclx

    data = save(tmp_path / "whole.avif", blocks(), "AVIF").read_bytes()
    assert heif_nclx(data)["color_primaries"] == 1
    for cut in range(0, data.index(b"colrnclx") + 12):
        assert heif_nclx(data[:cut]) is None


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_a_damaged_file_is_one_line(tmp_path, fmt, suffix):
    whole = save(tmp_path / f"whole{suffix}", blocks(64, 64), fmt).read_bytes()
    for cut in (40, len(whole) // 2, len(whole) - 20):  # in the header, in the picture data
        (tmp_path / f"cut{suffix}").write_bytes(whole[:cut])
        with pytest.raises(InputImageError, match="corrupt or truncated") as raised:
            read_image(tmp_path / f"cut{suffix}")
        assert "\n" not in str(raised.value)


def test_a_heic_named_file_holding_a_jpeg_is_read_by_its_content(tmp_path):
    Image.fromarray(blocks()).save(tmp_path / "IMG_0001.HEIC", "JPEG", quality=95)
    assert close(read_image(tmp_path / "IMG_0001.HEIC").rgb, blocks(), 4.0)


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_the_pixel_limit_holds_before_decoding(tmp_path, fmt, suffix):
    path = save(tmp_path / f"big{suffix}", blocks(), fmt)
    with pytest.raises(ImageOverPixelLimit, match="48x32"):
        read_image(path, max_pixels=1000)


# ------------------------------------------------------------------------ writing


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_written_with_alpha_profile_and_metadata_made_true(tmp_path, fmt, suffix):
    """The EXIF block written says upright (the pixels are) and carries no rotation for the
    decoder to apply; the profile, the rest of the EXIF block and the XMP packet go along."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = save(tmp_path / "source.avif", blocks(), "AVIF", exif=exif_with(6), xmp=XMP, icc_profile=profile)
    picture = read_image(source)
    alpha = np.full((picture.height, picture.width), 255, np.uint8)
    alpha[:8] = 0
    picture.alpha = alpha
    out = write_image(tmp_path / f"out{suffix}", picture)
    with Image.open(out) as written:
        assert written.format == fmt and written.size == (32, 48)
        assert written.getexif().get(0x0112, 1) == 1 and written.getexif()[0x010F] == "PhoneMaker"
        assert written.info.get("icc_profile") == profile
    back = read_image(out)
    assert close(back.rgb, picture.rgb) and back.alpha is not None and close(back.alpha, alpha, 2.0)
    assert back.xmp and b'Rating="4"' in back.xmp


def test_an_avif_output_keeps_colour_edges_sharp(tmp_path):
    """Written with chroma at full resolution: at half, one-pixel stripes of red and blue (a
    restored face's lips and eyes have edges as fine) ran together into purple."""
    stripes = np.zeros((32, 48, 3), np.uint8)
    stripes[:, 0::2, 0] = 220
    stripes[:, 1::2, 2] = 220
    back = np.array(Image.open(io.BytesIO(encode_image(Picture(rgb=stripes), ".avif"))))
    assert close(back, stripes, 6.0)


def test_outputs_too_large_for_the_format_are_refused_while_planning(tmp_path):
    with pytest.raises(I2IError, match="too large for AVIF"):
        check_output_size(tmp_path / "out.avif", 40_000, 100)
    check_output_size(tmp_path / "out.avif", 30_000, 100)


def test_a_libheif_without_an_encoder_is_named_before_the_work(tmp_path, monkeypatch):
    """Some builds of libheif decode HEVC but carry no encoder: a HEIC output is refused in one line
    that says what to write instead, before the photo is restored rather than after."""
    monkeypatch.setattr(pillow_heif, "libheif_info", lambda: {"HEIF": "", "AVIF": "", "encoders": {}})
    with pytest.raises(I2IError, match="no HEIC encoder") as raised:
        check_output_size(tmp_path / "out.heic", 64, 64)
    assert "write .avif, .jpg or .png instead" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(I2IError, match="no HEIC encoder"):
        write_image(tmp_path / "out.heic", Picture(rgb=blocks()))
    assert not (tmp_path / "out.heic").exists()


def test_a_16_bit_picture_is_written_as_8_bit_avif(tmp_path):
    picture = Picture(rgb=gradient16())
    data = encode_image(picture, ".avif")
    assert close(np.array(Image.open(io.BytesIO(data))), (gradient16() / 257).round().astype(np.uint8), 3.0)


@needs_heic_encoder
@pytest.mark.parametrize("grey, with_alpha", [(False, False), (False, True), (True, False)])
def test_a_16_bit_picture_is_written_as_10_bit_heic(tmp_path, grey, with_alpha):
    """A phone's 10-bit HEIC, restored, keeps more than 8 bits: written at 8, its smooth skies and
    shadows would band."""
    rgb = gradient16()
    if grey:
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    alpha = np.full(rgb.shape[:2], 65535, np.uint16) if with_alpha else None
    if with_alpha:
        alpha[:, :8] = 0
    out = write_image(tmp_path / "deep.heic", Picture(rgb=rgb, alpha=alpha, grayscale=grey))
    assert pillow_heif.open_heif(out).info["bit_depth"] == 10
    back = read_image(out)
    assert back.rgb.dtype == np.uint16 and back.grayscale == grey
    assert len(np.unique(back.rgb[..., 0])) > 256
    # written lossy (quality 75, chroma halved), and these colours change from pixel to pixel
    assert float(np.abs(back.rgb.astype(np.int64) - rgb).mean()) < 6 * 257
    if with_alpha:
        assert back.alpha is not None and close(back.alpha, alpha, 257.0)


# ------------------------------------------------------------------------ the command line


def restore(*args: str):
    return runner.invoke(app, ["restore", *args, "--device", "cpu", "--bg-model", "none", "--parser", "none"],
                         catch_exceptions=False)


def test_the_folder_scan_takes_phone_photos(tiny_env, tmp_path):
    (tmp_path / "in").mkdir()
    save(tmp_path / "in" / "IMG_0001.HEIC", blocks(), "AVIF")
    save(tmp_path / "in" / "IMG_0002.avif", blocks(), "AVIF")
    result = restore(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "IMG_0001.HEIC" in result.stdout and "IMG_0002.avif" in result.stdout


@needs_heic_encoder
def test_restore_a_heic_end_to_end(tiny_env, landmarks_detector, tmp_path):
    """A hobbyist's first try: `i2i restore IMG_1234.HEIC` writes a HEIC back (--ext auto)."""
    landmarks_detector([])
    (tmp_path / "in").mkdir()
    save(tmp_path / "in" / "IMG_1234.HEIC", blocks(), "HEIF", exif=exif_with(6))
    result = restore(str(tmp_path / "in" / "IMG_1234.HEIC"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "out" / "IMG_1234.heic"
    with Image.open(out) as written:
        assert written.format == "HEIF" and written.size == (64, 96)  # upright, 2x
        assert written.getexif()[0x010F] == "PhoneMaker"
    piped = restore(str(tmp_path / "in" / "IMG_1234.HEIC"), "-o", "-")  # in the input's format
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout_bytes[4:12] == b"ftypheic"


def test_restore_to_avif(tiny_env, landmarks_detector, tmp_path):
    landmarks_detector([])
    photo = tmp_path / "photo.png"
    Image.fromarray(blocks()).save(photo)
    result = restore(str(photo), "-o", str(tmp_path / "out"), "--ext", "avif")
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "out" / "photo.avif").format == "AVIF"
    result = restore(str(photo), "-o", str(tmp_path / "named.avif"))
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "named.avif").size == (96, 64)
    piped = restore(str(photo), "-o", "-", "--ext", "avif")
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout_bytes[4:12] == b"ftypavif"


@pytest.mark.parametrize(("fmt", "suffix", "quality"), [
    pytest.param("HEIF", ".heic", 75, marks=needs_heic_encoder, id="heic"),
    pytest.param("AVIF", ".avif", 95, id="avif"),
])
def test_heic_and_avif_are_written_at_their_own_quality_not_jpegs(monkeypatch, fmt, suffix, quality):
    """At JPEG's 95, a HEIC came out three times the size of the JPEG for no visible gain: each
    format has the quality measured to match JPEG 95 (see image_encoding)."""
    asked: list[object] = []
    plain_save = Image.Image.save

    def recording_save(image, fp, format=None, **options):
        asked.append(options.get("quality"))
        return plain_save(image, fp, format, **options)

    monkeypatch.setattr(Image.Image, "save", recording_save)
    data = encode_image(Picture(rgb=blocks()), suffix)
    assert asked == [quality]
    assert format_suffix(data) == suffix


@pytest.mark.parametrize("with_alpha", [False, True], ids=["rgb", "rgba"])
def test_an_avif_is_read_with_its_samples_held_once(tmp_path, monkeypatch, with_alpha):
    """Pillow's tobytes(), behind np.array(image), held the picture twice over (its chunks, then
    their join) before NumPy's copy: a 48 MP AVIF peaked at 584 MB. Taken out in bands of rows, the
    same samples come back with no whole copy beside the array."""
    from i2icli import image_decoding

    monkeypatch.setattr(image_decoding, "_PIL_BAND_PIXELS", 64 * 64, raising=False)  # many bands, and a last short one
    pixels = np.tile(blocks(), (15, 10, 1))[:-3]  # 477 x 480
    if with_alpha:
        pixels = np.dstack((pixels, np.where(pixels[..., :1] > 100, 255, 40).astype(np.uint8)))
    path = save(tmp_path / "big.avif", pixels, "AVIF")
    with Image.open(path) as pil:
        expected = np.array(pil)
    back, peak = traced_peak(lambda: read_image(path))
    assert np.array_equal(back.rgb, expected[..., :3])
    if with_alpha:  # splitting colour from alpha, after the decoder, holds two pictures anyway
        assert np.array_equal(back.alpha, expected[..., 3])
    else:
        assert peak < 1.6 * expected.nbytes, f"{peak / expected.nbytes:.2f} pictures"
