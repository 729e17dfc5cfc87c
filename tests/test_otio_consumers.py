"""Every timeline format uav writes, played or read by a consumer that did not write it (issue #23).

uav's own check reads a written file back through the adapter that wrote it, so it
cannot see an adapter that misreads the format it writes. Here the relinked timeline
of a cut that starts renders mid-media (``--handles 1``) is handed to:

* ``melt`` (MLT, Kdenlive's engine; Debian package ``melt``), which renders the
  ``.kdenlive`` project to frames;
* small readers written from each format's definition, not from OpenTimelineIO:
  FCP 7 XML (``<in>`` counts frames from the media file's start), CMX 3600 EDL
  (source timecode against the media file's own start timecode, as an NLE conforms),
  GES ``.xges`` (``inpoint`` is nanoseconds into the file) and OpenTimelineIO JSON
  (source start minus the active reference's available start).

Every frame a consumer shows is decoded and named by its colour (``otio_fixtures``:
red says the source frame, green the media, blue whether it is the render), so a
shift of one frame fails. AAF (pyaaf2 is what its adapter writes with) and FCPXML
have no such consumer here and are checked only by the read-back in ``exports``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from urllib.parse import unquote, urlparse

import av
import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
from uav.cli.app import app  # noqa: E402
from uav_otio.exports import check_written, file_relative_copy  # noqa: E402

RT, TR = otio.opentime.RationalTime, otio.opentime.TimeRange
RATES = [Fraction(25), Fraction(30000, 1001)]

#: the cut: (clip, media, first source frame, frames, rendered); unrendered clips keep their source
CUT = [("SH010", "A", 2, 3, True), ("SH020", "B", 7, 3, True), ("SH030", "B", 3, 2, False),
       ("SH040", "A", 8, 2, False)]


def needs(tool: str) -> str:
    """The tool's path; in CI (``UAV_CI=1``, set by ``.ci/run``, which installs it) a missing
    tool fails the test instead of skipping it."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("UAV_CI"):
            pytest.fail(f"{tool} is not installed, but CI must run this test (.ci/run installs the Debian package)")
        pytest.skip(f"{tool} is not installed (Debian package {tool})")
    return path


def expected_frames() -> list[tuple[str, int, bool]]:
    return [(media, first + k, rendered) for _, media, first, n, rendered in CUT for k in range(n)]


def make_cut(root: Path, rate: Fraction) -> Path:
    """A001 (timecode 01:00:00:00, its range given) and B002 (no timecode, no range: probed,
    as an EDL's media is); the unrendered clips say ``skip`` in their metadata."""
    a = F.make_marked_movie(root / "A001.mov", "A", rate, "01:00:00:00")
    b = F.make_marked_movie(root / "B002.mov", "B", rate)
    r = float(rate)
    tc = otio.opentime.from_timecode("01:00:00:00", r).value
    refs = {"A": lambda: otio.schema.ExternalReference(a.as_uri(), TR(RT(tc, r), RT(F.MARKED_FRAMES, r))),
            "B": lambda: otio.schema.ExternalReference(b.as_uri())}
    offset = {"A": tc, "B": 0}
    tl = otio.schema.Timeline("consumers")
    track = otio.schema.Track("V1")
    tl.tracks.append(track)
    for name, media, first, n, rendered in CUT:
        clip = otio.schema.Clip(name, refs[media](), TR(RT(offset[media] + first, r), RT(n, r)))
        if not rendered:
            clip.metadata["uav"] = {"skip": True}
        track.append(clip)
    path = root / "cut.otio"
    otio.adapters.write_to_file(tl, str(path))
    return path


def upscale(src: Path, out: Path, handles: int = 1) -> None:
    res = CliRunner().invoke(app, ["timeline", "upscale", str(src), "-o", str(out), "--media-dir",
                                   str(src.parent / "renders"), "--renderer", "otio_fixtures:MarkRenderer",
                                   "--handles", str(handles), "-q"])
    assert res.exit_code == 0, res.output
    assert out.is_file(), res.output  # written, not refused


def decode(path: Path) -> list:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def file_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def shown(uses: list[tuple[Path, int, int]]) -> list[tuple[str, int, bool]]:
    """Name every frame of every ``(file, first index, frames)`` a consumer says it shows."""
    out = []
    for path, first, n in uses:
        frames = decode(path)
        assert 0 <= first and first + n <= len(frames), (path, first, n, len(frames))
        out += [F.name_frame(f) for f in frames[first:first + n]]
    return out


# --------------------------------------------------------------------------- #
# melt renders the Kdenlive project
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("handles", [1, 12], ids=["render-starts-mid-media", "render-from-frame-0"])
@pytest.mark.parametrize("rate", RATES, ids=["25", "29.97"])
def test_melt_plays_the_relinked_kdenlive_project(tmp_path, rate, handles):
    melt = needs("melt")
    out = tmp_path / "out" / "cut_uav.kdenlive"
    upscale(make_cut(tmp_path, rate), out, handles)
    movie = tmp_path / "melt.mov"
    n = len(expected_frames())
    # the consumer's rate is the project's: melt's default consumer runs at 25 fps whatever the project says;
    # real_time=0: a consumer that falls behind (a loaded CI machine) would otherwise drop frames
    subprocess.run([melt, "-quiet", str(out), f"out={n - 1}", "-consumer", f"avformat:{movie}", "vcodec=png", "an=1",
                    "real_time=0",
                    "width=64", "height=48", f"frame_rate_num={rate.numerator}", f"frame_rate_den={rate.denominator}"],
                   check=True, capture_output=True, timeout=120)
    played = [F.name_frame(f) for f in decode(movie)]
    assert played == expected_frames()


