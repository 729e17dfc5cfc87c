"""Output formats that keep every clip's source range exact, or none.

An EDL, an FCP 7 XML or an AAF stores a clip's source in-point as a whole number
of frames, and the XML and AAF count them from the start of the media file. After
a relink that file is the render, which starts at the rendered range's first
frame; when a clip's rate differs from its media's (a 24 fps camera file in a 25 fps
sequence), that frame need not fall on the clip's frame grid, and the writer
rounds the in-point by a fraction of a frame, silently.

Two defences:

* :func:`grid_aligned_start` moves a render's first frame back (at most a second of
  media) to a frame where every clip using it lands on its own frame grid, so the
  in-points stay whole numbers;
* :func:`check_written` reads each written file back and compares every clip's
  source range, in frames at the clip's rate, with the timeline that was written.
  :func:`uav_otio.api.write_timeline` removes a file that fails and reports
  ``refused: <format> cannot keep source ranges exact: <clip> in-point moved by X
  frames``; the ``.otio`` is always written.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import opentimelineio as otio

# the planner's clip names, so a refusal names clips as the plan does
from .ranges import clip_label

__all__ = [
    "FRAME_TOLERANCE",
    "RangeChange",
    "check_written",
    "compare_source_ranges",
    "grid_aligned_start",
    "read_back",
]

#: differences below this many frames are float noise, not a moved in-point
FRAME_TOLERANCE = 1e-3


def _on_grid(value: float) -> bool:
    return abs(value - round(value)) < FRAME_TOLERANCE


def grid_aligned_start(
    start: int,
    available_start: int,
    media_rate: float,
    clip_starts: Iterable[otio.opentime.RationalTime],
    limit: int | None = None,
) -> int:
    """The latest media frame at or before ``start`` from which every clip source start
    in ``clip_starts`` lies a whole number of that clip's frames away.

    Args:
        start: the render's first media frame (a frame number at ``media_rate``).
        available_start: the media's first frame; the result never goes below it.
        media_rate: the media's frame rate.
        clip_starts: the source start of each clip the render serves, at each
            clip's own rate.
        limit: how many frames the start may move back (default: one second of media).

    Returns:
        ``start`` when it is already aligned, when every clip runs at the media's
        rate, or when no frame within ``limit`` aligns (the format check then refuses
        formats that would round).
    """
    starts = [t for t in clip_starts if abs(t.rate - media_rate) > 1e-9]
    if not starts:
        return start
    if limit is None:
        limit = int(math.ceil(media_rate))
    for back in range(0, min(limit, start - available_start) + 1):
        first = (start - back) / media_rate
        if all(_on_grid((t.to_seconds() - first) * t.rate) for t in starts):
            return start - back
    return start


@dataclass(frozen=True)
class RangeChange:
    """One clip whose source range a format did not keep."""

    clip: str
    what: str  # "in-point moved", "duration changed", "clip count changed: ..."
    frames: float | None = None  # by how many of the clip's frames (None: a count changed)

    def describe(self) -> str:
        if self.frames is None:
            return f"{self.what} (from {self.clip})"
        return f"{self.clip} {self.what} by {self.frames:+.3g} frames"


def _video_tracks(timeline: otio.schema.Timeline, enabled_first_only: bool) -> list[otio.schema.Track]:
    tracks = [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video]
    if enabled_first_only:
        tracks = [t for t in tracks if t.enabled][:1]
    return tracks


def _shown(clip: otio.schema.Clip) -> otio.opentime.TimeRange:
    """The media range a clip shows: with the overlap of its transitions, since
    formats differ in where they put a dissolve's frames (clip or transition)."""
    return clip.visible_range() if isinstance(clip.parent(), otio.schema.Track) else clip.trimmed_range()


