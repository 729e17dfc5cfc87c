"""``--temporal-split`` and the executor side of ``uav upscale`` and ``uav timeline upscale``
(their ``--executor`` options are fields of :class:`uav.cli.options.RunOptions`).

Nothing here imports Ray: :meth:`uav.cli.options.RunOptions.build_executor` does, through
:func:`uav.executors.make_executor`, only for ``--executor ray``.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from uav.cli.common import UserError
from uav.cli.options import EXECUTOR

__all__ = [
    "EXIT_PARTIAL_FAILURE",
    "SplitOpt",
    "failure_line",
    "parse_split",
]

#: exit code of a run in which some jobs failed and the others finished
EXIT_PARTIAL_FAILURE = 3

SplitOpt = Annotated[Optional[str], typer.Option(
    "--temporal-split", metavar="FRAMES[:OVERLAP]",
    help="Opt-in: cut clips longer than FRAMES into parts of FRAMES frames that overlap by OVERLAP (default 8, "
         "at most FRAMES/2) and share them between workers; the parts are blended at the seams. Changes the "
         "result near the seams (docs/scaling.md).", rich_help_panel=EXECUTOR)]


def parse_split(text: str | None) -> Any:
    """``--temporal-split FRAMES[:OVERLAP]`` as a :class:`~uav.executors.split.TemporalSplit`
    (``None`` when not given); clips longer than FRAMES are split.

    Raises:
        UserError: not two integers, or an overlap outside ``[0, FRAMES // 2]``.
    """
    if text is None:
        return None
    from uav.executors.split import TemporalSplit

    frames, _, overlap = text.partition(":")
    try:
        part, lap = int(frames), int(overlap) if overlap else min(8, int(frames) // 2)
    except ValueError:
        raise UserError(f"--temporal-split: expected FRAMES or FRAMES:OVERLAP (e.g. 96:8), got {text!r}") from None
    try:
        return TemporalSplit(part_frames=part, overlap=lap, min_frames=part)
    except ValueError as exc:
        raise UserError(f"--temporal-split: {exc}") from None


def failure_line(failed: list[Any]) -> str:
    """``N job(s) failed: name (reason); ...`` on one line."""
    parts = [f"{r.job.name} ({r.error})" for r in failed]
    return f"{len(failed)} job(s) failed, the others finished: " + "; ".join(parts)


def render_batch(jobs: list[Any], *, executor: Any, weights: Any, device: str | None, dtype: str | None, vae: str,
                 settings: Any, writer_options: dict[str, Any], start: Any, end: Any, console: Any,
                 quiet: bool, split: Any = None) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    """Render ``uav upscale``'s jobs on ``executor``; this process only collects the results
    (and, with ``split``, merges the parts of split clips).

    Returns ``(per-output records, failed executor results, run summary)``; the records
    have the fields of the local path plus ``worker``, ``attempts`` and ``status``.
    """
    import functools

    from rich.markup import escape

    from uav.executors import Job
    from uav.executors.batch import render_jobs
    from uav.executors.progress import RunProgress
    from uav.executors.renderers import UpscaleJobRenderer

    by_name = {job.label: job for job in jobs}
    # only what was given: each worker chooses the memory-shaping rest for its own card
    work = [Job(name=job.label, source=str(job.source), output=job.output, start=start, end=end, frames=job.frames,
                settings=settings.to_dict(given_only=True)) for job in jobs]
    factory = functools.partial(UpscaleJobRenderer, weights, device=device, dtype=dtype, vae=vae,
                                writer_options=writer_options)
    records, failed = [], []
    with RunProgress(console, jobs=len(work), frames=sum(j.frames for j in work)) as view:
        for result in render_jobs(work, factory, executor=executor, split=split, writer_options=writer_options,
                                  on_event=view):
            view.add(result)
            job = by_name[result.job.name]
            if not result.ok:
                failed.append(result)
                continue
            seconds = result.seconds
            records.append({
                **job.record((job.width * 4, job.height * 4)), "seconds": round(seconds, 3),
                "frames_per_second": round(job.frames / seconds, 3) if seconds > 0 else None,
                "worker": result.worker, "attempts": result.attempts, "status": result.status,
            })
            if not quiet:
                console.print(f"[green]wrote[/green] {escape(str(job.output))}  ({job.frames} frames on "
                              f"{escape(result.worker)}, {seconds:.1f} s)")
    return records, failed, view.summary()
