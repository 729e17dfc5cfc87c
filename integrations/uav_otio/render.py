"""Render jobs -> media files, resumably.

The renderer is injected: any callable ``renderer(job, settings, output_path,
progress=None) -> None`` that writes ``output_path`` atomically (write a temporary
file, rename it when complete: :class:`uav.io.VideoWriter` does that, and
:func:`atomic_output`, which is :func:`uav.io.atomic_output`, does it for other
writers). ``progress``, when given, is called as ``progress(frames_done, frames_total)``.

A manifest (``uav_manifest.json`` in the media folder, :mod:`uav_otio.manifest`)
records every finished output with the hash of what produced it and the timelines
that rely on it. A rerun renders only the jobs whose output is missing, whose size
no longer matches, or whose settings, range or model changed. The manifest is
rewritten (atomically, under a lock) after every finished job, so a run killed at
any point loses at most the job in flight; leftover temporary files of such a run
are removed at the start of the next one. A file another timeline relies on is
never replaced with other content (:class:`OutputOwnershipError`).
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uav.events import Event
from uav.executors.base import result_event
from uav.io.atomic import atomic_output
from uav.io.provenance import settings_hash as compute_settings_hash

from .captions import caption_jobs, with_caption
from .manifest import MANIFEST_NAME, PARTIAL_MARK, Manifest, OutputOwnershipError, clean_partials, output_size, owner_id
from .upscaler_renderer import UpscalerRenderer, _read_sequence  # noqa: F401  (re-exported: published here first)

if TYPE_CHECKING:  # the types are for annotations only
    from .jobs import Plan, RenderJob

__all__ = [
    "MANIFEST_NAME",
    "jobs_to_render",
    "PARTIAL_MARK",
    "JobResult",
    "Manifest",
    "OutputOwnershipError",
    "RenderReport",
    "Renderer",
    "UpscalerRenderer",
    "atomic_output",
    "clean_partials",
    "compute_settings_hash",
    "render_plan",
]

#: ``renderer(job, settings, output_path, progress=None) -> None``
Renderer = Callable[..., None]


@dataclass
class JobResult:
    """What happened to one job."""

    job: RenderJob
    status: str  # "rendered" or "cached"
    render_hash: str
    model: dict[str, Any]
    #: for a ``prompt=auto`` job: the caption it was rendered with (``caption``, ``captioner``,
    #: ``frame``, ``media``, ``range``); ``None`` for a written prompt
    caption: dict[str, Any] | None = None


@dataclass
class RenderReport:
    """The outcome of :func:`render_plan`."""

    results: list[JobResult] = field(default_factory=list)
    removed_partials: list[Path] = field(default_factory=list)
    #: with an executor: its record of every job it ran (worker, seconds, attempts, error)
    runs: list[Any] = field(default_factory=list)

    @property
    def failed(self) -> list[Any]:
        """The executor records of the jobs that failed (their outputs were not written)."""
        return [r for r in self.runs if not r.ok]

    @property
    def rendered(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "rendered"]

    @property
    def cached(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "cached"]

    def for_job(self, job: RenderJob) -> JobResult | None:
        return next((r for r in self.results if r.job is job), None)


def render_hash(job: RenderJob, model: Mapping[str, Any] | None) -> str:
    """The hash an output is cached under: the job's settings hash plus the model."""
    return compute_settings_hash({"settings_hash": job.settings_hash, "model": dict(model or {})})


def jobs_to_render(plan: Plan, manifest: Manifest, model: Mapping[str, Any] | None, owner: str | None, *,
                   force: bool = False) -> list[tuple[RenderJob, str]]:
    """``(job, render_hash)`` of every job not already done, after checking that none
    would replace a file another timeline relies on (all checked before any render:
    a run that would stop half-way is worse).

    Raises:
        ValueError: a job without an output name.
        OutputOwnershipError: see :meth:`Manifest.conflict`.
    """
    todo = []
    for job in plan.jobs:
        if not job.output_name:
            raise ValueError("every job needs an output name; plan it with plan_timeline")
        rh = render_hash(job, model)
        if not force and manifest.is_current(job.output_name, rh):
            continue
        why = manifest.conflict(job.output_name, rh, owner)
        if why is not None:
            raise OutputOwnershipError(why)
        todo.append((job, rh))
    return todo


#: the job states ``on_job`` is told of
JOB_STATES = ("cached", "rendering", "rendered", "failed")


