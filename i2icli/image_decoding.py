"""Decoding an image file's pixels: what format its bytes are, refused in one line where they are
no image or one i2i cannot read; OpenCV as the decoder, Pillow as the fallback for what OpenCV gets
wrong, pillow-heif for HEIF; the C libraries' messages turned into i2i's own; orientation,
palettes, 16-bit samples and premultiplied alpha. :mod:`i2icli.imageio` assembles a
:class:`~i2icli.imageio.Picture` from what this gives.
"""

from __future__ import annotations

import functools
import io
import logging
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .codec_libraries import c_library_messages, pil_strict, quiet_cv2
from .containers import tiff_short_values
from .errors import InputImageError
from .exif import ORIENTATION_TAG
from .formats import IMAGE_SUFFIXES
from .pixels import max_value

# The suffixes i2i reads, as messages list them.
SUFFIX_LIST = ", ".join(IMAGE_SUFFIXES)

# Pillow's format name -> the container we treat it as.
READABLE_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",  # multi-picture JPEG from cameras: the first picture is a plain JPEG
    "PNG": "PNG",
    "WEBP": "WEBP",
    "TIFF": "TIFF",
    "BMP": "BMP",
    "DIB": "BMP",
    "HEIF": "HEIF",  # through pillow-heif's opener, registered when the first file is parsed
    "AVIF": "AVIF",
}

# Decoded and encoded with Pillow and its plugins, never OpenCV: OpenCV reads no HEIF, and hands an
# AVIF's 10-bit samples over unscaled (0-1023 in a uint16), its orientation left to guesswork.
PIL_CODED = frozenset({"HEIF", "AVIF"})

# Pillow modes of files with a single luminance channel (with or without alpha).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Modes whose samples Pillow hands over without loss (the fallback decoder's scope).
_EXACT_PIL_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"}) | _16BIT_MODES
# Pillow's modes with premultiplied ("associated") alpha, and the straight-alpha mode each becomes.
_PREMULTIPLIED_MODES = {"La": "LA", "RGBa": "RGBA"}
# Pixels per band in which the fallback decoder copies Pillow's samples out (a few MB at most).
_PIL_BAND_PIXELS = 1 << 20


def decode_upright(p: Path, pil: Image.Image, fmt: str, data: bytes, orientation: int) -> tuple[np.ndarray, str]:
    """The file's pixels, orientation applied, and their channel order ("BGR" or "RGB")."""
    mode = pil.mode
    if fmt in PIL_CODED:
        decoded = _decode_heif(p, data) if fmt == "HEIF" else _decode_pil(p, pil, fmt, data, orientation)[0]
        return (decoded if orientation == 1 else _orient(decoded, orientation)), "RGB"
    # Many downloads and some cameras leave off a JPEG's end marker though all its picture data is
    # there, and OpenCV's libjpeg then gives up on a photo every viewer shows. Given the marker, it
    # reads such a file whole, and says so where the picture data itself stops short.
    end_marker_added = fmt == "JPEG" and not data.endswith(_JPEG_END_MARKER)
    with c_library_messages() as printed:
        decoded = _decode_cv2(data + _JPEG_END_MARKER if end_marker_added else data)
    _heed_decoder_messages(p, fmt, printed, decoded is not None, end_marker_added=end_marker_added)
    order, cv2_oriented = "BGR", False
    if decoded is not None and orientation != 1:
        stored_w, stored_h = stored_size(pil, fmt)
        if orientation >= 5 and stored_w != stored_h:  # a quarter turn shows in the shape
            cv2_oriented = decoded.shape[:2] == (stored_w, stored_h)
        else:
            cv2_oriented = _cv2_applies_orientation(fmt, orientation)
    # OpenCV drops the alpha of some TIFFs (e.g. Pillow's gray+alpha ones): redo those.
    lost_alpha = decoded is not None and mode in _ALPHA_MODES and channel_count(decoded) in (1, 3)
    # It reads an 8-bit RGBA TIFF through libtiff's RGBA interface, which multiplies the colours by
    # the alpha: a semi-transparent pixel came out darker. Pillow hands the samples over as stored.
    premultiplied = decoded is not None and fmt == "TIFF" and mode == "RGBA" and decoded.dtype == np.uint8
    if decoded is None or lost_alpha or premultiplied:
        decoded, already_oriented = _decode_pil(p, pil, fmt, data, orientation)
        order, cv2_oriented = "RGB", already_oriented

    if decoded.dtype not in (np.uint8, np.uint16):
        raise InputImageError(
            p,
            f"has {decoded.dtype} samples; only 8- and 16-bit images are supported",
            "convert it to an 8- or 16-bit PNG or TIFF",
        )
    if fmt == "TIFF" and decoded.dtype == np.uint16 and channel_count(decoded) == 1 and _tiff_photometric(pil) == 0:
        # WhiteIsZero (scanners use it): OpenCV and Pillow invert 8-bit samples but hand 16-bit
        # ones over as stored, so a 16-bit scan came out as its negative.
        decoded = np.subtract(np.uint16(65535), decoded)
    if order == "BGR" and fmt == "TIFF" and channel_count(decoded) == 4 and extra_samples(pil)[:1] == (1,):
        # OpenCV hands over the colours of a TIFF with associated alpha (a render's usual output)
        # premultiplied, as stored: taken as they were, every semi-transparent pixel came out darker.
        decoded = _unpremultiplied(decoded)
    if orientation != 1 and not cv2_oriented:
        decoded = _orient(decoded, orientation)
    return decoded, order


