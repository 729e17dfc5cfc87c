"""The API's parameter objects: how a timeline file is read, what of it is rendered,
and how the renders run.

:func:`uav_otio.api.plan_file`, :func:`~uav_otio.api.upscale_timeline` and
:func:`~uav_otio.api.preview_timeline` take these objects (``reading=``, ``planning=``,
``rendering=``); the first two, as first published, their fields as keywords too; the objects travel
through the integration instead of two dozen forwarded keywords. Who hears of a
render (``progress``, ``on_job``, ``on_event``) is :class:`uav_otio.render.Listeners`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from .jobs import DEFAULT_HANDLES
from uav.shots.shot_list import ShotList

__all__ = ["Planning", "Reading", "Rendering", "group"]

T = TypeVar("T")


@dataclass(frozen=True)
class Reading:
    """How a timeline file is read (see :func:`uav_otio.timeline_files.read_timeline`)."""

    timeline_name: str | None = None
    adapter_name: str | None = None
    rate: float | str | Fraction | None = None
    adapter_options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Planning:
    """What is rendered and how outputs are named (see :func:`uav_otio.plan.plan_timeline`);
    ``shots`` is a TOML shot list path or a parsed :class:`~uav_otio.shots.ShotList`."""

    handles: int = DEFAULT_HANDLES
    shots: str | Path | ShotList | None = None
    overrides: Mapping[str, Any] | None = None
    name_by: str = "media"
    ext: str = ".mov"
    search_paths: Sequence[str | Path] | None = None


@dataclass(frozen=True)
class Rendering:
    """How the renders run (see :func:`uav_otio.api.upscale_timeline`)."""

    renderer: Any = None
    weights: str | Path | None = None
    device: str | None = None
    dtype: str | None = None
    codec: str = "prores_hq"
    model: Mapping[str, Any] | None = None
    force: bool = False
    executor: Any = None
    captioner_options: Mapping[str, Any] | None = None
    on_caption: Callable[[Any, dict[str, Any], bool], None] | None = None


def group(cls: type[T], given: T | None, name: str, **keywords: Any) -> T:
    """``given``, or a ``cls`` built from ``keywords``; both at once is a ``TypeError``
    naming the keywords (a keyword left at its default does not count)."""
    if given is None:
        return cls(**keywords)
    if not isinstance(given, cls):
        raise TypeError(f"{name}: expected a {cls.__name__}, got {type(given).__name__}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    mixed = sorted(k for k, v in keywords.items() if v is not defaults[k] and v != defaults[k])
    if mixed:
        raise TypeError(f"pass either {name}= or its fields as keywords, not both (got {', '.join(mixed)})")
    return given
