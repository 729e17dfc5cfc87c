"""Output formats keep every clip's source range exact, or are refused
(``uav_otio.exports``), on hand-written FCP 7 XML at 25 fps and 24000/1001."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import read_timeline, upscale_timeline, write_timeline  # noqa: E402
from uav_otio.exports import check_written, compare_source_ranges, grid_aligned_start  # noqa: E402

RT, TR = otio.opentime.RationalTime, otio.opentime.TimeRange
_ADAPTERS = set(otio.adapters.available_adapter_names())
needs_fcp = pytest.mark.skipif("fcp_xml" not in _ADAPTERS, reason="the fcp_xml adapter is not installed")
needs_cmx = pytest.mark.skipif("cmx_3600" not in _ADAPTERS, reason="the cmx_3600 adapter is not installed")

MEDIA_FRAMES = 150


def _rate_xml(rate: Fraction) -> str:
    ntsc = rate.denominator == 1001
    base = rate.numerator // 1000 if ntsc else rate.numerator
    return f"<rate><timebase>{base}</timebase><ntsc>{'TRUE' if ntsc else 'FALSE'}</ntsc></rate>"


def _movie(path: Path, rate: Fraction, timecode: str) -> Path:
    frames = [np.full((F.H, F.W, 3), F.level(i), np.uint8) for i in range(MEDIA_FRAMES)]
    F.write_movie(path, frames, rate, timecode)
    return path


def edit_xml(seq_rate: Fraction, clips: list[tuple[str, Path, Fraction, str, int, int]]) -> str:
    """FCP 7 XML as Premiere writes it: clipitems at the sequence rate, each file at
    its own rate with its own start timecode; ``clips`` holds (name, media, media
    rate, media timecode, in, duration) with in and duration in sequence frames."""
    items, record = [], 0
    for i, (name, media, mrate, tc, in_, dur) in enumerate(clips):
        frame = int(otio.opentime.from_timecode(tc, float(mrate)).value)
        items.append(f"""
          <clipitem id="clipitem-{i + 1}">
            <name>{name}</name>
            <duration>{dur}</duration>
            {_rate_xml(seq_rate)}
            <start>{record}</start><end>{record + dur}</end><in>{in_}</in><out>{in_ + dur}</out>
            <file id="file-{media.stem}">
              <name>{media.name}</name>
              <pathurl>{media.resolve().as_uri()}</pathurl>
              {_rate_xml(mrate)}
              <duration>{MEDIA_FRAMES}</duration>
              <timecode>{_rate_xml(mrate)}<string>{tc}</string><frame>{frame}</frame>
                <displayformat>NDF</displayformat></timecode>
              <media><video/></media>
            </file>
          </clipitem>""")
        record += dur
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE xmeml>
<xmeml version="4">
  <sequence id="seq-1">
    <name>Reel 1</name>
    <duration>{record}</duration>
    {_rate_xml(seq_rate)}
    <media><video><track>{''.join(items)}
    </track></video></media>
  </sequence>
</xmeml>
"""


def _twelve_clips(root: Path, seq_rate: Fraction, other_rate: Fraction | None) -> str:
    """Twelve clips: nine on three files at the sequence rate, and (``other_rate``) three on
    one file at another rate, as in a 25 fps cut using a 24 fps camera's takes."""
    root.mkdir(parents=True, exist_ok=True)
    tc = "10:00:00:00"
    clips = []
    for k, name in enumerate(("A001", "A002", "A003")):
        media = _movie(root / f"{name}.mov", seq_rate, tc)
        clips += [(f"{name}_{j}", media, seq_rate, tc, 30 + 37 * j + k, 11) for j in range(3)]
    rate = other_rate or seq_rate
    media = _movie(root / "B001.mov", rate, tc)
    clips += [(f"B001_{j}", media, rate, tc, 31 + 37 * j, 9) for j in range(3)]
    order = [0, 9, 3, 1, 10, 6, 4, 2, 11, 7, 5, 8]  # cut order mixes the files
    return edit_xml(seq_rate, [clips[i] for i in order])


