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

Media lookup lives in :mod:`uav_otio.media` and used-range arithmetic in
:mod:`uav_otio.ranges` (both re-exported here); what stays is the plan's own
objects and the loop that builds them, which read best together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import opentimelineio as otio

from .conform import MediaSearch, Relink
from .exports import grid_aligned_start
from .hashing import compute_settings_hash
from .manifest import Manifest, owner_id
from .media import (  # noqa: F401  (re-exported: the plan's public names)
    UPSCALED_KEY,
    MediaSource,
    ProbeResult,
    _media_source,
    _Skip,
    probe_media,
    source_reference,
    url_to_path,
)
from .ranges import _disabled_by, _Ranges, _track_kind, _used_media_frames, enclosing_track  # noqa: F401
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

#: default handles, in frames, on each side of every used range
DEFAULT_HANDLES = 12

_EPS = 1e-6


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
    track = enclosing_track(clip)
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
        track = enclosing_track(clip)
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
