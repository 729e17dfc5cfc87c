"""Reading and writing other timeline formats: FCP7 XML and CMX 3600 EDL (through
the ``opentimelineio-plugins`` adapters) and ``.otioz`` bundles."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import UPSCALED_KEY, output_paths, plan_file, read_timeline, upscale_timeline  # noqa: E402

_ADAPTERS = set(otio.adapters.available_adapter_names())
needs_fcp = pytest.mark.skipif(
    "fcp_xml" not in _ADAPTERS,
    reason="the fcp_xml adapter is not installed (pip install 'uav[otio]' / opentimelineio-plugins)",
)
needs_cmx = pytest.mark.skipif(
    "cmx_3600" not in _ADAPTERS,
    reason="the cmx_3600 adapter is not installed (pip install 'uav[otio]' / opentimelineio-plugins)",
)

#: an FCP7 XML export in Premiere's form (two video clips, the first with a 01:00:00:00 source
#: timecode, its audio on an audio track) and a CMX 3600 EDL of the same cut; ``{a}`` and ``{b}``
#: stand for the media (see tests/data/README.md)
TEMPLATES = Path(__file__).parent / "data" / "otio_templates"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("otio_adapter_media"))


def _ranges(plan):
    return {u.clip.name: (u.used_start, u.used_end, u.job.start, u.job.end) for u in plan.uses}


@needs_fcp
def test_read_fcp7_xml_plan_and_write_it_back(media, tmp_path):
    src = tmp_path / "edit.xml"
    src.write_text((TEMPLATES / "edit1_fcp7.xml").read_text().format(a=media["a"].as_uri(), b=media["b"].as_uri()))
    _, plan = plan_file(src)
    assert _ranges(plan) == {
        "SH010": (F.TC_START + 10, F.TC_START + 30, F.TC_START, F.TC_START + 42),
        "SH020": (40, 50, 28, 60),
    }
    assert [s.reason for s in plan.skipped] == ["audio track, not video"]

    spy = F.SpyRenderer()
    result = upscale_timeline(src, tmp_path / "out" / "edit_uav.otio", tmp_path / "media", renderer=spy)
    assert sorted(p.name for p in result.written) == ["edit_uav.otio", "edit_uav.xml"]
    back = otio.adapters.read_from_file(str(tmp_path / "out" / "edit_uav.xml"))
    clips = {c.name: c for c in back.find_clips()}
    # the XML writer keeps one reference per clip: the active, upscaled one
    assert clips["SH010"].media_reference.target_url == (tmp_path / "media" / "A001_uav.mov").as_uri()
    assert clips["SH010"].media_reference.available_range == F.TR(F.RT(F.TC_START, 24), F.RT(42, 24))
    assert clips["SH010"].source_range == F.TR(F.RT(F.TC_START + 10, 24), F.RT(20, 24))
    assert clips["SH020"].media_reference.target_url.endswith("/B002_uav.mov")
    assert clips["SH010 audio"].media_reference.target_url == media["a"].as_uri()  # audio is not relinked


@needs_cmx
def test_read_cmx3600_edl_probes_media_and_writes_edl(media, tmp_path):
    src = tmp_path / "edit.edl"
    src.write_text((TEMPLATES / "edit1.edl").read_text().format(a=media["a"], b=media["b"]))
    loaded, plan = plan_file(src)
    assert loaded.timeline.tracks[0].source_range.start_time.value == -F.TC_START  # the adapter's record offset
    # A001's header timecode (01:00:00:00) places the source timecodes in the file
    assert _ranges(plan) == {
        "SH010": (F.TC_START + 10, F.TC_START + 20, F.TC_START, F.TC_START + 32),
        "SH020": (40, 50, 28, 60),
    }
    a_job = next(j for j in plan.jobs if j.media.path.name == "A001.mov")
    assert (a_job.first_index, a_job.end_index) == (0, 32)

    spy = F.SpyRenderer()
    result = upscale_timeline(src, tmp_path / "edit_uav.otio", tmp_path / "media", renderer=spy, handles=2)
    assert [c["levels"][0] for c in spy.calls] == [F.level(8), F.level(38)]
    assert sorted(p.name for p in result.written) == ["edit_uav.edl", "edit_uav.otio"]
    edl = (tmp_path / "edit_uav.edl").read_text()
    assert "A001_uav.mov" in edl and "B002_uav.mov" in edl
    assert "01:00:00:10 01:00:00:20 01:00:00:00 01:00:00:10" in edl  # source and record timecodes unchanged
    out = otio.adapters.read_from_file(str(tmp_path / "edit_uav.otio"))
    assert all(c.active_media_reference_key == UPSCALED_KEY for c in out.find_clips())


def test_otioz_bundle_in_and_out(media, tmp_path):
    bundle = tmp_path / "cut.otioz"
    otio.adapters.write_to_file(F.simple_cut(media), str(bundle))
    loaded = read_timeline(bundle, extract_dir=tmp_path / "x")
    assert (tmp_path / "x" / "media" / "A001.mov").is_file()
    assert loaded.base_dir == (tmp_path / "x").resolve()

    spy = F.SpyRenderer()
    result = upscale_timeline(bundle, tmp_path / "out" / "cut_uav.otio", tmp_path / "media", renderer=spy)
    assert [c["output"] for c in spy.calls] == ["A001_uav.mov", "B002_uav.mov"]
    assert sorted(p.name for p in result.written) == ["cut_uav.otio", "cut_uav.otioz"]
    names = zipfile.ZipFile(tmp_path / "out" / "cut_uav.otioz").namelist()
    assert {"media/A001_uav.mov", "media/B002_uav.mov"} <= set(names)
    # the .otio next to it points at real files, the originals included
    out = otio.adapters.read_from_file(str(tmp_path / "out" / "cut_uav.otio"))
    for c in out.find_clips():
        for ref in c.media_references().values():
            assert Path(otio.url_utils.filepath_from_url(ref.target_url)).is_file()

    again = F.SpyRenderer()
    (tmp_path / "out" / "cut_uav.otioz").unlink()
    upscale_timeline(bundle, tmp_path / "out" / "cut_uav.otio", tmp_path / "media", renderer=again)
    assert again.calls == []


def test_output_paths():
    assert output_paths("o.otio") == [Path("o.otio")]
    assert output_paths("o.otio", "in.otio") == [Path("o.otio")]
    assert output_paths("o.otio", "in.otioz") == [Path("o.otio"), Path("o.otioz")]
    if "cmx_3600" in _ADAPTERS:
        assert output_paths("d/o.edl", "in.xml") == [Path("d/o.otio"), Path("d/o.edl")] + (
            [Path("d/o.xml")] if "fcp_xml" in _ADAPTERS else [])
    with pytest.raises(ValueError, match="no OpenTimelineIO adapter writes '.nope'"):
        output_paths("o.nope")


def test_unreadable_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_timeline(tmp_path / "missing.otio")
    bad = tmp_path / "x.nope"
    bad.write_text("x")
    with pytest.raises(ValueError, match="no OpenTimelineIO adapter reads '.nope'"):
        read_timeline(bad)
    broken = tmp_path / "b.otioz"
    broken.write_text("not a zip")
    with pytest.raises(ValueError, match="not a valid .otioz"):
        read_timeline(broken)


def test_collection_with_several_timelines_needs_a_name(media, tmp_path):
    coll = otio.schema.SerializableCollection(name="bin")
    coll.extend([F.simple_cut(media), F.nested_stack(media)])
    path = tmp_path / "bin.otio"
    otio.adapters.write_to_file(coll, str(path))
    with pytest.raises(ValueError, match=r"holds 2 timelines \['simple cut', 'nested'\]"):
        read_timeline(path)
    assert read_timeline(path, timeline_name="nested").timeline.name == "nested"


def test_formats_not_written_say_what_to_do():
    with pytest.raises(ValueError, match=r"uav does not write '.mlt' timelines \(output 'o.mlt'\): otio-mlt-adapter "
                                         r"writes them.*write '.kdenlive' instead"):
        output_paths("o.mlt")
    with pytest.raises(ValueError, match=r"no OpenTimelineIO adapter writes '.drp' files \(output 'o.drp'\)$"):
        output_paths("o.drp")  # its package only reads