def _decode_heif(p: Path, data: bytes) -> np.ndarray:
    """A HEIF file's primary picture, upright (libheif applies the file's rotation and mirroring),
    in RGB order: 16 bits a sample where the file stores more than 8 (a phone's HDR photo has 10),
    as a 16-bit PNG's are read, and 8 otherwise. (The plugin Pillow opens it with narrows them to 8.)"""
    import pillow_heif

    try:
        with c_library_messages():
            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
            depth = int(heif.info.get("bit_depth", 8))
            stored = np.asarray(heif)  # libheif's buffer, read-only
    except Exception:  # libheif's errors come as several types
        raise _corrupt(p) from None
    if stored.dtype == np.uint16 and 8 < depth < 16:
        # libheif hands the samples over in the top bits (a 10-bit 1023 as 65472): repeated into the
        # low bits they span the whole range, white 65535 as in a 16-bit PNG. Made from libheif's
        # buffer in one new array: a copy of it first, then shifted, held three pictures at once.
        decoded = stored >> depth
        decoded |= stored
        return decoded
    return stored.copy()  # writable


def _unpremultiplied(colour_and_alpha: np.ndarray) -> np.ndarray:
    """An HxWx4 array of colours premultiplied by the alpha (the last channel) with the colours
    divided back out: a Picture's colours and alpha are apart, as PNG and WebP store them."""
    top = max_value(colour_and_alpha.dtype)
    alpha = colour_and_alpha[..., 3:].astype(np.float32)
    straight = np.multiply(colour_and_alpha[..., :3], np.float32(top), dtype=np.float32)
    np.divide(straight, alpha, out=straight, where=alpha > 0)  # fully transparent stays 0
    np.clip(np.rint(straight, out=straight), 0, top, out=straight)
    result = colour_and_alpha.copy()
    result[..., :3] = straight
    return result


def stored_size(pil: Image.Image, fmt: str) -> tuple[int, int]:
    """(width, height) as stored, before orientation: Pillow reports an oriented TIFF size."""
    if fmt == "TIFF":
        tags = getattr(pil, "tag_v2", {})
        w, h = tags.get(256), tags.get(257)
        if isinstance(w, int) and isinstance(h, int):
            return w, h
    return pil.size


def deep_separate_planes(pil: Image.Image) -> bool:
    """Whether a TIFF keeps each channel of a deeper-than-8-bit image in a plane of its own
    (PlanarConfiguration 2, "per channel" order). OpenCV and Pillow both decode such a file into
    scrambled pixels without an error, and a batch would restore that noise as if it were the photo."""
    tags = getattr(pil, "tag_v2", {})
    return tags.get(284) == 2 and tags.get(277, 1) > 1 and _tiff_deeper_than_8_bits(pil)


def _tiff_deeper_than_8_bits(pil: Image.Image) -> bool:
    """Whether a TIFF's BitsPerSample gives any sample more than 8 bits (one value or one per sample)."""
    bits = getattr(pil, "tag_v2", {}).get(258, (8,))
    return any(int(b) > 8 for b in (bits if isinstance(bits, tuple) else (bits,)))


def extra_samples(pil: Image.Image) -> tuple[int, ...]:
    """A TIFF's ExtraSamples tag: what each sample beyond the colour ones holds (0 unspecified,
    1 premultiplied alpha, 2 alpha); () when absent."""
    kinds = getattr(pil, "tag_v2", {}).get(338, ())
    return tuple(kinds) if isinstance(kinds, tuple) else (kinds,)


