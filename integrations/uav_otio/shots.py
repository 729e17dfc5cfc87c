"""Per-shot settings: where they come from, how they combine, and how they are checked.

A clip's settings are layered, highest priority first:

1. overrides given on the command line (or to the Python API),
2. a TOML shot list (entries matched by clip name, marker name or media file),
3. markers on the clip whose name or comment reads ``uav: key=value; key=value``,
4. ``clip.metadata["uav"]``,
5. ``timeline.metadata["uav"]``,
6. the library defaults (:data:`DEFAULT_SETTINGS`).

Values are parsed and checked by :class:`uav.settings.UpscaleSettings`, the one
settings schema (shot keys are its field names, ``steps`` excepted); this module only
layers the sources and adds the per-shot keys that are not pipeline knobs (``skip``,
``vae``). Markers, metadata and the command line carry text (``skip=yes``); a TOML
shot list has its own types, so there ``skip = "yes"`` is an error.

Every layer is validated on its own, so an error names the clip *and* the place
the bad value came from; the merged result is checked once more for the rules
that tie keys together (``propagation_steps`` must be below ``steps``), and its
component names are resolved through the plugin registry, so a plan refuses what
the render would refuse.

``prompt = "auto"`` asks a captioner for the shot's prompt (:mod:`uav_otio.captions`);
such a shot also carries ``captioner`` and ``caption_frame`` (:data:`AUTO_PROMPT_KEYS`),
which every other shot drops, so the settings hash of a shot with a written prompt is
what it was before automatic prompts existed.

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

from uav.settings import (
    AUTO_PROMPT,
    Knob,
    SettingsError,
    UpscaleSettings,
    combination_errors,
    is_auto_prompt,
    parse_value,
)

__all__ = [
    "AUTO_PROMPT_KEYS",
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

#: shot key -> the :class:`~uav.settings.UpscaleSettings` field it sets. Every value is
#: parsed and checked by that field's rule; only the spelling of a few values differs
#: (``steps``; ``tile`` as auto/on/off; ``propagation_steps`` as a sorted list). Adding
#: a key here changes the settings hash of every shot, so every output renders again.
PIPELINE_KEYS: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "added_prompt": "added_prompt",
    "noise_level": "noise_level",
    "guidance_scale": "guidance_scale",
    "steps": "num_inference_steps",
    "propagation_steps": "propagation_steps",
    "color_fix": "color_fix",
    "seed": "seed",
    "flow": "flow",
    "tiling": "tiling",
    "scheduler": "scheduler",
    "tile": "tile",
    "tile_mode": "tile_mode",
    "tile_size": "tile_size",
    "tile_overlap": "tile_overlap",
    "window_batch": "window_batch",
    "decode_chunk": "decode_chunk",
    "decode_tile": "decode_tile",
}
#: keys that matter only to a shot whose prompt is ``auto`` (the caption is made from them):
#: they join its settings, hence its hash, then and only then, so that the hash of every
#: other shot stays what it was before automatic prompts existed
AUTO_PROMPT_KEYS: dict[str, str] = {
    "captioner": "captioner",
    "caption_frame": "caption_frame",
}
#: per-shot keys that are not pipeline knobs: the renderer or the planner reads them
_BOOL = Knob("bool")
#: values accepted for ``vae`` (the decoder the renderer loads)
VAE_CHOICES: tuple[str, ...] = ("3d", "video")
_VAE = Knob("name", choices=VAE_CHOICES, optional=True)
#: values accepted for ``tile`` (``true``/``false`` and friends are read as on/off)
TILE_CHOICES: tuple[str, ...] = ("auto", "on", "off")
#: values accepted for ``tile_mode``
TILE_MODE_CHOICES: tuple[str, ...] = UpscaleSettings.knob("tile_mode").choices
#: the keys whose default is "whatever the pipeline uses" (``None``)
_PIPELINE_DEFAULT = ("flow", "tiling")
#: what the published script seeds; a fixed seed keeps a re-render of an unchanged shot identical
DEFAULT_SEED = 10
_TILE_WORDS = {None: "auto", True: "on", False: "off"}


def _to_shot_value(key: str, value: Any) -> Any:
    """A parsed :class:`UpscaleSettings` value in the per-shot spelling (JSON-friendly, hashed)."""
    if key == "propagation_steps":
        return sorted(set(value))
    if key == "color_fix":
        return value or "none"
    if key == "tile":
        return _TILE_WORDS[value]
    return value


def _shot_defaults() -> dict[str, Any]:
    lib = UpscaleSettings()
    out = {key: _to_shot_value(key, getattr(lib, name)) for key, name in PIPELINE_KEYS.items()}
    out.update({key: None for key in _PIPELINE_DEFAULT})
    out.update(seed=DEFAULT_SEED, skip=False, vae=None)
    # the order plans list keys in (tables, JSON), as it always was
    order = ("prompt", "negative_prompt", "added_prompt", "noise_level", "guidance_scale", "steps",
             "propagation_steps", "color_fix", "seed", "skip", "flow", "tiling", "vae")
    return {**{key: out.pop(key) for key in order}, **out}


#: The library defaults: :class:`uav.settings.UpscaleSettings`' (the published
#: inference script's, SPEC §7.1), except ``seed``: the published script seeds 10, and
#: a fixed seed keeps a re-render of an unchanged shot identical. ``None`` for
#: ``flow``, ``tiling`` and ``vae`` means "whatever the pipeline uses". The pipeline
#: knobs (``scheduler`` ... ``decode_chunk``) carry the library's values rather than
#: ``None``, so a shot that spells out a default hashes like one that does not.
DEFAULT_SETTINGS: dict[str, Any] = _shot_defaults()


class ShotSettingsError(ValueError):
    """A per-shot setting is unknown or has a bad value; the message names the clip."""


def _shot_value(key: str, value: Any, text: bool) -> Any:
    """Parse one per-shot value (raises :class:`SettingsError` with ``expected`` set)."""
    if key == "skip":
        return parse_value(_BOOL, key, value, text=text)
    if key == "vae":
        return parse_value(_VAE, key, value, text=text)
    if key in AUTO_PROMPT_KEYS:
        return UpscaleSettings.parse_value(AUTO_PROMPT_KEYS[key], value, text=text)
    if key == "prompt" and is_auto_prompt(value):
        return AUTO_PROMPT  # one spelling, so "Auto" and "auto" hash alike
    if value is None and key in _PIPELINE_DEFAULT:
        return None
    if key == "tiling" and (isinstance(value, bool) or (text and _BOOL.is_bool_word(value))):
        # ``tiling = true/false`` predates ``tile``: it switches tiling (folded into ``tile``)
        return parse_value(_BOOL, key, value, text=text)
    return _to_shot_value(key, UpscaleSettings.parse_value(PIPELINE_KEYS[key], value, text=text))


def _make_validator(key: str) -> Callable[..., Any]:
    def validate(value: Any, *, text: bool = True) -> Any:
        try:
            return _shot_value(key, value, text)
        except SettingsError as exc:
            raise ValueError(f"expected {exc.expected}, got {exc.value!r}" if exc.expected else exc.reason) from None

    validate.__name__ = f"validate_{key}"
    validate.__doc__ = f"Parse and check a per-shot ``{key}`` (strings accepted unless ``text=False``)."
    return validate


#: every key a shot may set, with its validator (``validator(value, text=True)``)
SHOT_KEYS: dict[str, Callable[..., Any]] = {key: _make_validator(key) for key in (*DEFAULT_SETTINGS,
                                                                                    *AUTO_PROMPT_KEYS)}
#: what an ``auto`` shot that names no captioner or frame uses
AUTO_PROMPT_DEFAULTS: dict[str, Any] = {key: getattr(UpscaleSettings(), name) for key, name in AUTO_PROMPT_KEYS.items()}

_FIELD_TO_KEY = {name: key for key, name in PIPELINE_KEYS.items()}


def _check_layer(values: Mapping[str, Any], *, where: str, clip: str | None, text: bool = True) -> dict[str, Any]:
    """Validate one layer of settings; errors name the clip and where the values came from."""
    subject = f"clip {clip!r}: " if clip is not None else ""
    if not isinstance(values, Mapping):
        raise ShotSettingsError(
            f"{subject}settings from {where} must be a table of key = value, got {type(values).__name__}"
        )
    out: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in SHOT_KEYS:
            raise ShotSettingsError(
                f"{subject}unknown setting {key!r} in {where}; expected one of {', '.join(SHOT_KEYS)}"
            )
        try:
            out[key] = _shot_value(key, raw, text)
        except SettingsError as exc:
            raise ShotSettingsError(f"{subject}{exc.located(key, where)}") from None
    if isinstance(out.get("tiling"), bool):
        # fold the older switch in here, per layer, so that a higher layer's ``tile`` (or
        # ``tiling``) still beats a lower one's
        flag = "on" if out.pop("tiling") else "off"
        if out.get("tile", flag) != flag:
            raise ShotSettingsError(
                f"{subject}tiling from {where} switches tiling {flag} but tile is {out['tile']!r}; give only tile"
            )
        out["tile"] = flag
    return out


def _check_combination(settings: Mapping[str, Any], *, clip: str | None,
                       where: Callable[[str], str]) -> None:
    """The pipeline's rules that tie keys together; ``where(field)`` locates the culprit."""
    fields = {PIPELINE_KEYS[k]: v for k, v in settings.items() if k in PIPELINE_KEYS}
    for _, field_name, reason in combination_errors(fields):
        subject = f"clip {clip!r}: " if clip is not None else ""
        key = _FIELD_TO_KEY.get(field_name, field_name)
        error = SettingsError(reason, field=field_name)
        raise ShotSettingsError(f"{subject}{error.located(key, where(key))}")


