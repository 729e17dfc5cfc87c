"""Offline media relinked like a conform: search folders, file names, reel names
and source timecode (``uav_otio.conform``), on timelines written as editors export them."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
from uav.cli.app import app  # noqa: E402
from uav_otio import plan_file, plan_timeline, read_timeline, upscale_timeline  # noqa: E402
from uav_otio.conform import is_foreign_path, media_names, reel_name  # noqa: E402
from uav_otio.plan import url_to_path  # noqa: E402

_ADAPTERS = set(otio.adapters.available_adapter_names())
needs_fcp = pytest.mark.skipif("fcp_xml" not in _ADAPTERS, reason="the fcp_xml adapter is not installed")
needs_cmx = pytest.mark.skipif("cmx_3600" not in _ADAPTERS, reason="the cmx_3600 adapter is not installed")

_RATE = "<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate>"


def _clipitem(name: str, start: int, end: int, in_: int, out: int, file_id: str, file_name: str, url: str,
              reel: str | None = None) -> str:
    reel_xml = f"<reel><name>{reel}</name></reel>" if reel else ""
    return f"""
          <clipitem id="{name}">
            <name>{name}</name>
            <duration>60</duration>
            {_RATE}
            <start>{start}</start><end>{end}</end><in>{in_}</in><out>{out}</out>
            <file id="{file_id}">
              <name>{file_name}</name>
              <pathurl>{url}</pathurl>
              {_RATE}
              <duration>60</duration>
              <timecode>{_RATE}<string>01:00:00:00</string><frame>86400</frame>
                <displayformat>NDF</displayformat>{reel_xml}</timecode>
              <media><video/></media>
            </file>
          </clipitem>"""


def _xml(*clipitems: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE xmeml>
<xmeml version="4">
  <sequence id="seq-1">
    <name>From the editor's machine</name>
    {_RATE}
    <media>
      <video>
        <track>{''.join(clipitems)}
        </track>
      </video>
    </media>
  </sequence>
</xmeml>
"""


def _editor_ref(url: str) -> otio.schema.ExternalReference:
    """A file on the editor's machine, as the timeline names it: 60 frames from 01:00:00:00."""
    return otio.schema.ExternalReference(target_url=url, available_range=F.TR(F.RT(F.TC_START, 24), F.RT(60, 24)))


# --------------------------------------------------------------------------- #
# paths from other machines
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "url",
    ["C:/Users/ed/A001.mov", "C:\\Users\\ed\\A001.mov", "file:///C:/Users/ed/A001.mov",
     "file://localhost/C:/Users/ed/A001.mov", "/Volumes/RAID/A001.mov", "file:///Volumes/RAID/A001.mov",
     "\\\\server\\share\\A001.mov", "file://server/share/A001.mov"],
)
def test_foreign_paths_are_absolute_and_never_joined(url, tmp_path):
    assert is_foreign_path(url)
    p = url_to_path(url, tmp_path)
    assert not str(p).startswith(str(tmp_path))
    assert p.name == "A001.mov"


def test_local_paths_are_not_foreign(tmp_path):
    for url in ("media/A001.mov", "A001.mov", (tmp_path / "A.mov").as_uri(), "/home/ed/A.mov"):
        assert not is_foreign_path(url)


def test_a_drive_path_never_resolves_next_to_the_timeline(tmp_path):
    # a folder literally named "C:" beside the timeline must not be taken for drive C:
    (tmp_path / "C:" / "Users" / "ed").mkdir(parents=True)
    F.make_movie(tmp_path / "C:" / "Users" / "ed" / "A001.mov", 30)
    tl = F.one_track("t", [F.clip("SH010", otio.schema.ExternalReference(target_url="C:/Users/ed/A001.mov"), 0, 10)])
    plan = plan_timeline(tl, base_dir=tmp_path)
    assert plan.jobs == []
    reason = plan.skipped[0].reason
    assert reason.startswith("media file not found") and "--search-path" in reason
    assert len(plan.offline) == 1 and "SH010" in plan.offline[0].label


# --------------------------------------------------------------------------- #
# by file name
# --------------------------------------------------------------------------- #


@pytest.fixture()
def library(tmp_path):
    """Media as it lies on the conform machine: a shoot folder per day."""
    lib = tmp_path / "library"
    (lib / "Day1").mkdir(parents=True)
    (lib / "Day2").mkdir()
    F.make_movie(lib / "Day1" / "A001.mov", 60, "01:00:00:00")
    F.make_movie(lib / "Day2" / "B002.mov", 60)
    return lib


