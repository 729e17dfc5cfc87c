"""Where editors write per-shot settings: ``uav:`` markers and TOML shot lists.

A marker whose name or comment reads ``uav: key=value; key=value`` carries text
values; a TOML shot list (``[[shot]]`` tables matched by clip name, marker name or
media file) carries typed ones, checked when the file is read. How these layers
combine with metadata and the command line is :mod:`uav.shots.layers`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from .settings import ShotSettingsError, validate_settings

__all__ = [
    "RANGE_KEYS",
    "ShotEntry",
    "ShotList",
    "load_shot_list",
    "parse_marker_settings",
    "shot_list_from_dict",
]


# --------------------------------------------------------------------------- #
# markers
# --------------------------------------------------------------------------- #

_MARKER_PREFIX = re.compile(r"^\s*uav\s*:\s*", re.IGNORECASE)


def _split_pairs(text: str) -> list[str]:
    """Split on ``;`` outside double or single quotes."""
    parts: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    for ch in text:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            buf.append(ch)
        elif ch == ";":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise ValueError(f"unterminated {quote} quote")
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def parse_marker_settings(text: str) -> dict[str, str] | None:
    """Parse the settings an editor typed into a marker's name or comment.

    The text must start with ``uav:`` (any case) followed by ``key=value`` pairs
    separated by ``;``. A value may be wrapped in quotes to hold a ``;``. Values are
    returned as strings; :func:`validate_settings` converts them.

    Returns:
        ``None`` when the text is not a uav marker, else the pairs.

    Raises:
        ValueError: the text is a uav marker but a pair is malformed.
    """
    m = _MARKER_PREFIX.match(text or "")
    if not m:
        return None
    body = text[m.end():]
    out: dict[str, str] = {}
    for pair in _split_pairs(body):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"expected key=value pairs separated by ';', got {pair!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


# --------------------------------------------------------------------------- #
# TOML shot list
# --------------------------------------------------------------------------- #

_MATCH_KEYS = ("clip", "marker", "media")
#: the keys that give an entry its scene: first frame and the frame after the last
RANGE_KEYS = ("start", "end")


def _position(value: Any, key: str, where: str) -> int | str | None:
    """A scene bound as written: a frame index (int >= 0) or a ``HH:MM:SS:FF`` timecode."""
    from uav.io.timecode import is_timecode

    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and is_timecode(value.strip()):
        return value.strip()
    raise ShotSettingsError(f"{where}: {key} must be a frame number >= 0 or a timecode 'HH:MM:SS:FF', "
                            f"got {value!r}")


@dataclass(frozen=True)
class ShotEntry:
    """One ``[[shot]]`` of a shot list: how it matches and what it sets."""

    match_kind: str  # "clip", "marker" or "media"
    match_value: str
    settings: dict[str, Any]
    index: int  # position in the file, 1-based, for messages
    #: the scene an entry describes: frames of the media (``end`` exclusive) or timecodes,
    #: as given. ``uav upscale --scenes`` cuts the clip there; a timeline takes its cuts
    #: from its clips, so the planner matches such an entry on its name alone.
    start: int | str | None = None
    end: int | str | None = None

    def describe(self) -> str:
        return f"shot list entry #{self.index} ({self.match_kind} = {self.match_value!r})"

    def matches(self, clip_name: str, marker_names: Iterable[str], media_path: str | None) -> bool:
        if self.match_kind == "clip":
            return clip_name == self.match_value
        if self.match_kind == "marker":
            return self.match_value in set(marker_names)
        if media_path is None:
            return False
        # Entries may name the file alone, a relative tail, or the full path.
        want = self.match_value.replace("\\", "/").rstrip("/")
        have = media_path.replace("\\", "/")
        return have == want or have.endswith("/" + want) or Path(have).name == want


@dataclass
class ShotList:
    """The entries of a TOML shot list, with bookkeeping of which ones matched."""

    entries: list[ShotEntry] = field(default_factory=list)
    source: str = "shot list"
    used: set[int] = field(default_factory=set)

    def settings_for(
        self, clip_name: str, marker_names: Iterable[str], media_path: str | None
    ) -> list[tuple[ShotEntry, dict[str, Any]]]:
        """Matching entries, least specific first (media, then marker, then clip;
        file order within a kind), so later ones override earlier ones."""
        marker_names = list(marker_names)
        hits = [e for e in self.entries if e.matches(clip_name, marker_names, media_path)]
        order = {"media": 0, "marker": 1, "clip": 2}
        hits.sort(key=lambda e: (order[e.match_kind], e.index))
        for e in hits:
            self.used.add(e.index)
        return [(e, e.settings) for e in hits]

    def unused(self) -> list[ShotEntry]:
        """Entries that matched no clip (worth a warning: usually a typo)."""
        return [e for e in self.entries if e.index not in self.used]


def load_shot_list(path: str | Path) -> ShotList:
    """Read a TOML shot list.

    Format::

        [[shot]]
        clip = "SH010"            # or: marker = "hero", or: media = "A001_C002.mov"
        prompt = "a red car on a wet street"
        noise_level = 60

    Raises:
        FileNotFoundError: the file does not exist.
        ShotSettingsError: bad TOML, an entry without exactly one of
            ``clip``/``marker``/``media``, an unknown key or a bad value.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"shot list {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ShotSettingsError(f"shot list {str(p)!r} is not valid TOML: {exc}") from None
    return shot_list_from_dict(data, source=str(p))


def shot_list_from_dict(data: Mapping[str, Any], *, source: str = "shot list") -> ShotList:
    """Build a :class:`ShotList` from already-parsed TOML (see :func:`load_shot_list`)."""
    extra = set(data) - {"shot"}
    if extra:
        raise ShotSettingsError(
            f"{source}: unknown top-level key(s) {sorted(extra)}; expected only [[shot]] tables"
        )
    raw = data.get("shot", [])
    if not isinstance(raw, list):
        raise ShotSettingsError(f"{source}: 'shot' must be an array of tables ([[shot]]), got {type(raw).__name__}")
    entries = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            raise ShotSettingsError(f"{source}: entry #{i} must be a table, got {type(item).__name__}")
        keys = [k for k in _MATCH_KEYS if k in item]
        if len(keys) != 1:
            raise ShotSettingsError(
                f"{source}: entry #{i} must have exactly one of clip, marker or media to match on, "
                f"got {keys or 'none'}"
            )
        kind = keys[0]
        value = item[kind]
        if not isinstance(value, str) or not value:
            raise ShotSettingsError(f"{source}: entry #{i}: {kind} must be a non-empty string, got {value!r}")
        settings = {k: v for k, v in item.items() if k not in (kind, *RANGE_KEYS)}
        entry = ShotEntry(kind, value, {}, i)
        where = f"{source} {entry.describe()}"
        bounds = [_position(item.get(key), key, where) for key in RANGE_KEYS]
        # TOML has its own types: a string where a number or a boolean belongs is a mistake
        checked = validate_settings(settings, clip=None, where=where, text=False)
        entries.append(ShotEntry(kind, value, checked, i, *bounds))
    return ShotList(entries, source)