def validate_settings(
    values: Mapping[str, Any], *, clip: str | None = None, where: str = "settings", text: bool = True
) -> dict[str, Any]:
    """Validate and normalise a complete or partial settings mapping.

    Args:
        values: keys from :data:`SHOT_KEYS`; with ``text`` (markers, NLE metadata, the
            command line) strings are accepted for every key (``"60"`` for
            ``noise_level``, ``"24,26"`` for ``propagation_steps``); without it (TOML)
            each value must have its own type.
        clip: the clip name used in error messages.
        where: where the values came from, for error messages.

    Returns:
        A new dict of normalised values (only the keys given).

    Raises:
        ShotSettingsError: an unknown key or a bad value; the message names the clip.
    """
    out = _check_layer(values, where=where, clip=clip, text=text)
    _check_combination(out, clip=clip, where=lambda key: where)
    return out


def to_upscale_settings(settings: Mapping[str, Any]) -> UpscaleSettings:
    """The pipeline settings for a resolved shot (``vae`` and ``skip`` are not
    sampling knobs: the renderer picks the VAE when it loads the model).

    ``steps`` becomes ``num_inference_steps``; ``tile`` ``on``/``off`` forces tiling
    (``auto`` leaves it to the input size); ``tiling`` names the tiling strategy (a
    ``true``/``false`` there, in a mapping that was not validated, acts as ``tile``).
    The other pipeline knobs keep their names.

    Raises:
        SettingsError: the pipeline rejects the combination.
    """
    knobs: dict[str, Any] = {}
    for key, value in settings.items():
        if key in ("skip", "vae") or value is None:
            continue
        if key == "tiling" and isinstance(value, bool):
            if settings.get("tile", "auto") == "auto":
                knobs["tile"] = value
        elif key == "tile" and isinstance(value, bool):
            knobs["tile"] = value
        else:
            knobs[PIPELINE_KEYS.get(key, key)] = value
    return UpscaleSettings.from_mapping(knobs, text=True)


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
        # TOML has its own types: a string where a number or a boolean belongs is a mistake
        checked = validate_settings(settings, clip=None, where=f"{source} {entry.describe()}", text=False)
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
        # a shot list was validated (typed) when it was read; the other layers carry text
        checked = _check_layer(values, where=where, clip=label)
        for k, v in checked.items():
            settings[k] = v
            origin[k] = where

    if settings.get("prompt") == AUTO_PROMPT:
        for key, value in AUTO_PROMPT_DEFAULTS.items():
            settings.setdefault(key, value)
            origin.setdefault(key, "default")
    else:
        # a captioner named for the whole timeline leaves shots with a written prompt (and
        # their hashes) alone
        for key in AUTO_PROMPT_KEYS:
            settings.pop(key, None)
            origin.pop(key, None)

    partner = {"propagation_steps": "steps", "tile_overlap": "tile_size", "guidance_scale": "negative_prompt"}
    _check_combination(settings, clip=label,
                       where=lambda key: f"{origin[key]} ({partner[key]} from {origin[partner[key]]})"
                       if key in partner else origin[key])
    try:
        # the rules the pipeline applies, and every component name other than the built-in
        # defaults through the registry, so a timeline fails at plan time for what the render
        # would refuse (a plan of default shots loads no plugin, hence no torch)
        to_upscale_settings(settings).check_components(changed_only=True)
    except SettingsError as exc:
        key = _FIELD_TO_KEY.get(exc.field or "", exc.field or "")
        if key in origin:
            raise ShotSettingsError(f"clip {label!r}: {exc.located(key, origin[key])}") from None
        raise ShotSettingsError(f"clip {label!r}: {exc}") from None
    return settings, origin