def channel_count(arr: np.ndarray) -> int:
    return 1 if arr.ndim == 2 else int(arr.shape[2])


def _not_an_image(p: Path) -> InputImageError:
    return InputImageError(
        p,
        "is not an image file (the contents are not JPEG, PNG, WebP, HEIF, AVIF, TIFF or BMP data)",
        "check that it is the right file; re-export it if it is damaged",
    )


def _corrupt(p: Path) -> InputImageError:
    return InputImageError(
        p,
        "image data is corrupt or truncated",
        "re-copy, re-download or re-export the image",
    )


def _open_header(p: Path, data: bytes) -> Image.Image:
    """Parse the header only: format, mode, size, metadata. No pixel decoding."""
    try:
        with pil_strict():
            return Image.open(io.BytesIO(data))
    except Exception:  # Pillow raises a zoo of types for bad headers
        if 3 in tiff_short_values(data, 339):  # SampleFormat IEEE float: Pillow opens one-channel ones only
            raise InputImageError(p, "has floating-point samples; only 8- and 16-bit images are supported",
                                  "convert it to an 8- or 16-bit PNG or TIFF") from None
        if tiff_short_values(data, 277) == (2,) and max(tiff_short_values(data, 258), default=8) > 8:
            # Gray+alpha of 16 bits: Pillow has no such mode, and OpenCV drops the alpha and the
            # low 8 bits. A sound file, not a damaged one.
            raise InputImageError(p, "is a gray+alpha TIFF of 16 bits, which i2i cannot read",
                                  "re-save it as a 16-bit PNG") from None
        raise (_corrupt(p) if has_image_signature(data) else _not_an_image(p)) from None


def readable_format(p: Path, data: bytes) -> tuple[Image.Image, str]:
    """The parsed header and its format, refused when the data is no image or one i2i cannot read."""
    pil = _open_header(p, data)
    fmt = READABLE_FORMATS.get(pil.format or "")
    if fmt is None:
        raise InputImageError(
            p,
            f"is an image in {pil.format or 'an unknown'} format, which i2i cannot read",
            f"convert it to one of {SUFFIX_LIST}",
        )
    return pil, fmt


def has_image_signature(data: bytes) -> bool:
    """Starts like one of our formats (so a failure to parse means damage, not a wrong file)."""
    return (data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or (data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS))


_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",  # TIFF, BigTIFF
    b"BM",  # BMP
)
# The major brands of an ISO media file's "ftyp" box that say HEIF or AVIF: HEVC pictures and
# sequences, the general image brands, AV1 pictures and sequences.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})


_JPEG_END_MARKER = b"\xff\xd9"
# libjpeg's word for picture data that stops before its last block: of a file cut short, once
# the end marker it lacked is added.
_JPEG_DATA_CUT_SHORT = "Corrupt JPEG data: premature end of data segment"
_JPEG_STRAY_BYTES_BEFORE_END = re.compile(r"Corrupt JPEG data: (\d+) extraneous bytes before marker 0xd9")
# Writers that pad a JPEG leave a byte or a few before its end marker. A scan garbled on a bad
# card leaves what its misread codes did not use, commonly hundreds or thousands of bytes.
_JPEG_PADDING_MAX_BYTES = 16