def compare_source_ranges(
    written: otio.schema.Timeline, read: otio.schema.Timeline, *, first_track_only: bool = False
) -> list[RangeChange]:
    """Every video clip of ``written`` whose source range ``read`` (the same timeline
    after a trip through a file format) does not keep, in frames at the clip's rate.

    Clips are compared track by track, in order, by the media range they show (their
    source range with the overlap of neighbouring transitions). A different number of
    clips on a track is one change (``clip count changed``). With
    ``first_track_only`` only the first enabled video track of ``written`` counts (an
    EDL holds one).
    """
    changes: list[RangeChange] = []
    ours_tracks = _video_tracks(written, first_track_only)
    theirs_tracks = _video_tracks(read, False)
    if len(ours_tracks) != len(theirs_tracks):
        return [RangeChange(written.name or "timeline",
                            f"video track count changed: {len(ours_tracks)} written, {len(theirs_tracks)} read back")]
    for ours_track, theirs_track in zip(ours_tracks, theirs_tracks):
        ours, theirs = ours_track.find_clips(), theirs_track.find_clips()
        for i, (a, b) in enumerate(zip(ours, theirs)):
            ra, rb = _shown(a), _shown(b)
            rate = ra.start_time.rate
            moved = rb.start_time.value_rescaled_to(rate) - ra.start_time.value
            grown = rb.duration.value_rescaled_to(rate) - ra.duration.value
            if abs(moved) >= FRAME_TOLERANCE:
                changes.append(RangeChange(clip_label(a), "in-point moved", moved))
            elif abs(grown) >= FRAME_TOLERANCE:
                changes.append(RangeChange(clip_label(a), "duration changed", grown))
        if len(ours) != len(theirs):
            i = min(len(ours), len(theirs))
            name = clip_label(ours[i]) if i < len(ours) else f"{ours_track.name or 'track'}/clip {i + 1}"
            changes.append(RangeChange(name, f"clip count changed: {len(ours)} written, {len(theirs)} read back"))
    return changes


def _adapter_for(path: Path) -> str:
    return otio.adapters.from_filepath(str(path)).name


def read_back(path: str | Path, written: otio.schema.Timeline) -> otio.schema.Timeline:
    """Read a file just written from ``written`` with the adapter its suffix names.

    An EDL carries no rate: it is read at the rate its writer used (that of the
    timeline's first track). Adapters' chatter on stdout is swallowed.
    """
    p = Path(path)
    kwargs: dict[str, Any] = {}
    adapter = _adapter_for(p)
    if adapter == "cmx_3600" and len(written.tracks):
        kwargs["rate"] = written.tracks[0].duration().rate
    with contextlib.redirect_stdout(io.StringIO()):
        obj = otio.adapters.read_from_file(str(p), adapter_name=adapter, **kwargs)
    if isinstance(obj, otio.schema.Timeline):
        return obj
    timelines = list(obj.find_children(descended_from_type=otio.schema.Timeline)) if hasattr(
        obj, "find_children") else []
    if len(timelines) != 1:
        raise ValueError(f"{str(p)!r} reads back as {type(obj).__name__}, not one timeline")
    return timelines[0]


def check_written(path: str | Path, written: otio.schema.Timeline, fmt: str | None = None) -> str | None:
    """``None`` when ``path`` keeps every clip's source range of ``written``, else the
    refusal: ``refused: <format> cannot keep source ranges exact: <clip> in-point
    moved by X frames`` (with how many other clips changed).

    Args:
        path: the written file (any name; its suffix picks the adapter).
        written: the timeline exactly as it was handed to the writer.
        fmt: the format's name in the message (default: adapter and suffix).
    """
    p = Path(path)
    adapter = _adapter_for(p)
    fmt = fmt or f"{adapter} ({p.suffix})"
    try:
        back = read_back(p, written)
    except Exception as exc:  # adapters raise anything from OTIOError to AttributeError
        return (f"refused: {fmt} cannot keep source ranges exact: its own reader fails on it "
                f"({type(exc).__name__}: {exc})")
    changes = compare_source_ranges(written, back, first_track_only=adapter == "cmx_3600")
    if not changes:
        return None
    more = f" (and {len(changes) - 1} more clip(s))" if len(changes) > 1 else ""
    return f"refused: {fmt} cannot keep source ranges exact: {changes[0].describe()}{more}"
