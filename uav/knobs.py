"""What a setting's value is, and how text becomes one: the rules behind ``UpscaleSettings``.

A field is declared as ``name: T = setting(default, ...)``. Its annotation ``T`` says what
the value is: ``int``, ``float``, ``str``, :data:`Name`, ``bool``, ``bool | None`` (spelt
``auto``/``on``/``off``), :data:`Steps`, :data:`Options`, :data:`Frame`, a ``Literal`` of
choices, or ``T | None``; the :class:`Knob` that :func:`setting` attaches adds bounds,
command-line help and metavar. Two steps, each done in one place:

* :meth:`Knob.read`, at the edge only (command line, markers, NLE metadata, TOML, JSON):
  text becomes a typed value (``"60"``, ``"24,26,28"``, ``"on"``); names are stripped, and
  lower-cased where their case means nothing. Typed sources keep their own types
  (``noise_level = "60"`` in TOML is a mistake), so there only names and words are read.
* :meth:`Knob.check`: a typed value becomes its canonical form (``3`` -> ``3.0``, a list
  -> a tuple) within its bounds, or a :class:`SettingsError`. The settings constructor
  calls it and reads no text.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

__all__ = ["ComponentError", "Frame", "Knob", "Memory", "Name", "Options", "SettingsError", "Steps",
           "is_bool_word", "parse_value", "setting"]

#: a component or choice name: non-empty, no surrounding spaces
Name = Annotated[str, "name"]
#: 0-based step indices (``"24,26,28"`` as text)
Steps = tuple[int, ...]
#: options as sorted ``(key, value)`` pairs (a mapping, or ``KEY=VALUE;...`` as text)
Options = tuple[tuple[str, Any], ...]
#: a frame of a clip: ``"first"``, ``"middle"`` or an index >= 0
Frame = Union[Literal["first", "middle"], int]
#: GPU memory a run may use: ``"auto"`` or a number of GiB > 0 (``"24"``, ``"24GiB"``, ``"24G"`` as text)
Memory = Annotated[Union[Literal["auto"], float], "memory"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_TRISTATE = {"auto": None, "on": True, "off": False}
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


# --------------------------------------------------------------------------- value types
class _Type(NamedTuple):
    """What one annotation accepts: ``expected`` (the end of "expected ..."), ``check``
    (typed value -> canonical value) and ``read`` (a string -> typed value; ``text`` is
    false for typed sources, which only get names and words read). Both raise ``ValueError``.
    ``typed`` spells the accepted Python values where they differ from ``expected``."""

    expected: Callable[[Knob], str]
    check: Callable[[Knob, Any], Any]
    read: Callable[[Knob, str, bool], Any]
    typed: str = ""


def _ok(condition: bool, value: Any) -> Any:
    """``value`` when ``condition`` holds, else ``ValueError`` (the caller words the message)."""
    if not condition:
        raise ValueError
    return value


def _text_only(read: Callable[[Knob, str], Any]) -> Callable[[Knob, str, bool], Any]:
    """A reader for text sources only: a typed source gives these values in their own type."""
    return lambda knob, text, is_text: read(knob, _ok(is_text, text))


def _int(knob: Knob, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _ok(isinstance(value, int) and not isinstance(value, bool), value)


def _float(knob: Knob, value: Any) -> float:
    try:
        out = float(_ok(isinstance(value, (int, float)) and not isinstance(value, bool), value))
    except OverflowError:
        raise ValueError from None
    return _ok(math.isfinite(out), out)


def _name(knob: Knob, value: Any) -> str:
    # the edge strips and lower-cases; the constructor takes a name only as it is looked up
    return _ok(isinstance(value, str) and value.strip() == value != "" and not (knob.lower and value != value.lower()),
               value)


def _read_tristate(knob: Knob, text: str, is_text: bool) -> bool | None:
    word = text.strip().lower()
    return _TRISTATE[word] if word in _TRISTATE else _read_bool(knob, _ok(is_text, word))


def _read_bool(knob: Knob, text: str) -> bool:
    return _ok(is_bool_word(text), text.strip().lower() in _TRUE)


def _steps(knob: Knob, value: Any) -> tuple[int, ...]:
    out = tuple(_int(knob, item) for item in _ok(isinstance(value, (list, tuple)), value))
    return _ok(all(i >= 0 for i in out), out)


def _read_steps(knob: Knob, text: str) -> tuple[int, ...]:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1].strip()
    # "24,26,28" or "24 26 28"; an empty item (",,", "24,,26") is a typo, not "no step"
    items = re.split(r"\s*,\s*|\s+", body) if body else []
    return _steps(knob, [int(_ok(re.fullmatch(r"[+-]?\d+", item) is not None, item)) for item in items])


def _options(knob: Knob, value: Any) -> tuple[tuple[str, Any], ...]:
    # sorted pairs, so that the frozen settings stay hashable and compare equal whatever order
    # the options came in
    pairs = list(value.items()) if isinstance(value, Mapping) else value
    _ok(isinstance(pairs, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs), pairs)
    out: dict[str, Any] = {}
    for key, item in pairs:
        item = os.fspath(item) if isinstance(item, os.PathLike) else item
        _ok(isinstance(key, str) and key.strip().isidentifier() and key.strip() not in out
            and isinstance(item, (str, int, float, bool)), key)
        out[key.strip()] = item
    return tuple(sorted(out.items()))


def _read_options(knob: Knob, text: str) -> tuple[tuple[str, Any], ...]:
    items = [item for item in text.split(";") if item.strip()]
    return _options(knob, [_ok("=" in item, item).partition("=")[::2] for item in items])


def _frame(knob: Knob, value: Any) -> str | int:
    if value in ("first", "middle"):
        return value
    return _ok(isinstance(value, int) and not isinstance(value, bool) and value >= 0, value)


def _read_frame(knob: Knob, text: str, is_text: bool) -> str | int:
    word = text.strip().lower()
    return int(word) if is_text and word.isdigit() else _frame(knob, word)


def _memory(knob: Knob, value: Any) -> str | float:
    if value == "auto":
        return value
    out = _float(knob, value)
    return _ok(out > 0, out)


def _read_memory(knob: Knob, text: str, is_text: bool) -> str | float:
    word = text.strip().lower()
    if word == "auto":
        return word
    return _memory(knob, float(re.sub(r"\s*(gib|gb|g)$", "", _ok(is_text, word))))


def _read_name(knob: Knob, text: str, is_text: bool) -> str:
    return text.strip().lower() if knob.lower or knob.choices else text.strip()


_TYPES: dict[Any, _Type] = {
    int: _Type(lambda k: f"an integer {k.span()}".strip(), _int,
               _text_only(lambda k, t: int(_ok(re.fullmatch(r"\s*[+-]?\d+\s*", t) is not None, t)))),
    float: _Type(lambda k: f"a number {k.span()}" if k.span() else "a finite number", _float,
                 _text_only(lambda k, t: _float(k, float(t)))),
    str: _Type(lambda k: "a string", lambda k, v: _ok(isinstance(v, str), v), lambda k, t, is_text: t),
    Name: _Type(lambda k: f"a non-empty {'lower-case ' if k.lower else ''}name", _name, _read_name),
    bool: _Type(lambda k: "true or false", lambda k, v: _ok(isinstance(v, bool), v), _text_only(_read_bool)),
    bool | None: _Type(lambda k: "one of auto, on, off", lambda k, v: _ok(v is None or isinstance(v, bool), v),
                       _read_tristate, "None, True or False"),
    Steps: _Type(lambda k: "a list of integer step indices >= 0 (e.g. 24,26,28)", _steps, _text_only(_read_steps)),
    Options: _Type(lambda k: "KEY=VALUE options (a table of names to strings or numbers)", _options,
                   _text_only(_read_options)),
    Frame: _Type(lambda k: "first, middle or a frame index >= 0", _frame, _read_frame),
    Memory: _Type(lambda k: "auto or a number of GiB > 0", _memory, _read_memory),
}
_CHOICE = _Type(lambda k: f"one of {', '.join(k.choices)}", lambda k, v: _ok(v in k.choices, v), _read_name)


# --------------------------------------------------------------------------- the rule of a field
@dataclass(frozen=True)
class Knob:
    """The rule of one setting: its value ``type`` (the field's annotation), numeric bounds
    (``hi`` exclusive with ``hi_open``, ``lo`` with ``lo_open``), ``lower`` for names whose
    case means nothing, and the ``help`` and ``metavar`` of its command-line option."""

    type: Any = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    lower: bool = False
    help: str = ""
    metavar: str | None = None

    @property
    def optional(self) -> bool:
        """Whether ``None`` is a value of its own (``seed``, ``decode_tile``; not ``bool | None``,
        where ``None`` is ``auto``)."""
        return self.type not in _TYPES and type(None) in get_args(self.type)

    @property
    def choices(self) -> tuple[str, ...]:
        """The values a ``Literal`` type allows (empty for other types)."""
        base = self._base()
        return get_args(base) if get_origin(base) is Literal else ()

    def _base(self) -> Any:
        if not self.optional:
            return self.type
        rest = [a for a in get_args(self.type) if a is not type(None)]
        return rest[0] if len(rest) == 1 else Union[tuple(rest)]

    def _kind(self) -> _Type:
        base = self._base()
        return _CHOICE if get_origin(base) is Literal else _TYPES[base]

    def span(self) -> str:
        """The bounds as a phrase (``in [0, 350]``, ``> 0``); empty when unbounded."""
        lo_b = "(" if self.lo_open else "["
        if self.lo is not None and self.hi is not None:
            return f"in {lo_b}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"> {_num(self.lo)}" if self.lo_open else f">= {_num(self.lo)}"
        return ""

    def expected(self) -> str:
        """What this knob accepts, as the end of "expected ..."."""
        return self._kind().expected(self)

    def read(self, value: Any, *, text: bool) -> Any:
        """``value`` as a typed value: strings read (all of them from ``text`` sources; names and
        words only from typed ones), other values as they are. Raises ``ValueError``."""
        if self.optional and text and isinstance(value, str) and value.strip().lower() in ("none", ""):
            return None
        if isinstance(value, str):
            return self._kind().read(self, value, text)
        if text and self._base() is bool and value in (0, 1):
            return bool(value)
        return value

    def check(self, name: str, value: Any) -> Any:
        """``value`` in its canonical form, or :class:`SettingsError` naming ``name``."""
        if value is None and self.optional:
            return None
        kind = self._kind()
        try:
            out = kind.check(self, value)
        except ValueError:
            error = self.error(name, value)
            if kind.typed:
                error.args = (f"{name} must be {kind.typed} ({self.expected()}), got {_show(value)}",)
            raise error from None
        if not self.in_bounds(out):
            # the value was understood, so the message names the setting, not how it was typed
            raise SettingsError(f"{name} must be {self.span()}, got {_show(out)}", field=name,
                                expected=self.expected(), value=out)
        return out

    def error(self, name: str, value: Any, label: str | None = None) -> SettingsError:
        """The error for a ``value`` of the wrong type or form, naming ``label`` (default ``name``)."""
        # the full rule in the message; `expected` says only what kind of value was wanted, the
        # way a shot list's error reads ("expected an integer, got 'lots'")
        kind = {int: "an integer", float: "a number"}.get(self._base(), self.expected())
        return SettingsError(f"{label or name} must be {self.expected()}, got {_show(value)}", field=name,
                             expected=kind, value=value)

    def in_bounds(self, value: Any) -> bool:
        """Whether a number lies within ``lo``/``hi`` (non-numbers always do)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))


def setting(default: Any, **rule: Any) -> Any:
    """A settings field: its default and its :class:`Knob` (``lo``, ``hi``, ``help`` ...); the
    field's annotation becomes the knob's ``type`` when the schema is built (a mutable
    default is refused by :func:`dataclasses.dataclass` itself)."""
    return field(default=default, metadata={"knob": Knob(**rule)})


def parse_value(knob: Knob, name: str, value: Any, *, text: bool = False, label: str | None = None) -> Any:
    """Read (:meth:`Knob.read`) and check one value; a malformed one is refused naming ``label``
    (default ``name``), a bad one naming ``name``."""
    try:
        value = knob.read(value, text=text)
    except ValueError:
        raise knob.error(name, value, label) from None
    return knob.check(name, value)


def is_bool_word(value: Any) -> bool:
    """Whether ``value`` is a text spelling of true/false (``yes``, ``off``, ``1`` ...)."""
    return isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE


def _show(value: Any) -> str:
    """``repr`` of a rejected value, cut short (a one-line message must stay one readable line)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _num(x: float) -> str:
    if x == 2**64:
        return "2**64"  # the seed limit reads better as a power
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
