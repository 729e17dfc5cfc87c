"""Per-shot settings: where they come from, how they combine, and how they are checked.

A clip's settings are layered, highest priority first:

1. overrides given on the command line (or to the Python API),
2. a TOML shot list (entries matched by clip name, marker name or media file),
3. markers on the clip whose name or comment reads ``uav: key=value; key=value``,
4. ``clip.metadata["uav"]``,
5. ``timeline.metadata["uav"]``,
6. the library defaults (:data:`DEFAULT_SETTINGS`).

Every layer is validated on its own, so an error names the clip *and* the place
the bad value came from; the merged result is checked once more for the rules
that tie keys together (``propagation_steps`` must be below ``steps``).

The result is a plain ``dict`` of JSON-serialisable values; the renderer maps it
onto the pipeline.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

import opentimelineio as otio

from uav.settings import SettingsError, UpscaleSettings

__all__ = [
    "COLOR_FIX_CHOICES",
    "DEFAULT_SETTINGS",
    "SHOT_KEYS",
    "TILE_CHOICES",
    "TILE_MODE_CHOICES",
    "VAE_CHOICES",
    "ShotEntry",
    "ShotList",
    "ShotSettingsError",
    "load_shot_list",
    "parse_marker_settings",
    "resolve_clip_settings",
    "to_upscale_settings",
    "validate_settings",
]

#: values accepted for ``color_fix`` (compared case-insensitively)
COLOR_FIX_CHOICES: tuple[str, ...] = ("none", "wavelet", "adain")

_LIB = UpscaleSettings()

#: The library defaults: :class:`uav.settings.UpscaleSettings`' (the published
#: inference script's, SPEC §7.1), except ``seed``: the published script seeds 10, and
#: a fixed seed keeps a re-render of an unchanged shot identical. ``None`` for
#: ``flow``, ``tiling`` and ``vae`` means "whatever the pipeline uses". The pipeline
#: knobs (``scheduler`` ... ``decode_chunk``) carry the library's values rather than
#: ``None``, so a shot that spells out a default hashes like one that does not.
DEFAULT_SETTINGS: dict[str, Any] = {
    "prompt": _LIB.prompt,
    "negative_prompt": _LIB.negative_prompt,
    "added_prompt": _LIB.added_prompt,
    "noise_level": _LIB.noise_level,
    "guidance_scale": float(_LIB.guidance_scale),
    "steps": _LIB.num_inference_steps,
    "propagation_steps": list(_LIB.propagation_steps),
    "color_fix": _LIB.color_fix_name,
    "seed": 10,
    "skip": False,
    "flow": None,
    "tiling": None,
    "vae": None,
    "scheduler": _LIB.scheduler,
    "tile": "auto",
    "tile_mode": _LIB.tile_mode,
    "tile_size": _LIB.tile_size,
    "tile_overlap": _LIB.tile_overlap,
    "window_batch": _LIB.window_batch,
    "decode_chunk": _LIB.decode_chunk,
    "decode_tile": _LIB.decode_tile,
}

#: values accepted for ``tile`` (``true``/``false`` and friends are read as on/off)
TILE_CHOICES: tuple[str, ...] = ("auto", "on", "off")
#: values accepted for ``tile_mode``
TILE_MODE_CHOICES: tuple[str, ...] = ("pipeline", "latent")
#: values accepted for ``vae``
VAE_CHOICES: tuple[str, ...] = ("3d", "video")

_MAX_NOISE_LEVEL = 350
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ShotSettingsError(ValueError):
    """A per-shot setting is unknown or has a bad value; the message names the clip."""


# --------------------------------------------------------------------------- #
# one validator per key: takes the raw value (strings are accepted for every key,
# because markers and NLE metadata carry text), returns the normalised value or
# raises ValueError with "expected ..., got ..." wording.
# --------------------------------------------------------------------------- #


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _noise_level(value: Any) -> int:
    n = _as_int(value)
    if not 0 <= n <= _MAX_NOISE_LEVEL:
        raise ValueError(f"expected an integer in [0, {_MAX_NOISE_LEVEL}], got {n}")
    return n


def _guidance_scale(value: Any) -> float:
    g = _as_float(value)
    if not g >= 1.0:  # also rejects NaN
        raise ValueError(f"expected a number >= 1, got {g}")
    return g


def _steps(value: Any) -> int:
    n = _as_int(value)
    if n < 1:
        raise ValueError(f"expected an integer >= 1, got {n}")
    return n


def _propagation_steps(value: Any) -> list[int]:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip().strip("[]")) if p]
        items: Iterable[Any] = parts
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ValueError(f"expected a list of step indices, got {type(value).__name__} {value!r}")
    out = []
    for item in items:
        try:
            i = _as_int(item)
        except ValueError:
            raise ValueError(f"expected a list of integer step indices, got {value!r}") from None
        if i < 0:
            raise ValueError(f"expected step indices >= 0, got {i}")
        out.append(i)
    return sorted(set(out))


def _color_fix(value: Any) -> str:
    if value is None:
        return "none"
    s = _as_str(value).strip().lower()
    if s not in COLOR_FIX_CHOICES:
        raise ValueError(f"expected one of {', '.join(COLOR_FIX_CHOICES)}, got {value!r}")
    return s


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    n = _as_int(value)
    if n < 0:
        raise ValueError(f"expected an integer >= 0, got {n}")
    return n


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def _name(value: Any) -> str | None:
    """A component name or path handed to the pipeline as is (``flow``, ``vae``)."""
    if value is None:
        return None
    s = _as_str(value).strip()
    if not s:
        raise ValueError("expected a non-empty name, got an empty string")
    return s


def _tiling(value: Any) -> bool | str | None:
    """``true``/``false`` switches tiling, any other text names a tiling strategy."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return _name(value)


