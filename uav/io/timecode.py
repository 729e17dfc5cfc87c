"""SMPTE timecode (``HH:MM:SS:FF``, drop-frame ``HH:MM:SS;FF``) on OpenTimelineIO's arithmetic.

The frame arithmetic, drop-frame included, is :func:`opentimelineio.opentime.to_timecode`
and :func:`~opentimelineio.opentime.from_timecode`; this module adds what uav needs
around it: exact :class:`~fractions.Fraction` rates, error messages that say which field
is wrong, refusal of the labels drop-frame timecode skips, and a clear answer for rates
SMPTE timecode does not define (:func:`timecode_rate_supported`).

Timecode is defined at 23.976, 24, 25, 29.97, 30, 47.952, 48, 50, 59.94 and 60 fps.
Drop-frame timecode, only defined for 29.97 and 59.94 fps, skips frame labels 0-1
(0-3 at 59.94) at the start of every minute except every tenth. At any other rate
(15 fps, 277/12 fps...) the functions here raise :class:`ValueError`; code that only
*carries* a timecode from a source to an output uses
:func:`uav.io.metadata.carry_timecode`, which omits it instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from opentimelineio import opentime

__all__ = [
    "Timecode",
    "parse_timecode",
    "format_timecode",
    "is_timecode",
    "nominal_rate",
    "timecode_rate_supported",
    "timecode_to_frames",
    "frames_to_timecode",
    "offset_timecode",
]

_TIMECODE_RE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2,3})$")
_DROP_FRAME_RATES = (Fraction(30000, 1001), Fraction(60000, 1001))


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


def format_timecode(tc: Timecode) -> str:
    """``HH:MM:SS:FF`` (``;`` before the frames when drop-frame)."""
    sep = ";" if tc.drop_frame else ":"
    return f"{tc.hours:02d}:{tc.minutes:02d}:{tc.seconds:02d}{sep}{tc.frames:02d}"


def nominal_rate(fps: Fraction | int) -> int:
    """The integer frame rate timecode counts in (``round(fps)``, at least 1)."""
    return max(1, round(Fraction(fps)))


def timecode_rate_supported(fps: Fraction | int) -> bool:
    """Whether SMPTE timecode is defined at ``fps`` (exactly one of the ten rates above)."""
    # is_valid_timecode_rate is the older name of the same check
    check = getattr(opentime.RationalTime, "is_smpte_timecode_rate", None) or opentime.RationalTime.is_valid_timecode_rate
    try:
        return bool(check(float(Fraction(fps))))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return False


def _label_rate(fps: Fraction | int, drop_frame: bool) -> float:
    """The rate OpenTimelineIO counts labels at; checks that timecode exists at ``fps``."""
    rate = Fraction(fps)
    if drop_frame and rate not in _DROP_FRAME_RATES:
        raise ValueError(
            f"drop-frame timecode is only defined for 30000/1001 and 60000/1001 fps, got fps={rate}; "
            "use ':' before the frame field for non-drop timecode"
        )
    if not timecode_rate_supported(rate):
        raise ValueError(f"SMPTE timecode is not defined at {rate} fps (only at 24000/1001, 24, 25, 30000/1001, 30, "
                         "48000/1001, 48, 50, 60000/1001 and 60); give frame numbers instead")
    # Non-drop labels simply count at the nominal rate (29.97 fps labels as 30 fps
    # does), which also makes them wrap after 24 hours of labels, not of real time.
    return float(rate) if drop_frame else float(nominal_rate(rate))


def timecode_to_frames(value: str | Timecode, fps: Fraction | int) -> int:
    """The frame count from ``00:00:00:00`` to ``value`` at rate ``fps``.

    Raises:
        ValueError: malformed timecode, a rate timecode is not defined at, a frame
            field not below the nominal rate, or a label that drop-frame timecode skips.
    """
    tc = parse_timecode(value) if isinstance(value, str) else value
    rate = _label_rate(fps, tc.drop_frame)
    nominal = nominal_rate(fps)
    if tc.frames >= nominal:
        raise ValueError(f"timecode {format_timecode(tc)} has frame field {tc.frames}, but {Fraction(fps)} fps "
                         f"timecode counts frames 00-{nominal - 1:02d}")
    if tc.drop_frame:
        drop = nominal // 15  # 2 at 29.97, 4 at 59.94
        if tc.seconds == 0 and tc.minutes % 10 != 0 and tc.frames < drop:
            raise ValueError(f"timecode {format_timecode(tc)} does not exist in drop-frame timecode "
                             f"(labels 00-{drop - 1:02d} are skipped at the start of minute {tc.minutes})")
    return int(round(opentime.from_timecode(format_timecode(tc), rate).value))


def frames_to_timecode(frames: int, fps: Fraction | int, *, drop_frame: bool = False) -> str:
    """The timecode label of frame number ``frames`` (counted from ``00:00:00:00``).

    Labels wrap around after 24 hours, as timecode does.

    Raises:
        ValueError: negative ``frames``, or a rate (or drop-frame at a rate) that
            timecode is not defined at.
    """
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    rate = _label_rate(fps, drop_frame)
    return str(opentime.to_timecode(opentime.RationalTime(int(frames), rate), rate, bool(drop_frame)))


def offset_timecode(value: str, frames: int, fps: Fraction | int) -> str:
    """The timecode ``frames`` frames after ``value`` (keeps drop-frame-ness).

    Used to give a rendered range ``[start, end)`` of a source its own start timecode.
    """
    tc = parse_timecode(value)
    return frames_to_timecode(timecode_to_frames(tc, fps) + frames, fps, drop_frame=tc.drop_frame)