def _source_frames(tl: otio.schema.Timeline) -> dict[str, tuple[float, float]]:
    out = {}
    for c in tl.find_clips():
        r = c.source_range
        out[c.name] = (r.start_time.value, r.duration.value)
    return out


# --------------------------------------------------------------------------- #
# whole runs
# --------------------------------------------------------------------------- #


@needs_fcp
@pytest.mark.parametrize("rate", [Fraction(25), Fraction(24000, 1001)], ids=["25", "23.976"])
def test_xml_output_keeps_every_in_point_at_one_rate(rate, tmp_path):
    src = tmp_path / "cut.xml"
    src.write_text(_twelve_clips(tmp_path / "media", rate, None))
    result = upscale_timeline(src, tmp_path / "out" / "cut_uav.otio", tmp_path / "renders",
                              renderer=F.SpyRenderer(), handles=5)
    assert sorted(p.name for p in result.written) == ["cut_uav.otio", "cut_uav.xml"]
    assert not any(w.startswith("refused") for w in result.warnings), result.warnings
    back = otio.adapters.read_from_file(str(tmp_path / "out" / "cut_uav.xml"))
    assert _source_frames(back) == _source_frames(read_timeline(src).timeline)
    assert all(c.media_reference.target_url.endswith("_uav.mov") for c in back.find_clips())


@needs_fcp
@pytest.mark.parametrize("seq_rate,other", [(Fraction(25), Fraction(24)), (Fraction(24000, 1001), Fraction(24))],
                         ids=["24-in-25", "24-in-23.976"])
def test_mixed_rate_clips_get_a_grid_aligned_render_or_the_format_is_refused(seq_rate, other, tmp_path):
    src = tmp_path / "cut.xml"
    src.write_text(_twelve_clips(tmp_path / "media", seq_rate, other))
    out = tmp_path / "out" / "cut_uav.otio"
    stale = out.with_suffix(".xml")
    stale.parent.mkdir()
    stale.write_text("an earlier run's XML")
    result = upscale_timeline(src, out, tmp_path / "renders", renderer=F.SpyRenderer(), handles=5)
    b_jobs = [j for j in result.plan.jobs if j.media.path.name == "B001.mov"]
    assert b_jobs
    if seq_rate == 25:
        # a 24 fps render starting on a whole second of media lands every 25 fps in-point on a frame
        for job in b_jobs:
            assert (job.start - job.media.available_start) % 24 == 0
        assert [p.name for p in result.written] == ["cut_uav.otio", "cut_uav.xml"]
        back = otio.adapters.read_from_file(str(stale))
        assert _source_frames(back) == _source_frames(read_timeline(src).timeline)
    else:
        # 24 over 24000/1001 aligns only every 1000 frames: refused, nothing left behind
        (refusal,) = [w for w in result.warnings if w.startswith("refused")]
        assert refusal.startswith("refused: fcp_xml (.xml) cannot keep source ranges exact: ")
        assert "B001_" in refusal and "in-point moved by" in refusal and "frames" in refusal
        assert [p.name for p in result.written] == ["cut_uav.otio"]
        assert not stale.exists()
        assert sorted(p.name for p in out.parent.iterdir()) == ["cut_uav.otio"]  # no partial files either
        relinked = otio.adapters.read_from_file(str(out))
        assert _source_frames(relinked) == _source_frames(read_timeline(src).timeline)


@needs_fcp
def test_an_off_grid_reference_is_refused_at_25_fps(tmp_path):
    """The defect as reported: a relinked file starting between two of the clip's
    frames. The XML writer rounds the in-point; the read-back check catches it."""
    media = _movie(tmp_path / "A001.mov", Fraction(24), "10:00:00:00")
    src = tmp_path / "cut.xml"
    src.write_text(edit_xml(Fraction(25), [("SH010", media, Fraction(24), "10:00:00:00", 40, 10)]))
    tl = read_timeline(src).timeline
    clip = tl.find_clips()[0]
    clip.media_reference.available_range = TR(RT(864000 + 25, 24), RT(20, 24))  # 25 frames in: not on the grid
    written, problems = write_timeline(tl, tmp_path / "o.otio", input_path=src)
    assert written == [tmp_path / "o.otio"]
    (problem,) = problems
    # (40/25 - 25/24) s = 13.958 frames at 25 fps: the writer makes it 14
    assert "SH010 in-point moved by +0.0417 frames" in problem
    assert not (tmp_path / "o.xml").exists()


