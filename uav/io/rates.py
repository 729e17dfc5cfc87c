"""Frame rates: parsing a user's rate exactly, and finding the rate a stream's timestamps follow.

Every rate in :mod:`uav.io` is a :class:`~fractions.Fraction` (``24000/1001``, never
``23.976``) so that frame ``n`` of an output lands exactly where frame ``n`` of its
source did, however long the clip.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SEQUENCE_FPS", "MAX_FPS", "STANDARD_RATES", "parse_fps", "select_rate", "cfr_map"]

#: rate of an image sequence when none is given
DEFAULT_SEQUENCE_FPS = Fraction(24)
#: the highest rate accepted: far above any camera's, low enough to be a rate and not a typo
MAX_FPS = Fraction(10000)
# FFmpeg stores a rate as a ratio of two C ints; anything larger cannot be written.
_INT32_MAX = 2**31 - 1

#: rates a measured rate is snapped to when the timestamps agree with them
STANDARD_RATES = tuple(
    Fraction(r)
    for r in (
        "24000/1001", "24", "25", "30000/1001", "30", "48000/1001", "48", "50", "60000/1001", "60",
        "120000/1001", "120", "100", "15", "12", "12.5", "10", "8", "16", "18", "20", "72", "90", "96", "144", "240",
    )
)


def parse_fps(value: Any, *, name: str = "fps") -> Fraction:
    """``value`` as an exact, sane frame rate.

    Accepts a :class:`~fractions.Fraction`, an ``int`` or a string such as ``"25"``,
    ``"24000/1001"`` or ``"29.97"`` (read as exactly 2997/100). Floats are refused:
    ``23.976`` is not ``24000/1001`` and the difference drifts by a frame every few
    minutes.

    Args:
        value: the rate.
        name: how the rate is called in error messages (``"--fps"`` for the CLI).

    Raises:
        TypeError: a float, bool or other non-rational type.
        ValueError: not a number, NaN or infinite, zero or negative, above
            :data:`MAX_FPS`, or a ratio FFmpeg cannot store; the message names the value.
    """
    if isinstance(value, (bool, float, np.floating)):
        raise TypeError(f"{name} must be exact: pass a Fraction (e.g. Fraction(24000, 1001)), an int or a string "
                        f"like '24000/1001', got {type(value).__name__} {value!r}")
    if isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, (int, str, Fraction)):
        raise TypeError(f"{name} must be a Fraction, an int or a string like '24000/1001', got {type(value).__name__}")
    try:
        rate = Fraction(value.strip() if isinstance(value, str) else value)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise ValueError(f"{name} must be a positive rational like 24 or '24000/1001', got {value!r}") from None
    if rate <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if rate > MAX_FPS:
        raise ValueError(f"{name} must be at most {MAX_FPS} frames per second, got {value!r}")
    if rate.numerator > _INT32_MAX or rate.denominator > _INT32_MAX:
        raise ValueError(f"{name} {value!r} is not a frame rate a video can store (numerator and denominator must "
                         f"be below 2**31); round it, e.g. to {rate.limit_denominator(1001)}")
    return rate


def select_rate(times: np.ndarray, tick: float, declared: list[Fraction]) -> tuple[Fraction, bool]:
    """Pick the exact frame rate that explains ``times`` (seconds from the first frame).

    Returns ``(fps, variable)``. A rate *fits* when every timestamp lies within one
    tick (timestamp rounding) of its slot on a constant-rate grid. Preference among
    fitting rates: a declared container rate with a small denominator (snapped to a
    standard rate within 0.01 %), then standard rates nearest the mean rate, then the
    mean rate itself. Container rates alone are not trusted: muxers often store a
    rounded or averaged value. When nothing fits, the clip is still constant-rate if
    the best candidate keeps every frame within half a frame of its slot (jittery
    capture timestamps); otherwise it is variable-rate and the reported rate is the
    nominal rate of its typical frame interval.
    """
    n = len(times)
    declared = [Fraction(r) for r in declared if r and r > 0]
    if n < 2:
        return (declared[0] if declared else DEFAULT_SEQUENCE_FPS), False
    span = float(times[-1])
    if span <= 0:
        return (declared[0] if declared else DEFAULT_SEQUENCE_FPS), True
    index = np.arange(n, dtype=np.float64)
    mean_rate = (n - 1) / span

    def max_dev(rate: Fraction) -> float:
        return float(np.max(np.abs(times - index / float(rate))))

    def fits(rate: Fraction) -> bool:
        return max_dev(rate) <= min(tick * 1.0001 + 1e-9, 0.25 / float(rate))

    def standard_near(rate: float, tol: float) -> list[Fraction]:
        return [r for r in sorted(STANDARD_RATES, key=lambda s: abs(float(s) - rate)) if abs(float(r) - rate) <= tol * rate]

    for rate in (r for r in declared if r.denominator <= 1001):
        if fits(rate):
            snapped = [s for s in standard_near(float(rate), 1e-4) if fits(s)]
            return (snapped[0] if snapped else rate), False
    mean_fraction = Fraction(n - 1) / Fraction(span).limit_denominator(10**9)
    candidates = standard_near(mean_rate, 0.01) + [mean_fraction.limit_denominator(1001), mean_fraction]
    for rate in candidates:
        if fits(rate):
            return rate, False
    best = min(candidates + declared, key=max_dev)
    if max_dev(best) <= 0.5 / float(best):
        return best, False
    deltas = np.diff(times)
    typical = float(np.median(deltas[deltas > 0])) if np.any(deltas > 0) else span / (n - 1)
    nominal = [r for r in declared if abs(float(r) * typical - 1) <= 0.02] + standard_near(1.0 / typical, 0.02)
    return (nominal[0] if nominal else Fraction(1.0 / typical).limit_denominator(1001)), True


def cfr_map(times: np.ndarray, last_duration: float, fps: Fraction) -> np.ndarray:
    """Source frame index for each frame of the constant-rate version of a clip."""
    total = float(times[-1]) + last_duration
    count = max(1, int(round(total * float(fps))))
    targets = np.arange(count, dtype=np.float64) / float(fps)
    right = np.clip(np.searchsorted(times, targets, side="left"), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    # nearest timestamp, ties to the earlier frame
    choose_left = np.abs(targets - times[left]) <= np.abs(times[right] - targets)
    return np.where(choose_left, left, right)