def _heed_decoder_messages(
    p: Path, fmt: str, printed: list[str], decoded: bool, *, end_marker_added: bool = False
) -> None:
    """Say what OpenCV's decoders printed means for this file, in one line of i2i's own.

    A PNG whose pixel data stops short of its last row ("Not enough image data") is refused:
    OpenCV fails it, but Pillow, the fallback decoder, reads it without a word, the missing rows
    black. (libpng's other errors are left to Pillow's strict decoding, which refuses what is
    damaged, and reads a PNG that merely lacks its end chunk.) A JPEG that ends early is refused
    too: OpenCV 4's libjpeg fills its missing rows with grey. (One that lacks only its end marker,
    ``end_marker_added`` to it before decoding, is read as it is; one that stops inside its
    picture data is refused.) So is a TIFF OpenCV hands over
    though libtiff failed on it ("LZWDecode: Not enough data at scanline 28"): the rows after are
    noise. (Where OpenCV fails, Pillow decodes the file or refuses it.)

    A JPEG whose data is damaged inside but complete ("Corrupt JPEG data") is restored with a
    warning rather than refused: libjpeg says so both of a photo garbled on a bad card and of a
    sound one with a few stray bytes before its end marker, and a hobbyist's damaged photo may be
    the only copy, whose undamaged part is still worth restoring. The stray bytes alone, no more
    than a writer's padding, are no damage and go unsaid. The rest (libpng's complaints about a
    colour profile or a text chunk, say) is about metadata, not pixels, and goes unsaid too.
    """
    cut_short = {"PNG": "libpng error: Not enough image data", "JPEG": "Premature end of JPEG file"}.get(fmt)
    if cut_short and cut_short in printed:
        raise _corrupt(p)
    if end_marker_added and _JPEG_DATA_CUT_SHORT in printed:
        raise _corrupt(p)
    if fmt == "TIFF" and decoded and any("TIFF_Error" in line for line in printed):
        raise _corrupt(p)
    if fmt == "JPEG" and any(line.startswith("Corrupt JPEG data") and not _is_padding(line) for line in printed):
        logging.getLogger(__name__).warning(
            "%s: the JPEG data is damaged, so parts of the picture (and of the result) may be garbled; "
            "check the result, or use an undamaged copy", p)


def _is_padding(libjpeg_line: str) -> bool:
    """Whether libjpeg's line speaks of no more stray bytes before the end marker than a writer pads with."""
    stray = _JPEG_STRAY_BYTES_BEFORE_END.fullmatch(libjpeg_line)
    return stray is not None and int(stray.group(1)) <= _JPEG_PADDING_MAX_BYTES


def _decode_cv2(data: bytes) -> np.ndarray | None:
    with quiet_cv2(errors=True):  # libtiff's errors reach us only through OpenCV's log
        try:
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            return None


def _decode_pil(
    p: Path, pil: Image.Image, fmt: str, data: bytes, orientation: int
) -> tuple[np.ndarray, bool]:
    """Fallback decoder, only for modes Pillow represents exactly.

    Returns pixels in RGB order, and whether the orientation is already applied (recent
    Pillow transposes TIFFs on load and then drops the tag).
    """
    mode = pil.mode
    loses_depth = _pil_loses_depth(pil, fmt, data)
    if (mode not in _EXACT_PIL_MODES and mode not in _PREMULTIPLIED_MODES) or loses_depth:
        if mode == "CMYK" and loses_depth:  # OpenCV's libtiff refuses 16-bit CMYK
            raise InputImageError(p, "is a CMYK TIFF of 16 bits, which i2i cannot read",
                                  "convert it to RGB: a 16-bit RGB TIFF or PNG keeps the depth")
        raise _corrupt(p)
    try:
        with c_library_messages(), pil_strict():  # Pillow's libtiff prints too
            pil.load()
            oriented = _pil_oriented_on_load(pil, fmt, orientation)
            if mode == "1":
                pil = pil.convert("L")
            elif mode in ("P", "PA"):
                pil = pil.convert("RGBA" if mode == "PA" or "transparency" in pil.info else "RGB")
            elif mode in _PREMULTIPLIED_MODES:
                pil = pil.convert(_PREMULTIPLIED_MODES[mode])
            arr = _pil_pixels(pil)
    except Exception:
        raise _corrupt(p) from None
    if mode in _16BIT_MODES:
        arr = arr.astype(np.uint16, copy=False)  # I;16B arrives big-endian
    return arr, oriented


