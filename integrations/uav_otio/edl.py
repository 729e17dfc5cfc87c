"""CMX 3600 EDLs as editors write them, made readable for OpenTimelineIO's ``cmx_3600`` adapter.

An EDL carries no frame rate, and Avid, Premiere and Resolve write things the adapter
does not read. Before the adapter sees an EDL, :func:`prepare_edl`:

* takes the rate as the rest of uav does (:func:`edl_rate`: ``25``, ``30000/1001``,
  and ``29.97``/``23.976``/``59.94`` snapped to the NTSC rate they stand for);
* reads ``FCM: DROP FRAME`` (per event, as the FCM lines fall): drop-frame timecodes
  written with colons are given the ``;`` the adapter reads as drop frame, and an EDL
  in drop frame without ``--rate`` is read at 29.97 fps;
* keeps motion effects: an ``M2`` line the adapter's pattern would miss (``;`` in its
  timecode) is rewritten, and an event whose source and record lengths differ
  without a readable ``M2`` becomes the speed change those lengths say, with a warning
  naming the event (the adapter would stop: "source and record duration don't match");
* handles the event types it meets: a key's background (``KB``) is read as a cut and
  its fill (``K``, ``KO``) is skipped with a warning naming the event; any other type
  is one line naming the event; lines before the first event other than ``TITLE``
  and ``FCM`` (a byte-order mark, header comments) are dropped.

What still cannot be read gets :func:`edl_hint`, one line saying what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import opentimelineio as otio

from uav.io.rates import parse_fps

__all__ = ["EdlError", "PreparedEdl", "edl_hint", "edl_rate", "prepare_edl"]

#: NTSC rates, and the drop-frame ones
_NTSC = tuple(Fraction(k * 1000, 1001) for k in (24, 30, 48, 60, 120))
_DROP_FRAME_RATES = (Fraction(30000, 1001), Fraction(60000, 1001))
_EVENT = re.compile(r"^\d+\s")
_TRANSITION_TYPE = re.compile(r"^(C|D|W\d{3})$")
_KEY_TYPES = ("K", "KB", "KO")
_SPEED = re.compile(r"^\*?\s*M2:?\s*(?P<name>.*?)\s*(?P<speed>-?[0-9.]+)\s+(?P<tc>\d\d[:;.]\d\d[:;.]\d\d[:;.,]\d\d)\s*$")


class EdlError(ValueError):
    """An EDL uav cannot make readable; the message names the event and what to do."""


def edl_rate(value: Any) -> Fraction:
    """An EDL's frame rate as the rest of uav reads rates (:func:`uav.io.rates.parse_fps`),
    with the decimal spellings of NTSC rates snapped to them: ``29.97`` is 30000/1001,
    ``23.976`` and ``23.98`` are 24000/1001, ``59.94`` is 60000/1001 (SMPTE timecode
    counts only those). A float is read to the nearest ratio with a denominator up to 1001.

    Raises:
        ValueError: not a positive, finite rate (the message names ``--rate``).
    """
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"--rate must be a positive rational like 25 or 30000/1001, got {value!r}")
        value = Fraction(value).limit_denominator(1001)
    rate = parse_fps(value, name="--rate")
    near = [ntsc for ntsc in _NTSC if abs(rate - ntsc) / ntsc < Fraction(5, 10000)]
    return near[0] if near else rate


@dataclass
class PreparedEdl:
    """An EDL's text as the adapter can read it, the rate to read it at, and what was changed."""

    text: str
    rate: Fraction | None
    notes: list[str] = field(default_factory=list)


def _frames(tc: str, rate: Fraction) -> int:
    if any(sep in tc for sep in ":;"):
        return int(round(otio.opentime.from_timecode(tc, float(rate)).value))
    return int(tc)


def _drop_frame_tc(tc: str) -> str:
    """``01:00:00:00`` -> ``01:00:00;00`` (drop frame, as the adapter reads it)."""
    return re.sub(r"[:.,](\d\d)$", r";\1", tc) if re.fullmatch(r"\d\d[:;]\d\d[:;]\d\d[:;.,]\d\d", tc) else tc


@dataclass
class _Event:
    number: str
    lines: list[list[str]]  # the event lines' fields
    comments: list[str]


def _blocks(lines: list[str]) -> tuple[list[str], list[_Event]]:
    """The header lines before the first event, and the events with their comment lines."""
    header: list[str] = []
    events: list[_Event] = []
    for line in (ln.strip() for ln in lines):
        if not line:
            continue
        if _EVENT.match(line):
            fields = line.split()
            if events and int(events[-1].number) == int(fields[0]) and len(events[-1].lines) == 1:
                events[-1].lines.append(fields)  # the second line of a transition (as the adapter pairs them)
            else:
                events.append(_Event(fields[0], [fields], []))
        elif events:
            events[-1].comments.append(line)
        elif line.startswith(("TITLE:", "FCM")):
            header.append(line)
    return header, events


def _check_rate(events: list[_Event], header: list[str], rate: Fraction | None, notes: list[str]) -> Fraction | None:
    drop = any("DROP" in ln and "NON" not in ln for ln in header) or any(
        c.startswith("FCM") and "NON" not in c and "DROP" in c for e in events for c in e.comments)
    if not drop:
        return rate
    if rate is None:
        notes.append("the EDL says FCM: DROP FRAME and no --rate was given: read at 29.97 fps (30000/1001)")
        return Fraction(30000, 1001)
    if rate not in _DROP_FRAME_RATES:
        raise EdlError(f"the EDL says FCM: DROP FRAME, which only 29.97 and 59.94 fps have, but --rate is {rate}: "
                       "pass --rate 29.97 (or 59.94)")
    return rate


