"""ICC colour profiles made from the colour description of a HEIF or AVIF file (its ``nclx``
box).

A phone's HEIC says what colour space its pixels are in by code points (ITU-T H.273: primaries,
transfer, matrix), most often Display P3, and carries no ICC profile. PNG, JPEG and WebP outputs
can only say it with a profile: without one, viewers take the pixels for sRGB and a P3 photo comes
out dull. :func:`nclx_icc_profile` writes the matching matrix/TRC profile (ICC v4).

Pure numbers in, bytes out: no decoding, no Picture.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

__all__ = ["HDR_TRANSFERS", "nclx_icc_profile", "rgb_icc_profile"]

# H.273 transfer characteristics of HDR pictures: no ICC matrix/TRC profile describes them.
HDR_TRANSFERS = {16: "PQ", 18: "HLG"}
# H.273 colour primaries wider than sRGB's, as (name, red, green, blue and white x, y). sRGB's
# own (1) and "unspecified" (2) need no profile: viewers assume sRGB already.
_PRIMARIES = {
    9: ("BT.2020", ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), (0.3127, 0.3290))),
    11: ("DCI-P3", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.314, 0.351))),
    12: ("Display P3", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.3127, 0.3290))),
}
# H.273 transfer -> ICC parametric curve (type 3: Y = (aX + b)^g for X >= d, else cX), as
# (g, a, b, c, d). sRGB's curve stands for "unspecified" too, as viewers read such files so.
_SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
_BT709_CURVE = (1 / 0.45, 1 / 1.099, 0.099 / 1.099, 1 / 4.5, 0.081)
_CURVES = {2: _SRGB_CURVE, 13: _SRGB_CURVE, 1: _BT709_CURVE, 6: _BT709_CURVE, 14: _BT709_CURVE, 15: _BT709_CURVE}

_D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])


def nclx_icc_profile(nclx: dict) -> bytes | None:
    """The ICC profile that says what ``nclx`` says (its ``color_primaries`` and
    ``transfer_characteristics`` code points, as pillow-heif's ``info["nclx_profile"]`` names
    them), or None where none is needed (sRGB) or none can say it (an HDR transfer, an unusual
    curve or gamut)."""
    primaries, curve = _PRIMARIES.get(nclx.get("color_primaries")), _CURVES.get(nclx.get("transfer_characteristics"))
    if primaries is None or curve is None:
        return None
    name, chromaticities = primaries
    return rgb_icc_profile(list(chromaticities), curve, f"{name} (from the file's nclx colour description)")


def rgb_icc_profile(chromaticities: list[tuple[float, float]], curve: tuple[float, ...], description: str) -> bytes:
    """A display profile (ICC v4.3, matrix/TRC) of the RGB space with these red, green, blue and
    white (x, y) chromaticities and this parametric curve (g, a, b, c, d) on every channel."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in chromaticities])
    primaries, white = xyz[:3].T, xyz[3]
    to_xyz = primaries * np.linalg.solve(primaries, white)  # each colorant scaled so that R=G=B=1 is white
    # The profile connection space is D50: the colorants are adapted to it (Bradford), and the
    # chad tag records how.
    cone_ratio = (_BRADFORD @ _D50) / (_BRADFORD @ white)
    adapt = np.linalg.inv(_BRADFORD) @ np.diag(cone_ratio) @ _BRADFORD
    colorants = adapt @ to_xyz

    tags = [
        (b"desc", _mluc(description)),
        (b"cprt", _mluc("No copyright, use freely")),
        (b"wtpt", _xyz_type(_D50)),
        (b"chad", b"sf32" + bytes(4) + b"".join(_s15f16(v) for v in adapt.flatten())),
        (b"rXYZ", _xyz_type(colorants[:, 0])),
        (b"gXYZ", _xyz_type(colorants[:, 1])),
        (b"bXYZ", _xyz_type(colorants[:, 2])),
    ]
    para = b"para" + bytes(4) + struct.pack(">HH", 3, 0) + b"".join(_s15f16(v) for v in curve)
    table_end = 128 + 4 + 12 * (len(tags) + 3)
    body, entries, offset = b"", [], table_end
    for signature, data in tags:
        entries.append((signature, offset, len(data)))
        padded = data + bytes(-len(data) % 4)
        body += padded
        offset += len(padded)
    entries += [(signature, offset, len(para)) for signature in (b"rTRC", b"gTRC", b"bTRC")]  # one curve, shared
    body += para
    table = struct.pack(">I", len(entries)) + b"".join(struct.pack(">4sII", *entry) for entry in entries)
    size = 128 + len(table) + len(body)
    header = (struct.pack(">I", size) + bytes(4) + bytes((4, 0x30, 0, 0)) + b"mntr" + b"RGB " + b"XYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4)
              + b"".join(_s15f16(v) for v in _D50) + bytes(4 + 16 + 28))
    profile = header + table + body
    # The profile ID: the MD5 of the profile with its flags, rendering intent and ID left zero (so they are).
    return profile[:84] + hashlib.md5(profile).digest() + profile[100:]


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(float(value) * 65536))


def _xyz_type(xyz: np.ndarray) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15f16(v) for v in xyz)


def _mluc(text: str) -> bytes:
    """A multi-localised Unicode text (ICC v4's text type) in US English alone."""
    encoded = text.encode("utf-16-be")
    return b"mluc" + bytes(4) + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(encoded), 28) + encoded
