"""Used ranges: the media frames a clip really shows, through trims, transitions,
nested stacks and time warps, computed in time linear in the size of the edit.

Split from :mod:`uav_otio.plan`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import opentimelineio as otio

from .media import MediaSource, _media_source, _Skip

_EPS = 1e-6
T = TypeVar("T")

# --------------------------------------------------------------------------- #
# used ranges
# --------------------------------------------------------------------------- #


def _time_scalar(item: otio.core.Item) -> float:
    """The product of the item's time warps (1 without any)."""
    s = 1.0
    for fx in item.effects:
        if isinstance(fx, otio.schema.LinearTimeWarp):
            s *= float(fx.time_scalar)
        elif isinstance(fx, otio.schema.TimeEffect):
            raise _Skip(f"unsupported time effect {fx.effect_name or type(fx).__name__}")
    return s


def _visible(item: otio.core.Item) -> otio.opentime.TimeRange:
    parent = item.parent()
    if isinstance(parent, otio.schema.Track):
        return item.visible_range()  # includes the overlap of neighbouring transitions
    return item.trimmed_range()


def _record_offset_track(item: otio.core.Item) -> bool:
    """A track whose negative start is a clock offset, not a trim.

    The cmx_3600 adapter stores an EDL's first record timecode as a negative track
    start (OpenTimelineIO issues #346 and #1385); taken literally it would hide
    every clip, and OTIO's own ``trimmed_range_in_parent`` fails on it.
    """
    return (
        isinstance(item, otio.schema.Track)
        and item.source_range is not None
        and item.source_range.start_time.value < 0
    )


def _trim_start(item: otio.core.Item) -> float:
    if _record_offset_track(item):
        return 0.0
    return item.trimmed_range().start_time.to_seconds()


def _window(item: otio.core.Item) -> tuple[float, float]:
    """The item's visible range in its own time, in seconds."""
    vis = _visible(item)
    offset = 0.0
    if _record_offset_track(item):
        offset = -item.trimmed_range().start_time.to_seconds()
    return vis.start_time.to_seconds() + offset, vis.end_time_exclusive().to_seconds() + offset


class _Ranges:
    """Per-plan memo of what tracks and stacks answer about their children.

    A track's ``trimmed_range`` and ``range_of_child`` walk all its children, so asking
    them once per clip made planning quadratic (4 minutes for 10,000 clips); here each
    container is asked once, and every clip looks its answer up.
    """

    def __init__(self) -> None:
        self._keep: list[Any] = []  # holds the containers so their ids stay theirs
        self._trim: dict[int, float] = {}
        self._window: dict[int, tuple[float, float]] = {}
        self._children: dict[int, dict[Any, otio.opentime.TimeRange]] = {}
        self._index: dict[int, dict[int, int]] = {}
        self._scalar: dict[int, float] = {}
        self._enabled: dict[int, bool] = {}
        self._media: dict[tuple[str, str], MediaSource | _Skip] = {}

    def _ask(self, table: dict[int, T], parent: Any, answer: Callable[[Any], T]) -> T:
        """``answer(parent)``, computed once per container and kept in ``table``."""
        k = id(parent)
        if k not in table:
            self._keep.append(parent)
            table[k] = answer(parent)
        return table[k]

    def trim_start(self, parent: otio.core.Item) -> float:
        return self._ask(self._trim, parent, _trim_start)

    def window(self, parent: otio.core.Item) -> tuple[float, float]:
        return self._ask(self._window, parent, _window)

    def time_scalar(self, parent: otio.core.Item) -> float:
        return self._ask(self._scalar, parent, _time_scalar)

    def enabled(self, parent: otio.core.Item) -> bool:
        return self._ask(self._enabled, parent, _enabled)

    def media(self, ref: Any, base_dir: Path | None, probe: bool) -> MediaSource:
        """:func:`_media_source`, asked once per distinct file reference (a long edit
        cuts the same media hundreds of times)."""
        if not isinstance(ref, otio.schema.ExternalReference):
            return _media_source(ref, base_dir, probe)
        key = (ref.target_url, str(ref.available_range))
        if key not in self._media:
            try:
                self._media[key] = _media_source(ref, base_dir, probe)
            except _Skip as skip:
                self._media[key] = skip
        found = self._media[key]
        if isinstance(found, _Skip):
            raise _Skip(str(found))
        return found

    def index_of(self, parent: Any, child: otio.core.Item) -> int:
        indices = self._ask(self._index, parent, lambda p: {id(c): i for i, c in enumerate(p)})
        return indices.get(id(child), 0)

    def start_of(self, parent: Any, child: otio.core.Item) -> float:
        children = self._ask(self._children, parent, lambda p: dict(p.range_of_all_children()))
        return children[child].start_time.to_seconds()