def _event_line(fields: list[str], event: _Event, drop: bool, notes: list[str]) -> list[str] | None:
    """One event line's fields as the adapter reads them, or ``None`` for a key's fill (skipped)."""
    kind = fields[3] if len(fields) > 3 else ""
    if kind in _KEY_TYPES:
        if kind == "KB":
            fields = [*fields[:3], "C", *fields[-4:]]
        else:
            notes.append(f"EDL event {event.number}: the key ({kind}) of {fields[1]} is skipped; its background is "
                         "read as a cut")
            return None
    elif not _TRANSITION_TYPE.match(kind):
        raise EdlError(f"EDL event {event.number}: edit type {kind!r} is not a CMX 3600 type (C, D, Wnnn, K, KB, "
                       "KO): fix the event or export the EDL as CMX 3600 again")
    if drop:
        fields = [*fields[:-4], *(_drop_frame_tc(tc) for tc in fields[-4:])]
    return fields


def _motion(event: _Event, clip: list[str], rate: Fraction, notes: list[str]) -> list[str]:
    """The event's comments with its motion effect readable: an ``M2`` in the adapter's
    spelling, or one made from the source and record lengths when none can be read."""
    comments, readable = [], False
    for line in event.comments:
        m = _SPEED.match(line) if line.lstrip("* ").startswith("M2") else None
        if m is not None:
            readable = True
            line = f"M2   {m['name'] or 'AX'}  {m['speed']}  {re.sub(r'[;.,]', ':', m['tc'])}"
        elif line.lstrip("* ").startswith("M2"):
            notes.append(f"EDL event {event.number}: its M2 line {line!r} cannot be read; the speed comes from the "
                         "source and record lengths")
            continue
        comments.append(line)
    if readable or "FREEZE FRAME" in " ".join(comments) or len(clip) < 8:
        return comments
    try:
        src = _frames(clip[-3], rate) - _frames(clip[-4], rate)
        rec = _frames(clip[-1], rate) - _frames(clip[-2], rate)
    except (ValueError, TypeError):  # not timecodes: the adapter names the line
        return comments
    if src == rec or rec <= 0:
        return comments
    speed = Fraction(src, rec)
    notes.append(f"EDL event {event.number} ({clip[1]}): the source runs {src} frames over a record of {rec} "
                 f"without an M2 line: read as a speed change of {float(speed):g}x")
    return [f"M2   {clip[1]}  {float(rate * speed):.6f}  {clip[-4].replace(';', ':')}", *comments]


def prepare_edl(text: str, rate: Fraction | None) -> PreparedEdl:
    """``text`` (an EDL) as the ``cmx_3600`` adapter reads it correctly; see the module docs.

    Args:
        text: the EDL.
        rate: the edit's rate (``--rate``, through :func:`edl_rate`), ``None`` if not given.

    Raises:
        EdlError: drop frame at a rate that has none, or an event type CMX 3600 lacks.
    """
    notes: list[str] = []
    header, events = _blocks(text.lstrip("\ufeff").splitlines())
    rate = _check_rate(events, header, rate, notes)
    out = list(header)
    drop = any("DROP" in ln and "NON" not in ln for ln in header)
    for event in events:
        lines = [f for f in (_event_line(f, event, drop, notes) for f in event.lines) if f is not None]
        comments = _motion(event, lines[-1], rate or Fraction(24), notes) if lines else []
        out += ["", *("  ".join(f) for f in lines), *comments]
        for line in event.comments:  # an FCM line inside the list holds for the events after it
            if line.startswith("FCM"):
                drop = "DROP" in line and "NON" not in line
    return PreparedEdl("\n".join(out) + "\n", rate, notes)


_HINTS = (
    ("Overlapping record in value", "two events overlap in record time: fix the EDL, or pass --adapter-option "
                                    "ignore_timecode_mismatch=true to place each event after the one before"),
    ("has frames beyond", "the EDL's rate is not the one given (24 when --rate is left out): pass the edit's rate "
                          "with --rate (e.g. --rate 25 or --rate 29.97)"),
    ("does not support this rate", "SMPTE timecode counts 23.976, 24, 25, 29.97, 30, 50, 59.94 and 60 fps: pass one "
                                   "of them with --rate"),
    ("indicates drop frame", "drop-frame timecode (;) needs --rate 29.97 or 59.94"),
    ("incorrect number of fields", "an event line is not CMX 3600 (number, reel, channel, type, 4 timecodes): "
                                   "export the EDL as CMX 3600 again"),
    ("Transitions can't be at the very beginning", "a transition opens a track: fix its first event"),
)


def edl_hint(message: str, rate_given: bool) -> str:
    """What to do about an EDL the adapter still cannot read (its error ``message``)."""
    for needle, hint in _HINTS:
        if needle in message:
            return hint
    if not rate_given:
        return "EDLs carry no frame rate and 24 was assumed: pass the edit's rate with --rate (e.g. --rate 25)"
    return "check that the file is a CMX 3600 EDL and that --rate is the edit's rate"
