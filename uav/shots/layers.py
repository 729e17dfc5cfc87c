"""Per-shot settings: where they come from and how they combine.

A clip's settings are layered, highest priority first:

1. overrides given on the command line (or to the Python API),
2. a TOML shot list (entries matched by clip name, marker name or media file),
3. markers on the clip whose name or comment reads ``uav: key=value; key=value``,
4. ``clip.metadata["uav"]``,
5. ``timeline.metadata["uav"]``,
6. the library defaults (:data:`DEFAULT_SETTINGS`).

The keys, defaults and checks are :mod:`uav.shots.settings` (the one settings
schema, :class:`uav.settings.UpscaleSettings`, in per-shot spelling); markers and
TOML shot lists are read by :mod:`uav.shots.shot_list`. Their names are re-exported
here, where they were first published.

Every layer is validated on its own, so an error names the clip *and* the place
the bad value came from; the merged result is checked once more for the rules
that tie keys together (``propagation_steps`` must be below ``steps``), and its
component names are resolved through the plugin registry, so a plan refuses what
the render would refuse.

The result is a plain ``dict`` of JSON-serialisable values; the renderer maps it
onto the pipeline.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import opentimelineio as otio

from uav.components import check_components
from uav.settings import AUTO_PROMPT, SettingsError

from .shot_list import (  # noqa: F401  (re-exported: published in uav_otio.shots first)
    ShotEntry,
    ShotList,
    load_shot_list,
    parse_marker_settings,
    shot_list_from_dict,
)
from .settings import (  # noqa: F401  (re-exported: published in uav_otio.shots first)
    AUTO_PROMPT_DEFAULTS,
    AUTO_PROMPT_KEYS,
    DEFAULT_SEED,
    DEFAULT_SETTINGS,
    FIELD_TO_KEY,
    PIPELINE_KEYS,
    SHOT_KEYS,
    TILE_CHOICES,
    TILE_MODE_CHOICES,
    VAE_CHOICES,
    ShotSettingsError,
    check_combination,
    check_layer,
    to_upscale_settings,
    validate_settings,
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
    "clip_marker_layers",
    "load_shot_list",
    "parse_marker_settings",
    "resolve_clip_settings",
    "to_upscale_settings",
    "validate_settings",
]



def _metadata_layer(metadata: Any) -> Mapping[str, Any]:
    """``metadata["uav"]`` as a plain dict (OTIO hands back AnyDictionary)."""
    value = metadata.get("uav") if hasattr(metadata, "get") else None  # also when there is no metadata
    if hasattr(value, "items"):
        return _plain(value)
    return {} if value is None else value  # not a mapping: check_layer reports it


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
        checked = check_layer(values, where=where, clip=label)
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
    check_combination(settings, clip=label,
                       where=lambda key: f"{origin[key]} ({partner[key]} from {origin[partner[key]]})"
                       if key in partner else origin[key])
    try:
        # the rules the pipeline applies, and every component name other than the built-in
        # defaults through the registry, so a timeline fails at plan time for what the render
        # would refuse (a plan of default shots loads no plugin, hence no torch)
        check_components(to_upscale_settings(settings), changed_only=True)
    except SettingsError as exc:
        key = FIELD_TO_KEY.get(exc.field or "", exc.field or "")
        if key in origin:
            raise ShotSettingsError(f"clip {label!r}: {exc.located(key, origin[key])}") from None
        raise ShotSettingsError(f"clip {label!r}: {exc}") from None
    return settings, origin
