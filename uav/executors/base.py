"""The executor seam: jobs in, results out.

A :class:`Job` says "render this input range with these settings to this output path,
atomically". An :class:`Executor` runs a list of jobs with renderers built by a
:data:`RendererFactory` and yields one :class:`JobResult` per job as each finishes,
so that the caller (the *driver*) alone records what is done: the manifest, the
output timeline and the run summary are written by the process that called
:meth:`Executor.run`, never by a worker.

Nothing here imports Ray; :mod:`uav.executors.ray` does, when it is used.
"""

from __future__ import annotations

import abc
import contextlib
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from uav.events import Event

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "PARTIAL_MARKS",
    "Executor",
    "ExecutorError",
    "ExecutorUnavailable",
    "Job",
    "JobCancelled",
    "JobResult",
    "Progress",
    "Renderer",
    "RendererFactory",
    "WorkerEvent",
    "largest_first",
    "remove_partials",
    "render_job",
    "result_event",
]

#: :attr:`JobResult.status` values
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

#: the markers temporary outputs carry (the writer's and the timeline renderer's)
PARTIAL_MARKS = (".uavtmp-", ".uav-partial")

#: ``progress(frames_done, frames_total)``
Progress = Callable[[int, int], None]


class ExecutorError(RuntimeError):
    """An executor could not run (bad options, no cluster to join)."""


class ExecutorUnavailable(ExecutorError):
    """The executor's optional dependency is not installed."""


class JobCancelled(BaseException):
    """Raised inside a renderer's progress callback when the run is cancelled.

    A ``BaseException`` like ``KeyboardInterrupt``, so that renderers' ``except
    Exception`` clauses do not swallow it and their atomic writers remove the
    temporary output on the way out.
    """


@dataclass(frozen=True)
class Job:
    """Render ``source[start:end]`` with ``settings`` into ``output``, atomically.

    Args:
        name: unique within a run; names the job in progress views and summaries.
        source: what the renderer reads (a video file, an image-sequence pattern ...).
        output: where the result goes; a renderer writes it under a temporary name
            beside it and renames it when complete (see :data:`PARTIAL_MARKS`).
        start, end: the frame range of ``source`` (``end`` exclusive; ``None`` = its ends).
        frames: how many frames the job renders: its cost, for largest-first ordering
            and frames/s.
        settings: the render settings (``UpscaleSettings.to_dict()`` form).
        payload: anything else the renderer needs (must pickle for remote executors),
            e.g. a timeline's ``RenderJob``.
    """

    name: str
    source: str
    output: Path
    start: int | None = None
    end: int | None = None
    frames: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)
    payload: Any = None


@runtime_checkable
class Renderer(Protocol):
    """Renders one job; lives in one worker and is reused for all its jobs."""

    def __call__(self, job: Job, progress: Progress | None = None) -> None:
        """Write ``job.output`` atomically; call ``progress(done, total)`` as frames finish."""
        ...


#: A picklable zero-argument callable that builds a :class:`Renderer`. Each worker
#: calls it once (loading the pipeline once) and renders every job it is given with
#: the result, e.g. ``functools.partial(UpscaleJobRenderer, weights=...)``.
RendererFactory = Callable[[], Renderer]