@dataclass(frozen=True)
class Listeners:
    """Who hears of a render: ``progress(job, done, total)``, ``on_job(job, state)`` and
    ``on_event(event)``; calling it with an :class:`~uav.events.Event` tells each its part."""

    progress: Callable[[RenderJob, int, int], None] | None = None
    on_job: Callable[[RenderJob, str], None] | None = None
    on_event: Callable[[Event], None] | None = None

    @property
    def listening(self) -> bool:
        return self.progress is not None or self.on_event is not None

    def __call__(self, event: Event, job: Any = None) -> None:
        """Tell each listener its part of ``event``, about ``job`` (default ``event.job``; an
        executor's events name its Job, the listeners get the ``RenderJob`` it carries):
        its state (an executor's ``start`` is ``rendering``), its frames, the event itself."""
        job = event.job if job is None else job
        state = "rendering" if event.stage == "start" else event.stage
        if job is not None and state in JOB_STATES and self.on_job is not None:
            self.on_job(job, state)
        elif job is not None and event.stage == "progress" and self.progress is not None:
            self.progress(job, event.index, event.total)
        if self.on_event is not None:
            self.on_event(event)


def render_plan(
    plan: Plan,
    renderer: Renderer,
    *,
    media_dir: str | Path | None = None,
    model: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Callable[[RenderJob, int, int], None] | None = None,
    on_job: Callable[[RenderJob, str], None] | None = None,
    owner: str | Path | None = None,
    executor: Any = None,
    on_event: Callable[[Any], None] | None = None,
    captioner_options: Mapping[str, Any] | None = None,
    on_caption: Callable[[RenderJob, dict[str, Any], bool], None] | None = None,
) -> RenderReport:
    """Render every job of ``plan`` that is not already done.

    Args:
        plan: from :func:`uav_otio.plan.plan_timeline`.
        renderer: ``renderer(job, settings, output_path, progress=None)``; must write
            ``output_path`` atomically.
        media_dir: the output folder; defaults to ``plan.media_dir``.
        model: what identifies the model (weights, dtype...); part of the cache key
            and recorded in the manifest.
        force: render even jobs the manifest says are done.
        progress: ``progress(job, frames_done, frames_total)``.
        on_job: ``on_job(job, status)`` with status ``"cached"``, ``"rendering"``,
            ``"rendered"`` or (with an executor) ``"failed"``.
        owner: the output timeline that will point at the rendered files (recorded in
            the manifest; ``None``: unknown). Outputs another timeline relies on are
            never replaced with other content, and ``owner`` stops relying on the
            outputs of its earlier renders it no longer uses.
        executor: a :class:`uav.executors.Executor` (e.g. ``make_executor("ray")``) to
            hand the jobs to; ``None`` renders them here one after another. With an
            executor, ``renderer`` (or a ``"module:callable"`` spec) travels to each
            worker, a job that fails is reported in :attr:`RenderReport.failed` while
            the others finish, and this process alone writes the manifest.
        on_event: every event of the render as a :class:`uav.events.Event`: each job's
            state (``cached``, ``rendering``, ``rendered``, ``failed``; ``job`` is the
            ``RenderJob``) and frames (``progress``), and with an executor its events
            (``queued``, ``worker``, ``start``, ``progress``, ``retry``: ``job`` is the
            executor's :class:`uav.executors.Job`) and, as each job finishes, a ``result``
            event (its :class:`uav.executors.JobResult` as ``event["result"]``).
        captioner_options: options of the captioner that writes the prompt of
            ``prompt=auto`` jobs (``{"model": "/models/llava"}``); those captions are
            made (or found in the manifest) before the first render, and the renderer
            gets the caption as ``prompt`` (see :mod:`uav_otio.captions`).
        on_caption: ``on_caption(job, caption, cached)`` as each such caption is known.

    Returns:
        A :class:`RenderReport`.

    Raises:
        ValueError: no media folder, or a job without an output name.
        OutputOwnershipError: a job would replace a file another timeline relies on
            (checked for every job before the first render starts).
        RuntimeError: the renderer returned without writing its output.
        uav.captioning.CaptionError: a ``prompt=auto`` job's captioner cannot work
            (before any render).
    """
    if not callable(renderer) and not (executor is not None and isinstance(renderer, str)):
        raise TypeError(f"renderer must be callable, got {type(renderer).__name__}")
    mdir = Path(media_dir) if media_dir is not None else plan.media_dir
    if mdir is None:
        raise ValueError("media_dir is required: pass it here or to plan_timeline")
    mdir.mkdir(parents=True, exist_ok=True)
    model_rec = {k: (str(v) if isinstance(v, Path) else v) for k, v in dict(model or {}).items()}
    report = RenderReport(removed_partials=clean_partials(mdir))
    books = _Books(Manifest(mdir), report, model_rec, owner_id(owner), Listeners(progress, on_job, on_event))
    todo = jobs_to_render(plan, books.manifest, model_rec, books.owner, force=force)
    for job in plan.jobs:
        job.output_path = mdir / job.output_name
    # every caption before the first render: a captioner that cannot work fails before any
    # upscaling, and its model is freed before the upscaler needs the memory
    captions = caption_jobs(plan, [job for job, _ in todo], books.manifest, options=captioner_options,
                            on_caption=on_caption)
    if executor is not None:
        _render_with_executor(plan, todo, renderer, executor, books, captions)
        books.manifest.release(books.owner, keep={job.output_name for job in plan.jobs})
        return report
    pending = {id(job): rh for job, rh in todo}
    tell = books.tell
    for job in plan.jobs:
        if id(job) not in pending:
            books.cached(job)
            continue
        books.claim(job, pending[id(job)])
        tell(Event.of("rendering", job=job))
        cb = (lambda done, total, _job=job: tell(Event.of("progress", done, total, _job))) if tell.listening else None
        caption = captions.get(id(job))
        try:
            renderer(job, with_caption(job.settings, caption), job.output_path, progress=cb)
        except Exception:
            # a failed render leaves nothing to resume; a killed one (no chance to get
            # here) leaves its claim, which lets its owner take the name back
            books.manifest.unclaim(job.output_name)
            raise
        if output_size(job.output_path) is None:
            raise RuntimeError(f"the renderer returned without writing {str(job.output_path)!r}")
        books.rendered(job, pending[id(job)], caption)
    books.manifest.release(books.owner, keep={job.output_name for job in plan.jobs})
    return report


