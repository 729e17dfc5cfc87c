"""Probing refuses truncated files, and the timeline planner probes through uav.io."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest
from io_helpers import make_clip

from uav.io import VideoInputError, probe
from uav.io.probing import container_truncation

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("whole")
    return {
        "mp4": make_clip(root / "a.mp4", num_frames=12),
        "mov": make_clip(root / "b.mov", num_frames=12, encoder="prores_ks", pix_fmt="yuv422p10le", audio="pcm_s16le"),
        "faststart": make_clip(root / "c.mp4", num_frames=12, container_options={"movflags": "+faststart"}),
        "mkv": make_clip(root / "a.mkv", num_frames=12),
        "webm": make_clip(root / "b.webm", num_frames=12, encoder="libvpx-vp9", pix_fmt="yuv420p"),
    }


#: the part of each file that its message names as running past the end (faststart: the media
#: data comes last); FFmpeg alone reads a cut Matroska file without a word, the last frames gone
LAST_PART = {"mp4": "its 'moov' box", "mov": "its 'moov' box", "faststart": "its 'mdat' box",
             "mkv": "its Segment", "webm": "its Segment"}
CUTS = [(missing, kind) for missing in (1, 2, 7, 100) for kind in ("mp4", "mov", "faststart")] + [
    (missing, kind) for missing in (1, 7, 100) for kind in ("mkv", "webm")]


def _cut(source: Path, folder: Path, missing: int) -> Path:
    data = source.read_bytes()
    out = folder / f"cut{missing}_{source.name}"
    out.write_bytes(data[:-missing])
    return out


@pytest.mark.parametrize(("missing", "kind"), CUTS)
def test_a_copy_missing_its_last_bytes_is_refused(clips: dict[str, Path], tmp_path: Path, kind: str,
                                                  missing: int) -> None:
    assert probe(clips[kind]).num_frames == 12 and container_truncation(clips[kind]) is None
    cut = _cut(clips[kind], tmp_path, missing)
    with pytest.raises(VideoInputError, match="is truncated") as info:
        probe(cut)
    message = str(info.value)
    assert "\n" not in message and str(cut) in message
    assert f"{LAST_PART[kind]} ends {missing} byte" in message


def test_the_last_byte_names_the_damaged_box(clips: dict[str, Path], tmp_path: Path) -> None:
    cut = _cut(clips["mp4"], tmp_path, 1)
    assert container_truncation(cut) == "is truncated: its 'moov' box ends 1 byte past the end of the file"


def test_other_files_are_left_to_ffmpeg(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").write_bytes(b"hello, not a video at all")
    assert container_truncation(tmp_path / "x.mp4") is None
    with pytest.raises(VideoInputError, match="is not a video FFmpeg can read"):
        probe(tmp_path / "x.mp4")
    mkv = make_clip(tmp_path / "d.mkv", num_frames=3)
    assert container_truncation(mkv) is None


def test_a_live_matroska_file_has_no_size_to_check(tmp_path: Path) -> None:
    # a muxer in live mode leaves the Segment's size "unknown": nothing to compare, so no verdict
    live = make_clip(tmp_path / "live.mkv", num_frames=6, container_options={"live": "1"})
    assert container_truncation(live) is None and probe(live).num_frames == 6
    assert container_truncation(_cut(live, tmp_path, 1)) is None


def test_probe_media_counts_packets_and_keeps_the_exact_rate(tmp_path: Path) -> None:
    from uav_otio.plan import probe_media

    src = make_clip(tmp_path / "ntsc.mov", num_frames=30, fps=Fraction(30000, 1001), timecode="00:01:00;02")
    info = probe_media(src)
    assert (info.fps, info.rate, info.frames) == (Fraction(30000, 1001), 30000 / 1001, 30)
    assert info.start_frame == 1800 and not info.variable_frame_rate
    odd = make_clip(tmp_path / "odd.mov", num_frames=5, fps=Fraction(15), timecode="01:00:00:00")
    assert probe_media(odd).start_frame == 0  # no SMPTE timecode at 15 fps: counted from the first frame
    with pytest.raises(FileNotFoundError):
        probe_media(tmp_path / "missing.mov")


def test_the_plan_skips_truncated_media_with_the_reason(tmp_path: Path) -> None:
    from uav_otio import plan_timeline

    good = F.make_movie(tmp_path / "A001.mov", 30, "01:00:00:00")
    bad = _cut(good, tmp_path, 1)
    tl = otio.schema.Timeline("t")
    track = otio.schema.Track("V1")
    for name, path in (("good", good), ("bad", bad)):
        ref = otio.schema.ExternalReference(target_url=str(path))  # no available range: the plan probes
        track.append(F.clip(name, ref, F.TC_START + 5, 5))
    tl.tracks.append(track)
    plan = plan_timeline(tl, handles=0)
    (job,) = plan.jobs
    assert job.media.path == good.resolve()
    (skipped,) = plan.skipped
    assert "is truncated" in skipped.reason and "moov" in skipped.reason
