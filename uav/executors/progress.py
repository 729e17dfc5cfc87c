"""One progress view for a whole run, whichever executor renders it.

:class:`RunProgress` is the ``on_event`` handler of :meth:`Executor.run` and the sink
of its results: a bar of jobs done/total with frames/s across all workers, and a line
per worker saying what it renders (or that it died and its job went back to the
queue). :meth:`RunProgress.summary` is the run's record for ``--json``: per job its
worker, time and result.
"""

from __future__ import annotations

import time
from typing import Any

from uav.events import Event
from uav.executors.base import DONE, FAILED, JobResult

__all__ = ["RunProgress"]


class RunProgress:
    """Draw a run's progress on a rich console (stderr) and collect its results.

    Args:
        console: a ``rich.console.Console``; ``None`` or a quiet console draws nothing.
        jobs: how many jobs the run has (cached ones included, they count as done).
        frames: how many frames the jobs to render hold.
    """

    def __init__(self, console: Any, *, jobs: int = 0, frames: int = 0) -> None:
        self.console = console
        self.total_jobs = jobs
        self.total_frames = frames
        self._count_queued = jobs == 0  # totals grow with "queued" events and skips
        self.results: list[JobResult] = []
        self.skipped = 0
        self.retries: list[dict[str, Any]] = []
        self.workers: dict[str, str] = {}
        self._in_flight: dict[str, int] = {}  # worker -> frames done of its current job
        self._frames_done = 0
        self._t0 = time.perf_counter()
        self._progress: Any = None
        self._overall: Any = None
        self._rows: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "RunProgress":
        self._t0 = time.perf_counter()
        if self.console is not None and not getattr(self.console, "quiet", False):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console, transient=False)
            self._overall = self._progress.add_task(self._overall_text(), total=self.total_jobs)
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()

    # ------------------------------------------------------------------ inputs
    def skip(self, count: int = 1) -> None:
        """Count jobs that are already done (cached) towards the total."""
        self.skipped += count
        if self._count_queued:
            self.total_jobs += count
        self._refresh()

    def __call__(self, event: Event | JobResult) -> None:
        """The executor's ``on_event``; a ``"result"`` event (or a bare :class:`JobResult`)
        is passed on to :meth:`add`."""
        if isinstance(event, JobResult) or event.stage == "result":
            self.add(event if isinstance(event, JobResult) else event["result"])
            return
        name = event.get("worker")
        if name is None:  # not an executor's event (a timeline job's state): its result counts it
            return
        if event.kind == "queued":
            if self._count_queued:
                self.total_jobs += 1
                self.total_frames += event.total
        elif event.kind == "worker":
            state = "ready" if event.error is None else f"could not start: {event.error}"
            self._set_row(name, state, 0, 1)
        elif event.kind == "start" and event.job is not None:
            self._in_flight[name] = 0
            self._set_row(name, event.job.name, 0, max(1, event.job.frames))
        elif event.kind == "progress" and event.job is not None:
            self._in_flight[name] = event.done
            self._set_row(name, event.job.name, event.done, max(1, event.total))
        elif event.kind == "retry" and event.job is not None:
            self._in_flight.pop(name, None)
            self.retries.append({"name": event.job.name, "worker": name, "error": event.error})
            self._set_row(name, f"died ({event.error}); {event.job.name} queued again", 0, 1)
        self._refresh()

    def add(self, result: JobResult) -> None:
        """Record a finished job."""
        self.results.append(result)
        self._in_flight.pop(result.worker, None)
        if result.status == DONE:
            self._frames_done += result.job.frames
        state = "idle" if result.status == DONE else f"{result.job.name} {result.status}"
        self._set_row(result.worker, state, 0, 1)
        self._refresh()

    # ------------------------------------------------------------------ outputs
    @property
    def frames_per_second(self) -> float:
        """Frames finished (and in flight) per second of wall time, over all workers."""
        elapsed = time.perf_counter() - self._t0
        return (self._frames_done + sum(self._in_flight.values())) / elapsed if elapsed > 0 else 0.0

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == FAILED]

    def summary(self) -> dict[str, Any]:
        """``{"jobs": [...], "done": n, "failed": n, "cached": n, "retries": [...], "frames_per_second": x}``."""
        seconds = time.perf_counter() - self._t0
        return {
            "jobs": [r.to_dict() for r in self.results],
            "done": sum(r.status == DONE for r in self.results),
            "failed": len(self.failed),
            "cached": self.skipped,
            "retries": list(self.retries),
            "seconds": round(seconds, 3),
            "frames_per_second": round(self._frames_done / seconds, 3) if seconds > 0 else None,
        }

    # ------------------------------------------------------------------ drawing
    def _overall_text(self) -> str:
        finished = self.skipped + len(self.results)
        failed = len(self.failed)
        extra = f", {failed} failed" if failed else ""
        return f"jobs {finished}/{self.total_jobs}{extra} · {self.frames_per_second:.2f} frames/s"

    def _set_row(self, worker: str, text: str, done: int, total: int) -> None:
        self.workers[worker] = text
        if self._progress is None:
            return
        from rich.markup import escape

        description = f"  {escape(worker)}: {escape(text)}"
        if worker not in self._rows:
            self._rows[worker] = self._progress.add_task(description, total=total, completed=done)
        else:
            self._progress.update(self._rows[worker], description=description, total=total, completed=done)

    def _refresh(self) -> None:
        if self._progress is not None and self._overall is not None:
            self._progress.update(self._overall, description=self._overall_text(), total=max(1, self.total_jobs),
                                  completed=self.skipped + len(self.results))
