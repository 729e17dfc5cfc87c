"""The driver's loop: jobs -> (optional temporal split) -> executor -> results.

:func:`render_jobs` is what a front end calls with its list of jobs. It hands them to
an executor, merges the parts of split jobs as soon as all of a job's parts are in,
and yields one :class:`JobResult` per *original* job, in completion order, so the
caller records each result (manifest, summary) as it comes: only this process does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from uav.events import Event
from uav.executors.base import DONE, FAILED, Executor, Job, JobResult, RendererFactory
from uav.executors.local import LocalExecutor, one_line
from uav.executors.split import Part, TemporalSplit

__all__ = ["render_jobs"]


def render_jobs(
    jobs: Sequence[Job],
    factory: RendererFactory,
    *,
    executor: Executor | None = None,
    split: TemporalSplit | None = None,
    writer_options: Mapping[str, Any] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> Iterator[JobResult]:
    """Render ``jobs``; yield each one's result as it is final.

    Args:
        jobs: what to render (unique names and outputs).
        factory: builds one renderer per worker (see :data:`RendererFactory`).
        executor: default :class:`LocalExecutor`.
        split: a :class:`TemporalSplit` to share long jobs between workers (opt-in);
            split jobs are merged here, on the driver, with ``writer_options``.
        on_event: progress events (:class:`~uav.events.Event`, see :func:`~uav.executors.base.WorkerEvent`).
    """
    executor = executor or LocalExecutor()
    if split is None:
        yield from executor.run(jobs, factory, on_event=on_event)
        return
    to_run, parts_of = split.split(jobs)
    waiting = {name: {p.name for p in parts if p in to_run} for name, parts in parts_of.items()}
    parents = {job.name: job for job in jobs}
    spent: dict[str, list[JobResult]] = {name: [] for name in parts_of}
    failed: set[str] = set()

    def merged(name: str) -> JobResult:
        parent, results = parents[name], spent[name]
        workers = ",".join(dict.fromkeys(r.worker for r in results)) or "cached parts"
        seconds = sum(r.seconds for r in results)
        try:
            split.merge(parent, parts_of[name], writer_options=writer_options)
        except Exception as exc:
            return JobResult(parent, FAILED, workers, seconds, 1, f"merging its parts: {one_line(exc)}")
        return JobResult(parent, DONE, workers, seconds, max((r.attempts for r in results), default=1))

    for name in [n for n, left in waiting.items() if not left]:  # every part rendered by an earlier run
        yield merged(name)
    for result in executor.run(to_run, factory, on_event=on_event):
        part = result.job.payload
        if not isinstance(part, Part):
            yield result
            continue
        name = part.parent.name
        spent[name].append(result)
        waiting[name].discard(result.job.name)
        if result.status != DONE:
            if name not in failed:
                failed.add(name)
                yield JobResult(part.parent, result.status, result.worker, result.seconds, result.attempts,
                                f"part {part.index + 1} of {part.count}: {result.error}")
        elif not waiting[name] and name not in failed:
            yield merged(name)