@dataclass
class JobResult:
    """What became of one job.

    Attributes:
        job: the job.
        status: :data:`DONE`, :data:`FAILED` or :data:`CANCELLED`.
        worker: which worker rendered it last (``"local"`` in process).
        seconds: wall time of the successful (or last) attempt.
        attempts: how many times it was started (retries after a worker died add one).
        error: one line saying why it failed (``None`` when done).
    """

    job: Job
    status: str
    worker: str = "local"
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == DONE

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary entry: name, output, worker, time and result."""
        return {
            "name": self.job.name,
            "output": str(self.job.output),
            "frames": self.job.frames,
            "status": self.status,
            "worker": self.worker,
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
            "error": self.error,
        }


def WorkerEvent(kind: str, worker: str, job: Job | None = None, done: int = 0, total: int = 0,  # noqa: N802
                error: str | None = None, pid: int | None = None, node: str | None = None) -> Event:
    """An executor's progress :class:`~uav.events.Event` (its stage is ``kind``, its index ``done``).

    ``kind`` is ``"queued"`` (``job`` is part of the run; sent for every job first),
    ``"start"`` (``job`` began on ``worker``), ``"progress"`` (``done`` of
    ``total`` frames of ``job``), ``"retry"`` (``worker`` died while rendering ``job``;
    ``error`` says how) or ``"worker"`` (``worker`` is ready; ``error`` set when it
    could not start). ``pid`` and ``node`` say where a remote worker runs (to watch it).
    """
    return Event(kind, done, total, job, {"worker": worker, "error": error, "pid": pid, "node": node})


def result_event(result: JobResult) -> Event:
    """A finished job as an ``on_event`` :class:`~uav.events.Event`: stage ``"result"``,
    ``result``, ``status`` and ``worker`` as fields."""
    frames = result.job.frames
    return Event.of("result", frames if result.ok else 0, frames, result.job, result=result, status=result.status,
                    worker=result.worker, error=result.error)


class Executor(abc.ABC):
    """Runs jobs; the default is :class:`uav.executors.local.LocalExecutor`. A subclass
    renders in :meth:`_render`; :meth:`run` checks the jobs and announces them first."""

    name: str
    #: the ``worker`` of the ``"queued"`` events :meth:`run` sends
    driver = "local"

    def run(self, jobs: Sequence[Job], factory: RendererFactory, *,
            on_event: Callable[[Event], None] | None = None) -> Iterator[JobResult]:
        """Render ``jobs``; yield each one's :class:`JobResult` as it finishes.

        A job that raises is yielded as :data:`FAILED` and the others go on. On
        ``KeyboardInterrupt`` the executor stops every job in flight, removes their
        temporary files and re-raises; jobs not yet yielded are not done.
        """
        jobs = list(jobs)
        check_unique(jobs)
        if not jobs:
            return
        if on_event is not None:
            for job in jobs:
                on_event(WorkerEvent("queued", self.driver, job, 0, job.frames))
        yield from self._render(jobs, factory, on_event)

    @abc.abstractmethod
    def _render(self, jobs: list[Job], factory: RendererFactory,
                on_event: Callable[[Event], None] | None) -> Iterator[JobResult]:
        """Render the checked, announced ``jobs`` (what :meth:`run` promises, subclass by subclass)."""


def render_job(renderer: Renderer, job: Job, progress: Progress | None = None) -> None:
    """Run ``renderer`` on ``job`` and check that it left its output in place.

    Raises:
        RuntimeError: the renderer returned without writing ``job.output``.
    """
    renderer(job, progress)
    if not Path(job.output).exists():
        raise RuntimeError(f"the renderer returned without writing {str(job.output)!r}")


def largest_first(jobs: Sequence[Job]) -> list[Job]:
    """Jobs ordered by decreasing frame count (ties keep their order).

    Starting the longest jobs first keeps a long job from being the last one left
    running on a single worker while the others idle.
    """
    return sorted(jobs, key=lambda j: -j.frames)


def remove_partials(output: str | Path) -> list[Path]:
    """Remove the temporary files and folders left beside ``output`` by a killed render.

    Only names that start with ``.`` + the output's name or stem and carry one of
    :data:`PARTIAL_MARKS` are touched, so concurrent jobs writing other outputs into
    the same folder are left alone.
    """
    out = Path(output)
    folder = out.parent
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    # exactly the writer's (.stem.uavtmp-, .name.uavtmp-) and the timeline renderer's
    # (.stem.uav-partial) forms, so ``a.mp4`` never matches ``a.b.mp4``'s temporaries
    prefixes = tuple({f".{base}{mark}" for base in (out.name, out.stem) for mark in PARTIAL_MARKS})
    for p in folder.iterdir():
        if not p.name.startswith(prefixes):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def check_unique(jobs: Sequence[Job]) -> None:
    """Refuse two jobs with one name or one output (one would overwrite the other)."""
    names: set[str] = set()
    outputs: dict[Path, str] = {}
    for job in jobs:
        if job.name in names:
            raise ValueError(f"two jobs are named {job.name!r}; job names must be unique")
        names.add(job.name)
        key = Path(job.output).resolve()
        if key in outputs:
            raise ValueError(f"jobs {outputs[key]!r} and {job.name!r} would both write {job.output}")
        outputs[key] = job.name
