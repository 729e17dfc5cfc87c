"""The plan's objects: render jobs, the clip uses they serve, and what is skipped.

All frame numbers are *media frames* (see :mod:`uav_otio.plan`); the timecode helpers
here never let a rate SMPTE timecode cannot count stop a plan or a render.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio

from .conform import Relink
from .media import MediaSource
from uav.shots.settings import DEFAULT_SETTINGS

__all__ = [
    "DEFAULT_HANDLES",
    "ClipPlace",
    "ClipUse",
    "Plan",
    "RenderJob",
    "SkippedItem",
    "safe_timecode",
    "settings_summary",
    "timecode_representable",
]

#: default handles, in frames, on each side of every used range
DEFAULT_HANDLES = 12


@dataclass
class ClipUse:
    """One clip the cut uses and the job that renders it."""

    clip: otio.schema.Clip
    label: str  # "V1/SH010" style name for messages and tables
    media: MediaSource
    used_start: int  # media frames, before handles
    used_end: int
    settings: dict[str, Any]
    origin: dict[str, str]
    job: RenderJob | None = None
    where: ClipPlace | None = None

    @property
    def used_frames(self) -> int:
        return self.used_end - self.used_start

    def to_dict(self) -> dict[str, Any]:
        return {
            "clip": self.clip.name,
            "label": self.label,
            **(self.where.to_dict() if self.where else {}),
            "media": str(self.media.path) if self.media.kind == "file" else self.media.identity,
            "used_range": _range_dict(self.used_start, self.used_end, self.media.rate),
            "job": self.job.output_name if self.job else None,
        }


@dataclass(frozen=True)
class ClipPlace:
    """Where a clip sits in the edit: what tells clips apart when editors name them alike
    (Avid AAFs name every clip ``TimelineMobSlot/<media>``)."""

    track: str
    index: int  # 0-based position in its track (or stack)
    record_timecode: str | None  # where the clip starts in the edit
    record_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        at = self.record_timecode or f"{self.record_seconds:.3f} s"
        return f"{self.track} item {self.index} @ {at}"


@dataclass(frozen=True)
class SkippedItem:
    """A clip (or other item) that will not be rendered, and why."""

    label: str
    reason: str
    media: str = ""
    where: ClipPlace | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"clip": self.label, **(self.where.to_dict() if self.where else {}), "media": self.media,
                "reason": self.reason}


@dataclass
class RenderJob:
    """One media range to render into one output file.

    ``start``/``end`` are media frame numbers (see module docs); ``first_index`` and
    ``end_index`` are the same range as 0-based indices into the file or sequence.
    """

    media: MediaSource
    start: int
    end: int
    settings: dict[str, Any]
    settings_hash: str
    clip_names: tuple[str, ...]
    output_name: str = ""
    output_path: Path | None = None

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def rate(self) -> float:
        return self.media.rate

    @property
    def first_index(self) -> int:
        return self.start - self.media.available_start

    @property
    def end_index(self) -> int:
        return self.end - self.media.available_start

    @property
    def media_range(self) -> otio.opentime.TimeRange:
        """The rendered range in the media's time (the new reference's available range)."""
        r = self.media.rate
        return otio.opentime.TimeRange(
            otio.opentime.RationalTime(self.start, r), otio.opentime.RationalTime(self.frames, r)
        )

    @property
    def timecode(self) -> str | None:
        """Source timecode of the first rendered frame (the output's start timecode);
        ``None`` when SMPTE timecode cannot express the media's rate (then the start
        is carried as a time: :attr:`start_seconds`)."""
        return safe_timecode(self.start, self.media.rate)

    @property
    def start_seconds(self) -> float:
        """The first rendered frame's time in the media, in seconds."""
        return self.start / self.media.rate

    @property
    def fps(self) -> Fraction:
        """The frame rate as an exact fraction (29.97 -> 30000/1001)."""
        return _rate_fraction(self.media.rate)

    @property
    def audio_source(self) -> Path | None:
        """The file whose audio goes into the output (``None`` for image sequences)."""
        return self.media.path if self.media.kind == "file" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output_name,
            "output_path": str(self.output_path) if self.output_path else None,
            "media": self.media.to_dict(),
            "range": _range_dict(self.start, self.end, self.media.rate),
            "first_index": self.first_index,
            "end_index": self.end_index,
            "frames": self.frames,
            "timecode": self.timecode,
            "clips": list(self.clip_names),
            "settings": self.settings,
            "settings_hash": self.settings_hash,
        }


