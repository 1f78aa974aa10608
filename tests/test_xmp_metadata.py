"""A photo's XMP packet (what photo managers keep of the user's work: rating, label, keywords,
captions, people tags) in the outputs: kept by `restore`, made true for the new file (upright, its
own size, no thumbnail of the old picture), left out on request and when it cannot be read."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from conftest import restore_without_background
from PIL import Image, ImageCms, PngImagePlugin, TiffImagePlugin
from test_exif_metadata import STORED, _segments, camera_exif

from i2icli.imageio import Picture, encode_image, read_image, write_image
from i2icli.xmp import xmp_packet

NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "mwg-rs": "http://www.metadataworkinggroup.com/schemas/regions/",
    "stArea": "http://ns.adobe.com/xmp/sType/Area#",
    "stDim": "http://ns.adobe.com/xap/1.0/sType/Dimensions#",
    "xmpNote": "http://ns.adobe.com/xmp/note/",
}
THUMBNAIL_MARK = "T2xkIHVucmVzdG9yZWQgdGh1bWJuYWls"  # stands in for the base64 of a small JPEG
ATTRIBUTES = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())

# As Lightroom writes one: simple properties as attributes of the description, the rest (and here
# the pixel sizes, as some tools write them) as elements; the sizes of the file as stored (20 x 12,
# turned a quarter by Orientation 6), and a thumbnail of the unrestored picture.
CATALOGUED = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" {ATTRIBUTES}
    xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/"
    xmp:Rating="4" xmp:Label="Red" tiff:Orientation="6" tiff:ImageWidth="20" tiff:ImageLength="12"
    photoshop:City="Lübeck" xmpNote:HasExtendedXMP="0123456789ABCDEF0123456789ABCDEF">
   <exif:PixelXDimension>20</exif:PixelXDimension>
   <exif:PixelYDimension>12</exif:PixelYDimension>
   <dc:subject><rdf:Bag><rdf:li>Grandma</rdf:li><rdf:li>Lake &amp; boats</rdf:li></rdf:Bag></dc:subject>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">Summer, 1952</rdf:li></rdf:Alt></dc:description>
   <dc:creator><rdf:Seq><rdf:li>Jane Doe</rdf:li></rdf:Seq></dc:creator>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions stDim:w="12" stDim:h="20" stDim:unit="pixel"/>
    <mwg-rs:RegionList><rdf:Bag><rdf:li rdf:parseType="Resource">
     <mwg-rs:Name>Grandma</mwg-rs:Name><mwg-rs:Type>Face</mwg-rs:Type>
     <mwg-rs:Area stArea:x="0.25" stArea:y="0.5" stArea:w="0.1" stArea:h="0.2" stArea:unit="normalized"/>
    </rdf:li></rdf:Bag></mwg-rs:RegionList>
   </mwg-rs:Regions>
   <xmp:Thumbnails><rdf:Alt><rdf:li rdf:parseType="Resource">
    <xmpGImg:width>256</xmpGImg:width><xmpGImg:image>{THUMBNAIL_MARK}</xmpGImg:image>
   </rdf:li></rdf:Alt></xmp:Thumbnails>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>""".encode()


