"""Automatic prompts for shots whose ``prompt`` is ``auto``: one caption per job, kept in the manifest.

A shot with ``prompt=auto`` is prompted, as in the paper, with what a vision-language
model says about one frame of the range the cut uses (``caption_frame``: ``first``,
``middle`` or an index within that range; handles excluded). Captions are made before
the first render starts, so a captioner that cannot work (missing folder, wrong model
type) fails before any upscaling, and one captioner model serves every shot and is freed
before the upscaler loads. Each caption is recorded in the media folder's manifest as
soon as it is made, under :func:`caption_key` (media, used range, frame, captioner and
its options), so a resumed or repeated run reuses it instead of captioning again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from uav.io.provenance import settings_hash as compute_settings_hash
from uav.settings import AUTO_PROMPT

from .manifest import Manifest

if TYPE_CHECKING:
    from .jobs import Plan, RenderJob

__all__ = ["caption_jobs", "caption_key", "caption_range", "is_auto_job", "with_caption"]


def is_auto_job(job: RenderJob) -> bool:
    """Whether ``job``'s prompt is to be written by a captioner."""
    return job.settings.get("prompt") == AUTO_PROMPT


def caption_range(plan: Plan, job: RenderJob) -> tuple[int, int]:
    """The media frames ``[start, end)`` the cut uses of ``job`` (its clips' used ranges,
    without the handles); the caption frame is chosen in there."""
    uses = [u for u in plan.uses if u.job is job]
    if not uses:
        return job.start, job.end
    return min(u.used_start for u in uses), max(u.used_end for u in uses)


def caption_key(job: RenderJob, used: tuple[int, int], options: Mapping[str, Any] | None) -> str:
    """What a caption is cached under: the media, the used range, the frame choice, the
    captioner and its options (another model folder writes another caption)."""
    return compute_settings_hash({
        "media": job.media.identity,
        "range": list(used),
        "frame": job.settings.get("caption_frame"),
        "captioner": job.settings.get("captioner"),
        "options": {k: str(v) for k, v in dict(options or {}).items()},
    })


def with_caption(settings: Mapping[str, Any], caption: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings a renderer gets: ``prompt`` replaced by the caption (the added prompt is
    still appended by the pipeline)."""
    out = dict(settings)
    if caption is not None:
        out["prompt"] = caption["caption"]
    return out


def _caption_one(captioner: Any, job: RenderJob, used: tuple[int, int]) -> dict[str, Any]:
    from uav.captioning import resolve_frame

    frame = job.settings.get("caption_frame", "first")
    offset = resolve_frame(frame, used[1] - used[0])
    if job.media.kind == "image_sequence":
        index = used[0] - job.media.available_start + offset
        text = captioner.caption(str(job.media.frame_path(index))).text
    else:
        first = used[0] - job.media.available_start
        text = captioner.caption(str(job.media.path), frame=offset, start=first, end=first + used[1] - used[0]).text
    return {"caption": text, "captioner": captioner.name, "frame": used[0] + offset,
            "media": job.media.identity, "range": list(used)}


def caption_jobs(plan: Plan, jobs: Iterable[RenderJob], manifest: Manifest, *,
                 options: Mapping[str, Any] | None = None, registry: Any = None,
                 on_caption: Callable[[RenderJob, dict[str, Any], bool], None] | None = None,
                 ) -> dict[int, dict[str, Any]]:
    """The caption of every ``prompt=auto`` job in ``jobs``: from the manifest when it was
    made before, else made now (and recorded there at once).

    Args:
        plan: the plan the jobs belong to (for their clips' used ranges).
        jobs: the jobs; those without ``prompt=auto`` are passed over.
        manifest: the media folder's manifest.
        options: the captioners' options (``model=`` the local folder, ``device=`` ...).
        registry: the plugin registry to build captioners from (default: the shared one).
        on_caption: ``on_caption(job, caption, cached)`` as each caption is known.

    Returns:
        ``id(job)`` -> ``{"caption", "captioner", "frame", "media", "range"}`` (``frame`` is
        a media frame number).

    Raises:
        uav.captioning.CaptionError: a captioner that cannot be built or a frame out of
            range (one line), before any job is rendered.
    """
    from uav.captioning import ClipCaptioner

    found: dict[int, dict[str, Any]] = {}
    missing: dict[str, list[tuple[RenderJob, tuple[int, int], str]]] = {}
    for job in jobs:
        if not is_auto_job(job):
            continue
        used = caption_range(plan, job)
        key = caption_key(job, used, options)
        cached = manifest.caption_for(key)
        if cached is not None:
            found[id(job)] = cached
            if on_caption:
                on_caption(job, cached, True)
        else:
            missing.setdefault(str(job.settings.get("captioner")), []).append((job, used, key))
    for name, todo in missing.items():
        # one model per captioner for all its shots, freed before the next (and the upscaler) loads
        with ClipCaptioner(name, options, registry=registry) as captioner:
            made: dict[str, dict[str, Any]] = {}
            for job, used, key in todo:
                if key not in made:
                    made[key] = _caption_one(captioner, job, used)
                    manifest.record_caption(key, made[key])
                found[id(job)] = made[key]
                if on_caption:
                    on_caption(job, made[key], False)
    return found
