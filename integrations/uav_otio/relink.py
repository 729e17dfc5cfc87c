"""Rendered media back into the timeline.

Each rendered clip gains a media reference under :data:`UPSCALED_KEY` — an
``ExternalReference`` with an absolute ``file://`` URL (an ``ImageSequenceReference``
for a folder of EXR/DPX/PNG/TIFF frames, numbered by media frame) whose
``available_range`` is the rendered range in the clip's media time — and that
reference becomes active.
The original reference stays under the default key, so the clip's timing
(``source_range``, hence every ``range_in_parent``) does not change and switching
back is one call to ``set_media_references``.

``metadata["uav"]`` of the new reference records the settings, the model, the
settings hash and where the frames came from, and, from the output's own provenance
record (:func:`uav.io.provenance.read_provenance`), uav's version, the weights'
identity hash, the prompt and the seed the frames were made with. (It is kept off the clip's own
``metadata["uav"]``, which holds the settings an editor asked for and is read back
as input when the relinked timeline is planned again.)

Readers that know one media reference per clip (OpenTimelineIO before 0.15, and
most other tools) get :func:`single_reference_copy` or the
:data:`DOWNGRADE_SCHEMA_VERSIONS` schema set, both of which keep only the active
(upscaled) reference.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import opentimelineio as otio

from .jobs import Plan, RenderJob
from .media import UPSCALED_KEY, url_to_path
from .render import JobResult, RenderReport

__all__ = [
    "DOWNGRADE_SCHEMA_VERSIONS",
    "UPSCALED_KEY",
    "make_upscaled_reference",
    "relink_plan",
    "absolutize_media_urls",
    "single_reference_copy",
    "unlink_stale",
]


#: schema versions to pass as ``target_schema_versions`` when writing ``.otio`` for
#: readers that know one media reference per clip (they get the active one): OTIO 0.14
#: is the last release whose Clip (schema 1) has one media reference
DOWNGRADE_SCHEMA_VERSIONS: dict[str, int] = dict(otio.versioning.fetch_map("OTIO_CORE", "0.14.0"))


def _sequence_reference(folder: Path, job: RenderJob) -> otio.schema.ImageSequenceReference:
    """The reference to a rendered image-sequence folder (its files numbered by media frame)."""
    from uav.io.sequence import IMAGE_EXTENSIONS

    frames = sorted(f.name for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    match = re.fullmatch(r"(.*?)(\d+)(\.[^.]+)", frames[0]) if frames else None
    if match is None:
        raise ValueError(f"{str(folder)!r} holds no numbered frames; render it again")
    prefix, digits, suffix = match.groups()
    return otio.schema.ImageSequenceReference(
        target_url_base=folder.as_uri() + "/", name_prefix=prefix, name_suffix=suffix, start_frame=int(digits),
        frame_step=1, rate=job.rate, frame_zero_padding=len(digits), available_range=job.media_range,
        missing_frame_policy=otio.schema.ImageSequenceReference.MissingFramePolicy.error)


def _provenance_keys(path: Path) -> dict[str, Any]:
    """uav's version, the weights' identity, the prompt and the seed, from the output's own record."""
    from uav.io.provenance import read_provenance

    try:
        record, _ = read_provenance(path)
    except Exception:  # another renderer's file: it may hold anything, or nothing
        record = None
    if not record:
        return {}
    model = record.get("model") or {}
    return {"uav_version": record.get("uav_version"), "weights": model.get("weights"),
            "prompt": record.get("prompt"), "seed": record.get("seed")}