def save(path: Path, pixels: np.ndarray, xmp: bytes, *, compressed: bool = False, **extra) -> Path:
    """``pixels`` saved as ``path`` with the photo's EXIF (Orientation 6) and ``xmp``."""
    if path.suffix == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=compressed)
        extra["pnginfo"] = info
    elif path.suffix == ".tif":  # Pillow writes a TIFF's packet from its fields only
        fields = TiffImagePlugin.ImageFileDirectory_v2()
        fields[700], fields.tagtype[700] = xmp, 1
        extra["tiffinfo"] = fields
    else:
        extra["xmp"] = xmp
    options = {"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {"lossless": True} if path.suffix == ".webp" else {}
    Image.fromarray(pixels).save(path, exif=camera_exif(), **options, **extra)
    return path


def written_xmp(path: Path) -> bytes | None:
    with Image.open(path) as image:
        return image.info.get("xmp")


def assert_kept_and_true(packet: bytes | None, width: int, height: int) -> None:
    """The user's properties are there, and what the packet says of the file is true of this one."""
    assert packet is not None
    root = ElementTree.fromstring(packet)
    description = root.find(".//rdf:Description", NS)
    assert [li.text for li in root.findall(".//dc:subject/rdf:Bag/rdf:li", NS)] == ["Grandma", "Lake & boats"]
    assert root.find(".//dc:description/rdf:Alt/rdf:li", NS).text == "Summer, 1952"
    assert root.find(".//dc:creator/rdf:Seq/rdf:li", NS).text == "Jane Doe"
    attribute = lambda prefix, name: description.get(f"{{{NS[prefix]}}}{name}")  # noqa: E731
    assert (attribute("xmp", "Rating"), attribute("xmp", "Label"), attribute("photoshop", "City")) == ("4", "Red", "Lübeck")
    area = root.find(".//mwg-rs:RegionList//mwg-rs:Area", NS)
    # Drawn on the picture as stored (centre 0.25, 0.5; 0.1 x 0.2), turned a quarter with its pixels.
    assert [area.get(f"{{{NS['stArea']}}}{key}") for key in "xywh"] == ["0.5", "0.25", "0.2", "0.1"]
    assert root.find(".//mwg-rs:Name", NS).text == "Grandma"
    # The regions are fractions of the picture: they hold at the output's size, which they now say.
    drawn_on = root.find(".//mwg-rs:Regions/mwg-rs:AppliedToDimensions", NS)
    assert (drawn_on.get(f"{{{NS['stDim']}}}w"), drawn_on.get(f"{{{NS['stDim']}}}h")) == (str(width), str(height))
    assert attribute("tiff", "Orientation") == "1"  # the pixels are written upright
    assert (attribute("tiff", "ImageWidth"), attribute("tiff", "ImageLength")) == (str(width), str(height))
    assert description.find("exif:PixelXDimension", NS).text == str(width)
    assert description.find("exif:PixelYDimension", NS).text == str(height)
    assert root.find(".//xmp:Thumbnails", NS) is None and THUMBNAIL_MARK.encode() not in packet
    assert attribute("xmpNote", "HasExtendedXMP") is None  # it names the file's Extended XMP, of no output's
    assert b"<dc:subject>" in packet and b"xmp:Rating=" in packet  # other readers see the names they know


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_a_round_trip_keeps_the_user_s_properties_and_makes_the_packet_true(tmp_path, suffix):
    picture = read_image(save(tmp_path / f"in{suffix}", STORED, CATALOGUED))
    assert picture.xmp is not None
    out = write_image(tmp_path / f"out{suffix}", picture)
    assert_kept_and_true(written_xmp(out), 12, 20)
    assert_kept_and_true(read_image(out).xmp, 12, 20)  # and again from i2i's own output
    # The pixels are those written without it.
    bare = encode_image(dataclasses.replace(picture, xmp=None), suffix)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED),
                                  cv2.imdecode(np.frombuffer(bare, np.uint8), cv2.IMREAD_UNCHANGED))
    with Image.open(out) as image, Image.open(io.BytesIO(bare)) as without:
        np.testing.assert_array_equal(np.asarray(image), np.asarray(without))


@pytest.mark.parametrize("source_suffix", [".jpg", ".png", ".webp", ".tif"])
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_each_readable_format_gives_its_packet_to_each_format_written(tmp_path, source_suffix, suffix):
    source = save(tmp_path / f"in{source_suffix}", STORED, CATALOGUED)
    assert_kept_and_true(written_xmp(write_image(tmp_path / f"out{suffix}", read_image(source))), 12, 20)


def test_a_webp_says_it_holds_xmp_and_a_tiff_holds_it_as_bytes(tmp_path):
    picture = read_image(save(tmp_path / "in.png", STORED, CATALOGUED))
    webp = encode_image(picture, ".webp")
    assert webp[12:16] == b"VP8X" and webp[20] & 0x04 and webp[20] & 0x08  # the XMP and EXIF flags
    assert webp.index(b"EXIF") < webp.index(b"XMP ")  # both after the image data, in the format's order
    with Image.open(write_image(tmp_path / "out.tif", picture)) as image:
        assert image.tag_v2.tagtype[700] == 1  # BYTE
        assert image.getexif()[0x010F] == "Canon"  # beside the EXIF fields


