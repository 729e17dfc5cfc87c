"""The Ray executor: jobs spread over actors on one machine or a cluster.

Each worker is a Ray actor that builds its renderer once (loading the pipeline once)
and renders the jobs the driver hands it, largest first, one at a time: a worker
asks for work by finishing its previous job, so fast workers take more jobs. Outputs
are written by the workers, atomically, on storage every node shares; the driver
(the process calling :meth:`RayExecutor.run`) receives each result and is the only
one to record it (manifest, timeline, summary).

A worker that dies mid-job (its node lost, killed by the OOM killer, ``kill -9``)
is replaced by a fresh actor and its job is queued again, up to ``max_retries``
times, then reported failed with the reason while the rest finish. A renderer that
*raises* fails its job at once: an exception is a property of the job, a retry would
raise it again. Ctrl-C (``KeyboardInterrupt`` in the driver) asks the busy workers
to stop, kills them after a grace period, and removes every temporary file of the
jobs in flight.

Every worker computes with the driver's number of CPU threads (torch's intra-op
threads): Ray starts an actor that reserves one CPU with ``OMP_NUM_THREADS=1``, and
PyTorch picks other CPU kernels single-threaded (1x1 convolutions of fewer than 16
images skip oneDNN), whose last bits differ; a render would then not be the one a
local run makes. With the driver's thread count the frames are identical.

Ray is imported when a :class:`RayExecutor` is built, never on ``import uav``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from uav.events import Event
from uav.executors.base import (
    CANCELLED,
    DONE,
    FAILED,
    Executor,
    ExecutorError,
    ExecutorUnavailable,
    Job,
    JobCancelled,
    JobResult,
    RendererFactory,
    WorkerEvent,
    largest_first,
    remove_partials,
    render_job,
)
from uav.executors.local import one_line

__all__ = ["INSTALL_HINT", "RayExecutor", "import_ray"]

INSTALL_HINT = "the ray executor needs Ray, which is not installed: pip install 'uav[ray]'"


def driver_threads() -> int | None:
    """This process's torch intra-op thread count (``None`` when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def set_cpu_threads(threads: int | None) -> None:
    """Make this process's torch use ``threads`` intra-op threads (``None``: leave it)."""
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def import_ray() -> Any:
    """The ``ray`` module, or :class:`ExecutorUnavailable` with the install hint."""
    try:
        import ray
    except ImportError:
        raise ExecutorUnavailable(INSTALL_HINT) from None
    return ray


class RenderWorker:
    """The actor body: one renderer, built once, rendering one job at a time.

    Runs with two threads: :meth:`render` in one, :meth:`status` and :meth:`cancel`
    answer from the other while a job is in flight.
    """

    def __init__(self, factory: RendererFactory, name: str, debug: bool = False, threads: int | None = None) -> None:
        self.name = name
        self.debug = debug
        self.renderer: Any = None
        #: why the renderer could not be built (reported by :meth:`identity`, one line)
        self.error: str | None = None
        try:
            set_cpu_threads(threads)
            self.renderer = factory()
        except Exception as exc:  # a bad weights path, say: the driver reports it, the actor stays up
            self.error = traceback.format_exc() if debug else one_line(exc)
        self._status: tuple[str | None, int, int] = (None, 0, 0)
        self._cancel = threading.Event()

    def identity(self) -> tuple[int, str, str | None]:
        """``(pid, host, error)`` of the worker process; ``error`` when its renderer could not be built."""
        return os.getpid(), socket.gethostname(), self.error

    def render(self, job: Job) -> tuple[str, float, str | None]:
        """Render ``job``; returns ``(status, seconds, error)``; never raises for the job's own errors."""
        self._cancel.clear()
        self._status = (job.name, 0, job.frames)

        def progress(done: int, total: int) -> None:
            self._status = (job.name, done, total)
            if self._cancel.is_set():
                raise JobCancelled(job.name)

        t0 = time.perf_counter()
        try:
            render_job(self.renderer, job, progress)
        except JobCancelled:
            remove_partials(job.output)
            return CANCELLED, time.perf_counter() - t0, "cancelled"
        except Exception as exc:
            remove_partials(job.output)
            return FAILED, time.perf_counter() - t0, traceback.format_exc() if self.debug else one_line(exc)
        finally:
            self._status = (None, 0, 0)
        return DONE, time.perf_counter() - t0, None

    def status(self) -> tuple[str | None, int, int]:
        """``(job name, frames done, frames total)`` of the job in flight (name ``None`` when idle)."""
        return self._status

    def cancel(self) -> None:
        """Make the job in flight stop at its next progress report."""
        self._cancel.set()


