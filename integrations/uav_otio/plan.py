"""Timeline -> render jobs: the planning walk.

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

The plan's objects live in :mod:`uav_otio.jobs`, media lookup in
:mod:`uav_otio.media` and used-range arithmetic in :mod:`uav_otio.ranges` (all
re-exported here, where they were first published); what stays is the walk that
builds a plan and the naming of its outputs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import opentimelineio as otio

from .conform import MediaSearch
from .exports import grid_aligned_start
from .jobs import (  # noqa: F401  (re-exported: the plan's public names)
    DEFAULT_HANDLES,
    ClipPlace,
    ClipUse,
    Plan,
    RenderJob,
    SkippedItem,
    safe_timecode,
    settings_summary,
    timecode_representable,
)
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
from uav.io.provenance import settings_hash as compute_settings_hash
from uav.shots.shot_list import ShotList
from .shots import resolve_clip_settings
from .validation import check_times, short_media_error

__all__ = [
    "DEFAULT_HANDLES",
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


# --------------------------------------------------------------------------- #
# planning
# --------------------------------------------------------------------------- #


def _places(timeline: otio.schema.Timeline, clips: list[otio.schema.Clip],
            ranges: _Ranges) -> dict[int, tuple[str, ClipPlace]]:
    """Each clip's label (``V1/SH010``) and place; labels that would name several clips
    gain the place (``V1/SH010 (V1 item 4 @ 01:00:03:00)``) so every message and JSON row
    points at one clip."""
    rate = None
    for clip in clips:
        with contextlib.suppress(Exception):  # a clip without a range; try the next one
            rate = clip.trimmed_range().duration.rate
            break
    start = timeline.global_start_time  # places count from it, at its rate
    origin, rate = (start.to_seconds(), start.rate) if start is not None else (0.0, rate)
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
        ext: output file extension, with or without the dot; ``""`` names folders (image
            sequences: ``exr``, ``dpx``, ``png``, ``tiff``).
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
        PlanCheckError: a time the timeline cannot mean (a NaN or zero rate), or a cut
            using frames its media file does not hold (:mod:`uav_otio.validation`).
    """
    if not isinstance(timeline, otio.schema.Timeline):
        raise TypeError(f"timeline must be an opentimelineio Timeline, got {type(timeline).__name__}")
    ext = _checked_naming(handles, name_by, ext)
    mdir = Path(media_dir) if media_dir is not None else None
    check_times(timeline)
    plan = Plan(handles=handles, media_dir=mdir)
    ranges = _Ranges()
    walk = _Walk(timeline, ranges, MediaSearch(search_paths),
                 Path(base_dir) if base_dir is not None else None, probe, shot_list, overrides)
    clips = list(timeline.find_clips())
    places = _places(timeline, clips, ranges)
    for clip in clips:
        _plan_clip(plan, clip, *places[id(clip)], walk)
    plan.relinked = list(walk.search.relinked)
    if shot_list is not None:
        for entry in shot_list.unused():
            plan.warnings.append(f"{shot_list.source}: {entry.describe()} matched no clip")
    plan.jobs = _merged_jobs(plan.uses, handles)
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


def _checked_naming(handles: Any, name_by: str, ext: Any) -> str:
    """``ext`` with its dot, once ``handles``, ``name_by`` and ``ext`` are checked."""
    if isinstance(handles, bool) or not isinstance(handles, int) or handles < 0:
        raise ValueError(f"handles must be an integer number of frames >= 0, got {handles!r}")
    if name_by not in ("media", "clip"):
        raise ValueError(f"name_by must be 'media' or 'clip', got {name_by!r}")
    if not isinstance(ext, str) or not re.fullmatch(r"(\.?[A-Za-z0-9]+)?", ext):
        raise ValueError(f"ext must be a file extension such as '.mov' (or '' for image-sequence folders), "
                         f"got {ext!r}")
    return ext if ext.startswith(".") or not ext else "." + ext


@dataclass(frozen=True)
class _Walk:
    """What planning each clip of one timeline shares."""

    timeline: otio.schema.Timeline
    ranges: _Ranges
    search: MediaSearch
    base_dir: Path | None
    probe: bool
    shot_list: ShotList | None
    overrides: Mapping[str, Any] | None


def _plan_clip(plan: Plan, clip: Any, label: str, where: Any, walk: _Walk) -> None:
    """Add ``clip``'s use of its media to ``plan.uses``, or say in ``plan.skipped`` why not."""
    reason = _disabled_by(clip, walk.ranges)
    kind = _track_kind(clip)
    if reason is None and kind is not None and kind != otio.schema.TrackKind.Video:
        reason = f"{kind.lower()} track, not video"
    ref = source_reference(clip)
    media_txt = _ref_display(ref)
    if reason is not None:
        plan.skipped.append(SkippedItem(label, reason, media_txt, where))
        return
    if walk.probe:
        ref = walk.search.resolve(clip, ref, label, walk.base_dir)
    try:
        media = walk.ranges.media(ref, walk.base_dir, walk.probe)
    except _Skip as skip:
        item = SkippedItem(label, walk.search.offline_reason(clip, str(skip)), media_txt, where)
        plan.skipped.append(item)
        if isinstance(ref, (otio.schema.ExternalReference, otio.schema.MissingReference)):
            plan.offline.append(item)
        return
    try:
        start, end = _used_media_frames(clip, media.rate, walk.ranges)
    except _Skip as skip:
        plan.skipped.append(SkippedItem(label, str(skip), media_txt, where))
        return
    settings, origin = resolve_clip_settings(
        clip, timeline=walk.timeline, shot_list=walk.shot_list, overrides=walk.overrides,
        media_path=str(media.path / media.display) if media.kind == "image_sequence" else str(media.path),
        clip_label=label,
    )
    if settings["skip"]:
        plan.skipped.append(SkippedItem(label, f"skip = true (from {origin['skip']})", media.display, where))
        return
    if media.declared_end is not None and end > media.available_end:
        raise short_media_error(label, media, start, end)
    if start < media.available_start or end > media.available_end:
        plan.warnings.append(
            f"{label}: the cut uses media frames [{start}, {end}) beyond the media's available range "
            f"[{media.available_start}, {media.available_end}); rendering the part that exists"
        )
        start, end = max(start, media.available_start), min(end, media.available_end)
        if end <= start:
            plan.skipped.append(SkippedItem(label, "the used range lies outside the media", media.display, where))
            return
    plan.uses.append(ClipUse(clip, label, media, start, end, settings, origin, where=where))


def _merged_jobs(uses: list[ClipUse], handles: int) -> list[RenderJob]:
    """One job per run of uses of one media with one set of settings whose handled ranges meet."""
    groups: dict[tuple[str, str], list[ClipUse]] = {}
    for use in uses:
        key = (use.media.identity, compute_settings_hash({"settings": use.settings}))
        groups.setdefault(key, []).append(use)
    jobs = []
    for (_, _), group in sorted(groups.items()):
        group.sort(key=lambda u: (u.used_start, u.used_end))
        current: list[ClipUse] = []
        lo = hi = 0
        for use in group:
            m = use.media
            a = max(m.available_start, use.used_start - handles)
            b = min(m.available_end, use.used_end + handles)
            if current and a <= hi:
                current.append(use)
                hi = max(hi, b)
                continue
            if current:
                jobs.append(_make_job(current, lo, hi))
            current, lo, hi = [use], a, b
        if current:
            jobs.append(_make_job(current, lo, hi))
    jobs.sort(key=lambda j: (j.media.identity, j.start, j.settings_hash))
    return jobs


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
