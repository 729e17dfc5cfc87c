"""A renderer of fixed cost, for throughput models and fault drills.

:class:`SimulatedRenderer` takes a set time per frame (and per worker start, the
pipeline load), writes a small deterministic output atomically, and can be told to
raise on some jobs or to kill its own process on others, so an executor's
scheduling, retries and clean-up can be measured and tested without a model.
:func:`throughput_model` turns measured numbers into the expected wall time on N
workers (see docs/scaling.md).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from uav.executors.base import PARTIAL_MARKS, Job, Progress

__all__ = ["SimulatedRenderer", "ThroughputEstimate", "throughput_model"]


class SimulatedRenderer:
    """Sleep ``seconds_per_frame`` per frame, then write a JSON record of the job.

    Args:
        seconds_per_frame: the render cost per frame.
        startup_s: slept once when built (a worker's model load).
        fail_on: job names whose render raises ``RuntimeError`` half way.
        die_on: job names whose render kills its own process half way, as a node loss
            or the OOM killer would; with ``die_once`` only on the first attempt (a
            marker file beside the output records it).
    """

    def __init__(self, seconds_per_frame: float = 0.01, *, startup_s: float = 0.0,
                 fail_on: Sequence[str] = (), die_on: Sequence[str] = (), die_once: bool = True) -> None:
        self.seconds_per_frame = seconds_per_frame
        self.fail_on = frozenset(fail_on)
        self.die_on = frozenset(die_on)
        self.die_once = die_once
        if startup_s:
            time.sleep(startup_s)

    def __call__(self, job: Job, progress: Progress | None = None) -> None:
        out = Path(job.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}{PARTIAL_MARKS[1]}-{os.getpid()}{out.suffix}")
        record = {"name": job.name, "source": job.source, "start": job.start, "end": job.end,
                  "frames": job.frames, "settings": dict(job.settings)}
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                for k in range(job.frames):
                    if k == job.frames // 2:
                        self._fault(job, out)
                    time.sleep(self.seconds_per_frame)
                    fh.write(f"{k}\n")
                    fh.flush()
                    if progress is not None:
                        progress(k + 1, job.frames)
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _fault(self, job: Job, out: Path) -> None:
        if job.name in self.fail_on:
            raise RuntimeError(f"simulated failure in {job.name}")
        if job.name in self.die_on:
            marker = out.with_name(f"{out.name}.died-once")
            if not (self.die_once and marker.exists()):
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ThroughputEstimate:
    """Expected wall time of a run on ``workers`` workers."""

    workers: int
    seconds: float
    efficiency: float  # (serial time / workers) / seconds


def throughput_model(
    job_seconds: Sequence[float],
    workers: int,
    *,
    startup_s: float = 0.0,
    overhead_s: float = 0.0,
) -> ThroughputEstimate:
    """Wall time of rendering jobs of the given durations on ``workers`` workers.

    The model is the executor's own policy: jobs start largest first, each on the
    first worker to come free; every worker first pays ``startup_s`` (loading the
    pipeline) and every job ``overhead_s`` of driver round trip (dispatch, result,
    manifest record). Efficiency compares with a perfect split of the serial time
    (``sum(job_seconds)``, one start-up).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    free = [startup_s] * workers
    for cost in sorted(job_seconds, reverse=True):
        k = min(range(workers), key=free.__getitem__)
        free[k] += cost + overhead_s
    wall = max(free) if job_seconds else startup_s
    ideal = startup_s + sum(job_seconds) / workers
    return ThroughputEstimate(workers, wall, ideal / wall if wall > 0 and not math.isnan(wall) else 1.0)
