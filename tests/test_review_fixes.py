"""Defects found in the EXIF carrying, the batch planning on real file systems and the full-disk
stop, each with the case that showed it."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class FakeJob:
    source: Path
    output: Path
    problem: str | None = None


def _count_looks_at_folders_under(monkeypatch, root: Path) -> list[Path]:
    """Every look at a folder (not a file) under ``root`` that the batch planner makes."""
    from i2icli import batch

    looked_at: list[Path] = []
    kind = batch._kind

    def counted(path: Path) -> str:
        if path != root and root in path.parents and path.suffix != ".png":
            looked_at.append(path)
        return kind(path)

    monkeypatch.setattr(batch, "_kind", counted)
    return looked_at


def test_planning_looks_at_each_output_folder_once_not_once_per_output(tmp_path, monkeypatch):
    """Each output's folders were looked up again for each output (a file in the way, from the
    output's folder up to one that exists): 20,000 photos into a new out/a/b/c took 4.3 s to plan
    rather than 2.0 s here, and on a network disk each of those look-ups is a round trip."""
    from i2icli.batch import plan_jobs

    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(30):
        (folder / f"photo{index}.png").write_bytes(b"")
    out = tmp_path / "out"
    looked_at = _count_looks_at_folders_under(monkeypatch, out)
    jobs = plan_jobs([str(folder)], out / "a" / "b", recursive=False)
    assert [job.problem for job in jobs] == [None] * 30
    assert len(looked_at) <= 2 * 3  # out/a/b, out/a and out, looked at by two checks, once each


def test_planning_resolves_the_folder_of_face_files_once_not_once_per_file(tmp_path, monkeypatch):
    """Each file in a cmp/, cropped_faces/ or restored_faces/ folder had the folder above it
    resolved again, to be told from the face files of this run's outputs: a folder of thousands
    of face files was as many walks of the path on the disk."""
    from i2icli.batch import plan_jobs

    folder = tmp_path / "in"
    (folder / "cmp").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"")
    for index in range(30):
        (folder / "cmp" / f"holiday_{index:02d}.png").write_bytes(b"")
    resolved: list[Path] = []
    resolve = Path.resolve

    def counted(path: Path, *args, **kwargs) -> Path:
        if path == folder:
            resolved.append(path)
        return resolve(path, *args, **kwargs)

    monkeypatch.setattr(Path, "resolve", counted)
    jobs = plan_jobs([str(folder)], tmp_path / "out", recursive=True)
    assert len(jobs) == 31
    assert len(resolved) <= 2  # the input folder itself, and the owner of its face files


def test_checking_pair_outputs_looks_at_each_output_folder_once(tmp_path, monkeypatch):
    from i2icli.cli.runner import one_writer_per_file

    out = tmp_path / "out"
    jobs = [FakeJob(tmp_path / f"{index}.png", out / "a" / "b" / f"{index}__t.png") for index in range(30)]
    looked_at = _count_looks_at_folders_under(monkeypatch, out)
    checked, _ = one_writer_per_file(jobs, lambda job: [job.output])
    assert [job.problem for job in checked] == [None] * 30
    assert len(looked_at) <= 2 * 3


def _exif_with_maker_note(order: str) -> bytes:
    """An EXIF block whose maker note, as Canon's, is a directory that points to its values with
    offsets from the TIFF header; its main directory holds an XMP packet (tag 700), which is not
    carried, so that what comes before the maker note gets shorter when the block is rebuilt."""
    from PIL import Image

    model = b"Canon EOS R\x00"
    maker_note = struct.pack(order + "HHHII", 1, 0x0006, 2, len(model), 0) + struct.pack(order + "I", 0) + model
    exif = Image.Exif()
    exif.endian = order
    exif[0x010F], exif[700] = "Canon", b"<x:xmpmeta/>" * 30
    exif[0x8769] = {0x9003: "2001:02:03 04:05:06", 0x927C: maker_note}
    tiff = bytearray(exif.tobytes()[6:])
    maker_note_at = tiff.index(maker_note)
    struct.pack_into(order + "I", tiff, maker_note_at + 2 + 8, maker_note_at + 18)  # where its model is
    return b"Exif\x00\x00" + bytes(tiff)


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_maker_note_s_offsets_still_point_at_its_values(order):
    """The maker note was laid out anew after the fields before it, which moved it: the offsets
    inside it (from the TIFF header, as most cameras write them) then pointed elsewhere, and the
    lens, serial numbers and focus points read as garbage or not at all."""
    from PIL import ExifTags, Image

    from i2icli.exif import exif_block

    block = exif_block(_exif_with_maker_note(order), size=(30, 20))
    exif = Image.Exif()
    exif.load(block)
    maker_note = exif.get_ifd(ExifTags.IFD.Exif)[0x927C]
    (model_at,) = struct.unpack_from(order + "I", maker_note, 2 + 8)
    tiff = block[6:]
    assert tiff[model_at : model_at + 12] == b"Canon EOS R\x00"
    assert exif[0x010F] == "Canon" and 700 not in exif


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_directory_pointer_written_as_a_short_is_followed(order):
    """Some writers give the GPS pointer the type SHORT: in a big-endian block its two bytes were
    read as the top of a LONG, the GPS directory was taken for one outside the block, and the
    position was left out of the output (Pillow and exiftool read it)."""
    from PIL import ExifTags, Image

    from i2icli.exif import exif_block

    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    gps_at = 8 + 2 + 2 * 12 + 4
    main = (struct.pack(order + "H", 2) + struct.pack(order + "HHI", 0x010F, 2, 4) + b"Cam\x00"
            + struct.pack(order + "HHIH", 0x8825, 3, 1, gps_at) + bytes(2) + struct.pack(order + "I", 0))
    gps = struct.pack(order + "H", 1) + struct.pack(order + "HHI", 1, 2, 2) + b"N\x00\x00\x00" + bytes(4)
    block = exif_block(b"Exif\x00\x00" + header + main + gps, size=(30, 20))
    exif = Image.Exif()
    exif.load(block)
    assert exif[0x010F] == "Cam"
    assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {1: "N"}


def test_a_full_disk_does_not_stop_outputs_whose_disk_is_not_known(tmp_path, monkeypatch):
    """Where the disk of the output that found it full could not be told (device_of gives None),
    every later output whose disk could not be told either was taken for one on that full disk,
    and not run."""
    from test_batch_filesystems import run_on_disks

    done, statuses = run_on_disks(monkeypatch, tmp_path, [("a", "full"), ("b", "other")], lambda path: None)
    assert done == ["a.png", "b.png"]
    assert statuses == ["failed", "ok"]


def test_outputs_whose_names_differ_only_in_how_accents_are_encoded_are_refused(tmp_path):
    """café.png typed with "é" as one character and as "e" and an accent are two files here, one
    on macOS: the case check let both through, and there the second output replaced the first."""
    import unicodedata

    from i2icli.batch import plan_jobs

    folder = tmp_path / "in"
    folder.mkdir()
    composed = folder / unicodedata.normalize("NFC", "café.png")
    decomposed = folder / unicodedata.normalize("NFD", "café.png")
    composed.write_bytes(b"")
    decomposed.write_bytes(b"")
    out = tmp_path / "out"
    jobs = plan_jobs([str(folder)], out, recursive=False)
    assert sorted(job.problem is None for job in jobs) == [False, True]
    [refused] = [job for job in jobs if job.problem is not None]
    [other] = [job for job in jobs if job.problem is None]
    assert refused.problem == (
        f"{refused.source}: its output {refused.output} differs from {other.output}, the output of {other.source}, "
        "only in how its accented letters are encoded (as one character or as a letter and an accent), and macOS's "
        "disks take them for one file; rename one of them, or restore them in separate runs into different "
        "--output folders")


def test_pair_outputs_that_differ_only_in_how_accents_are_encoded_are_refused(tmp_path):
    import unicodedata

    from i2icli.cli.runner import one_writer_per_file

    jobs = [FakeJob(tmp_path / "a.png", tmp_path / "out" / unicodedata.normalize(form, "café__t.png"))
            for form in ("NFC", "NFD")]
    checked, written = one_writer_per_file(jobs, lambda job: [job.output])
    assert checked[0].problem is None and written == [jobs[0].output]
    assert checked[1].problem is not None and "only in how its accented letters are encoded" in checked[1].problem


_REGIONS_PACKET = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
 xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#" xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
 xmlns:MP="http://ns.microsoft.com/photo/1.2/" xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
 xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">
<mwg-rs:Regions rdf:parseType="Resource">
 <mwg-rs:AppliedToDimensions stDim:w="20" stDim:h="12" stDim:unit="pixel"/>
 <mwg-rs:RegionList><rdf:Bag>
  <rdf:li><rdf:Description mwg-rs:Name="Ann" mwg-rs:Type="Face">
   <mwg-rs:Area stArea:x="{x}" stArea:y="{y}" stArea:w="{w}" stArea:h="{h}" stArea:unit="normalized"/>
  </rdf:Description></rdf:li>
  <rdf:li><rdf:Description mwg-rs:Name="Bob" mwg-rs:Type="Face">
   <mwg-rs:Area rdf:parseType="Resource"><stArea:x>{x}</stArea:x><stArea:y>{y}</stArea:y><stArea:w>{w}</stArea:w>
    <stArea:h>{h}</stArea:h><stArea:unit>normalized</stArea:unit></mwg-rs:Area>
  </rdf:Description></rdf:li>
 </rdf:Bag></mwg-rs:RegionList>
</mwg-rs:Regions>
<MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions><rdf:Bag>
 <rdf:li MPReg:PersonDisplayName="Ann" MPReg:Rectangle="{left}, {top}, {w}, {h}"/>
</rdf:Bag></MPRI:Regions></MP:RegionInfo>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


def _regions(packet: bytes) -> list[tuple[float, float, float, float]]:
    """Each region of ``packet`` as (left, top, width, height) fractions: MWG's two, then Windows'."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(packet)
    area = "{http://ns.adobe.com/xmp/sType/Area#}"
    found = []
    for element in root.iter("{http://www.metadataworkinggroup.com/schemas/regions/}Area"):
        value = {name: element.get(area + name) or element.findtext(area + name) for name in "xywh"}
        x, y, w, h = (float(value[name]) for name in "xywh")
        found.append((x - w / 2, y - h / 2, w, h))
    for element in root.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li"):
        if rectangle := element.get("{http://ns.microsoft.com/photo/1.2/t/Region#}Rectangle"):
            found.append(tuple(float(part) for part in rectangle.split(",")))
    return found