def _snap(x: float) -> float:
    """A frame position within 1/100 frame of a whole frame is that frame.

    Rates written in different precisions (23.976 vs 24000/1001, 29.97 vs 30000/1001)
    put frame boundaries a hair apart; without this a 232-frame clip plans 233."""
    r = round(x)
    return float(r) if abs(x - r) < 1e-2 else x


def _used_media_frames(clip: otio.schema.Clip, rate: float, ranges: _Ranges) -> tuple[int, int]:
    """``[start, end)`` media frames the cut samples from the clip's media."""
    lo, hi = _window(clip)
    # current interval is in the coordinates of ``item``'s parent chain; m, c map
    # clip presentation time x to those coordinates as m * x + c
    m, c = 1.0, 0.0
    item: otio.core.Item = clip
    while item.parent() is not None:
        parent = item.parent()
        own_trim = _trim_start(item) if item is clip else ranges.trim_start(item)
        shift = ranges.start_of(parent, item) - own_trim
        lo, hi, c = lo + shift, hi + shift, c + shift
        s = ranges.time_scalar(parent)
        if s <= 0:
            raise _Skip(f"reverse or freeze time warp on the enclosing {type(parent).__name__} {parent.name!r}")
        S = ranges.trim_start(parent)
        pa, pb = ranges.window(parent)
        a, b = S + s * (pa - S), S + s * (pb - S)
        lo, hi = max(lo, a), min(hi, b)
        if hi - lo <= _EPS:
            raise _Skip(f"not visible: trimmed away by the enclosing {type(parent).__name__} {parent.name!r}")
        lo, hi = S + (lo - S) / s, S + (hi - S) / s
        m, c = m / s, S + (c - S) / s
        item = parent
    p0, p1 = (lo - c) / m, (hi - c) / m  # back in clip presentation time

    first = math.floor(_snap(p0 * rate))
    last = math.ceil(_snap(p1 * rate)) - 1
    if last < first:
        raise _Skip("clip has zero duration")
    s = _time_scalar(clip)
    if s == 1.0:
        return first, last + 1
    # Presentation frame k shows media frame S + s * (k - S): take the extremes.
    S = clip.trimmed_range().start_time.value_rescaled_to(rate)
    ends = [S + s * (first - S), S + s * (last - S)]
    return math.floor(_snap(min(ends))), math.floor(_snap(max(ends))) + 1


def enclosing_track(item: otio.core.Item) -> otio.schema.Track | None:
    """The nearest track above ``item`` (through nested stacks), or ``None``."""
    parent = item.parent()
    while parent is not None and not isinstance(parent, otio.schema.Track):
        parent = parent.parent()
    return parent


def clip_label(clip: otio.schema.Clip) -> str:
    """``track/name`` of one clip (the plan's own labels come from :func:`uav_otio.plan._places`,
    which also tells look-alike clips apart)."""
    track = enclosing_track(clip)
    name = clip.name
    if not name:
        idx = clip.parent().index(clip) if clip.parent() is not None else 0
        name = f"item {idx}"
    return f"{track.name or 'track'}/{name}" if track is not None else name


def _track_kind(clip: otio.schema.Clip) -> str | None:
    track = enclosing_track(clip)
    return track.kind if track is not None else None


def _enabled(item: Any) -> bool:
    """Whether the editor has the item on: its own flag, and FCP 7 XML's ``<enabled>FALSE</enabled>``,
    which the fcp_xml adapter keeps only in the item's metadata."""
    if not getattr(item, "enabled", True):
        return False
    metadata = getattr(item, "metadata", None)
    # (an absent key costs OpenTimelineIO's dictionary an exception: empty metadata is skipped)
    fcp = metadata.get("fcp_xml") if metadata is not None and len(metadata) else None
    return not (hasattr(fcp, "get") and str(fcp.get("enabled", "")).upper() == "FALSE")


def _disabled_by(clip: otio.schema.Clip, ranges: _Ranges) -> str | None:
    """Why ``clip`` is off in the edit (itself or a container), or ``None``; ``ranges``
    remembers each container's answer."""
    item: Any = clip
    while item is not None:
        on = _enabled(item) if item is clip else ranges.enabled(item)
        if not on:
            return "clip is disabled" if item is clip else f"enclosing {type(item).__name__} {item.name!r} is disabled"
        item = item.parent()
    return None