def _pil_pixels(pil: Image.Image) -> np.ndarray:
    """A loaded image's samples in a new, writable array, taken a band of rows at a time. Whole,
    ``np.array(pil)`` goes through Pillow's ``tobytes()``, which holds the picture twice over (its
    chunks, then their join) before NumPy copies it once more: reading a 48 MP AVIF peaked at 584 MB,
    455 MB taken in bands (benchmarks/heif_read.py --read-only)."""
    width, height = pil.size
    rows = max(1, _PIL_BAND_PIXELS // max(width, 1))
    if height <= rows:
        return np.array(pil)
    first = np.asarray(pil.crop((0, 0, width, rows)))
    arr = np.empty((height, *first.shape[1:]), first.dtype)
    arr[:rows] = first
    for top in range(rows, height, rows):
        bottom = min(top + rows, height)
        arr[top:bottom] = np.asarray(pil.crop((0, top, width, bottom)))
    return arr


def _pil_oriented_on_load(pil: Image.Image, fmt: str, orientation: int) -> bool:
    """Whether Pillow applied the orientation while loading (recent Pillow transposes TIFFs on
    load and then drops the tag). Call after ``pil.load()``."""
    return (
        orientation != 1
        and fmt == "TIFF"
        and ORIENTATION_TAG not in getattr(pil, "tag_v2", {ORIENTATION_TAG: None})
    )


def palette_has_colours(pil: Image.Image) -> bool:
    """Whether a palette holds any non-grey entry. A palette of greys is a grey image stored
    compactly (PNG optimisers do so, in any order): its pixels are what it shows, not its indices."""
    palette = pil.getpalette() or []
    entries = np.asarray(palette[: len(palette) // 3 * 3], dtype=np.int32).reshape(-1, 3)
    return bool((entries != entries[:, :1]).any())


def decode_palette_indices(p: Path, pil: Image.Image, fmt: str, orientation: int) -> np.ndarray:
    """The stored palette index of each pixel, upright (Pillow decodes palette files exactly)."""
    try:
        with c_library_messages(), pil_strict():
            pil.load()
            oriented = _pil_oriented_on_load(pil, fmt, orientation)
            indices = np.array(pil.getchannel(0) if pil.mode == "PA" else pil, dtype=np.uint8)
    except Exception:
        raise _corrupt(p) from None
    return indices if oriented or orientation == 1 else _orient(indices, orientation)


def _pil_loses_depth(pil: Image.Image, fmt: str, data: bytes) -> bool:
    """Would Pillow silently reduce this file's 16-bit colour samples to 8 bits?"""
    if pil.mode in _16BIT_MODES:
        return False
    if fmt == "PNG":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth
    if fmt == "TIFF":
        return _tiff_deeper_than_8_bits(pil)
    return False


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1-8 to an HxW(xC) array (the transform Pillow's exif_transpose does)."""
    if orientation == 2:  # mirror horizontal
        view = arr[:, ::-1]
    elif orientation == 3:  # rotate 180
        view = arr[::-1, ::-1]
    elif orientation == 4:  # mirror vertical
        view = arr[::-1]
    elif orientation == 5:  # transpose (mirror along the main diagonal)
        view = arr.swapaxes(0, 1)
    elif orientation == 6:  # rotate 90 clockwise
        view = arr.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:  # transverse (mirror along the anti-diagonal)
        view = arr.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:  # rotate 90 counter-clockwise
        view = arr.swapaxes(0, 1)[::-1]
    else:
        return arr
    return np.ascontiguousarray(view)


@functools.lru_cache(maxsize=None)
def _cv2_applies_orientation(fmt: str, orientation: int) -> bool:
    """Does cv2.imdecode(IMREAD_UNCHANGED) already apply this EXIF orientation for fmt?

    It is documented not to, but OpenCV 5's TIFF decoder does, whatever the flags.
    Rather than trust one version's behaviour, probe it once with a tiny image.
    """
    if orientation == 1 or fmt == "BMP":
        return False
    base = np.zeros((16, 24), np.uint8)
    base[:8, :8] = 255
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buf = io.BytesIO()
    try:
        Image.fromarray(base).save(buf, format=fmt, exif=exif.tobytes())
        with quiet_cv2():
            out = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception:
        return False
    if out is None:
        return False
    if out.ndim == 3:
        out = out[..., 0]
    oriented = _orient(base, orientation)
    if oriented.shape != base.shape:
        return out.shape == oriented.shape
    if out.shape != base.shape:
        return False
    err_raw = np.abs(out.astype(np.int32) - base).sum()
    err_oriented = np.abs(out.astype(np.int32) - oriented).sum()
    return bool(err_oriented < err_raw)


def _tiff_photometric(pil: Image.Image) -> int | None:
    """A TIFF's PhotometricInterpretation: 0 WhiteIsZero, 1 BlackIsZero, 2 RGB, 5 CMYK, ..."""
    return getattr(pil, "tag_v2", {}).get(262)


def file_is_gray(pil: Image.Image, fmt: str, data: bytes) -> bool:
    """Does the file store a single luminance channel (with or without alpha)?"""
    if fmt == "PNG" and len(data) > 25:
        return data[25] in (0, 4)  # IHDR colour type; Pillow calls 16-bit gray+alpha "RGBA"
    if fmt == "TIFF" and _tiff_photometric(pil) in (0, 1):  # WhiteIsZero / BlackIsZero
        return True
    return pil.mode in GRAY_MODES