def make_upscaled_reference(job: RenderJob, result: JobResult, original: Any = None) -> Any:
    """The ``ExternalReference`` (``ImageSequenceReference`` for a folder) for a rendered job.

    Args:
        job: the rendered job (``job.output_path`` set).
        result: its :class:`JobResult` (for the model and the cache hash).
        original: the clip's original media reference, recorded in the metadata.
    """
    if job.output_path is None:
        raise ValueError(f"job for {job.media.display} has no output_path; render it first")
    path = job.output_path.resolve()
    if path.is_dir():
        ref = _sequence_reference(path, job)
    else:
        ref = otio.schema.ExternalReference(target_url=path.as_uri(), available_range=job.media_range)
    ref.name = path.name
    source: dict[str, Any] = {
        "media": job.media.url,
        "range": [job.start, job.end],
        "rate": job.rate,
        "timecode": job.timecode,
        "start_seconds": job.start_seconds,
    }
    if original is not None and getattr(original, "target_url", None):
        source["target_url"] = original.target_url
    ref.metadata["uav"] = {
        "settings": copy.deepcopy(job.settings),
        "model": copy.deepcopy(result.model),
        "settings_hash": job.settings_hash,
        "render_hash": result.render_hash,
        "output": job.output_name,
        "source": source,
        **_provenance_keys(path),
    }
    if result.caption is not None:
        # the prompt a prompt=auto shot was rendered with, to read or to write into the shot
        ref.metadata["uav"]["caption"] = copy.deepcopy(result.caption)
    return ref


def relink_plan(timeline: otio.schema.Timeline, plan: Plan, report: RenderReport) -> int:
    """Link every rendered (or cached) job's output into its clips, in place.

    Clips of ``timeline`` the plan does not render keep (or get back) their
    original reference as the active one, so the timeline describes the latest run.

    Returns:
        How many clips were relinked.
    """
    relinked: set[int] = set()
    for use in plan.uses:
        job, clip = use.job, use.clip
        result = report.for_job(job) if job is not None else None
        if result is None:
            continue
        refs = dict(clip.media_references())
        original_key = otio.schema.Clip.DEFAULT_MEDIA_KEY
        if original_key not in refs and clip.active_media_reference_key != UPSCALED_KEY:
            original_key = clip.active_media_reference_key  # a timeline that names its keys itself
        refs[UPSCALED_KEY] = make_upscaled_reference(job, result, refs.get(original_key))
        clip.set_media_references(refs, UPSCALED_KEY)
        relinked.add(id(clip))
    unlink_stale(timeline, relinked)
    return len(relinked)


def unlink_stale(timeline: otio.schema.Timeline, keep: set[int]) -> int:
    """Drop :data:`UPSCALED_KEY` references of clips not in ``keep`` (``id(clip)``),
    making the original active again. Returns how many clips changed."""
    changed = 0
    for clip in timeline.find_clips():
        if id(clip) in keep:
            continue
        refs = dict(clip.media_references())
        if UPSCALED_KEY not in refs or otio.schema.Clip.DEFAULT_MEDIA_KEY not in refs:
            continue
        del refs[UPSCALED_KEY]
        clip.set_media_references(refs, otio.schema.Clip.DEFAULT_MEDIA_KEY)
        changed += 1
    return changed


def single_reference_copy(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """A deep copy in which every clip has only its active reference, under the
    default key (for writers and readers that know one reference per clip)."""
    out = timeline.deepcopy()
    for clip in out.find_clips():
        active = clip.media_reference
        clip.set_media_references({otio.schema.Clip.DEFAULT_MEDIA_KEY: active}, otio.schema.Clip.DEFAULT_MEDIA_KEY)
    return out


def _is_relative(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme and len(parsed.scheme) > 1:
        return False  # file://, http://... (a one-letter "scheme" is a Windows drive)
    return not Path(url).is_absolute() and not (len(url) > 1 and url[1] == ":")


def absolutize_media_urls(timeline: otio.schema.Timeline, base_dir: str | Path) -> int:
    """Turn relative media URLs (every reference of every clip) into absolute
    ``file://`` URLs against ``base_dir``, for a timeline written to another folder.

    Returns:
        How many references changed.
    """
    changed = 0
    for clip in timeline.find_clips():
        for ref in clip.media_references().values():  # the live objects: edited in place
            if isinstance(ref, otio.schema.ExternalReference) and ref.target_url and _is_relative(ref.target_url):
                ref.target_url = url_to_path(ref.target_url, base_dir).resolve().as_uri()
                changed += 1
            elif isinstance(ref, otio.schema.ImageSequenceReference) and _is_relative(ref.target_url_base or ""):
                ref.target_url_base = url_to_path(ref.target_url_base or ".", base_dir).resolve().as_uri() + "/"
                changed += 1
    return changed
