"""One event type for progress and results, wherever they are reported.

The API callback (``VideoUpscaler.upscale(callback=...)``: stages ``caption``,
``compile``, ``flow``, ``denoise``, ``decode``, ``recovery``), the executors'
``on_event`` (``queued``, ``worker``, ``start``, ``progress``, ``retry``, ``result``)
and the timeline integration's ``on_event`` (those, and a job's ``cached``,
``rendering``, ``rendered``, ``failed``) all receive an :class:`Event`.

An event also reads as the dict the callbacks used to receive: ``event["stage"]``,
``event.get("timestep")``, ``{**event}`` and ``dict(event)`` see the same keys, so code
written against the dict events keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Event", "EventCallback"]

_CORE = ("stage", "index", "total", "job")


@dataclass(frozen=True, eq=False)
class Event(Mapping[str, Any]):
    """What happened: ``index`` of ``total`` of ``stage`` (a step, a chunk, frames of a job).

    Attributes:
        stage: what is reported (``"denoise"``, ``"decode"``, ``"progress"``, ``"result"`` ...).
        index: how far: the step or chunk index, or the frames done of an executor's job.
        total: of how many.
        job: the job it concerns (an executor's :class:`~uav.executors.Job`, a timeline's
            ``RenderJob``), ``None`` inside one run.
        extra: the stage's own fields (``timestep``, ``latents``, ``x0``; ``tile``;
            ``frames``; ``caption``; ``worker``, ``error``; ``result``, ``status`` ...),
            also readable as attributes (``event.worker``) and keys (``event["worker"]``).
    """

    stage: str
    index: int = 0
    total: int = 0
    job: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, stage: str, index: int = 0, total: int = 0, job: Any = None, **extra: Any) -> "Event":
        """``Event(stage, index, total, job, extra)`` with the extra fields as keywords."""
        return cls(stage, index, total, job, extra)

    def with_fields(self, **extra: Any) -> "Event":
        """This event with more (or replaced) extra fields."""
        return Event(self.stage, self.index, self.total, self.job, {**self.extra, **extra})

    @property
    def kind(self) -> str:
        """The executors' name for :attr:`stage` (``queued``, ``start``, ``progress`` ...)."""
        return self.stage

    @property
    def done(self) -> int:
        """The executors' name for :attr:`index`: frames done of :attr:`job`."""
        return self.index

    # the dict view: the keys a dict event had (``job`` only when there is one)
    def __getitem__(self, key: str) -> Any:
        if key in _CORE and (key != "job" or self.job is not None):
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in _CORE if k != "job" or self.job is not None)
        yield from (k for k in self.extra if k not in _CORE)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __getattr__(self, name: str) -> Any:
        # only called for names that are not attributes: the extra fields
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} {self.__dict__.get('stage')!r} has no field {name!r}")

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.extra.items() if not hasattr(v, "shape")}
        return f"Event({self.stage!r}, {self.index}, {self.total}, job={self.job!r}, {shown})"


#: what every ``callback`` / ``on_event`` receives
EventCallback = Callable[[Event], None]