@pytest.mark.parametrize("orientation", range(1, 9))
def test_face_regions_are_turned_with_the_picture(tmp_path, orientation):
    """Face regions (MWG's, Windows') are drawn on the picture as stored; the output's pixels are
    turned upright and its orientation set to 1, but its regions were kept as they were, so that
    photo managers put each name on the wrong part of a turned photo. Here a region drawn round a
    white block of the stored picture, turned by xmp_packet as read_image turns the pixels, still
    holds that block, and only it."""
    import numpy as np
    from PIL import Image

    from i2icli.imageio import read_image
    from i2icli.xmp import xmp_packet

    stored = np.full((12, 20, 3), 40, np.uint8)
    stored[3:6, 2:6] = 255  # left 0.1, top 0.25, width 0.2, height 0.25
    left, top, w, h = 0.1, 0.25, 0.2, 0.25
    packet = _REGIONS_PACKET.format(x=left + w / 2, y=top + h / 2, w=w, h=h, left=left, top=top).encode()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    upright = read_image(path).rgb
    height, width = upright.shape[:2]
    turned = xmp_packet(packet, size=(width, height), turned=orientation)
    for left, top, w, h in _regions(turned):
        box = upright[round(top * height) : round((top + h) * height), round(left * width) : round((left + w) * width)]
        assert box.size and (box == 255).all()
        assert (upright == 255).all(axis=2).sum() == box.shape[0] * box.shape[1]
    assert len(_regions(turned)) == 3


