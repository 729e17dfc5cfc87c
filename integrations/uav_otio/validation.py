"""What a render would refuse, found while planning: one path for ``plan``, ``--dry-run`` and the run.

``uav timeline plan``, ``uav timeline upscale --dry-run`` and ``uav timeline upscale``
all read and plan a timeline through :func:`uav_otio.api.plan_file`, which ends with
:func:`check_plan`: so a dry run refuses exactly what the run would refuse, before a
model loads or a frame renders, and every message names the clip:

* times a timeline cannot mean (:func:`check_times`: NaN, infinite or zero rates);
* a shot's settings the pipeline refuses once its components are built (``steps``
  beyond what the scheduler can schedule, a plugin that refuses its values);
* media the reader refuses: a variable-frame-rate file, an image sequence with a
  missing frame inside the rendered range (the numbering is the timing), a file
  holding fewer frames than the cut uses (:func:`short_media_error`, raised by the
  planner, which clamps handles to the frames that exist).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import opentimelineio as otio

from uav.components import check_component, check_components
from uav.settings import SettingsError, UpscaleSettings

from .ranges import clip_label, enclosing_track
from uav.shots.settings import FIELD_TO_KEY, ShotSettingsError, to_upscale_settings

if TYPE_CHECKING:  # the types are for annotations only
    from .jobs import Plan, RenderJob
    from .media import MediaSource

__all__ = ["PlanCheckError", "check_plan", "check_times", "short_media_error"]


class PlanCheckError(ValueError):
    """The plan holds something the render would refuse; the message names the clip and the fix."""


# --------------------------------------------------------------------------- #
# times
# --------------------------------------------------------------------------- #


def _bad_time(t: otio.opentime.RationalTime) -> str | None:
    if not math.isfinite(t.rate) or t.rate <= 0:
        return f"frame rate {t.rate:g}"
    if not math.isfinite(t.value):
        return f"time {t.value:g}"
    return None


def _ranges_of(item: Any) -> list[tuple[str, otio.opentime.TimeRange | otio.opentime.RationalTime]]:
    out: list[tuple[str, Any]] = []
    if getattr(item, "source_range", None) is not None:
        out.append(("source range", item.source_range))
    if isinstance(item, otio.schema.Transition):
        out += [("in offset", item.in_offset), ("out offset", item.out_offset)]
    if isinstance(item, otio.schema.Clip):
        for key, ref in item.media_references().items():
            if getattr(ref, "available_range", None) is not None:
                out.append((f"media reference {key!r} available range", ref.available_range))
            if isinstance(ref, otio.schema.ImageSequenceReference):
                out.append((f"image sequence {key!r} rate", otio.opentime.RationalTime(0, ref.rate)))
    return out


def _subject(item: Any) -> str:
    if isinstance(item, otio.schema.Clip):
        return f"clip {clip_label(item)!r}"
    track = enclosing_track(item)
    inside = f" in track {track.name!r}" if track is not None and track is not item else ""
    return f"{type(item).__name__.lower()} {item.name!r}{inside}"


def check_times(timeline: otio.schema.Timeline) -> None:
    """Refuse NaN, infinite or non-positive rates and non-finite times anywhere in
    ``timeline`` (they would surface as "cannot convert float NaN to integer").

    Raises:
        PlanCheckError: naming the item and the range at fault.
    """
    fix = "every time needs a finite value and a positive, finite frame rate: fix the item in the editor and export again"
    if timeline.global_start_time is not None and (bad := _bad_time(timeline.global_start_time)):
        raise PlanCheckError(f"timeline {timeline.name!r}: its global start time has {bad}; {fix}")
    for item in [timeline.tracks, *timeline.tracks.find_children()]:
        for what, value in _ranges_of(item):
            times = [value.start_time, value.duration] if isinstance(value, otio.opentime.TimeRange) else [value]
            bad = next((b for b in map(_bad_time, times) if b), None)
            if bad:
                raise PlanCheckError(f"{_subject(item)}: its {what} has {bad}; {fix}")


# --------------------------------------------------------------------------- #
# shots and media
# --------------------------------------------------------------------------- #


def _check_shot(settings: dict[str, Any]) -> None:
    """What the renderer's ``check_inputs`` would refuse: components other than the
    built-in defaults (building a default loads no plugin), and the scheduler asked
    for the shot's ``steps`` whenever they are not the default."""
    pipeline = to_upscale_settings(settings)
    check_components(pipeline, changed_only=True)
    if pipeline.num_inference_steps != UpscaleSettings().num_inference_steps:
        check_component("scheduler", pipeline.scheduler, steps=pipeline.num_inference_steps)


def _who(labels: list[str]) -> str:
    more = f" (and {len(labels) - 1} more clip(s))" if len(labels) > 1 else ""
    return f"clip {labels[0]!r}{more}"


def _check_media(job: RenderJob, labels: list[str]) -> None:
    media = job.media
    if media.kind == "image_sequence":
        missing = [media.frame_path(i).name for i in range(job.first_index, job.end_index)
                   if not media.frame_path(i).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise PlanCheckError(
                f"{_who(labels)}: image sequence {media.display!r} in {str(media.path)!r} lacks {shown} inside the "
                f"frames to render; a sequence's numbering is its timing, so frames cannot be closed up: restore them "
                f"(or trim the clip, or lower --handles)")
    elif media.variable_frame_rate:
        raise PlanCheckError(
            f"{_who(labels)}: {str(media.path)!r} has a variable frame rate, and a timeline clip needs constant-rate "
            f"media: convert it to a constant rate (e.g. ffmpeg -i IN -fps_mode cfr -r {job.fps} OUT) and relink the "
            f"clip to the converted file")


def short_media_error(label: str, media: MediaSource, start: int, end: int) -> PlanCheckError:
    """The refusal of a clip using media frames ``[start, end)`` of a file that holds fewer
    frames than its timeline says (handles alone are clamped to what exists)."""
    declared = (media.declared_end or media.available_end) - media.available_start
    held = media.available_end - media.available_start
    return PlanCheckError(
        f"clip {label!r}: {str(media.path)!r} holds {held} frames, but the timeline says {declared} and the cut uses "
        f"media frames [{start}, {end}): relink the clip to the full-length media, or trim it in the edit")


def check_plan(plan: Plan) -> None:
    """Refuse what rendering ``plan`` would refuse (see the module's docs).

    Raises:
        ShotSettingsError: a shot's settings, naming the clip and where the value came from.
        PlanCheckError: a job's media, naming the clip and what to do.
    """
    checked: set[str] = set()
    for use in plan.uses:
        shot = repr(sorted(use.settings.items()))
        if use.job is None or shot in checked:
            continue
        checked.add(shot)
        try:
            _check_shot(use.settings)
        except SettingsError as exc:
            key = FIELD_TO_KEY.get(exc.field or "", exc.field or "settings")
            raise ShotSettingsError(f"clip {use.label!r}: {exc.located(key, use.origin.get(key, 'settings'))}") from None
    for job in plan.jobs:
        _check_media(job, [u.label for u in plan.uses if u.job is job])
