"""Executors: who renders a run's jobs.

``local`` (the default) renders them one after another in this process; ``ray``
spreads them over Ray actors on one machine or a cluster (``pip install 'uav[ray]'``).
Both take the same :class:`Job` list and renderer factory and yield the same
:class:`JobResult` records, so the caller writes its manifest the same way.
Ray is imported only when the ray executor is built.
"""

from __future__ import annotations

from typing import Any

from uav.executors import base
from uav.executors.base import *  # noqa: F403  (the seam's names are the package's)
from uav.executors.base import Executor, ExecutorError
from uav.executors.local import LocalExecutor

__all__ = [*base.__all__, "EXECUTORS", "LocalExecutor", "make_executor"]

#: the names ``--executor`` accepts
EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", **options: Any) -> Executor:
    """Build an executor by name.

    ``options`` go to the executor's constructor; ``None`` values are dropped, so a
    CLI can pass its flags through as they are. ``local`` takes no cluster options.

    Raises:
        ExecutorError: an unknown name, or cluster options for ``local``.
        ExecutorUnavailable: ``ray`` without Ray installed.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if name == "local":
        cluster = sorted(k for k in given if k in ("address", "workers", "gpus_per_worker"))
        if cluster:
            flags = ", ".join("--" + k.replace("_", "-") for k in cluster)
            raise ExecutorError(f"{flags} only apply with --executor ray")
        return LocalExecutor(**{k: v for k, v in given.items() if k in ("debug", "stop_on_error")})
    if name == "ray":
        from uav.executors.ray import RayExecutor

        return RayExecutor(**{k: v for k, v in given.items() if k != "stop_on_error"})
    raise ExecutorError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {name!r}")