def _tile(value: Any) -> str:
    """``auto``, ``on`` or ``off``; booleans (and their spellings) force tiling on/off."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        s = value.strip().lower()
        if s == "auto":
            return s
        if s in _TRUE | _FALSE:
            return "on" if s in _TRUE else "off"
    raise ValueError(f"expected one of {', '.join(TILE_CHOICES)}, got {value!r}")


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        s = _as_str(value).strip().lower()
        if s not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return s

    return check


def _vae(value: Any) -> str | None:
    return None if value is None else _choice(VAE_CHOICES)(value)


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        n = _as_int(value)
        if not lo <= n <= hi:
            raise ValueError(f"expected an integer in [{lo}, {hi}], got {n}")
        return n

    return check


#: every key a shot may set, with its validator
SHOT_KEYS: dict[str, Callable[[Any], Any]] = {
    "prompt": _as_str,
    "negative_prompt": _as_str,
    "added_prompt": _as_str,
    "noise_level": _noise_level,
    "guidance_scale": _guidance_scale,
    "steps": _steps,
    "propagation_steps": _propagation_steps,
    "color_fix": _color_fix,
    "seed": _seed,
    "skip": _bool,
    "flow": _name,
    "tiling": _tiling,
    "vae": _vae,
    "scheduler": _name,
    "tile": _tile,
    "tile_mode": _choice(TILE_MODE_CHOICES),
    # the bounds are UpscaleSettings'; tile_overlap < tile_size is checked on the merged settings
    "tile_size": _int_range(8, 1 << 16),
    "tile_overlap": _int_range(0, (1 << 16) - 1),
    "window_batch": _int_range(1, 1024),
    "decode_chunk": _int_range(1, 1024),
    "decode_tile": _int_range(8, 1 << 16),
}


def _check_layer(values: Mapping[str, Any], *, where: str, clip: str | None) -> dict[str, Any]:
    """Validate one layer of settings; errors name the clip and where the values came from."""
    subject = f"clip {clip!r}: " if clip is not None else ""
    if not isinstance(values, Mapping):
        raise ShotSettingsError(
            f"{subject}settings from {where} must be a table of key = value, got {type(values).__name__}"
        )
    out: dict[str, Any] = {}
    for key, raw in values.items():
        validator = SHOT_KEYS.get(key)
        if validator is None:
            raise ShotSettingsError(
                f"{subject}unknown setting {key!r} in {where}; expected one of {', '.join(SHOT_KEYS)}"
            )
        try:
            out[key] = validator(raw)
        except ValueError as exc:
            raise ShotSettingsError(f"{subject}{key} from {where}: {exc}") from None
    if isinstance(out.get("tiling"), bool):
        # ``tiling = true/false`` predates ``tile``: fold it in here, per layer, so that a
        # higher layer's ``tile`` (or ``tiling``) still beats a lower one's
        flag = "on" if out.pop("tiling") else "off"
        if out.get("tile", flag) != flag:
            raise ShotSettingsError(
                f"{subject}tiling from {where} switches tiling {flag} but tile is {out['tile']!r}; give only tile"
            )
        out["tile"] = flag
    return out


def validate_settings(
    values: Mapping[str, Any], *, clip: str | None = None, where: str = "settings"
) -> dict[str, Any]:
    """Validate and normalise a complete or partial settings mapping.

    Args:
        values: keys from :data:`SHOT_KEYS`; strings are accepted for every key
            (``"60"`` for ``noise_level``, ``"24,26"`` for ``propagation_steps``).
        clip: the clip name used in error messages.
        where: where the values came from, for error messages.

    Returns:
        A new dict of normalised values (only the keys given).

    Raises:
        ShotSettingsError: an unknown key or a bad value; the message names the clip.
    """
    out = _check_layer(values, where=where, clip=clip)
    steps = out.get("steps")
    if steps is not None and "propagation_steps" in out:
        _check_propagation(out, clip=clip, where=where)
    if "tile_size" in out and "tile_overlap" in out:
        _check_tile_overlap(out, clip=clip, where=where)
    return out


def _check_tile_overlap(settings: Mapping[str, Any], *, clip: str | None, where: str) -> None:
    size, overlap = settings["tile_size"], settings["tile_overlap"]
    if overlap >= size:
        subject = f"clip {clip!r}: " if clip is not None else ""
        raise ShotSettingsError(
            f"{subject}tile_overlap from {where} must be below tile_size={size}, got {overlap}"
        )


def _check_propagation(settings: Mapping[str, Any], *, clip: str | None, where: str) -> None:
    steps = settings["steps"]
    bad = [i for i in settings["propagation_steps"] if i >= steps]
    if bad:
        subject = f"clip {clip!r}: " if clip is not None else ""
        raise ShotSettingsError(
            f"{subject}propagation_steps from {where} must be step indices in [0, {steps}) "
            f"for steps={steps}, got {bad}"
        )


def to_upscale_settings(settings: Mapping[str, Any]) -> UpscaleSettings:
    """The pipeline settings for a resolved shot (``vae`` and ``skip`` are not
    sampling knobs: the renderer picks the VAE when it loads the model).

    ``steps`` becomes ``num_inference_steps``; ``tile`` ``on``/``off`` forces tiling
    (``auto`` leaves it to the input size); ``tiling`` names the tiling strategy (a
    ``true``/``false`` there, in a mapping that was not validated, acts as ``tile``).
    The other pipeline knobs (``scheduler``, ``tile_mode``, ``tile_size``,
    ``tile_overlap``, ``window_batch``, ``decode_chunk``) keep their names.

    Raises:
        SettingsError: the pipeline rejects the combination.
    """
    knobs: dict[str, Any] = {}
    for key, value in settings.items():
        if key in ("skip", "vae") or value is None:
            continue
        if key == "steps":
            knobs["num_inference_steps"] = value
        elif key == "propagation_steps":
            knobs["propagation_steps"] = tuple(value)
        elif key == "tile":
            if value != "auto":
                knobs["tile"] = value if isinstance(value, bool) else value == "on"
        elif key == "tiling":
            if not isinstance(value, bool):
                knobs["tiling"] = value
            elif settings.get("tile", "auto") == "auto":
                knobs["tile"] = value
        else:
            knobs[key] = value
    return UpscaleSettings(**knobs)


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
    if not text:
        return None
    m = _MARKER_PREFIX.match(text)
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


@dataclass(frozen=True)
class ShotEntry:
    """One ``[[shot]]`` of a shot list: how it matches and what it sets."""

    match_kind: str  # "clip", "marker" or "media"
    match_value: str
    settings: dict[str, Any]
    index: int  # position in the file, 1-based, for messages

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
        settings = {k: v for k, v in item.items() if k != kind}
        entry = ShotEntry(kind, value, {}, i)
        checked = validate_settings(settings, clip=None, where=f"{source} {entry.describe()}")
        entries.append(ShotEntry(kind, value, checked, i))
    return ShotList(entries, source)


# --------------------------------------------------------------------------- #
# resolution
# --------------------------------------------------------------------------- #


def _metadata_layer(metadata: Any) -> Mapping[str, Any]:
    """``metadata["uav"]`` as a plain dict (OTIO hands back AnyDictionary)."""
    if metadata is None:
        return {}
    value = metadata.get("uav") if hasattr(metadata, "get") else None
    if value is None:
        return {}
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value  # not a mapping: _check_layer reports it


def _plain(value: Any) -> Any:
    """AnyVector/AnyDictionary -> list/dict, recursively."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_plain(v) for v in value]
    return value


