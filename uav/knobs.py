"""``Knob``: how one setting is read from text or typed data, and what it accepts.

A :class:`Knob` rides on each :class:`~uav.settings.UpscaleSettings` field (its
dataclass metadata); :func:`parse_value` converts and bounds-checks one value by it
and raises :class:`SettingsError` naming the setting, what was expected and what came.
The converters are kept apart from the schema so that the schema file reads as the
list of knobs, and so that a front end can parse a value without building settings.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

#: the one bound spelt as a power in messages (the seed limit reads better as 2**64)
_POWER_SPELLINGS = {2**64: "2**64"}

__all__ = ["ComponentError", "Knob", "SettingsError", "knob_field", "parse_value"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_UNSET: Any = object()


class SettingsError(ValueError):
    """An invalid setting; the message names the setting, what was expected and what came.

    Attributes:
        field: the :class:`UpscaleSettings` field at fault (``None`` when not one field).
        expected: what would have been accepted (``"an integer in [0, 350]"``), for
            callers that re-word the message with their own locator (a shot list entry,
            a command-line option); ``None`` for rules that tie fields together.
        value: the rejected value.
        reason: the message without the field name (``"unknown scheduler 'x'; ..."``).
    """

    def __init__(self, message: str, *, field: str | None = None, expected: str | None = None,
                 value: Any = _UNSET, reason: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.expected = expected
        self.value = value
        self.reason = reason if reason is not None else message

    def located(self, key: str, where: str) -> str:
        """The message as ``key from where: expected ..., got ...`` (``key`` may be an alias
        of :attr:`field`, e.g. ``steps``)."""
        if self.expected is not None and self.value is not _UNSET:
            return f"{key} from {where}: expected {self.expected}, got {self.value!r}"
        # "tile_overlap from X must be below ..." reads on; other reasons follow a colon
        sep = " " if self.reason.startswith("must ") else ": "
        return f"{key} from {where}{sep}{self.reason}"


class ComponentError(SettingsError, KeyError):
    """A component name the plugin registry does not offer (also a ``KeyError``, like the
    registry's own :class:`~uav.registry.UnknownComponentError`)."""

    def __str__(self) -> str:
        # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- value rules
@dataclass(frozen=True)
class Knob:
    """How one field is read from text or typed data and what it accepts.

    ``kind`` is one of ``int``, ``float``, ``str``, ``name`` (a component or choice
    name, stripped and non-empty), ``steps`` (a list of step indices), ``tristate``
    (``None``/``True``/``False`` spelt ``auto``/``on``/``off``), ``bool`` or ``memory``
    (``"auto"`` or a number of GiB > 0). ``lo``/``hi``
    bound numbers (``hi`` is exclusive when ``hi_open``); ``choices`` restricts names
    (lower-cased); ``optional`` lets ``None`` through. ``help`` and ``metavar`` describe
    the field on the command line.
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    hi_open: bool = False
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    lower: bool = False
    help: str = ""
    metavar: str | None = None

    # -- phrases -------------------------------------------------------------------------
    def span(self) -> str:
        """The bounds as a phrase (``in [0, 350]``, ``> 0``); empty when unbounded."""
        lo_b = "(" if self.lo_open else "["
        if self.lo is not None and self.hi is not None:
            return f"in {lo_b}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"> {_num(self.lo)}" if self.lo_open else f">= {_num(self.lo)}"
        return ""

    def expected(self) -> str:
        """What this knob accepts, as the end of "expected ...". """
        span = self.span()
        if self.kind == "int":
            text = f"an integer {span}".strip()
        elif self.kind == "float":
            text = f"a number {span}".strip() if span else "a finite number"
        elif self.kind == "steps":
            text = "a list of integer step indices >= 0 (e.g. 24,26,28)"
        elif self.kind == "tristate":
            text = "one of auto, on, off"
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "frame":
            text = "first, middle or a frame index >= 0"
        elif self.kind == "options":
            text = "KEY=VALUE options (a table of names to strings or numbers)"
        elif self.kind == "memory":
            text = "auto or a number of GiB > 0"
        elif self.choices:
            text = f"one of {', '.join(self.choices)}"
        elif self.kind == "name":
            text = "a non-empty name"
        else:
            text = "a string"
        return text

    # -- conversion ----------------------------------------------------------------------
    def convert(self, value: Any, *, text: bool) -> Any:
        """The normalised value; raises ``ValueError`` when it has the wrong type or form."""
        if value is None:
            if self.optional or self.kind == "tristate":
                return None
            raise ValueError
        if text and isinstance(value, str) and self.optional and value.strip().lower() in ("none", ""):
            return None
        return _CONVERTERS[self.kind](self, value, text)

    @staticmethod
    def is_bool_word(value: Any) -> bool:
        """Whether ``value`` is a text spelling of true/false (``yes``, ``off``, ``1`` ...)."""
        return isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE

    def in_bounds(self, value: Any) -> bool:
        """Whether a converted number lies within ``lo``/``hi`` (non-numbers always do)."""
        if self.kind not in ("int", "float") or value is None:
            return True
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))


def _show(value: Any) -> str:
    """``repr`` of a rejected value, cut short (a one-line message must stay one readable line)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _num(x: float) -> str:
    if x in _POWER_SPELLINGS:
        return _POWER_SPELLINGS[x]
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _to_int(knob: Knob, value: Any, text: bool) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if text and isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError


def _to_float(knob: Knob, value: Any, text: bool) -> float:
    if isinstance(value, bool):
        raise ValueError
    if not isinstance(value, (int, float)) and not (text and isinstance(value, str)):
        raise ValueError
    try:
        out = float(value)
    except (ValueError, OverflowError):
        raise ValueError from None
    if not math.isfinite(out):
        raise ValueError
    return out


def _to_str(knob: Knob, value: Any, text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _to_name(knob: Knob, value: Any, text: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    out = value.strip().lower() if knob.lower or knob.choices else value.strip()
    if knob.choices and out not in knob.choices:
        raise ValueError
    return out


def _to_steps(knob: Knob, value: Any, text: bool) -> tuple[int, ...]:
    if isinstance(value, str):
        if not text:
            raise ValueError
        body = value.strip()
        if body.startswith("[") and body.endswith("]"):
            body = body[1:-1]
        if not body.strip():
            return ()
        # "24,26,28" or "24 26 28"; an empty item (",,", "24,,26") is a typo, not "no step"
        parts = re.split(r"\s*,\s*|\s+", body.strip())
        if any(p == "" for p in parts):
            raise ValueError
        items: Sequence[Any] = parts
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ValueError
    out = []
    for item in items:
        i = _to_int(knob, item, text)
        if i < 0:
            raise ValueError
        out.append(i)
    return tuple(out)


def _to_tristate(knob: Knob, value: Any, text: bool) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        s = value.strip().lower()
        if s == "auto":
            return None
        if s in ("on", "off"):
            return s == "on"
        if text and s in _TRUE | _FALSE:
            return s in _TRUE
    raise ValueError


def _to_bool(knob: Knob, value: Any, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if text and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _to_frame(knob: Knob, value: Any, text: bool) -> str | int:
    # "first", "middle" or an index >= 0 (digits only from text sources)
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if value < 0:
            raise ValueError
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("first", "middle"):
            return word
        if text and word.isdigit():
            return int(word)
    raise ValueError


def _to_options(knob: Knob, value: Any, text: bool) -> tuple[tuple[str, Any], ...]:
    # a mapping, or "KEY=VALUE" items as typed on a command line; kept as sorted pairs so
    # that the frozen settings stay hashable and compare equal whatever order they came in
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, str):
        if not text:
            raise ValueError
        pairs = [item.partition("=")[::2] for item in value.split(";") if item.strip()]
        if any("=" not in item for item in value.split(";") if item.strip()):
            raise ValueError
    elif isinstance(value, (list, tuple)):
        pairs = []
        for item in value:
            if isinstance(item, str) and "=" in item:
                pairs.append(tuple(item.partition("=")[::2]))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append(tuple(item))
            else:
                raise ValueError
    else:
        raise ValueError
    out: dict[str, Any] = {}
    for key, item in pairs:
        if not isinstance(key, str) or not key.strip().isidentifier() or key.strip() in out:
            raise ValueError
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, (str, int, float, bool)):
            raise ValueError
        out[key.strip()] = item
    return tuple(sorted(out.items()))


def _to_memory(knob: Knob, value: Any, text: bool) -> str | float:
    # "auto" (the device's free memory) or GiB; "24", "24GiB" and "24G" read the same from text
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "auto":
            return "auto"
        if not text:
            raise ValueError
        value = re.sub(r"\s*(gib|gb|g)$", "", word)
    out = _to_float(knob, value, text)
    if out <= 0:
        raise ValueError
    return out


_CONVERTERS: dict[str, Callable[[Knob, Any, bool], Any]] = {
    "int": _to_int, "float": _to_float, "str": _to_str, "name": _to_name, "steps": _to_steps,
    "tristate": _to_tristate, "bool": _to_bool, "frame": _to_frame, "options": _to_options,
    "memory": _to_memory,
}


def knob_field(default: Any, rule: Knob) -> Any:
    """A dataclass field carrying its :class:`Knob`."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed")
    return field(default=default, metadata={"knob": rule})


def parse_value(rule: Knob, name: str, value: Any, *, text: bool = False, label: str | None = None) -> Any:
    """Convert and check one value by ``rule``; the error names ``label`` (default ``name``)."""
    label = label or name
    try:
        out = rule.convert(value, text=text)
    except ValueError:
        # the full rule in the message; `expected` says only what kind of value was wanted,
        # the way a shot list's error reads ("expected an integer, got 'lots'")
        kind = {"int": "an integer", "float": "a number"}.get(rule.kind, rule.expected())
        raise SettingsError(f"{label} must be {rule.expected()}, got {_show(value)}", field=name,
                            expected=kind, value=value) from None
    if not rule.in_bounds(out):
        # the value was understood, so the message names the setting, not how it was typed
        raise SettingsError(f"{name} must be {rule.span()}, got {_show(out)}", field=name, expected=rule.expected(),
                            value=out)
    return out