@needs_fcp
def test_fcp_xml_with_windows_and_volumes_paths_relinks_by_file_name(library, tmp_path):
    src = tmp_path / "edit.xml"
    src.write_text(_xml(
        _clipitem("SH010", 0, 20, 10, 30, "f1", "A001.mov", "file://localhost/C:/Users/ed/Project/A001.mov"),
        _clipitem("SH020", 20, 30, 40, 50, "f2", "B002.mov", "file:///Volumes/RAID/shoot/B002.mov"),
    ))
    _, offline = plan_file(src)
    assert offline.jobs == [] and len(offline.offline) == 2
    assert all("another machine" in s.reason for s in offline.offline)

    _, plan = plan_file(src, search_paths=[library])
    assert [{k: v for k, v in r.to_dict().items() if k != "clip"} for r in plan.relinked] == [
        {"from": "file://localhost/C:/Users/ed/Project/A001.mov",
         "to": str((library / "Day1" / "A001.mov").resolve()), "how": "file name"},
        {"from": "file:///Volumes/RAID/shoot/B002.mov",
         "to": str((library / "Day2" / "B002.mov").resolve()), "how": "file name"},
    ]
    assert ["SH010" in plan.relinked[0].clip, "SH020" in plan.relinked[1].clip] == [True, True]
    assert plan.offline == [] and plan.skipped == []
    # the XML's own timecode and range are kept: SH010 is source 01:00:00:10 + 20 frames
    ranges = {u.clip.name: (u.used_start, u.used_end, u.media.path.name) for u in plan.uses}
    assert ranges == {"SH010": (F.TC_START + 10, F.TC_START + 30, "A001.mov"),
                      "SH020": (F.TC_START + 40, F.TC_START + 50, "B002.mov")}


def test_several_files_with_the_name_prefer_the_original_folders(tmp_path):
    lib = tmp_path / "lib"
    for day in ("Day1", "Day2"):
        (lib / day).mkdir(parents=True)
        F.make_movie(lib / day / "A001.mov", 30)
    ref = otio.schema.ExternalReference(target_url="C:\\Users\\ed\\Day2\\A001.mov")
    tl = F.one_track("t", [F.clip("SH010", ref, 0, 10)])
    plan = plan_timeline(tl, search_paths=[lib])
    (r,) = plan.relinked
    assert r.target == (lib / "Day2" / "A001.mov").resolve()
    assert r.how == "file name and folder"
    assert "2 files named A001.mov" in r.note  # the ambiguity is reported
    # the relinked reference is what the clip now carries
    assert tl.find_clips()[0].media_reference.target_url == r.target.as_uri()
    assert tl.find_clips()[0].media_reference.metadata["uav_conform"]["how"] == "file name and folder"


def test_same_name_told_apart_by_timecode_or_left_offline(tmp_path):
    lib = tmp_path / "lib"
    (lib / "cardA").mkdir(parents=True)
    (lib / "cardB").mkdir()
    F.make_movie(lib / "cardA" / "C001.mov", 30, "01:00:00:00")
    F.make_movie(lib / "cardB" / "C001.mov", 30, "02:00:00:00")
    two_h = 2 * F.TC_START
    tl = F.one_track("t", [
        F.clip("late", otio.schema.ExternalReference(target_url="/Volumes/X/C001.mov"), two_h + 3, 10),
        F.clip("nowhere", otio.schema.ExternalReference(target_url="/Volumes/X/C001.mov"), 500, 10),
    ])
    plan = plan_timeline(tl, search_paths=[lib])
    assert [(r.how, r.target.parent.name) for r in plan.relinked] == [("file name and timecode", "cardB")]
    assert "late" in plan.relinked[0].clip
    assert len(plan.offline) == 1 and "nowhere" in plan.offline[0].label
    assert "2 files named 'C001.mov'" in plan.offline[0].reason and "narrower --search-path" in plan.offline[0].reason
    assert plan.uses[0].used_start == two_h + 3


def test_existing_media_is_never_relinked(tmp_path, library):
    here = F.make_movie(tmp_path / "A001.mov", 30)
    tl = F.one_track("t", [F.clip("SH010", otio.schema.ExternalReference(target_url="A001.mov"), 0, 10)])
    plan = plan_timeline(tl, base_dir=tmp_path, search_paths=[library])
    assert plan.relinked == []
    assert plan.jobs[0].media.path == here.resolve()


def test_bad_search_path_is_an_error(tmp_path):
    tl = otio.schema.Timeline("t")
    with pytest.raises(ValueError, match="search path .*nope.* is not a folder"):
        plan_timeline(tl, search_paths=[tmp_path / "nope"])


