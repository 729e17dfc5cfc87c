"""SMPTE timecode arithmetic (``HH:MM:SS:FF``, drop-frame ``HH:MM:SS;FF``).

Timecodes count frames at the *nominal* integer rate of a clip (24 for 23.976 fps, 30
for 29.97 fps). Drop-frame timecode, only defined for 29.97 and 59.94 fps, skips frame
labels 0-1 (0-3 at 59.94) at the start of every minute except every tenth so that the
labels stay in step with wall-clock time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Timecode",
    "parse_timecode",
    "format_timecode",
    "is_timecode",
    "nominal_rate",
    "timecode_to_frames",
    "frames_to_timecode",
    "offset_timecode",
]

_TIMECODE_RE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2,3})$")


@dataclass(frozen=True)
class Timecode:
    """The four fields of a timecode and whether it is drop-frame."""

    hours: int
    minutes: int
    seconds: int
    frames: int
    drop_frame: bool


def is_timecode(value: str) -> bool:
    """Whether ``value`` looks like ``HH:MM:SS:FF`` or ``HH:MM:SS;FF``."""
    return bool(_TIMECODE_RE.match(value.strip()))


def parse_timecode(value: str) -> Timecode:
    """Split a timecode string into its fields.

    ``;`` or ``,`` before the frame field marks drop-frame (the SMPTE convention);
    ``:`` or ``.`` marks non-drop.

    Raises:
        ValueError: when ``value`` is not a timecode or a field is out of range.
    """
    if not isinstance(value, str):
        raise TypeError(f"timecode must be a string like '01:00:00:00', got {type(value).__name__}")
    match = _TIMECODE_RE.match(value.strip())
    if match is None:
        raise ValueError(f"timecode must look like HH:MM:SS:FF (or HH:MM:SS;FF for drop-frame), got {value!r}")
    hh, mm, ss, sep, ff = match.groups()
    tc = Timecode(int(hh), int(mm), int(ss), int(ff), sep in ";,")
    if tc.minutes > 59 or tc.seconds > 59:
        raise ValueError(f"timecode {value!r} has minutes or seconds above 59")
    return tc


def nominal_rate(fps: Fraction | int) -> int:
    """The integer frame rate timecode counts in (``round(fps)``, at least 1)."""
    return max(1, round(Fraction(fps)))


def _drop_frames_per_minute(fps: Fraction) -> int:
    nominal = nominal_rate(fps)
    if nominal not in (30, 60) or Fraction(fps) == nominal:
        raise ValueError(
            f"drop-frame timecode is only defined for 30000/1001 and 60000/1001 fps, got fps={Fraction(fps)}; "
            "use ':' before the frame field for non-drop timecode"
        )
    return nominal // 15  # 2 at 29.97, 4 at 59.94


def timecode_to_frames(value: str | Timecode, fps: Fraction | int) -> int:
    """The frame count from ``00:00:00:00`` to ``value`` at rate ``fps``.

    Raises:
        ValueError: malformed timecode, a frame field not below the nominal rate, or
            a label that drop-frame timecode skips.
    """
    tc = parse_timecode(value) if isinstance(value, str) else value
    nominal = nominal_rate(fps)
    if tc.frames >= nominal:
        raise ValueError(f"timecode {format_timecode(tc)} has frame field {tc.frames}, but {Fraction(fps)} fps "
                         f"timecode counts frames 00-{nominal - 1:02d}")
    total = ((tc.hours * 60 + tc.minutes) * 60 + tc.seconds) * nominal + tc.frames
    if not tc.drop_frame:
        return total
    drop = _drop_frames_per_minute(Fraction(fps))
    if tc.seconds == 0 and tc.minutes % 10 != 0 and tc.frames < drop:
        raise ValueError(f"timecode {format_timecode(tc)} does not exist in drop-frame timecode "
                         f"(labels 00-{drop - 1:02d} are skipped at the start of minute {tc.minutes})")
    total_minutes = tc.hours * 60 + tc.minutes
    return total - drop * (total_minutes - total_minutes // 10)


def format_timecode(tc: Timecode) -> str:
    """``HH:MM:SS:FF`` (``;`` before the frames when drop-frame)."""
    sep = ";" if tc.drop_frame else ":"
    return f"{tc.hours:02d}:{tc.minutes:02d}:{tc.seconds:02d}{sep}{tc.frames:02d}"


def frames_to_timecode(frames: int, fps: Fraction | int, *, drop_frame: bool = False) -> str:
    """The timecode label of frame number ``frames`` (counted from ``00:00:00:00``).

    Labels wrap around after 24 hours, as timecode does.
    """
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    nominal = nominal_rate(fps)
    if drop_frame:
        drop = _drop_frames_per_minute(Fraction(fps))
        per_minute = nominal * 60 - drop
        per_ten_minutes = nominal * 600 - 9 * drop
        tens, rest = divmod(frames, per_ten_minutes)
        # Re-insert the labels that were skipped so plain base-nominal arithmetic applies.
        skipped = 9 * drop * tens
        if rest >= drop:
            skipped += drop * ((rest - drop) // per_minute)
        frames += skipped
    ff = frames % nominal
    seconds_total = frames // nominal
    tc = Timecode((seconds_total // 3600) % 24, (seconds_total // 60) % 60, seconds_total % 60, ff, drop_frame)
    return format_timecode(tc)


def offset_timecode(value: str, frames: int, fps: Fraction | int) -> str:
    """The timecode ``frames`` frames after ``value`` (keeps drop-frame-ness).

    Used to give a rendered range ``[start, end)`` of a source its own start timecode.
    """
    tc = parse_timecode(value)
    return frames_to_timecode(timecode_to_frames(tc, fps) + frames, fps, drop_frame=tc.drop_frame)
