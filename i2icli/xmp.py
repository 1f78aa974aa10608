"""XMP packets as i2i carries them from a photo into its outputs: what photo managers (Lightroom,
digiKam, darktable, Bridge, Photos) keep of the user's own work (star ratings, colour labels,
keywords, titles and captions, people tags, creator and rights) made true of the output.

Pure bytes in, bytes out (no image decoding), as :mod:`i2icli.exif` is: :mod:`i2icli.image_metadata`
reads a file's packet, and :mod:`i2icli.containers` splices the rebuilt one into the encodings it
writes.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from collections.abc import Iterable
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

# How each format marks its packet: a JPEG APP1 segment's header, a PNG iTXt chunk's keyword.
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
# A JPEG's Extended XMP segments' header: the rest of a packet too large for one segment follows it
# in pieces, each after the digest that names the whole, the whole's length and the piece's offset.
JPEG_EXTENDED_XMP_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
XMP_TAG = 700  # a TIFF's

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XML = "http://www.w3.org/XML/1998/namespace"
_TIFF = "http://ns.adobe.com/tiff/1.0/"
_EXIF = "http://ns.adobe.com/exif/1.0/"
_XMP = "http://ns.adobe.com/xap/1.0/"
_XMP_IMAGE = "http://ns.adobe.com/xap/1.0/g/img/"
_XMP_NOTE = "http://ns.adobe.com/xmp/note/"
_REGIONS = "http://www.metadataworkinggroup.com/schemas/regions/"
_DIMENSIONS = "http://ns.adobe.com/xap/1.0/sType/Dimensions#"

_ORIENTATION = f"{{{_TIFF}}}Orientation"
_WIDTHS = frozenset({f"{{{_TIFF}}}ImageWidth", f"{{{_EXIF}}}PixelXDimension"})
_HEIGHTS = frozenset({f"{{{_TIFF}}}ImageLength", f"{{{_EXIF}}}PixelYDimension"})
_REGIONS_DIMENSIONS = f"{{{_REGIONS}}}AppliedToDimensions"
_REGION_AREA = f"{{{_REGIONS}}}Area"
_AREA = "http://ns.adobe.com/xmp/sType/Area#"
_AREA_X, _AREA_Y, _AREA_W, _AREA_H, _AREA_UNIT = (f"{{{_AREA}}}{name}" for name in ("x", "y", "w", "h", "unit"))
# Windows' people tags: "left, top, width, height" in fractions of the picture.
_WINDOWS_RECTANGLE = "{http://ns.microsoft.com/photo/1.2/t/Region#}Rectangle"
_DESCRIPTION = f"{{{_RDF}}}Description"
# Face regions are drawn on the picture as stored, before the EXIF orientation turns it (viewers
# turn them with it): where a point of it, in fractions of its width and height, lies once the
# picture is turned upright by each orientation; from 5 on, width and height trade places.
_TURNED = {
    1: lambda x, y: (x, y), 2: lambda x, y: (1 - x, y), 3: lambda x, y: (1 - x, 1 - y), 4: lambda x, y: (x, 1 - y),
    5: lambda x, y: (y, x), 6: lambda x, y: (1 - y, x), 7: lambda x, y: (1 - y, 1 - x), 8: lambda x, y: (y, 1 - x),
}
_DIMENSION_WIDTH, _DIMENSION_HEIGHT = f"{{{_DIMENSIONS}}}w", f"{{{_DIMENSIONS}}}h"
# Properties that describe the file's bytes rather than the photo: the thumbnail (the unrestored
# picture), and the pointer to a JPEG's Extended XMP segments, which are joined to the packet when
# it is read (and written anew, where a JPEG output needs them).
_LEFT_OUT = frozenset({f"{{{_XMP}}}Thumbnails", f"{{{_XMP_NOTE}}}HasExtendedXMP"})

# What a file's editing history holds, not the user's work: Photoshop's list of every document
# pasted into it (megabytes, in some), the steps it was saved through, the files it was made from.
_XMP_MM = "http://ns.adobe.com/xap/1.0/mm/"
_HISTORY = frozenset({"{http://ns.adobe.com/photoshop/1.0/}DocumentAncestors", f"{{{_XMP_MM}}}History",
                      f"{{{_XMP_MM}}}Ingredients", f"{{{_XMP_MM}}}Pantry", f"{{{_XMP_MM}}}Manifest"})

# A packet holds no document type: one that declares entities is not metadata to pass on.
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)


def xmp_packet(raw: bytes, *, size: tuple[int, int], turned: int = 1) -> bytes | None:
    """``raw`` (an XMP packet, with or without its ``<?xpacket?>`` wrapper) made true of an output of
    ``size`` (width, height) and laid out again as a UTF-8 packet: orientation upright, pixel sizes
    the output's, no thumbnail; every other property as it was (keywords, rating, label, title,
    description, creator, rights, face regions, which are in fractions of the picture and so hold at
    any scale). ``turned``: the EXIF orientation (1 to 8) the output's pixels were turned upright by,
    which the face regions (MWG's and Windows') are turned by too. None where it does not parse or
    holds no RDF: a packet that cannot be edited is not passed on with untrue sizes in it. A packet
    in UTF-16 or UTF-32, as XMP allows, is read as such. (What fits a JPEG segment is
    :func:`xmp_parts`'s to say.)"""
    made_true = _made_true(raw, size, turned)
    if made_true is None:
        return None
    root, prefixes = made_true
    return _wrapped(_serialized(root, prefixes))


def xmp_parts(raw: bytes, *, size: tuple[int, int], most_bytes: int | None = None) -> tuple[bytes, bytes] | None:
    """``raw`` made true of an output of ``size`` as :func:`xmp_packet` makes it, as a packet of at
    most ``most_bytes`` (a JPEG segment's room) and the Extended XMP that holds the rest (b""
    where none is needed). A packet too long goes without the editing history first; what is still
    too long is split as XMP gives: its largest properties move to the Extended XMP, a whole XMP
    serialization named in the packet by its MD5 digest (xmpNote:HasExtendedXMP). None where it
    does not parse."""
    made_true = _made_true(raw, size, 1)
    if made_true is None:
        return None
    root, prefixes = made_true
    packet = _wrapped(_serialized(root, prefixes))
    if most_bytes is None:
        return packet, b""
    if len(packet) > most_bytes:
        _drop_history(root)
        packet = _wrapped(_serialized(root, prefixes))
    if len(packet) <= most_bytes:
        return packet, b""
    return _split(root, prefixes, len(packet), most_bytes)


def _split(root: ElementTree.Element, prefixes: dict[str, str], length: int,
           most_bytes: int) -> tuple[bytes, bytes] | None:
    """``root`` (a packet ``length`` bytes long, laid out) as a packet of at most ``most_bytes`` and
    its Extended XMP: its largest top-level properties moved to the latter until the former fits."""
    rdf = _rdf(root)
    descriptions = rdf.findall(_DESCRIPTION) if rdf is not None else []
    if not descriptions:
        return None
    about, digest_name = f"{{{_RDF}}}about", f"{{{_XMP_NOTE}}}HasExtendedXMP"
    prefixes = {_XMP_NOTE: "xmpNote", **prefixes}
    extended_root = ElementTree.Element(root.tag, dict(root.attrib))
    extended_rdf = extended_root if root is rdf else ElementTree.SubElement(extended_root, rdf.tag)
    moved = ElementTree.SubElement(extended_rdf, _DESCRIPTION, {about: descriptions[0].get(about, "")})
    descriptions[0].set(digest_name, "0" * 32)  # room for the digest, named once the rest is known
    # Each property with the bytes it takes, about: ElementTree's names for namespaces are not the
    # packet's, which the length of the packet laid out again settles.
    properties = [(len(value) + len(name), description, name) for description in descriptions
                  for name, value in description.attrib.items() if name not in (about, digest_name)]
    properties += [(len(ElementTree.tostring(child)), description, child) for description in descriptions
                   for child in description]
    properties.sort(key=lambda entry: entry[0], reverse=True)
    left = length + 60  # and the digest's attribute
    for taken, description, part in properties:
        if isinstance(part, str):
            moved.set(part, description.attrib.pop(part))
        else:
            description.remove(part)
            moved.append(part)
        left -= taken
        if left <= most_bytes and len(_wrapped(_serialized(root, prefixes))) <= most_bytes:
            break
    else:
        return None
    extended = _serialized(extended_root, prefixes).encode()
    descriptions[0].set(digest_name, hashlib.md5(extended).hexdigest().upper())
    packet = _wrapped(_serialized(root, prefixes))
    return (packet, extended) if len(packet) <= most_bytes else None


def _made_true(raw: bytes, size: tuple[int, int], turned: int) -> tuple[ElementTree.Element, dict[str, str]] | None:
    """The root element of ``raw`` made true as :func:`xmp_packet` says, and its namespaces'
    prefixes; None where it does not parse or holds no RDF."""
    raw = _utf8(raw)
    parsed = None if raw is None else _parsed_packet(raw)
    if parsed is None:
        return None
    root, prefixes = parsed
    if _rdf(root) is None:
        return None
    _make_true(root, size)
    if turned in _TURNED and turned != 1:
        _turn_regions(root, turned)
    return root, prefixes


def _drop_history(root: ElementTree.Element) -> None:
    for element in root.iter():
        for child in [child for child in element if child.tag in _HISTORY]:
            element.remove(child)


# The encodings XMP allows a packet besides UTF-8, by how its first character ("<", or the byte
# order mark) is written in each.
_WIDE_ENCODINGS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00\x00\x00", "utf-32-le"),
    (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"), (b"\x00<", "utf-16-be"), (b"<\x00", "utf-16-le"),
)
# An XML declaration's encoding, which the packet no longer is in once it is UTF-8.
_DECLARED_ENCODING = re.compile(r"""^(<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")


def _utf8(raw: bytes) -> bytes | None:
    """``raw`` (an XMP packet) in UTF-8: as it is where it is, and turned into it from UTF-16 or
    UTF-32, known by the byte order mark or by how the packet's first "<" is written. None where it
    does not decode."""
    encoding = next((name for start, name in _WIDE_ENCODINGS if raw.startswith(start)), None)
    if encoding is None:
        return raw
    unit = 4 if "32" in encoding else 2
    try:  # a trailing part of a character (a file's padding) is no character
        text = raw[: len(raw) - len(raw) % unit].decode(encoding)
    except UnicodeDecodeError:
        return None
    return _DECLARED_ENCODING.sub(r"\1\2UTF-8\2", text.lstrip("\ufeff")).encode()


# How a packet names its Extended XMP: xmpNote:HasExtendedXMP, as an attribute or an element.
_EXTENDED_DIGEST = re.compile(rb"""HasExtendedXMP\s*(?:=\s*["']|>\s*)([0-9A-Fa-f]{32})\b""")


def with_extended_xmp(standard: bytes, segments: Iterable[bytes]) -> bytes:
    """``standard`` (a JPEG's XMP packet) with the properties of its Extended XMP joined to it:
    ``segments`` are the bodies of the file's Extended XMP segments (after their header), and those
    named by the packet's digest are put together by their offsets. Where they leave a gap, do not
    add up to the length they give or to the digest, or do not parse, ``standard`` is all there is."""
    standard_utf8 = _utf8(standard) or b""
    found = _EXTENDED_DIGEST.search(standard_utf8)
    if found is None:
        return standard
    digest = found.group(1).upper()
    pieces: dict[int, bytes] = {}
    lengths = set()
    for segment in segments:
        if len(segment) < 40 or segment[:32].upper() != digest:
            continue
        length, offset = struct.unpack_from(">II", segment, 32)
        lengths.add(length)
        pieces.setdefault(offset, segment[40:])
    extended, end = bytearray(), 0
    for offset in sorted(pieces):
        if offset != end:  # a gap, or pieces that overlap: not the whole the digest names
            return standard
        extended += pieces[offset]
        end += len(pieces[offset])
    if lengths != {end} or hashlib.md5(extended).hexdigest().upper().encode() != digest:
        return standard
    return _joined(standard_utf8, bytes(extended)) or standard


def _joined(standard: bytes, extended: bytes) -> bytes | None:
    """The packet ``standard`` (in UTF-8) with the descriptions of ``extended`` (a whole XMP
    serialization, as Extended XMP is) added to its RDF; None where either does not parse."""
    parsed, extended_parsed = _parsed_packet(standard), _parsed_packet(extended)
    if parsed is None or extended_parsed is None:
        return None
    (root, prefixes), (extended_root, extended_prefixes) = parsed, extended_parsed
    rdf, extended_rdf = _rdf(root), _rdf(extended_root)
    if rdf is None or extended_rdf is None:
        return None
    rdf.extend(extended_rdf.findall(_DESCRIPTION))
    return _wrapped(_serialized(root, {**extended_prefixes, **prefixes}))


def _rdf(root: ElementTree.Element) -> ElementTree.Element | None:
    return root if root.tag == f"{{{_RDF}}}RDF" else root.find(f".//{{{_RDF}}}RDF")


def _wrapped(body: str) -> bytes:
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n' + body + '\n<?xpacket end="w"?>').encode()


def _parsed_packet(raw: bytes) -> tuple[ElementTree.Element, dict[str, str]] | None:
    """:func:`_parsed` of ``raw`` (a packet in UTF-8) without the padding after it; None where it is
    empty, declares a document type or does not parse."""
    raw = raw.rstrip(b"\x00 \t\r\n")
    if not raw or _DOCTYPE.search(raw):
        return None
    try:
        return _parsed(raw)
    except (ElementTree.ParseError, ValueError, LookupError):
        return None


def _parsed(raw: bytes) -> tuple[ElementTree.Element, dict[str, str]]:
    """The packet's root element, and the prefix it gives each namespace (the first one, where it
    gives several), so that the rebuilt packet reads as the original did: ``dc:subject``, not
    ``ns3:subject``."""
    prefixes: dict[str, str] = {}
    events = ElementTree.iterparse(io.BytesIO(raw), events=("start-ns",))
    for _event, (prefix, uri) in events:
        if prefix and uri not in prefixes:
            prefixes[uri] = prefix
    return events.root, prefixes


def _make_true(root: ElementTree.Element, size: tuple[int, int]) -> None:
    """Orientation, sizes and thumbnail of ``root``'s properties, in either form XMP writes a simple
    property (an attribute of its ``rdf:Description``, or an element of its own), as the output has
    them; and the size face regions say they were drawn on, as their fractions of it still hold."""
    width, height = size
    values = {_ORIENTATION: "1", **dict.fromkeys(_WIDTHS, str(width)), **dict.fromkeys(_HEIGHTS, str(height))}
    for element in root.iter():
        _set_properties(element, values)
    for dimensions in root.iter(_REGIONS_DIMENSIONS):
        for element in dimensions.iter():
            _set_properties(element, {_DIMENSION_WIDTH: str(width), _DIMENSION_HEIGHT: str(height)})


def _turn_regions(root: ElementTree.Element, orientation: int) -> None:
    """The face regions of ``root`` turned as the picture was by ``orientation``: MWG's areas
    (centre, width and height, in fractions) and Windows' rectangles (corner, width and height).
    A region in pixels, or one that does not read as numbers, is left as it is."""
    turned, swapped = _TURNED[orientation], orientation >= 5
    for area in root.iter(_REGION_AREA):
        fields = _struct_fields(area)
        unit = fields.get(_AREA_UNIT)
        if unit is not None and _field_value(unit) != "normalized":
            continue
        try:
            x, y, width, height = (float(_field_value(fields[name])) for name in (_AREA_X, _AREA_Y, _AREA_W, _AREA_H))
        except (KeyError, ValueError):
            continue
        x, y = turned(x, y)
        width, height = (height, width) if swapped else (width, height)
        for name, value in ((_AREA_X, x), (_AREA_Y, y), (_AREA_W, width), (_AREA_H, height)):
            _set_field_value(fields[name], _number(value))
    for element in root.iter():
        for field in [(element, name) for name in element.attrib if name == _WINDOWS_RECTANGLE] + [
                (child, None) for child in element if child.tag == _WINDOWS_RECTANGLE]:
            try:
                left, top, width, height = (float(part) for part in _field_value(field).split(","))
            except ValueError:
                continue
            x, y = turned(left + width / 2, top + height / 2)
            width, height = (height, width) if swapped else (width, height)
            _set_field_value(field, ", ".join(_number(value) for value in (x - width / 2, y - height / 2, width, height)))


def _struct_fields(element: ElementTree.Element) -> dict[str, tuple[ElementTree.Element, str | None]]:
    """The fields of an XMP struct, in any of the forms XMP writes one (attributes of its element or
    of an ``rdf:Description`` in it, or elements of their own): by name, the element that holds
    each and the attribute it is (None: the element's text)."""
    fields: dict[str, tuple[ElementTree.Element, str | None]] = {}
    for holder in [element, *element.findall(_DESCRIPTION)]:
        fields.update((name, (holder, name)) for name in holder.attrib)
        fields.update((child.tag, (child, None)) for child in holder if child.tag != _DESCRIPTION)
    return fields


def _field_value(field: tuple[ElementTree.Element, str | None]) -> str:
    holder, attribute = field
    return (holder.text or "" if attribute is None else holder.attrib[attribute]).strip()


def _set_field_value(field: tuple[ElementTree.Element, str | None], value: str) -> None:
    holder, attribute = field
    if attribute is None:
        holder.text = value
    else:
        holder.attrib[attribute] = value


def _number(value: float) -> str:
    """A fraction as XMP writes one: no float noise (1 - 0.3 is 0.7, not 0.7000000000000001)."""
    return f"{round(value, 9):.9g}"


def _set_properties(element: ElementTree.Element, values: dict[str, str]) -> None:
    """``element``'s properties named in ``values`` given those values, and the ones left out
    removed."""
    for name in [name for name in element.attrib if name in _LEFT_OUT or name.startswith(f"{{{_XMP_IMAGE}}}")]:
        del element.attrib[name]
    for name in element.attrib.keys() & values.keys():
        element.attrib[name] = values[name]
    for child in list(element):
        if child.tag in _LEFT_OUT or child.tag.startswith(f"{{{_XMP_IMAGE}}}"):
            element.remove(child)
        elif child.tag in values:
            tail = child.tail
            child.clear()  # its text, and any attributes (rdf:datatype, say) of the old value
            child.text, child.tail = values[child.tag], tail


def _serialized(root: ElementTree.Element, prefixes: dict[str, str]) -> str:
    """``root`` as XML text, every namespace declared once on the root element under the prefix
    the packet gave it (ElementTree's own writer would name the ones it does not know ns0, ns1...,
    or take names registered for the whole process)."""
    declared: dict[str, str] = {}

    def name(qualified: str) -> str:
        if not qualified.startswith("{"):
            return qualified
        uri, local = qualified[1:].split("}", 1)
        if uri == _XML:
            return f"xml:{local}"
        if uri not in declared:
            wanted = prefixes.get(uri) or "ns"
            prefix, number = wanted, 0
            while prefix in declared.values() or prefix.lower().startswith("xml"):
                number += 1
                prefix = f"{wanted}{number}"
            declared[uri] = prefix
        return f"{declared[uri]}:{local}"

    def written(element: ElementTree.Element) -> str:
        tag = name(element.tag)
        attributes = "".join(f" {name(key)}={quoteattr(value)}" for key, value in element.attrib.items())
        inside = escape(element.text or "", {"\r": "&#13;"}) + "".join(written(child) for child in element)
        closing = f">{inside}</{tag}>" if inside else "/>"
        return f"<{tag}{attributes}{closing}" + escape(element.tail or "", {"\r": "&#13;"})

    body = written(root)
    declarations = "".join(f" xmlns:{prefix}={quoteattr(uri)}" for uri, prefix in declared.items())
    root_tag = name(root.tag)
    return f"<{root_tag}{declarations}" + body[len(root_tag) + 1 :]