# --------------------------------------------------------------------------- #
# Avid EDLs: SOURCE FILE comments, reel names and timecode
# --------------------------------------------------------------------------- #

AVID_EDL = """TITLE: Avid cut
FCM: NON-DROP FRAME

001  A001C001 V     C        01:00:00:10 01:00:00:20 01:00:00:00 01:00:00:10
* FROM CLIP NAME:  SH010
* SOURCE FILE: A001C001_230101_R1AB

002  A002     V     C        01:00:10:05 01:00:10:15 01:00:00:10 01:00:00:20
* FROM CLIP NAME:  SH020

003  A002     V     C        05:00:00:00 05:00:00:10 01:00:00:20 01:00:01:06
* FROM CLIP NAME:  SH030

004  A003     V     C        01:00:10:05 01:00:10:15 01:00:01:06 01:00:01:16
* FROM CLIP NAME:  SH040
"""


@pytest.fixture()
def card(tmp_path):
    lib = tmp_path / "card"
    lib.mkdir()
    F.make_movie(lib / "A001C001_230101_R1AB.mov", 60, "01:00:00:00")
    F.make_movie(lib / "A002C001_230102.mov", 60, "01:00:00:00")
    F.make_movie(lib / "A002C002_230102.mov", 60, "01:00:10:00")
    # a 23.976 camera: its timecode labels match the EDL's (read at 24 fps) frame for frame
    frames = [np.full((F.H, F.W, 3), F.level(i), np.uint8) for i in range(60)]
    F.write_movie(lib / "A003C001.mov", frames, Fraction(24000, 1001), "01:00:10:00")
    return lib


@needs_cmx
def test_avid_edl_relinks_by_source_file_then_reel_and_timecode(card, tmp_path):
    src = tmp_path / "cut.edl"
    src.write_text(AVID_EDL)
    clips = {c.name: c for c in read_timeline(src).timeline.find_clips()}
    assert media_names(clips["SH010"], clips["SH010"].media_reference) == ["A001C001_230101_R1AB"]
    assert reel_name(clips["SH020"], clips["SH020"].media_reference) == "A002"
    assert isinstance(clips["SH020"].media_reference, otio.schema.MissingReference)

    _, plan = plan_file(src, search_paths=[card])

    how = {next(n for n in clips if n in r.clip): (r.how, r.target.name) for r in plan.relinked}
    assert how == {
        "SH010": ("file name", "A001C001_230101_R1AB.mov"),
        # reel A002 names two files; only the second one's timecode (01:00:10:00 + 60) covers 01:00:10:05
        "SH020": ("reel and timecode", "A002C002_230102.mov"),
        "SH040": ("reel and timecode", "A003C001.mov"),
    }
    used = {u.clip.name: (u.used_start, u.used_end) for u in plan.uses if u.clip.name != "SH040"}
    assert used == {"SH010": (F.TC_START + 10, F.TC_START + 20),
                    "SH020": (F.TC_START + 245, F.TC_START + 255)}
    (off,) = plan.offline
    assert "SH030" in off.label
    assert off.reason.startswith("missing media reference")
    assert "no file of reel 'A002' covers 05:00:00:00-05:00:00:10" in off.reason
    assert "A002C002_230102.mov (01:00:10:00-01:00:12:12)" in off.reason


