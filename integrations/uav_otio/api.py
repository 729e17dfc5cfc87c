"""The Python API: plan a timeline file, upscale an edit, or preview what that would do.

Reading and writing the timeline files themselves is :mod:`uav_otio.timeline_files`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio


from .jobs import DEFAULT_HANDLES, Plan, RenderJob
from .manifest import Manifest
from .params import Planning, Reading, Rendering, group
from .plan import plan_timeline
from .relink import absolutize_media_urls, relink_plan
from .render import RenderReport, Renderer, jobs_to_render, render_plan
from uav.shots.shot_list import ShotList, load_shot_list
from .timeline_files import (LoadedTimeline, TimelineReadError, read_timeline, refuse_overwriting_input,
                             timeline_owner, write_timeline)
from .upscaler_renderer import UpscalerRenderer
from .validation import check_plan

__all__ = ["LoadedTimeline", "Planning", "Preview", "Reading", "Rendering", "TimelineReadError", "UpscaleResult",
           "plan_file", "preview_timeline", "read_timeline", "upscale_timeline", "write_timeline"]


def plan_file(
    path: str | Path | LoadedTimeline,
    *,
    handles: int = DEFAULT_HANDLES,
    media_dir: str | Path | None = None,
    shots: str | Path | ShotList | None = None,
    overrides: Mapping[str, Any] | None = None,
    name_by: str = "media",
    ext: str = ".mov",
    timeline_name: str | None = None,
    output: str | Path | None = None,
    adapter_name: str | None = None,
    rate: float | str | Fraction | None = None,
    adapter_options: Mapping[str, Any] | None = None,
    search_paths: Sequence[str | Path] | None = None,
    reading: Reading | None = None,
    planning: Planning | None = None,
) -> tuple[LoadedTimeline, Plan]:
    """Read a timeline file and plan it (see :func:`uav_otio.plan.plan_timeline`;
    ``search_paths`` relink offline media, :mod:`uav_otio.conform`). ``path`` may also be
    a timeline already read (:func:`read_timeline`); then the reading options are unused.

    ``output``, the timeline :func:`upscale_timeline` would write, makes the plan name
    outputs exactly as that render will (its own earlier renders may be replaced).
    ``adapter_name``, ``rate`` and ``adapter_options`` go to :func:`read_timeline`.
    ``reading`` and ``planning`` (:mod:`uav_otio.params`) may stand for their keywords."""
    read = group(Reading, reading, "reading", timeline_name=timeline_name, adapter_name=adapter_name, rate=rate,
                 adapter_options=adapter_options)
    what = group(Planning, planning, "planning", handles=handles, shots=shots, overrides=overrides, name_by=name_by,
                 ext=ext, search_paths=search_paths)
    loaded = path if isinstance(path, LoadedTimeline) else read_timeline(path, **vars(read))
    return loaded, _plan(loaded, what, media_dir, output)


def _plan(loaded: LoadedTimeline, what: Planning, media_dir: str | Path | None, output: str | Path | None) -> Plan:
    shots = what.shots
    plan = plan_timeline(
        loaded.timeline, handles=what.handles, media_dir=media_dir,
        shot_list=shots if shots is None or isinstance(shots, ShotList) else load_shot_list(shots),
        overrides=what.overrides, base_dir=loaded.base_dir, name_by=what.name_by, ext=what.ext,
        owner=timeline_owner(output, loaded.path) if output is not None else None, search_paths=what.search_paths,
    )
    plan.warnings[:0] = loaded.notes  # what reading the file assumed (an EDL's motion effects, keys)
    check_plan(plan)  # what the render would refuse: plan, --dry-run and the run refuse alike
    return plan


@dataclass
class UpscaleResult:
    """What :func:`upscale_timeline` did."""

    timeline: otio.schema.Timeline
    plan: Plan
    report: RenderReport
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    relinked: int = 0


def upscale_timeline(
    timeline: str | Path | otio.schema.Timeline,
    output: str | Path,
    media_dir: str | Path,
    *,
    renderer: Renderer | None = None,
    weights: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    codec: str = "prores_hq",
    model: Mapping[str, Any] | None = None,
    handles: int = DEFAULT_HANDLES,
    shots: str | Path | ShotList | None = None,
    overrides: Mapping[str, Any] | None = None,
    name_by: str = "media",
    ext: str = ".mov",
    base_dir: str | Path | None = None,
    timeline_name: str | None = None,
    adapter_name: str | None = None,
    rate: float | str | Fraction | None = None,
    adapter_options: Mapping[str, Any] | None = None,
    downgrade: bool = False,
    force: bool = False,
    search_paths: Sequence[str | Path] | None = None,
    progress: Callable[[RenderJob, int, int], None] | None = None,
    on_job: Callable[[RenderJob, str], None] | None = None,
    executor: Any = None,
    on_event: Callable[[Any], None] | None = None,
    captioner_options: Mapping[str, Any] | None = None,
    on_caption: Callable[[RenderJob, dict[str, Any], bool], None] | None = None,
    reading: Reading | None = None,
    planning: Planning | None = None,
    rendering: Rendering | None = None,
) -> UpscaleResult:
    """Upscale every clip an edit uses and write the relinked timeline.

    Args:
        timeline: a timeline file, or a Timeline object (then ``base_dir`` resolves
            relative media paths).
        output: the output timeline (``.otio`` is always written; see :func:`write_timeline`).
        media_dir: where rendered media and the manifest go.
        renderer: ``renderer(job, settings, output_path, progress=None)``; default
            :class:`uav_otio.render.UpscalerRenderer` (uav's ``VideoUpscaler``) built
            from ``weights``, ``device``, ``dtype`` and ``codec``.
        model: what identifies the model for the cache key and metadata; defaults to
            ``renderer.model`` when the renderer has one.
        handles: frames added on each side of each used range.
        shots: a TOML shot list path or a parsed :class:`~uav_otio.shots.ShotList`.
        overrides: settings that beat every other layer.
        name_by, ext: output naming (see :func:`uav_otio.plan.plan_timeline`).
        timeline_name: pick a timeline in a file that holds several.
        adapter_name, rate, adapter_options: how to read the file (see :func:`read_timeline`).
        downgrade: write ``.otio`` for readers with one media reference per clip.
        force: re-render even what the manifest says is done.
        search_paths: folders where offline media is looked for (by file name, then
            reel name and timecode); found media is relinked in the written timeline
            and listed in ``result.plan.relinked``.
        progress, on_job: callbacks (see :func:`uav_otio.render.render_plan`).
        executor, on_event: hand the jobs to a :class:`uav.executors.Executor` (e.g.
            ``make_executor("ray")``) and receive its progress events; see
            :func:`uav_otio.render.render_plan`.
        captioner_options: options of the captioner of ``prompt=auto`` shots
            (``{"model": "/models/llava"}``); their captions are kept in the manifest and
            in the relinked references' ``metadata["uav"]["caption"]``.
        on_caption: ``on_caption(job, caption, cached)`` as each such caption is known.
        reading, planning, rendering: :mod:`uav_otio.params` objects that stand for
            their keywords (``timeline_name``... ; ``handles``, ``shots``...; ``renderer``,
            ``weights``...); an object and its keywords together are a ``TypeError``.

    Returns:
        An :class:`UpscaleResult`. Rerunning with the same arguments renders nothing
        and rewrites the same timeline.
    """
    mdir = Path(media_dir)
    made: list[Path] = []  # folders this call creates: removed again if it fails and they stay empty
    probe_dir = mdir
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        made.append(probe_dir)
        probe_dir = probe_dir.parent
    read = group(Reading, reading, "reading", timeline_name=timeline_name, adapter_name=adapter_name, rate=rate,
                 adapter_options=adapter_options)
    what = group(Planning, planning, "planning", handles=handles, shots=shots, overrides=overrides, name_by=name_by,
                 ext=ext, search_paths=search_paths)
    how = group(Rendering, rendering, "rendering", renderer=renderer, weights=weights, device=device, dtype=dtype,
                codec=codec, model=model, force=force, executor=executor, captioner_options=captioner_options,
                on_caption=on_caption)
    try:
        if isinstance(timeline, otio.schema.Timeline):
            loaded = LoadedTimeline(timeline, None, Path(base_dir) if base_dir is not None else None)
        else:
            input_path = Path(timeline)
            extract = mdir / f".{input_path.stem}.otioz-source" if input_path.suffix.lower() == ".otioz" else None
            refuse_overwriting_input(output, input_path)
            loaded = read_timeline(input_path, extract_dir=extract, **vars(read))
            if base_dir is not None:
                loaded.base_dir = Path(base_dir)
        plan = _plan(loaded, what, mdir, output)
        tl, bdir, input_path = loaded.timeline, loaded.base_dir, loaded.path
        renderer = how.renderer
        if renderer is None:
            renderer = UpscalerRenderer(weights=how.weights, device=how.device, dtype=how.dtype, codec=how.codec)
        model = how.model if how.model is not None else (getattr(renderer, "model", None) or {})
        report = render_plan(plan, renderer, media_dir=mdir, model=model, force=how.force, progress=progress,
                             on_job=on_job, owner=timeline_owner(output, input_path), executor=how.executor,
                             on_event=on_event, captioner_options=how.captioner_options, on_caption=how.on_caption)
        relinked = relink_plan(tl, plan, report)
        if bdir is not None and Path(output).resolve().parent != bdir.resolve():
            # Relative links to the original media would break next to the new file.
            absolutize_media_urls(tl, bdir)
        written, problems = write_timeline(tl, output, input_path=input_path, downgrade=downgrade)
        return UpscaleResult(tl, plan, report, written, list(plan.warnings) + problems, relinked)
    except BaseException:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                if folder.is_dir() and Manifest(folder).discard_if_empty():
                    folder.rmdir()  # only when empty: finished renders are kept
        raise


@dataclass
class Preview:
    """What :func:`upscale_timeline` would do, worked out without writing anything."""

    plan: Plan
    render: list[RenderJob] = field(default_factory=list)  # would be rendered
    cached: list[RenderJob] = field(default_factory=list)  # already done
    written: list[Path] = field(default_factory=list)  # timeline files that would be written

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "dry_run": True,
            "render": [{"output": j.output_name, "frames": j.frames, "media": j.media.display,
                        "range": [j.start, j.end], "timecode": j.timecode, "clips": list(j.clip_names),
                        "settings_hash": j.settings_hash} for j in self.render],
            "cached": [j.output_name for j in self.cached],
            "frames_to_render": sum(j.frames for j in self.render),
            "skipped": [s.to_dict() for s in self.plan.skipped],
            "relinked": [r.to_dict() for r in self.plan.relinked],
            "offline": [s.to_dict() for s in self.plan.offline],
            "would_write": [str(p) for p in self.written],
            "warnings": list(self.plan.warnings),
        }


def preview_timeline(
    timeline: str | Path,
    output: str | Path,
    media_dir: str | Path,
    *,
    model: Mapping[str, Any] | None = None,
    force: bool = False,
    reading: Reading | None = None,
    planning: Planning | None = None,
) -> Preview:
    """Everything :func:`upscale_timeline` checks before its first render, and what it
    would render, with nothing written (``--dry-run``); ``reading`` and ``planning`` as
    :func:`upscale_timeline` takes them.

    The timeline is read and planned (media probed, offline media searched), every
    shot's settings are validated and every component they name is resolved through
    the plugin registry, the output formats are checked, and the media folder's
    manifest is read to tell finished renders from those to do and to find renders
    that would replace another timeline's files.

    Raises:
        the errors :func:`upscale_timeline` would raise before rendering: unreadable
        timeline, bad settings, unknown components, an output that would overwrite the
        input, :class:`~uav_otio.manifest.OutputOwnershipError`.
    """
    input_path = Path(timeline)
    mdir = Path(media_dir)
    targets = refuse_overwriting_input(output, input_path)
    owner = timeline_owner(output, input_path)
    # planned exactly as plan_file plans it for this output: an .otioz unpacks into a
    # temporary folder removed at exit, never into the media folder
    plan = _plan(read_timeline(input_path, **vars(reading or Reading())), planning or Planning(), mdir, output)
    # the decision render_plan makes, on the manifest as it is now (read only; a
    # folder that does not exist yet holds nothing, so everything would render)
    pending = {id(job) for job, _ in jobs_to_render(plan, Manifest(mdir), model, owner, force=force)}
    return Preview(plan, render=[job for job in plan.jobs if id(job) in pending],
                   cached=[job for job in plan.jobs if id(job) not in pending], written=list(targets))