def test_a_jpeg_s_segments_come_in_the_standard_order(tmp_path):
    """SOI, JFIF's APP0, the Exif APP1, the XMP APP1, the ICC profile's APP2."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = write_image(tmp_path / "out.jpg", read_image(save(tmp_path / "in.jpg", STORED, CATALOGUED, icc_profile=profile)))
    segments = _segments(out.read_bytes())
    assert segments[0].startswith(b"\xff\xe0JFIF") and segments[1] == b"\xff\xe1Exif\x00\x00"
    assert segments[2] == b"\xff\xe1http:/" and segments[3].startswith(b"\xff\xe2ICC_PR")
    with Image.open(out) as image:
        assert image.info["icc_profile"] == profile and image.getexif()[0x010F] == "Canon"


def test_the_orientation_written_as_an_element_is_made_upright_too():
    packet = CATALOGUED.replace(b' tiff:Orientation="6"', b"").replace(
        b"<dc:subject>", b'<tiff:Orientation rdf:datatype="integer">6</tiff:Orientation>\n   <dc:subject>')
    root = ElementTree.fromstring(xmp_packet(packet, size=(12, 20)))
    orientation = root.find(".//rdf:Description/tiff:Orientation", NS)
    assert orientation.text == "1" and not orientation.attrib


def _png_with_chunk_before_end(png: bytes, kind: bytes, body: bytes) -> bytes:
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:-12] + chunk + png[-12:]


@pytest.mark.parametrize("compressed", [False, True])
def test_a_png_s_packet_after_its_pixels_is_found(tmp_path, compressed):
    """PNG allows the iTXt chunk after the pixel data, where a read of the header alone does not
    reach; compressed or not."""
    buffer = io.BytesIO()
    Image.fromarray(STORED).save(buffer, "PNG", exif=camera_exif())
    text = zlib.compress(CATALOGUED) if compressed else CATALOGUED
    body = b"XML:com.adobe.xmp\x00" + bytes((compressed, 0)) + b"\x00\x00" + text
    source = tmp_path / "late.png"
    source.write_bytes(_png_with_chunk_before_end(buffer.getvalue(), b"iTXt", body))
    assert_kept_and_true(written_xmp(write_image(tmp_path / "out.png", read_image(source))), 12, 20)


def test_a_png_s_compressed_packet_is_read(tmp_path):
    source = save(tmp_path / "in.png", STORED, CATALOGUED, compressed=True)
    assert_kept_and_true(read_image(source).xmp, 12, 20)  # inflated, and made true of the picture read
    assert_kept_and_true(written_xmp(write_image(tmp_path / "out.jpg", read_image(source))), 12, 20)


def test_a_jpeg_s_extended_xmp_that_is_not_the_one_its_digest_names_is_left_behind(tmp_path):
    """The rest of a packet over 64 KB goes in segments of its own, under the MD5 digest of the
    whole: pieces that do not add up to it are not joined to the packet."""
    source = save(tmp_path / "in.jpg", STORED, CATALOGUED)
    jpeg = source.read_bytes()
    extended = b"http://ns.adobe.com/xmp/extension/\x00" + b"0123456789ABCDEF" * 2 + struct.pack(">II", 9, 0) + b"<big/>..."
    xmp_at = jpeg.index(b"http://ns.adobe.com/xap/1.0/") - 4
    at = xmp_at + 2 + struct.unpack(">H", jpeg[xmp_at + 2 : xmp_at + 4])[0]  # right after the main packet
    source.write_bytes(jpeg[:at] + b"\xff\xe1" + struct.pack(">H", len(extended) + 2) + extended + jpeg[at:])
    picture = read_image(source)
    assert_kept_and_true(picture.xmp, 12, 20)  # the main packet alone
    out = write_image(tmp_path / "out.jpg", picture).read_bytes()
    assert b"xmp/extension" not in out
    assert_kept_and_true(written_xmp(tmp_path / "out.jpg"), 12, 20)


@pytest.mark.parametrize("xmp", [
    b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF",  # cut short
    b"not XML at all \xff\xfe",
    # A packet declares no entities: one that does is not passed on.
    b"<!DOCTYPE r [<!ENTITY a 'aaaa'>]><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>&a;</rdf:RDF>",
    b"<html><body>no RDF here</body></html>",
])
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_a_packet_that_cannot_be_read_is_left_out(tmp_path, xmp, suffix):
    picture = read_image(save(tmp_path / "in.jpg", STORED, xmp))
    assert picture.xmp is None  # left out as soon as it is read
    out = write_image(tmp_path / f"out{suffix}", picture)
    assert out.read_bytes() == encode_image(dataclasses.replace(picture, xmp=None), suffix)  # as without any
    with Image.open(out) as image:
        image.load()
        assert image.getexif()[0x010F] == "Canon"  # the EXIF block is still kept


def test_a_picture_without_a_packet_is_written_without_one(tmp_path):
    assert read_image(save(tmp_path / "in.png", STORED, b"")).xmp is None
    for suffix in (".jpg", ".png", ".webp", ".tif"):
        assert written_xmp(write_image(tmp_path / f"out{suffix}", Picture(rgb=STORED))) is None


# --------------------------------------------------------------------------- the command


def test_restore_keeps_the_catalogued_photo_s_packet_true_of_the_output(tiny_env, tmp_path):
    source = save(tmp_path / "catalogued.jpg", STORED, CATALOGUED)
    result = restore_without_background(str(source), "-o", str(tmp_path / "restored.webp"), "--upscale", "2")
    assert result.exit_code == 0, result.output
    assert_kept_and_true(written_xmp(tmp_path / "restored.webp"), 24, 40)


def test_strip_metadata_leaves_out_the_packet_but_keeps_the_colour_profile(tiny_env, tmp_path):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = save(tmp_path / "holiday.jpg", STORED, CATALOGUED, icc_profile=profile)
    result = restore_without_background(str(source), "-o", str(tmp_path / "out"), "--strip-metadata", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 1
    out = tmp_path / "out" / "holiday.jpg"
    with Image.open(out) as image:
        assert "xmp" not in image.info and image.info["icc_profile"] == profile
    assert b"Grandma" not in out.read_bytes() and b"http://ns.adobe.com/xap/1.0/" not in out.read_bytes()