@dataclass
class _Slot:
    """The driver's view of one worker."""

    name: str
    actor: Any
    pid: int | None = None
    node: str | None = None
    job: Job | None = None
    ref: Any = None
    started: float = 0.0


@dataclass
class _Pending:
    job: Job
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(kw_only=True, eq=False)
class RayExecutor(Executor):
    """Render jobs on Ray actors.

    Args:
        address: ``None`` starts a local Ray cluster for the run (and stops it after);
            ``"auto"`` joins the cluster this machine belongs to; ``"ray://host:10001"``
            or ``"host:6379"`` joins that one. When Ray is already initialised in this
            process, that connection is used as it is.
        workers: number of actors (default: one per ``gpus_per_worker`` GPUs in the
            cluster, or one when there are no GPUs).
        gpus_per_worker: GPUs reserved for each actor (default: 1 when the cluster has
            GPUs, else 0). Fractions share a GPU between actors.
        cpus_per_worker: CPUs reserved for each actor.
        max_retries: how many times a job whose worker died is started again.
        threads: torch CPU threads of each worker (default: the driver's
            ``torch.get_num_threads()``, so CPU results are those of a local run).
        num_cpus: CPUs of a local cluster this executor starts (default: all).
        grace_s: how long Ctrl-C waits for busy workers to stop cleanly before killing them.
        poll_s: how often per-worker progress is polled.
        debug: keep tracebacks in failure reasons.
    """

    name = "ray"

    driver = "driver"

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    max_retries: int = 2
    num_cpus: int | None = None
    grace_s: float = 10.0
    poll_s: float = 0.25
    debug: bool = False
    threads: int | None = None
    ray: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        workers, gpus_per_worker, cpus_per_worker = self.workers, self.gpus_per_worker, self.cpus_per_worker
        if workers is not None and workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {workers}")
        if gpus_per_worker is not None and not 0 <= gpus_per_worker < float("inf"):
            raise ExecutorError(f"--gpus-per-worker must be a number >= 0, got {gpus_per_worker}")
        if not 0 <= cpus_per_worker < float("inf"):
            raise ExecutorError(f"cpus_per_worker must be >= 0, got {cpus_per_worker}")
        if self.max_retries < 0:
            raise ExecutorError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.threads is not None and self.threads < 1:
            raise ExecutorError(f"threads must be >= 1, got {self.threads}")
        self.ray = import_ray()

    # ------------------------------------------------------------------ cluster
    def _connect(self) -> bool:
        """Connect to (or start) the cluster; True when this call did, so the run disconnects."""
        ray = self.ray
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if self.address is None:
            options.update(include_dashboard=False, num_cpus=self.num_cpus)
        else:
            options["address"] = self.address
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a local Ray cluster" if self.address is None else f"the Ray cluster at {self.address!r}"
            raise ExecutorError(f"cannot connect to {where}: {one_line(exc)}") from None
        return True

    def _shape(self) -> tuple[int, float]:
        """``(workers, gpus_per_worker)`` resolved against the cluster's resources."""
        resources = self.ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        cpus = float(resources.get("CPU", 0))
        per_gpu = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus else 0.0)
        if per_gpu > 0 and gpus < per_gpu:
            raise ExecutorError(f"--gpus-per-worker {per_gpu:g}: the Ray cluster has {gpus:g} GPU(s)")
        workers = self.workers if self.workers is not None else (max(1, int(gpus // per_gpu)) if per_gpu else 1)
        if per_gpu and workers * per_gpu > gpus + 1e-9:
            raise ExecutorError(f"--workers {workers} x --gpus-per-worker {per_gpu:g} needs {workers * per_gpu:g} "
                                f"GPUs; the Ray cluster has {gpus:g}")
        if workers * self.cpus_per_worker > cpus + 1e-9:
            raise ExecutorError(f"--workers {workers} x {self.cpus_per_worker:g} CPU(s) each needs "
                                f"{workers * self.cpus_per_worker:g} CPUs; the Ray cluster has {cpus:g}")
        return workers, per_gpu

    def _spawn(self, factory: RendererFactory, name: str, per_gpu: float) -> _Slot:
        actor_cls = self.ray.remote(RenderWorker).options(
            num_cpus=self.cpus_per_worker, num_gpus=per_gpu, max_concurrency=2, max_restarts=0, name=None)
        threads = self.threads if self.threads is not None else driver_threads()
        return _Slot(name, actor_cls.remote(factory, name, self.debug, threads))

    # ------------------------------------------------------------------ the run
    def _render(self, jobs: list[Job], factory: RendererFactory,
                on_event: Callable[[Event], None] | None) -> Iterator[JobResult]:
        """Results are yielded in completion order. Raises :class:`ExecutorError` when no
        worker could build its renderer (the reason of the first failure)."""
        owned = self._connect()
        slots: list[_Slot] = []
        try:
            workers, per_gpu = self._shape()
            workers = min(workers, len(jobs))  # an actor per job at most: each loads the pipeline
            slots = [self._spawn(factory, f"w{k + 1}", per_gpu) for k in range(workers)]
            yield from self._drive(jobs, factory, slots, per_gpu, on_event)
        except BaseException:
            self._stop(slots)
            raise
        finally:
            for slot in slots:
                self._kill(slot)
            if owned:
                self.ray.shutdown()

    def _emit(self, on_event: Callable[[Event], None] | None, kind: str, slot: _Slot, job: Job | None = None,
              done: int = 0, total: int = 0, error: str | None = None) -> None:
        if on_event is not None:
            on_event(WorkerEvent(kind, slot.name, job, done, total, error, slot.pid, slot.node))

    def _drive(self, jobs: list[Job], factory: RendererFactory, slots: list[_Slot], per_gpu: float,
               on_event: Callable[[Event], None] | None) -> Iterator[JobResult]:
        run = _Drive(queue=deque(_Pending(j) for j in largest_first(jobs)),
                     starting={slot.actor.identity.remote(): slot for slot in slots}, spawned=len(slots),
                     # a bound on replacement actors, so a renderer that kills its process on
                     # every job cannot keep the run alive for ever
                     max_spawn=len(slots) * (self.max_retries + 2))
        while run.queue or run.in_flight:
            self._take_started(run, slots, on_event)
            if not run.starting and not run.idle and not run.in_flight:
                if not run.ever_ready:
                    raise ExecutorError(f"no Ray worker could start: {run.first_error}")
                for p in run.queue:
                    yield JobResult(p.job, FAILED, "-", 0.0, p.attempts,
                                    "no Ray worker left: " + (p.errors[-1] if p.errors else str(run.first_error)))
                return
            self._hand_out(run, on_event)
            if not run.in_flight:
                if run.starting:
                    self.ray.wait(list(run.starting), num_returns=1, timeout=self.poll_s)
                continue
            done, _ = self.ray.wait(list(run.in_flight), num_returns=1, timeout=self.poll_s)
            for ref in done:
                yield from self._finished(run, ref, factory, slots, per_gpu, on_event)
            if on_event is not None and run.in_flight and time.perf_counter() - run.last_poll >= self.poll_s:
                run.last_poll = time.perf_counter()
                self._poll(run.in_flight, on_event)

    def _take_started(self, run: _Drive, slots: list[_Slot], on_event: Callable[[Event], None] | None) -> None:
        """Workers that finished starting become idle (or are dropped, with the reason)."""
        if not run.starting:
            return
        ready, _ = self.ray.wait(list(run.starting), num_returns=len(run.starting), timeout=0)
        for ref in ready:
            slot = run.starting.pop(ref)
            try:
                slot.pid, slot.node, error = self.ray.get(ref)
            except Exception as exc:  # the actor process could not start
                error = _actor_error(exc)
            if error is not None:
                run.first_error = run.first_error or error
                self._emit(on_event, "worker", slot, error=error)
                slots.remove(slot)
                self._kill(slot)
                continue
            self._emit(on_event, "worker", slot)
            run.ever_ready = True
            run.idle.append(slot)

    def _hand_out(self, run: _Drive, on_event: Callable[[Event], None] | None) -> None:
        """Idle workers take the largest jobs left."""
        while run.idle and run.queue:
            slot, pending = run.idle.pop(0), run.queue.popleft()
            pending.attempts += 1
            slot.job, slot.started = pending.job, time.perf_counter()
            slot.ref = slot.actor.render.remote(pending.job)
            run.in_flight[slot.ref] = (slot, pending)
            self._emit(on_event, "start", slot, pending.job, 0, pending.job.frames)

    def _finished(self, run: _Drive, ref: Any, factory: RendererFactory, slots: list[_Slot], per_gpu: float,
                  on_event: Callable[[Event], None] | None) -> Iterator[JobResult]:
        """The result of a job whose call returned; a dead worker's job is queued again
        (or failed after ``max_retries``) and a replacement worker started."""
        slot, pending = run.in_flight.pop(ref)
        job = pending.job
        try:
            status, seconds, error = self.ray.get(ref)
        except Exception as exc:  # the worker process died with the job
            reason = _actor_error(exc)
            pending.errors.append(reason)
            remove_partials(job.output)
            self._emit(on_event, "retry", slot, job, error=reason)
            slots.remove(slot)
            self._kill(slot)
            if pending.attempts <= self.max_retries:
                run.queue.appendleft(pending)  # it was among the largest left
            else:
                yield JobResult(job, FAILED, slot.name, time.perf_counter() - slot.started, pending.attempts,
                                f"worker died {pending.attempts} time(s): {reason}")
            run.first_error = reason
            if run.spawned < run.max_spawn and run.queue:
                run.spawned += 1
                new = self._spawn(factory, f"w{run.spawned}", per_gpu)
                slots.append(new)
                run.starting[new.actor.identity.remote()] = new
            return
        slot.job = slot.ref = None
        run.idle.append(slot)
        yield JobResult(job, status, slot.name, seconds, pending.attempts, error)

    def _poll(self, in_flight: dict[Any, tuple[_Slot, _Pending]], on_event: Callable[[Event], None]) -> None:
        refs = {slot.actor.status.remote(): slot for slot, _ in in_flight.values()}
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=self.poll_s)
        for ref in ready:
            slot = refs[ref]
            try:
                name, done, total = self.ray.get(ref)
            except Exception:  # a dying worker; its render call reports it
                continue
            if name is not None and slot.job is not None and name == slot.job.name:
                self._emit(on_event, "progress", slot, slot.job, done, total)

    # ------------------------------------------------------------------ stopping
    def _stop(self, slots: list[_Slot]) -> None:
        """Cancel the jobs in flight: ask, wait ``grace_s``, kill; then remove their temporaries."""
        busy = [s for s in slots if s.ref is not None]
        for slot in busy:
            with contextlib.suppress(Exception):
                slot.actor.cancel.remote()
        if busy:
            with contextlib.suppress(BaseException):  # a second Ctrl-C: kill now
                self.ray.wait([s.ref for s in busy], num_returns=len(busy), timeout=self.grace_s)
        for slot in slots:
            self._kill(slot)
        for slot in busy:
            if slot.job is not None:
                remove_partials(slot.job.output)

    def _kill(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            self.ray.kill(slot.actor, no_restart=True)


def _actor_error(exc: BaseException) -> str:
    """One line for an actor's death or start-up failure."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        return one_line(cause)  # the renderer factory raised in the worker
    kind = type(exc).__name__
    text = str(exc)
    if "OutOfMemory" in kind:
        return f"{kind}: the worker was killed for using too much memory"
    if "NodeDied" in kind or "node died" in text.lower() or "node has died" in text.lower():
        return f"{kind}: the worker's node was lost"
    if "ActorDied" in kind or "ActorUnavailable" in kind or "WorkerCrashed" in kind:
        detail = "exited unexpectedly"
        for line in text.splitlines():
            if "exit detail" in line.lower():
                detail = line.split("exit detail:", 1)[-1].strip().split(". ")[0] or detail
                break
        return f"{kind}: the worker process died ({detail})"
    first = text.strip().splitlines()[0] if text.strip() else kind
    return f"{kind}: {first}"


@dataclass
class _Drive:
    """The driver's state over one run: jobs queued, workers starting, idle and busy."""

    queue: deque[_Pending]
    starting: dict[Any, _Slot]
    spawned: int
    max_spawn: int
    in_flight: dict[Any, tuple[_Slot, _Pending]] = field(default_factory=dict)
    idle: list[_Slot] = field(default_factory=list)
    first_error: str | None = None
    ever_ready: bool = False
    last_poll: float = 0.0