@needs_cmx
def test_cli_plan_and_upscale_with_search_paths(card, tmp_path):
    src = tmp_path / "cut.edl"
    src.write_text(AVID_EDL)
    res = CliRunner().invoke(app, ["timeline", "plan", str(src), "--json", "--search-path", str(card)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [(r["how"], Path(r["to"]).name) for r in data["relinked"]] == [
        ("file name", "A001C001_230101_R1AB.mov"), ("reel and timecode", "A002C002_230102.mov"),
        ("reel and timecode", "A003C001.mov")]
    assert data["relinked"][0]["from"] == "A001C001_230101_R1AB"
    assert set(data["relinked"][0]) == {"clip", "from", "to", "how"}
    assert len(data["offline"]) == 1 and "SH030" in data["offline"][0]["clip"]

    res = CliRunner().invoke(app, ["timeline", "upscale", str(src), "-o", str(tmp_path / "out.otio"),
                                   "--media-dir", str(tmp_path / "m"), "--renderer", "otio_fixtures:SpyRenderer",
                                   "--search-path", str(card), "--search-path", str(card / "."), "--json",
                                   "--handles", "0"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert len(summary["relinked"]) == 3 and len(summary["offline"]) == 1
    out = otio.adapters.read_from_file(str(tmp_path / "out.otio"))
    originals = {c.name: c.media_references()[otio.schema.Clip.DEFAULT_MEDIA_KEY] for c in out.find_clips()}
    # the written timeline points at the found media (under the default key, beside the upscaled one)
    assert originals["SH020"].target_url == (card / "A002C002_230102.mov").resolve().as_uri()
    assert isinstance(originals["SH030"], otio.schema.MissingReference)


def test_cli_bad_search_path_is_one_line(tmp_path):
    tl = F.simple_cut(F.media_set(tmp_path / "m"))
    path = tmp_path / "cut.otio"
    otio.adapters.write_to_file(tl, str(path))
    for cmd in (["plan", str(path)], ["upscale", str(path), "-o", str(tmp_path / "o.otio"), "--media-dir",
                                      str(tmp_path / "md"), "--renderer", "otio_fixtures:SpyRenderer"]):
        res = CliRunner().invoke(app, ["timeline", *cmd, "--search-path", str(tmp_path / "nope")])
        assert res.exit_code == 2, res.output
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "is not a folder" in lines[0]
        assert "Traceback" not in res.output
    assert not (tmp_path / "o.otio").exists()


def test_upscale_relinks_offline_media_in_the_written_timeline(tmp_path, library):
    ref = _editor_ref("file:///C:/Users/ed/A001.mov")
    src = tmp_path / "cut.otio"
    otio.adapters.write_to_file(F.one_track("t", [F.clip("SH010", ref, F.TC_START + 20, 10)]), str(src))
    spy = F.SpyRenderer()
    result = upscale_timeline(src, tmp_path / "out" / "cut_uav.otio", tmp_path / "media", renderer=spy,
                              search_paths=[library], handles=2)
    assert [(c["start"], c["end"]) for c in spy.calls] == [(F.TC_START + 18, F.TC_START + 32)]
    assert spy.calls[0]["levels"][0] == F.level(18)  # the frames of the found file
    assert [r.how for r in result.plan.relinked] == ["file name"]
    back = otio.adapters.read_from_file(str(tmp_path / "out" / "cut_uav.otio"))
    original = back.find_clips()[0].media_references()[otio.schema.Clip.DEFAULT_MEDIA_KEY]
    assert original.target_url == (library / "Day1" / "A001.mov").resolve().as_uri()
    assert original.available_range == ref.available_range


@pytest.mark.skipif("AAF" not in _ADAPTERS, reason="the AAF adapter is not installed")
def test_aaf_from_a_windows_machine_relinks_by_file_name(library, tmp_path):
    # an AAF as an Avid on Windows leaves it: the locator is the editor's C: drive
    ref = _editor_ref("file:///C:/Users/ed/Day1/A001.mov")
    tl = F.one_track("aaf cut", [F.clip("SH010", ref, F.TC_START + 10, 20)])
    src = tmp_path / "cut.aaf"
    otio.adapters.write_to_file(tl, str(src), use_empty_mob_ids=True)
    _, offline = plan_file(src)
    assert offline.jobs == [] and "another machine" in offline.offline[0].reason
    _, plan = plan_file(src, search_paths=[library])
    (r,) = plan.relinked
    assert (r.source, r.target, r.how) == ("file:///C:/Users/ed/Day1/A001.mov",
                                           (library / "Day1" / "A001.mov").resolve(), "file name")
    assert [(u.used_start, u.used_end) for u in plan.uses] == [(F.TC_START + 10, F.TC_START + 30)]


def test_renders_in_a_searched_media_folder_are_not_source_media(library, tmp_path):
    ref = F.ext_ref(library / "Day1" / "A001.mov", 60, F.TC_START)
    tl = F.one_track("t", [F.clip("SH010", ref, F.TC_START + 5, 20)])
    upscale_timeline(tl, tmp_path / "first.otio", library / "renders", renderer=F.SpyRenderer(), handles=0)
    assert (library / "renders" / "A001_uav.mov").is_file()  # reel A001, timecode 01:00:00:05: it would match

    offline = F.clip("SH010", otio.schema.MissingReference(), F.TC_START + 8, 10)
    offline.metadata["cmx_3600"] = {"reel": "A001"}
    edl_like = F.one_track("t", [offline])
    plan = plan_timeline(edl_like, search_paths=[library])
    found = (library / "Day1" / "A001.mov").resolve()
    assert [(r.how, r.target) for r in plan.relinked] == [("reel and timecode", found)]