def clip_marker_layers(clip: otio.schema.Clip, clip_label: str) -> list[tuple[str, dict[str, Any]]]:
    """The settings typed into the clip's markers, in timeline order."""
    layers = []
    markers = sorted(clip.markers, key=lambda m: m.marked_range.start_time.to_seconds())
    for marker in markers:
        for field_name in ("name", "comment"):
            text = getattr(marker, field_name, "") or ""
            try:
                pairs = parse_marker_settings(text)
            except ValueError as exc:
                raise ShotSettingsError(f"clip {clip_label!r}: marker {text!r}: {exc}") from None
            if pairs is not None:
                layers.append((f"marker {field_name} {text!r}", pairs))
    return layers


def resolve_clip_settings(
    clip: otio.schema.Clip,
    *,
    timeline: otio.schema.Timeline | None = None,
    shot_list: ShotList | None = None,
    overrides: Mapping[str, Any] | None = None,
    media_path: str | None = None,
    clip_label: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The effective settings of one clip, and where each value came from.

    Args:
        clip: the clip.
        timeline: its timeline, for ``timeline.metadata["uav"]``.
        shot_list: a parsed TOML shot list.
        overrides: the highest-priority values (the command line).
        media_path: the clip's media file, for shot list entries that match on media.
        clip_label: the name used in messages (defaults to the clip name).
        defaults: the lowest layer (defaults to :data:`DEFAULT_SETTINGS`).

    Returns:
        ``(settings, origin)``: every key of :data:`SHOT_KEYS` with its value, and for
        each key the layer that set it (``"default"``, ``"timeline metadata"``, ...).

    Raises:
        ShotSettingsError: an unknown key or bad value in any layer, naming the clip.
    """
    label = clip_label if clip_label is not None else (clip.name or "<unnamed clip>")
    settings: dict[str, Any] = copy.deepcopy(dict(defaults if defaults is not None else DEFAULT_SETTINGS))
    origin = {k: "default" for k in settings}

    layers: list[tuple[str, Mapping[str, Any]]] = []
    if timeline is not None:
        layers.append(("timeline metadata uav", _metadata_layer(timeline.metadata)))
    layers.append(("clip metadata uav", _metadata_layer(clip.metadata)))
    layers.extend(clip_marker_layers(clip, label))
    if shot_list is not None:
        marker_names = [m.name for m in clip.markers if m.name]
        for entry, values in shot_list.settings_for(clip.name, marker_names, media_path):
            layers.append((f"{shot_list.source} {entry.describe()}", values))
    if overrides:
        layers.append(("command-line overrides", overrides))

    for where, values in layers:
        checked = _check_layer(values, where=where, clip=label)
        for k, v in checked.items():
            settings[k] = v
            origin[k] = where

    _check_propagation(settings, clip=label, where=f"{origin['propagation_steps']} (steps from {origin['steps']})")
    _check_tile_overlap(settings, clip=label,
                        where=f"{origin['tile_overlap']} (tile_size from {origin['tile_size']})")
    try:
        to_upscale_settings(settings)  # rules that tie knobs together, as the pipeline applies them
    except SettingsError as exc:
        raise ShotSettingsError(f"clip {label!r}: {exc}") from None
    return settings, origin
