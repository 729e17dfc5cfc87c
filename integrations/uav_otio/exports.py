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

MLT (Kdenlive's engine, and so every ``.kdenlive`` project) and GStreamer Editing
Services (``.xges``) place a clip by its position in the media *file*: an in-point
counts from the file's first frame, whatever the file's timecode, and MLT adds the
producer's own in-point to an entry's (measured with ``melt``: a producer with
``in=1`` and an entry with ``in=2`` plays the file's frame 3). Their adapters write
OpenTimelineIO's media times there unchanged, so a render starting at media frame 1
played two frames late in melt. Writers of :data:`FILE_RELATIVE_ADAPTERS` are
therefore handed :func:`file_relative_copy` (every in-point measured from its file's
first frame, every producer starting at 0), and their files are checked the way MLT
reads them.
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
from .edl import edl_rate, prepare_edl
from .ranges import clip_label

__all__ = [
    "FILE_RELATIVE_ADAPTERS",
    "FRAME_TOLERANCE",
    "RangeChange",
    "check_written",
    "compare_source_ranges",
    "file_relative_copy",
    "for_writer",
    "grid_aligned_start",
    "read_back",
]

#: differences below this many frames are float noise, not a moved in-point
FRAME_TOLERANCE = 1e-3

#: adapters whose files place clips by their position in the media file (MLT, GES)
FILE_RELATIVE_ADAPTERS = frozenset({"kdenlive", "xges"})


class UnplaceableClip(ValueError):
    """A clip whose media's first frame is unknown, so a file-relative in-point cannot be written."""


def _media_span(ref: otio.schema.ExternalReference) -> otio.opentime.TimeRange | None:
    """The media times the file holds: the reference's available range, else the file's
    own start timecode and length (probed), else ``None``."""
    if ref.available_range is not None:
        return ref.available_range
    from .media import probe_media, url_to_path  # local: only a reference without a range needs it

    try:
        info = probe_media(url_to_path(ref.target_url))
    except (OSError, ValueError):
        return None
    return otio.opentime.TimeRange(otio.opentime.RationalTime(info.start_frame, info.rate),
                                   otio.opentime.RationalTime(info.frames, info.rate))


def file_relative_copy(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """A copy of ``timeline`` for writers that place clips by file position (MLT, GES):
    each clip keeps only its active reference, its source range counts from its media
    file's first frame and the reference's available range starts at 0 (MLT seeks by
    position in the file and adds a producer's in-point to each entry's).

    Raises:
        UnplaceableClip: a clip on a file whose first frame is unknown (no available
            range, and the file cannot be probed).
    """
    out = timeline.deepcopy()
    default = otio.schema.Clip.DEFAULT_MEDIA_KEY
    for clip in out.find_clips():
        ref = clip.media_reference.clone()
        if isinstance(ref, otio.schema.ExternalReference):
            span = _media_span(ref)
            if span is None:
                raise UnplaceableClip(f"{clip_label(clip)}: the first frame of its media {ref.target_url!r} is unknown "
                                      "(no available range, and the file cannot be probed)")
            shown = clip.trimmed_range()
            rate = shown.start_time.rate
            start = shown.start_time.value - span.start_time.value_rescaled_to(rate)
            clip.source_range = otio.opentime.TimeRange(otio.opentime.RationalTime(start, rate), shown.duration)
            ref.available_range = otio.opentime.TimeRange(otio.opentime.RationalTime(0, span.duration.rate),
                                                          span.duration)
        clip.set_media_references({default: ref}, default)
    return out


def for_writer(timeline: otio.schema.Timeline, adapter: str) -> otio.schema.Timeline:
    """The copy of ``timeline`` the writer ``adapter`` is handed (a copy: some writers edit
    what they write, the EDL writer trims around transitions): the file-position writers
    of :data:`FILE_RELATIVE_ADAPTERS` get :func:`file_relative_copy`; for the others, a
    reference without an available range (EDL media) gets its file's, probed, since
    writers such as FCP 7 XML's cannot place a clip without it."""
    if adapter in FILE_RELATIVE_ADAPTERS:
        return file_relative_copy(timeline)
    out = timeline.deepcopy()
    for clip in out.find_clips():
        ref = clip.media_reference
        if isinstance(ref, otio.schema.ExternalReference) and ref.available_range is None:
            ref.available_range = _media_span(ref)
    return out


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


def _shown(clip: otio.schema.Clip, producer_offset: bool = False) -> otio.opentime.TimeRange:
    """The media range a clip shows: with the overlap of its transitions, since
    formats differ in where they put a dissolve's frames (clip or transition). With
    ``producer_offset`` (MLT), the reference's available start is added, as MLT adds a
    producer's in-point to its entries'."""
    shown = clip.visible_range() if isinstance(clip.parent(), otio.schema.Track) else clip.trimmed_range()
    ref = clip.media_reference
    if producer_offset and getattr(ref, "available_range", None) is not None:
        offset = ref.available_range.start_time.value_rescaled_to(shown.start_time.rate)
        shown = otio.opentime.TimeRange(shown.start_time + otio.opentime.RationalTime(offset, shown.start_time.rate),
                                        shown.duration)
    return shown


def compare_source_ranges(
    written: otio.schema.Timeline, read: otio.schema.Timeline, *, first_track_only: bool = False,
    producer_offset: bool = False,
) -> list[RangeChange]:
    """Every video clip of ``written`` whose source range ``read`` (the same timeline
    after a trip through a file format) does not keep, in frames at the clip's rate.

    Clips are compared track by track, in order, by the media range they show (their
    source range with the overlap of neighbouring transitions). A different number of
    clips on a track is one change (``clip count changed``). With
    ``first_track_only`` only the first enabled video track of ``written`` counts (an
    EDL holds one). With ``producer_offset`` a clip of ``read`` shows its source range
    moved by its reference's available start (MLT's reading, see :func:`_shown`).
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
            ra, rb = _shown(a), _shown(b, producer_offset)
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
    timeline's first track), the way uav reads every EDL (:func:`uav_otio.edl.prepare_edl`:
    the writer's own ``M2`` lines at 29.97 fps carry drop-frame separators its reader
    misses). Adapters' chatter on stdout is swallowed.
    """
    p = Path(path)
    adapter = _adapter_for(p)
    with contextlib.redirect_stdout(io.StringIO()):
        if adapter == "cmx_3600" and len(written.tracks):
            prepared = prepare_edl(p.read_text(), edl_rate(written.tracks[0].duration().rate))
            obj = otio.adapters.read_from_string(prepared.text, adapter, rate=float(prepared.rate))
        else:
            obj = otio.adapters.read_from_file(str(p), adapter_name=adapter)
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
        written: the timeline the file was written from (before :func:`for_writer`).
            A file of :data:`FILE_RELATIVE_ADAPTERS` is compared with its
            :func:`file_relative_copy`, read the way MLT plays it (each entry's in-point
            plus its producer's).
        fmt: the format's name in the message (default: adapter and suffix).
    """
    p = Path(path)
    adapter = _adapter_for(p)
    fmt = fmt or f"{adapter} ({p.suffix})"
    mlt = adapter in FILE_RELATIVE_ADAPTERS
    try:
        expected = file_relative_copy(written) if mlt else written
    except UnplaceableClip as exc:
        return f"refused: {fmt} cannot keep source ranges exact: {exc}"
    try:
        back = read_back(p, written)
    except Exception as exc:  # adapters raise anything from OTIOError to AttributeError
        return (f"refused: {fmt} cannot keep source ranges exact: its own reader fails on it "
                f"({type(exc).__name__}: {exc})")
    changes = compare_source_ranges(expected, back, first_track_only=adapter == "cmx_3600", producer_offset=mlt)
    if not changes:
        return None
    more = f" (and {len(changes) - 1} more clip(s))" if len(changes) > 1 else ""
    return f"refused: {fmt} cannot keep source ranges exact: {changes[0].describe()}{more}"
