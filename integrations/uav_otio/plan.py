"""Timeline -> render jobs.

For every enabled video clip (nested stacks included) the plan finds the media
range the cut really uses: the clip's *visible* range (so the overlap of a
transition counts), cut down by the trims of every enclosing composition, and,
under a ``LinearTimeWarp``/``FreezeFrame``, the media frames the warp actually
samples. Handles are added and the result clamped to the media's available range.
Uses of the same media with the same settings whose ranges overlap or touch are
merged into one job, so no frame is rendered twice. Everything that cannot be
rendered (missing media, generators, audio, disabled items, ``skip = true``) is
listed with the reason.

All frame numbers here are *media frames*: ``RationalTime.value`` of the media's
time at the media's rate (for a file whose timecode starts at 01:00:00:00 at 24 fps
the first frame is 86400). ``RenderJob.first_index`` converts to a 0-based index
into the file or image sequence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import unquote, urlparse

import opentimelineio as otio

from .conform import MediaSearch, Relink
from .exports import grid_aligned_start
from .hashing import compute_settings_hash
from .manifest import Manifest, owner_id
from .shots import DEFAULT_SETTINGS, ShotList, resolve_clip_settings

__all__ = [
    "UPSCALED_KEY",
    "ClipUse",
    "MediaSource",
    "Plan",
    "RenderJob",
    "SkippedItem",
    "plan_timeline",
    "probe_media",
    "source_reference",
    "url_to_path",
]

#: the media reference key the rendered media is linked under
UPSCALED_KEY = "uav_upscaled"

#: default handles, in frames, on each side of every used range
DEFAULT_HANDLES = 12

_EPS = 1e-6


# --------------------------------------------------------------------------- #
# media
# --------------------------------------------------------------------------- #


def url_to_path(url: str, base_dir: str | Path | None = None) -> Path:
    """A media reference's ``target_url`` as a local path.

    Accepts ``file://`` URLs (percent-encoded or not, ``localhost`` host),
    plain absolute or relative paths (relative ones are resolved against
    ``base_dir``, normally the timeline file's folder) and Windows drive paths.

    Raises:
        ValueError: the URL has a non-file scheme (``http://`` ...).
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"expected a media URL or path, got {url!r}")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if parsed.netloc and parsed.netloc != "localhost":
            path = f"//{parsed.netloc}{path}"  # UNC share
        if re.match(r"^/[A-Za-z]:[/\\]", path):
            path = path[1:]  # file:///C:/x -> C:/x
        p = Path(path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"expected a local file URL or path, got {url!r} (scheme {parsed.scheme!r})")
    else:
        p = Path(url) if not PureWindowsPath(url).drive else Path(url.replace("\\", "/"))
    if not p.is_absolute() and base_dir is not None and not PureWindowsPath(str(p)).drive:
        # a drive path (C:/...) is absolute on the machine that wrote it, never relative to ours
        p = Path(base_dir) / p
    return p


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe_media` learns about a movie file."""

    rate: float  # ``fps`` as OpenTimelineIO's float rate
    start_frame: int  # the file's start timecode as a frame number at ``rate``
    frames: int  # counted from the video packets, not the header's claim
    width: int
    height: int
    has_audio: bool
    fps: Fraction = Fraction(0)  # the exact rate, from the stream timestamps
    variable_frame_rate: bool = False


def probe_media(path: str | Path) -> ProbeResult:
    """Frame rate, start timecode, frame count and size of a movie file (:func:`uav.io.probe`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file has no video stream, cannot be read or is truncated
            (:class:`uav.io.VideoInputError`, one line naming the file).
    """
    from uav.io import probe  # local: planning a timeline whose media all carry ranges reads no media
    from uav.io.timecode import timecode_rate_supported, timecode_to_frames

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"media file {str(p)!r} does not exist")
    info = probe(p)
    start = 0
    if info.start_timecode and timecode_rate_supported(info.fps):
        try:
            start = timecode_to_frames(info.start_timecode, info.fps)
        except ValueError:
            start = 0  # a label the rate cannot have: count from the first frame, as without timecode
    return ProbeResult(
        rate=float(info.fps),
        start_frame=start,
        frames=info.num_frames,
        width=info.width,
        height=info.height,
        has_audio=info.has_audio,
        fps=info.fps,
        variable_frame_rate=info.variable_frame_rate,
    )


@dataclass(frozen=True)
class MediaSource:
    """The media behind a clip: a movie file or an image sequence."""

    kind: str  # "file" or "image_sequence"
    path: Path  # the file, or the image sequence's folder
    rate: float
    available_start: int  # media frame number of the first frame
    available_end: int  # exclusive
    url: str  # the target URL as written in the timeline
    # image sequences only
    name_prefix: str = ""
    name_suffix: str = ""
    start_number: int = 0
    frame_step: int = 1
    zero_padding: int = 0

    @property
    def identity(self) -> str:
        """A key equal for all references to the same media."""
        if self.kind == "image_sequence":
            return f"{self.path}/{self.name_prefix}#{self.name_suffix}"
        return str(self.path)

    @property
    def stem(self) -> str:
        """The media's name without extension (the sequence prefix for sequences)."""
        if self.kind == "image_sequence":
            stem = self.name_prefix.rstrip("._- ")
            return stem or self.path.name
        return self.path.stem

    @property
    def display(self) -> str:
        if self.kind == "image_sequence":
            pad = "#" * max(self.zero_padding, 1)
            return f"{self.name_prefix}{pad}{self.name_suffix}"
        return self.path.name

    def frame_path(self, index: int) -> Path:
        """The file of image ``index`` (0-based from the first available frame)."""
        if self.kind != "image_sequence":
            raise TypeError(f"frame_path is for image sequences, this media is a {self.kind}")
        number = self.start_number + index * self.frame_step
        digits = str(abs(number)).zfill(self.zero_padding)
        name = f"{self.name_prefix}{'-' if number < 0 else ''}{digits}{self.name_suffix}"
        return self.path / name

    def to_dict(self) -> dict[str, Any]:
        d = {
            "kind": self.kind,
            "path": str(self.path),
            "url": self.url,
            "rate": self.rate,
            "available_start": self.available_start,
            "available_end": self.available_end,
        }
        if self.kind == "image_sequence":
            d.update(
                name_prefix=self.name_prefix,
                name_suffix=self.name_suffix,
                start_number=self.start_number,
                frame_step=self.frame_step,
                zero_padding=self.zero_padding,
            )
        return d


def source_reference(clip: otio.schema.Clip) -> otio.core.MediaReference:
    """The clip's original media: the default-key reference when this timeline was
    already relinked by uav, else the active one."""
    refs = clip.media_references()
    if clip.active_media_reference_key == UPSCALED_KEY and otio.schema.Clip.DEFAULT_MEDIA_KEY in refs:
        return refs[otio.schema.Clip.DEFAULT_MEDIA_KEY]
    return clip.media_reference


def _frames(t: otio.opentime.RationalTime, rate: float) -> float:
    return t.value_rescaled_to(rate)


class _Skip(Exception):
    """Internal: this clip cannot be rendered, for the reason given."""


def _media_source(ref: otio.core.MediaReference, base_dir: Path | None, probe: bool) -> MediaSource:
    if ref is None or isinstance(ref, otio.schema.MissingReference):
        raise _Skip("missing media reference")
    if isinstance(ref, otio.schema.GeneratorReference):
        kind = getattr(ref, "generator_kind", "") or "generator"
        raise _Skip(f"generator ({kind}), no media to upscale")
    if isinstance(ref, otio.schema.ImageSequenceReference):
        try:
            folder = url_to_path(ref.target_url_base or ".", base_dir)
        except ValueError as exc:
            raise _Skip(str(exc)) from None
        ar = ref.available_range
        rate = float(ref.rate or (ar.start_time.rate if ar else 0))
        if rate <= 0:
            raise _Skip("image sequence without a frame rate")
        if ar is not None:
            start = int(round(_frames(ar.start_time, rate)))
            end = start + int(round(_frames(ar.duration, rate)))
        else:
            start, end = 0, ref.number_of_images_in_sequence()
        src = MediaSource(
            kind="image_sequence",
            path=folder,
            rate=rate,
            available_start=start,
            available_end=end,
            url=ref.abstract_target_url("#"),
            name_prefix=ref.name_prefix,
            name_suffix=ref.name_suffix,
            start_number=int(ref.start_frame),
            frame_step=int(ref.frame_step),
            zero_padding=int(ref.frame_zero_padding),
        )
        if probe and not src.frame_path(0).is_file():
            raise _Skip(f"image sequence frames not found (first frame {str(src.frame_path(0))!r})")
        if end <= start:
            raise _Skip("image sequence has no frames in its available range")
        return src
    if isinstance(ref, otio.schema.ExternalReference):
        try:
            path = url_to_path(ref.target_url, base_dir)
        except ValueError as exc:
            raise _Skip(str(exc)) from None
        ar = ref.available_range
        if probe and not path.is_file():
            raise _Skip(f"media file not found: {str(path)!r}")
        if ar is not None:
            rate = float(ar.start_time.rate)
            start = int(round(_frames(ar.start_time, rate)))
            end = start + int(round(_frames(ar.duration, rate)))
        elif probe:
            try:
                info = probe_media(path)
            except (OSError, ValueError) as exc:
                raise _Skip(f"cannot read media: {exc}") from None
            rate, start, end = info.rate, info.start_frame, info.start_frame + info.frames
        else:
            raise _Skip("media reference has no available range and probing is off")
        if end <= start:
            raise _Skip("media has an empty available range")
        return MediaSource("file", path.resolve() if path.exists() else path, rate, start, end, ref.target_url)
    raise _Skip(f"unsupported media reference type {type(ref).__name__}")


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
        self._media: dict[tuple[str, str], MediaSource | _Skip] = {}

    def trim_start(self, parent: otio.core.Item) -> float:
        k = id(parent)
        if k not in self._trim:
            self._keep.append(parent)
            self._trim[k] = _trim_start(parent)
        return self._trim[k]

    def window(self, parent: otio.core.Item) -> tuple[float, float]:
        k = id(parent)
        if k not in self._window:
            self._keep.append(parent)
            self._window[k] = _window(parent)
        return self._window[k]

    def time_scalar(self, parent: otio.core.Item) -> float:
        k = id(parent)
        if k not in self._scalar:
            self._keep.append(parent)
            self._scalar[k] = _time_scalar(parent)
        return self._scalar[k]

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
        k = id(parent)
        if k not in self._index:
            self._keep.append(parent)
            self._index[k] = {id(c): i for i, c in enumerate(parent)}
        return self._index[k].get(id(child), 0)

    def start_of(self, parent: Any, child: otio.core.Item) -> float:
        k = id(parent)
        if k not in self._children:
            self._keep.append(parent)
            self._children[k] = dict(parent.range_of_all_children())
        return self._children[k][child].start_time.to_seconds()


def _snap(x: float) -> float:
    """A frame position within 1/100 frame of a whole frame is that frame.

    Rates written in different precisions (23.976 vs 24000/1001, 29.97 vs 30000/1001)
    put frame boundaries a hair apart; without this a 232-frame clip plans 233."""
    r = round(x)
    return float(r) if abs(x - r) < 1e-2 else x


def _used_media_frames(clip: otio.schema.Clip, rate: float, ranges: _Ranges | None = None) -> tuple[int, int]:
    """``[start, end)`` media frames the cut samples from the clip's media."""
    ranges = ranges or _Ranges()
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


def _track_kind(clip: otio.schema.Clip) -> str | None:
    parent = clip.parent()
    while parent is not None:
        if isinstance(parent, otio.schema.Track):
            return parent.kind
        parent = parent.parent()
    return None


def _disabled_by(clip: otio.schema.Clip) -> str | None:
    item: Any = clip
    while item is not None:
        if not getattr(item, "enabled", True):
            return "clip is disabled" if item is clip else f"enclosing {type(item).__name__} {item.name!r} is disabled"
        item = item.parent()
    return None


# --------------------------------------------------------------------------- #
# plan objects
# --------------------------------------------------------------------------- #


@dataclass
class ClipUse:
    """One clip the cut uses and the job that renders it."""

    clip: otio.schema.Clip
    label: str  # "V1/SH010" style name for messages and tables
    media: MediaSource
    used_start: int  # media frames, before handles
    used_end: int
    settings: dict[str, Any]
    origin: dict[str, str]
    job: RenderJob | None = None
    where: ClipPlace | None = None

    @property
    def used_frames(self) -> int:
        return self.used_end - self.used_start

    def to_dict(self) -> dict[str, Any]:
        return {
            "clip": self.clip.name,
            "label": self.label,
            **(self.where.to_dict() if self.where else {}),
            "media": str(self.media.path) if self.media.kind == "file" else self.media.identity,
            "used_range": _range_dict(self.used_start, self.used_end, self.media.rate),
            "job": self.job.output_name if self.job else None,
        }


@dataclass(frozen=True)
class ClipPlace:
    """Where a clip sits in the edit: what tells clips apart when editors name them alike
    (Avid AAFs name every clip ``TimelineMobSlot/<media>``)."""

    track: str
    index: int  # 0-based position in its track (or stack)
    record_timecode: str | None  # where the clip starts in the edit
    record_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"track": self.track, "index": self.index, "record_timecode": self.record_timecode,
                "record_seconds": self.record_seconds}

    def describe(self) -> str:
        at = self.record_timecode or f"{self.record_seconds:.3f} s"
        return f"{self.track} item {self.index} @ {at}"


@dataclass(frozen=True)
class SkippedItem:
    """A clip (or other item) that will not be rendered, and why."""

    label: str
    reason: str
    media: str = ""
    where: ClipPlace | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"clip": self.label, **(self.where.to_dict() if self.where else {}), "media": self.media,
                "reason": self.reason}


@dataclass
class RenderJob:
    """One media range to render into one output file.

    ``start``/``end`` are media frame numbers (see module docs); ``first_index`` and
    ``end_index`` are the same range as 0-based indices into the file or sequence.
    """

    media: MediaSource
    start: int
    end: int
    settings: dict[str, Any]
    settings_hash: str
    clip_names: tuple[str, ...]
    output_name: str = ""
    output_path: Path | None = None

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def rate(self) -> float:
        return self.media.rate

    @property
    def first_index(self) -> int:
        return self.start - self.media.available_start

    @property
    def end_index(self) -> int:
        return self.end - self.media.available_start

    @property
    def media_range(self) -> otio.opentime.TimeRange:
        """The rendered range in the media's time (the new reference's available range)."""
        r = self.media.rate
        return otio.opentime.TimeRange(
            otio.opentime.RationalTime(self.start, r), otio.opentime.RationalTime(self.frames, r)
        )

    @property
    def timecode(self) -> str | None:
        """Source timecode of the first rendered frame (the output's start timecode);
        ``None`` when SMPTE timecode cannot express the media's rate (then the start
        is carried as a time: :attr:`start_seconds`)."""
        return safe_timecode(self.start, self.media.rate)

    @property
    def start_seconds(self) -> float:
        """The first rendered frame's time in the media, in seconds."""
        return self.start / self.media.rate

    @property
    def fps(self) -> Fraction:
        """The frame rate as an exact fraction (29.97 -> 30000/1001)."""
        return _rate_fraction(self.media.rate)

    @property
    def audio_source(self) -> Path | None:
        """The file whose audio goes into the output (``None`` for image sequences)."""
        return self.media.path if self.media.kind == "file" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output_name,
            "output_path": str(self.output_path) if self.output_path else None,
            "media": self.media.to_dict(),
            "range": _range_dict(self.start, self.end, self.media.rate),
            "first_index": self.first_index,
            "end_index": self.end_index,
            "frames": self.frames,
            "timecode": self.timecode,
            "clips": list(self.clip_names),
            "settings": self.settings,
            "settings_hash": self.settings_hash,
        }


def _rate_fraction(rate: float) -> Fraction:
    for den in (1, 1001):
        num = rate * den
        if abs(num - round(num)) < 1e-3:
            return Fraction(int(round(num)), den)
    return Fraction(rate).limit_denominator(100000)


#: frame rates SMPTE timecode counts in (NTSC rates as their exact values)
_SMPTE_RATES = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48000 / 1001, 48.0, 50.0, 60000 / 1001, 60.0)


def timecode_representable(rate: float) -> bool:
    """Whether SMPTE timecode can count frames at ``rate`` (23.976, 24, 25, 29.97, 30, 48, 50, 59.94, 60)."""
    return any(abs(rate - r) < 1e-3 for r in _SMPTE_RATES)


def safe_timecode(frame: int, rate: float) -> str | None:
    """``HH:MM:SS:FF`` of media frame ``frame`` at ``rate``, or ``None`` where SMPTE
    timecode cannot express the rate (15, 12.5, 277/12 fps ...): timecode must never
    stop a render, so callers carry the time instead."""
    if not timecode_representable(rate):
        return None
    try:
        return otio.opentime.to_timecode(otio.opentime.RationalTime(frame, rate), rate)
    except (ValueError, TypeError):
        return None


def _range_dict(start: int, end: int, rate: float) -> dict[str, Any]:
    return {
        "start": start,
        "end": end,
        "rate": rate,
        "start_timecode": safe_timecode(start, rate),
        "end_timecode": safe_timecode(end, rate),
        "start_seconds": start / rate,
        "end_seconds": end / rate,
    }


def _range_text(start: int, end: int, rate: float) -> str:
    a, b = safe_timecode(start, rate), safe_timecode(end, rate)
    if a is not None and b is not None:
        return f"{a}-{b}"
    return f"{start}-{end} @ {rate:g} fps"


@dataclass
class Plan:
    """What to render for a timeline, which clips use it, and what is skipped."""

    jobs: list[RenderJob] = field(default_factory=list)
    uses: list[ClipUse] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    handles: int = DEFAULT_HANDLES
    media_dir: Path | None = None
    relinked: list[Relink] = field(default_factory=list)  # offline media found under the search paths
    offline: list[SkippedItem] = field(default_factory=list)  # clips whose media is still offline

    @property
    def total_frames(self) -> int:
        return sum(j.frames for j in self.jobs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the plan."""
        return {
            "handles": self.handles,
            "media_dir": str(self.media_dir) if self.media_dir else None,
            "total_frames": self.total_frames,
            "jobs": [j.to_dict() for j in self.jobs],
            "clips": [u.to_dict() for u in self.uses],
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": list(self.warnings),
            "relinked": [r.to_dict() for r in self.relinked],
            "offline": [s.to_dict() for s in self.offline],
        }

    def rows(self) -> list[dict[str, str]]:
        """Table rows: clip, media, range, frames, settings, output (jobs, then skips)."""
        rows = []
        for job in self.jobs:
            rows.append(
                {
                    "clip": ", ".join(job.clip_names),
                    "media": job.media.display,
                    "range": _range_text(job.start, job.end, job.rate),
                    "frames": str(job.frames),
                    "settings": settings_summary(job.settings),
                    "output": job.output_name,
                }
            )
        for s in self.skipped:
            rows.append(
                {"clip": s.label, "media": s.media, "range": "-", "frames": "0", "settings": "-",
                 "output": f"skipped: {s.reason}"}
            )
        return rows


def settings_summary(settings: Mapping[str, Any]) -> str:
    """The settings that differ from the defaults, as ``key=value`` text."""
    parts = []
    for k, v in settings.items():
        if k == "skip" or DEFAULT_SETTINGS.get(k, object()) == v:
            continue
        if isinstance(v, str):
            v = v if len(v) <= 32 else v[:29] + "..."
            parts.append(f"{k}={v!r}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts) or "defaults"


# --------------------------------------------------------------------------- #
# planning
# --------------------------------------------------------------------------- #


def _label(clip: otio.schema.Clip) -> str:
    """``track/name`` of one clip (the plan's own labels come from :func:`_places`,
    which also tells look-alike clips apart)."""
    track = None
    parent = clip.parent()
    while parent is not None and track is None:
        if isinstance(parent, otio.schema.Track):
            track = parent
        parent = parent.parent()
    name = clip.name
    if not name:
        idx = clip.parent().index(clip) if clip.parent() is not None else 0
        name = f"item {idx}"
    return f"{track.name or 'track'}/{name}" if track is not None else name


def _places(timeline: otio.schema.Timeline, clips: list[otio.schema.Clip],
            ranges: _Ranges) -> dict[int, tuple[str, ClipPlace]]:
    """Each clip's label (``V1/SH010``) and place; labels that would name several clips
    gain the place (``V1/SH010 (V1 item 4 @ 01:00:03:00)``) so every message and JSON row
    points at one clip."""
    rate = None
    for clip in clips:
        try:
            rate = clip.trimmed_range().duration.rate
            break
        except Exception:  # a clip without a range; try the next one
            continue
    origin = timeline.global_start_time.to_seconds() if timeline.global_start_time is not None else 0.0
    if timeline.global_start_time is not None:
        rate = timeline.global_start_time.rate
    out: dict[int, tuple[str, ClipPlace]] = {}
    counts: dict[str, int] = {}
    for clip in clips:
        parent = clip.parent()
        track = None
        p = parent
        while p is not None and track is None:
            if isinstance(p, otio.schema.Track):
                track = p
            p = p.parent()
        index = ranges.index_of(parent, clip) if parent is not None else 0
        record = 0.0
        item: Any = clip
        while item.parent() is not None:  # sum starts up to the timeline (nested stacks included)
            record += ranges.start_of(item.parent(), item) - (ranges.trim_start(item.parent())
                                                                if item.parent() is not track else 0.0)
            item = item.parent()
        record += origin
        tc = safe_timecode(int(round(record * rate)), rate) if rate else None
        track_name = (track.name or "track") if track is not None else "stack"
        name = clip.name or f"item {index}"
        label = f"{track_name}/{name}" if track is not None else name
        out[id(clip)] = (label, ClipPlace(track_name, index, tc, record))
        counts[label] = counts.get(label, 0) + 1
    for key, (label, place) in list(out.items()):
        if counts[label] > 1:
            out[key] = (f"{label} ({place.describe()})", place)
    return out


def _ref_display(ref: Any) -> str:
    """A short name for a media reference in tables (the file name)."""
    if isinstance(ref, otio.schema.ImageSequenceReference):
        return ref.abstract_target_url("#").rsplit("/", 1)[-1]
    url = getattr(ref, "target_url", "") or ""
    return unquote(url.replace("\\", "/").rsplit("/", 1)[-1])


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("._") or "clip"


def _assign_outputs(
    jobs: list[RenderJob], media_dir: Path | None, name_by: str, ext: str, owner: str | None = None
) -> None:
    """Name each job's output ``<clip or media stem>_uav<ext>``.

    Names that clash inside the plan (case-insensitively, as on macOS and Windows
    disks) gain the first frame, then a hash of the job. A name already used in
    ``media_dir`` by other content that another timeline relies on, or by a file
    uav did not render, is never reused: that job takes the next form instead, so
    two cuts sharing a media folder cannot overwrite each other's renders. A job
    rendered before keeps the name it was rendered under.
    """
    manifest = Manifest(media_dir) if media_dir is not None and media_dir.is_dir() else None

    def base(job: RenderJob) -> str:
        if name_by == "clip" and len(job.clip_names) == 1 and job.clip_names[0]:
            return _safe_name(job.clip_names[0])
        return _safe_name(job.media.stem)

    def form(job: RenderJob, level: int) -> str:
        b = base(job)
        return (b, f"{b}_{job.start}", f"{b}_{job.start}_{job.settings_hash[:8]}",
                f"{b}_{job.start}_{job.settings_hash}")[level] + f"_uav{ext}"

    def free(job: RenderJob, name: str) -> bool:
        return manifest is None or manifest.free_for(name, job.settings_hash, owner)

    def settle(use_disk: bool, pinned: dict[int, str]) -> dict[int, str]:
        names: dict[int, str] = {}
        for _ in range(8):  # every pass only raises levels, and level 3 names are unique
            names = {id(j): pinned.get(id(j)) or form(j, level[id(j)]) for j in jobs}
            counts: dict[str, int] = {}
            for n in names.values():
                counts[n.lower()] = counts.get(n.lower(), 0) + 1
            changed = False
            for j in jobs:
                n = names[id(j)]
                if (counts[n.lower()] > 1 or (use_disk and not free(j, n))) and level[id(j)] < 3:
                    pinned.pop(id(j), None)
                    level[id(j)] = max(level[id(j)], next((k for k in range(4) if form(j, k) == n), 0)) + 1
                    changed = True
            if not changed:
                break
        return names

    level = {id(j): 0 for j in jobs}
    names = settle(False, {})  # the plan's own clashes first: the same names in any folder
    if manifest is not None:
        pinned = {}
        for j in jobs:
            earlier = manifest.name_for_job(j.settings_hash)
            if earlier is not None:
                k = next((k for k in range(4) if form(j, k) == earlier), -1)
                if k >= level[id(j)]:
                    pinned[id(j)], level[id(j)] = earlier, k
        names = settle(True, pinned)
    for j in jobs:
        j.output_name = names[id(j)]
        j.output_path = (media_dir / j.output_name) if media_dir is not None else None


def plan_timeline(
    timeline: otio.schema.Timeline,
    *,
    handles: int = DEFAULT_HANDLES,
    media_dir: str | Path | None = None,
    shot_list: ShotList | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_dir: str | Path | None = None,
    name_by: str = "media",
    ext: str = ".mov",
    probe: bool = True,
    owner: str | Path | None = None,
    search_paths: Sequence[str | Path] | None = None,
) -> Plan:
    """Plan the renders a timeline needs.

    Args:
        timeline: the edit.
        handles: extra frames rendered on each side of every used range (clamped to
            the media's available range).
        media_dir: where outputs will be written (``None``: names only).
        shot_list: per-shot settings from a TOML file (:func:`uav_otio.shots.load_shot_list`).
        overrides: settings that beat every other layer (the command line).
        base_dir: folder relative media URLs are resolved against (the timeline's folder).
        name_by: ``"media"`` names outputs after the media file, ``"clip"`` after the
            clip when a job serves one clip.
        ext: output file extension, with or without the dot.
        probe: look at the media on disk (existence, and the range of references
            that carry none). Without it, media must declare its available range.
        owner: the output timeline the plan is for. Names already used in
            ``media_dir`` by other content are skipped unless only ``owner`` relies on
            them (see :func:`_assign_outputs`).
        search_paths: folders where offline media is looked for, by file name, then by
            reel name and timecode (see :mod:`uav_otio.conform`). Found media is
            relinked in ``timeline`` itself and listed in ``Plan.relinked``.

    Returns:
        The :class:`Plan`.

    Raises:
        TypeError: ``timeline`` is not an OTIO Timeline.
        ValueError: bad ``handles``, ``name_by`` or ``ext``, or a search path that is
            not a folder.
        ShotSettingsError: a clip's settings are invalid (the message names the clip).
    """
    if not isinstance(timeline, otio.schema.Timeline):
        raise TypeError(f"timeline must be an opentimelineio Timeline, got {type(timeline).__name__}")
    if isinstance(handles, bool) or not isinstance(handles, int) or handles < 0:
        raise ValueError(f"handles must be an integer number of frames >= 0, got {handles!r}")
    if name_by not in ("media", "clip"):
        raise ValueError(f"name_by must be 'media' or 'clip', got {name_by!r}")
    if not isinstance(ext, str) or not re.fullmatch(r"\.?[A-Za-z0-9]+", ext):
        raise ValueError(f"ext must be a file extension such as '.mov', got {ext!r}")
    ext = ext if ext.startswith(".") else "." + ext
    mdir = Path(media_dir) if media_dir is not None else None
    bdir = Path(base_dir) if base_dir is not None else None

    search = MediaSearch.from_paths(search_paths)
    plan = Plan(handles=handles, media_dir=mdir)
    ranges = _Ranges()
    clips = list(timeline.find_clips())
    places = _places(timeline, clips, ranges)
    for clip in clips:
        label, where = places[id(clip)]
        reason = _disabled_by(clip)
        kind = _track_kind(clip)
        if reason is None and kind is not None and kind != otio.schema.TrackKind.Video:
            reason = f"{kind.lower()} track, not video"
        ref = source_reference(clip)
        media_txt = _ref_display(ref)
        if reason is not None:
            plan.skipped.append(SkippedItem(label, reason, media_txt, where))
            continue
        if probe:
            ref = search.resolve(clip, ref, label, bdir)
        try:
            media = ranges.media(ref, bdir, probe)
        except _Skip as skip:
            item = SkippedItem(label, search.offline_reason(clip, str(skip)), media_txt, where)
            plan.skipped.append(item)
            if isinstance(ref, (otio.schema.ExternalReference, otio.schema.MissingReference)):
                plan.offline.append(item)
            continue
        try:
            start, end = _used_media_frames(clip, media.rate, ranges)
        except _Skip as skip:
            plan.skipped.append(SkippedItem(label, str(skip), media_txt, where))
            continue
        settings, origin = resolve_clip_settings(
            clip,
            timeline=timeline,
            shot_list=shot_list,
            overrides=overrides,
            media_path=str(media.path / media.display) if media.kind == "image_sequence" else str(media.path),
            clip_label=label,
        )
        if settings["skip"]:
            plan.skipped.append(SkippedItem(label, f"skip = true (from {origin['skip']})", media.display, where))
            continue
        if start < media.available_start or end > media.available_end:
            plan.warnings.append(
                f"{label}: the cut uses media frames [{start}, {end}) beyond the media's available range "
                f"[{media.available_start}, {media.available_end}); rendering the part that exists"
            )
            start, end = max(start, media.available_start), min(end, media.available_end)
            if end <= start:
                plan.skipped.append(SkippedItem(label, "the used range lies outside the media", media.display, where))
                continue
        plan.uses.append(ClipUse(clip, label, media, start, end, settings, origin, where=where))

    plan.relinked = list(search.relinked)
    if shot_list is not None:
        for entry in shot_list.unused():
            plan.warnings.append(f"{shot_list.source}: {entry.describe()} matched no clip")

    # Merge the uses of one media with one set of settings whose handled ranges meet.
    groups: dict[tuple[str, str], list[ClipUse]] = {}
    for use in plan.uses:
        key = (use.media.identity, compute_settings_hash({"settings": use.settings}))
        groups.setdefault(key, []).append(use)
    for (_, _), uses in sorted(groups.items()):
        uses.sort(key=lambda u: (u.used_start, u.used_end))
        current: list[ClipUse] = []
        lo = hi = 0
        for use in uses:
            m = use.media
            a = max(m.available_start, use.used_start - handles)
            b = min(m.available_end, use.used_end + handles)
            if current and a <= hi:
                current.append(use)
                hi = max(hi, b)
                continue
            if current:
                plan.jobs.append(_make_job(current, lo, hi))
            current, lo, hi = [use], a, b
        if current:
            plan.jobs.append(_make_job(current, lo, hi))
    plan.jobs.sort(key=lambda j: (j.media.identity, j.start, j.settings_hash))
    _assign_outputs(plan.jobs, mdir, name_by, ext, owner_id(owner))
    no_tc: dict[str, float] = {}
    for job in plan.jobs:
        if job.timecode is None:
            no_tc.setdefault(job.media.display, job.rate)
    for display, rate in no_tc.items():
        plan.warnings.append(
            f"{display}: SMPTE timecode cannot count {rate:g} fps; its renders carry no timecode, and each one's "
            "start is recorded as a time (start_seconds) in the plan, the manifest and the clip metadata"
        )
    return plan


def _make_job(uses: list[ClipUse], start: int, end: int) -> RenderJob:
    media = uses[0].media
    settings = uses[0].settings
    # clips at another rate than their media keep whole-frame in-points in EDL/XML/AAF
    start = grid_aligned_start(start, media.available_start, media.rate,
                               [u.clip.source_range.start_time for u in uses if u.clip.source_range is not None])
    digest = compute_settings_hash(
        {
            "settings": settings,
            "media": media.identity,
            "range": [start, end],
            "rate": media.rate,
        }
    )
    names = dict.fromkeys(u.clip.name for u in uses)  # first-seen order, without the quadratic scan
    job = RenderJob(media, start, end, dict(settings), digest, tuple(names))
    for u in uses:
        u.job = job
    return job