@pytest.mark.parametrize("field", ["strength", "threshold", "min_face_size"])
def test_restore_settings_refuse_a_bool_where_they_take_a_number(field):
    """RestoreSettings(threshold=False) was taken as a threshold of 0 (every detection a face), and
    strength=True as 1: whole numbers and flags refused a bool, these numbers did not."""
    from i2icli import RestoreSettings

    with pytest.raises(ValueError, match=f"^{field} must be "):
        RestoreSettings(**{field: True})


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_turned_photo_s_face_regions_are_turned_in_its_output(tmp_path, orientation):
    """The same as above, through the files: a JPEG stored turned, with its face region, read and
    written as PNG (as restore writes it) keeps the region on the face of the upright output."""
    import numpy as np
    from PIL import Image

    from i2icli.imageio import read_image, write_image

    stored = np.full((12, 20, 3), 40, np.uint8)
    stored[3:6, 2:6] = 255
    left, top, w, h = 0.1, 0.25, 0.2, 0.25
    packet = _REGIONS_PACKET.format(x=left + w / 2, y=top + h / 2, w=w, h=h, left=left, top=top).encode()
    exif = Image.Exif()
    exif[0x0112] = orientation
    source = tmp_path / "photo.png"
    Image.fromarray(stored).save(source, exif=exif.tobytes(), pnginfo=_xmp_chunk(packet))
    picture = read_image(source)
    assert picture.xmp
    written = write_image(tmp_path / "out.png", picture)
    with Image.open(written) as output:
        upright = np.asarray(output.convert("RGB"))
        packet_out = output.info["XML:com.adobe.xmp"].encode()
    height, width = upright.shape[:2]
    regions = _regions(packet_out)
    assert len(regions) == 3
    for left, top, w, h in regions:
        box = upright[round(top * height) : round((top + h) * height), round(left * width) : round((left + w) * width)]
        assert box.size and (box == 255).all()


def _xmp_chunk(packet: bytes):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet.decode())
    return info