def _rate_fraction(rate: float) -> Fraction:
    for den in (1, 1001):
        num = rate * den
        if abs(num - round(num)) < 1e-3:
            return Fraction(int(round(num)), den)
    return Fraction(rate).limit_denominator(100000)


#: frame rates SMPTE timecode counts in (NTSC rates as their exact values)
_SMPTE_RATES = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48000 / 1001, 48.0, 50.0, 60000 / 1001, 60.0)


def timecode_representable(rate: float) -> bool:
    """Whether SMPTE timecode can count frames at ``rate`` (23.976, 24, 25, 29.97, 30, 48, 50, 59.94, 60)."""
    return any(abs(rate - r) < 1e-3 for r in _SMPTE_RATES)


def safe_timecode(frame: int, rate: float) -> str | None:
    """``HH:MM:SS:FF`` of media frame ``frame`` at ``rate``, or ``None`` where SMPTE
    timecode cannot express the rate (15, 12.5, 277/12 fps ...): timecode must never
    stop a render, so callers carry the time instead."""
    if not timecode_representable(rate):
        return None
    try:
        return otio.opentime.to_timecode(otio.opentime.RationalTime(frame, rate), rate)
    except (ValueError, TypeError):
        return None


def _range_dict(start: int, end: int, rate: float) -> dict[str, Any]:
    return {
        "start": start,
        "end": end,
        "rate": rate,
        "start_timecode": safe_timecode(start, rate),
        "end_timecode": safe_timecode(end, rate),
        "start_seconds": start / rate,
        "end_seconds": end / rate,
    }


def _range_text(start: int, end: int, rate: float) -> str:
    a, b = safe_timecode(start, rate), safe_timecode(end, rate)
    if a is not None and b is not None:
        return f"{a}-{b}"
    return f"{start}-{end} @ {rate:g} fps"


@dataclass
class Plan:
    """What to render for a timeline, which clips use it, and what is skipped."""

    jobs: list[RenderJob] = field(default_factory=list)
    uses: list[ClipUse] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    handles: int = DEFAULT_HANDLES
    media_dir: Path | None = None
    relinked: list[Relink] = field(default_factory=list)  # offline media found under the search paths
    offline: list[SkippedItem] = field(default_factory=list)  # clips whose media is still offline

    @property
    def total_frames(self) -> int:
        return sum(j.frames for j in self.jobs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the plan."""
        return {
            "handles": self.handles,
            "media_dir": str(self.media_dir) if self.media_dir else None,
            "total_frames": self.total_frames,
            "jobs": [j.to_dict() for j in self.jobs],
            "clips": [u.to_dict() for u in self.uses],
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": list(self.warnings),
            "relinked": [r.to_dict() for r in self.relinked],
            "offline": [s.to_dict() for s in self.offline],
        }

    def rows(self) -> list[dict[str, str]]:
        """Table rows: clip, media, range, frames, settings, output (jobs, then skips)."""
        rows = []
        for job in self.jobs:
            rows.append(
                {
                    "clip": ", ".join(job.clip_names),
                    "media": job.media.display,
                    "range": _range_text(job.start, job.end, job.rate),
                    "frames": str(job.frames),
                    "settings": settings_summary(job.settings),
                    "output": job.output_name,
                }
            )
        for s in self.skipped:
            rows.append(
                {"clip": s.label, "media": s.media, "range": "-", "frames": "0", "settings": "-",
                 "output": f"skipped: {s.reason}"}
            )
        return rows


def settings_summary(settings: Mapping[str, Any]) -> str:
    """The settings that differ from the defaults, as ``key=value`` text."""
    parts = []
    for k, v in settings.items():
        if k == "skip" or DEFAULT_SETTINGS.get(k, object()) == v:
            continue
        if isinstance(v, str):
            v = v if len(v) <= 32 else v[:29] + "..."
            parts.append(f"{k}={v!r}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts) or "defaults"