@needs_cmx
@pytest.mark.parametrize("rate", [25, 24000 / 1001], ids=["25", "23.976"])
def test_edl_output_is_read_back_at_its_own_rate(rate, tmp_path):
    media = tmp_path / "A001.mov"
    tl = otio.schema.Timeline("edl")
    track = otio.schema.Track("V1")
    tl.tracks.append(track)
    ref = otio.schema.ExternalReference(target_url=media.as_uri(), available_range=TR(RT(90000, rate), RT(500, rate)))
    for i in range(4):
        track.append(otio.schema.Clip(name=f"SH0{i}0", media_reference=ref.clone(),
                                      source_range=TR(RT(90000 + 17 * i + 3, rate), RT(12, rate))))
    written, problems = write_timeline(tl, tmp_path / "o.edl")
    assert problems == [] and written == [tmp_path / "o.otio", tmp_path / "o.edl"]


# --------------------------------------------------------------------------- #
# the pieces
# --------------------------------------------------------------------------- #


@needs_fcp
def test_check_written_reports_a_moved_in_point(tmp_path):
    media = _movie(tmp_path / "A001.mov", Fraction(25), "01:00:00:00")
    path = tmp_path / "cut.xml"
    path.write_text(edit_xml(Fraction(25), [("SH010", media, Fraction(25), "01:00:00:00", 40, 10),
                                            ("SH020", media, Fraction(25), "01:00:00:00", 70, 10)]))
    tl = otio.adapters.read_from_file(str(path))
    assert check_written(path, tl) is None
    path.write_text(path.read_text().replace("<in>70</in>", "<in>72</in>"))
    refusal = check_written(path, tl)
    assert refusal.startswith("refused: fcp_xml (.xml) cannot keep source ranges exact: ")
    assert refusal.endswith("SH020 in-point moved by +2 frames")
    path.write_text("<xmeml>")
    assert "its own reader fails on it" in check_written(path, tl)


def test_compare_source_ranges_counts_clips():
    tl = otio.schema.Timeline("t")
    tl.tracks.append(otio.schema.Track("V1"))
    tl.tracks[0].extend([F.clip("a", otio.schema.MissingReference(), 0, 10),
                         F.clip("b", otio.schema.MissingReference(), 10, 10)])
    other = tl.deepcopy()
    assert compare_source_ranges(tl, other) == []
    other.tracks[0][1].source_range = TR(RT(10, 24), RT(11, 24))
    (change,) = compare_source_ranges(tl, other)
    assert change.describe() == "V1/b duration changed by +1 frames"
    del other.tracks[0][1]
    assert "clip count changed: 2 written, 1 read back" in compare_source_ranges(tl, other)[0].describe()


def test_grid_aligned_start():
    tc = 864000  # 10:00:00:00 at 24 fps
    at25 = [RT(900040, 25)]  # 36001.6 s
    # 24 fps media under a 25 fps clip: the render must start a whole second of media from the grid
    start = grid_aligned_start(tc + 30, tc, 24, at25)
    assert start == tc + 24
    in_point = (at25[0].to_seconds() - start / 24) * 25
    assert in_point == pytest.approx(round(in_point), abs=1e-6)
    assert grid_aligned_start(tc + 30, tc + 28, 24, at25) == tc + 30  # the media starts too late: unchanged
    assert grid_aligned_start(tc + 30, tc, 24, [RT(tc + 40, 24)]) == tc + 30  # same rate: nothing to do
    assert grid_aligned_start(5000, 0, 24000 / 1001, [RT(4000, 25)]) == 5000  # no grid within a second
    assert grid_aligned_start(tc + 48, tc, 24, at25) == tc + 48  # already aligned
