"""What is spliced into OpenCV's encodings (i2icli/containers.py), checked where one splice goes
through another: a TIFF's first directory is rewritten once per thing added to it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from i2icli.imageio import Picture, encode_image

XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def camera_exif(byte_order: str) -> bytes:
    exif = Image.Exif()
    exif.endian = byte_order  # OpenCV writes little-endian TIFFs: a big-endian block is turned round
    exif[0x010F] = "Camera maker"  # Make, longer than an entry's four value bytes
    exif.get_ifd(0x8769)[0x9204] = -0.5  # ExposureBiasValue, in the Exif directory below
    return exif.tobytes()


@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_an_rgba_tiff_keeps_its_alpha_tag_exif_and_xmp_through_each_rewrite_of_its_first_directory(depth, byte_order):
    top = np.iinfo(depth).max
    rgb = np.linspace(0, top, 6 * 4 * 3).astype(depth).reshape(6, 4, 3)
    alpha = np.full((6, 4), top // 2, depth)
    picture = Picture(rgb=rgb, alpha=alpha, exif=camera_exif(byte_order), xmp=XMP)

    with Image.open(io.BytesIO(encode_image(picture, ".tif"))) as image:
        assert image.tag_v2.get(338) == (2,)  # the alpha tag, from the first rewrite
        assert image.tag_v2.get(0x010F) == "Camera maker"  # the EXIF merge, from the second
        assert image.getexif().get_ifd(0x8769)[0x9204] == -0.5
        assert b'xmp:Rating="4"' in bytes(image.tag_v2[700])  # the XMP field, from the third
        assert image.mode == "RGBA"
        stored = np.asarray(image)
    if depth == np.uint8:
        assert np.array_equal(stored[..., 3], alpha)