@dataclass
class _Books:
    """Where one :func:`render_plan` call records each job's outcome: the media folder's
    manifest, the report and the listeners."""

    manifest: Manifest
    report: RenderReport
    model: dict[str, Any]
    owner: str | None
    tell: Listeners

    def claim(self, job: RenderJob, rh: str) -> None:
        self.manifest.claim(job.output_name, render_hash=rh, settings_hash=job.settings_hash, owner=self.owner)

    def cached(self, job: RenderJob) -> None:
        """``job``'s output is current: the owner relies on it too, with the caption its entry records."""
        self.manifest.adopt(job.output_name, self.owner)
        caption = (self.manifest.outputs.get(job.output_name) or {}).get("caption")
        self.report.results.append(JobResult(job, "cached", render_hash(job, self.model), self.model,
                                             dict(caption) if isinstance(caption, dict) else None))
        self.tell(Event.of("cached", job=job))

    def rendered(self, job: RenderJob, rh: str, caption: dict[str, Any] | None) -> None:
        """``job``'s output is written: its entry replaces the claim."""
        entry = {
            "render_hash": rh,
            "settings_hash": job.settings_hash,
            "settings": job.settings,
            "model": self.model,
            "media": job.media.identity,
            "range": [job.start, job.end],
            "rate": job.rate,
            "frames": job.frames,
            "timecode": job.timecode,
            "start_seconds": job.start_seconds,
            "clips": list(job.clip_names),
            "size": output_size(job.output_path),
            "rendered_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **({"caption": caption} if caption is not None else {}),
        }
        self.manifest.record(job.output_name, entry, owner=self.owner)
        self.report.results.append(JobResult(job, "rendered", rh, self.model, caption))
        self.tell(Event.of("rendered", job=job))


def _worker_renderer(renderer: Renderer | str) -> Callable[..., None]:
    """A renderer of the executor's generic jobs, built in each worker (the executor gets
    ``functools.partial(_worker_renderer, renderer)`` as its factory) from a timeline renderer.

    ``renderer`` is a timeline renderer (``renderer(job, settings, output_path,
    progress=None)``) that pickles (e.g. a :class:`UpscalerRenderer` before its first
    use: its model loads in the worker), or a ``"module:callable"`` spec imported there.
    """
    render = renderer
    if isinstance(render, str):
        import importlib

        module, _, attr = render.partition(":")
        render = getattr(importlib.import_module(module), attr)
        render = render() if isinstance(render, type) else render

    def run(job: Any, progress: Callable[[int, int], None] | None = None) -> None:
        render(job.payload, dict(job.settings), job.output, progress=progress)

    return run


def _render_with_executor(plan: Plan, todo: list[tuple[RenderJob, str]], renderer: Renderer | str, executor: Any,
                          books: _Books, captions: Mapping[int, dict[str, Any]]) -> None:
    from uav.executors import Job

    hashes = {id(job): rh for job, rh in todo}
    for job in plan.jobs:
        if id(job) not in hashes:
            books.cached(job)
    jobs = []
    for job, rh in todo:
        books.claim(job, rh)
        jobs.append(Job(name=job.output_name, source=str(job.media.path), output=Path(job.output_path or ""),
                        start=job.first_index, end=job.end_index, frames=job.frames,
                        settings=with_caption(job.settings, captions.get(id(job))), payload=job))
    tell = books.tell

    def events(event: Event) -> None:
        tell(event, event.job.payload if event.job is not None else None)

    # the driver: results come back here, and only here is the manifest written
    for result in executor.run(jobs, functools.partial(_worker_renderer, renderer), on_event=events):
        job = result.job.payload
        books.report.runs.append(result)
        tell(result_event(result))
        if not result.ok:
            books.manifest.unclaim(job.output_name)
            tell(Event.of("failed", job=job))
            continue
        books.rendered(job, hashes[id(job)], captions.get(id(job)))