def test_the_check_reads_a_kdenlive_project_as_mlt_plays_it(tmp_path):
    """What the adapter writes by itself (the media time as the in-point) is refused:
    MLT would play it two frames late. Handed the file-relative copy, it is exact."""
    tl = otio.schema.Timeline("t")
    track = otio.schema.Track("V1")
    tl.tracks.append(track)
    render = otio.schema.ExternalReference((tmp_path / "A_uav.mov").as_uri(), TR(RT(1, 25), RT(10, 25)))
    track.append(otio.schema.Clip("a", render, TR(RT(2, 25), RT(3, 25))))
    path = tmp_path / "cut.kdenlive"
    otio.adapters.write_to_file(tl, str(path))
    assert check_written(path, tl).endswith("V1/a in-point moved by +2 frames")
    otio.adapters.write_to_file(file_relative_copy(tl), str(path))
    assert check_written(path, tl) is None
    clip = file_relative_copy(tl).find_clips()[0]
    assert clip.source_range.start_time.value == 1 and clip.media_reference.available_range.start_time.value == 0


# --------------------------------------------------------------------------- #
# readers written from the formats' definitions
# --------------------------------------------------------------------------- #


def fcp7_uses(path: Path) -> list[tuple[Path, int, int]]:
    """FCP 7 XML: a video clipitem shows frames ``[in, out)`` of its file, counted from
    the file's first frame (a ``<file>`` is described once and referred to by id)."""
    root = ET.parse(path).getroot()
    urls = {f.get("id"): f.findtext("pathurl") for f in root.iter("file") if f.findtext("pathurl")}
    uses = []
    for item in root.find(".//sequence/media/video").iter("clipitem"):
        first, end = int(item.findtext("in")), int(item.findtext("out"))
        uses.append((file_path(urls[item.find("file").get("id")]), first, end - first))
    return uses


_EVENT = re.compile(r"^\d{3,}\s+\S+\s+V\s+C\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s*$")


def file_timecode(path: Path) -> str:
    with av.open(str(path)) as c:
        return c.streams.video[0].metadata.get("timecode") or c.metadata.get("timecode") or "00:00:00:00"


def edl_uses(path: Path, rate: Fraction) -> list[tuple[Path, int, int]]:
    """CMX 3600: an event's source timecodes are located in its file by the file's own
    start timecode, as an NLE conforms an EDL (the file named by ``* FROM CLIP:``)."""
    frames = lambda tc: round(otio.opentime.from_timecode(tc, float(rate)).value)  # noqa: E731
    uses, event = [], None
    for line in path.read_text().splitlines():
        m = _EVENT.match(line.strip())
        if m:
            event = m.groups()
        elif line.startswith("* FROM CLIP:") and event is not None:
            media = Path(line.split(":", 1)[1].strip())
            start = frames(event[0]) - frames(file_timecode(media))
            uses.append((media, start, frames(event[1]) - frames(event[0])))
            event = None
    return uses


def xges_uses(path: Path, rate: Fraction) -> list[tuple[Path, int, int]]:
    """GES: a clip's ``inpoint`` and ``duration`` are nanoseconds into its file."""
    to_frames = lambda ns: round(int(ns) * rate / 10**9)  # noqa: E731
    clips = sorted(ET.parse(path).getroot().iter("clip"), key=lambda c: int(c.get("start")))
    return [(file_path(c.get("asset-id")), to_frames(c.get("inpoint")), to_frames(c.get("duration"))) for c in clips]


def otio_json_uses(path: Path) -> list[tuple[Path, int, int]]:
    """OpenTimelineIO JSON: a clip shows its source range, located in the active
    reference's file by that reference's available start."""
    def frames(t: dict) -> float:
        return t["value"] / t["rate"]

    uses = []
    track = json.loads(path.read_text())["tracks"]["children"][0]
    for clip in track["children"]:
        ref = clip["media_references"][clip["active_media_reference_key"]]
        ar, sr = ref["available_range"], clip["source_range"]
        rate = sr["start_time"]["rate"]
        first = (frames(sr["start_time"]) - frames(ar["start_time"])) * rate if ar else frames(sr["start_time"]) * rate
        uses.append((file_path(ref["target_url"]), round(first), round(sr["duration"]["value"])))
    return uses


@pytest.mark.parametrize("rate", RATES, ids=["25", "29.97"])
def test_every_other_written_format_points_at_the_right_frames(tmp_path, rate):
    """One render, then the same cut written as each format (renders are reused)."""
    src = make_cut(tmp_path, rate)
    readers = {".xml": fcp7_uses, ".edl": lambda p: edl_uses(p, rate), ".xges": lambda p: xges_uses(p, rate),
               ".otio": otio_json_uses}
    for suffix, reader in readers.items():
        out = tmp_path / "out" / f"cut_uav{suffix}"
        upscale(src, out)
        assert shown(reader(out)) == expected_frames(), suffix
