"""The default executor: every job in this process, one after another (today's behaviour)."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator

from uav.events import Event
from uav.executors.base import (
    DONE,
    FAILED,
    Executor,
    Job,
    JobResult,
    Renderer,
    RendererFactory,
    WorkerEvent,
    remove_partials,
    render_job,
)

__all__ = ["LocalExecutor"]


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the first line of the message)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class LocalExecutor(Executor):
    """Render jobs in order in the calling process with one renderer.

    Args:
        stop_on_error: re-raise a renderer's exception instead of reporting the job as
            failed and going on (what a single-file ``uav upscale`` wants).
        debug: keep the traceback in the failure reason.
    """

    name = "local"

    def __init__(self, *, stop_on_error: bool = False, debug: bool = False) -> None:
        self.stop_on_error = stop_on_error
        self.debug = debug
        self._renderer: Renderer | None = None

    def _render(self, jobs: list[Job], factory: RendererFactory,
                on_event: Callable[[Event], None] | None) -> Iterator[JobResult]:
        """Render ``jobs`` in the given order. The renderer is built on the first job (a run
        whose jobs are all cached loads nothing) and kept for the next runs of this executor."""
        for job in jobs:
            if self._renderer is None:
                self._renderer = factory()
                if on_event:
                    on_event(WorkerEvent("worker", "local"))
            if on_event:
                on_event(WorkerEvent("start", "local", job, 0, job.frames))

            def progress(done: int, total: int, _job: Job = job) -> None:
                if on_event:
                    on_event(WorkerEvent("progress", "local", _job, done, total))

            t0 = time.perf_counter()
            try:
                render_job(self._renderer, job, progress)
            except Exception as exc:
                remove_partials(job.output)
                if self.stop_on_error:
                    raise
                reason = traceback.format_exc() if self.debug else one_line(exc)
                yield JobResult(job, FAILED, "local", time.perf_counter() - t0, 1, reason)
                continue
            except BaseException:
                remove_partials(job.output)
                raise
            yield JobResult(job, DONE, "local", time.perf_counter() - t0, 1)
