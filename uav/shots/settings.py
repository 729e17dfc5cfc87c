"""The per-shot settings schema: the keys a shot may set, their defaults, and how values are checked.

Values are parsed and checked by :class:`uav.settings.UpscaleSettings`, the one
settings schema (shot keys are its field names, ``steps`` excepted); this module adds
only the per-shot spelling of a few values and the per-shot keys that are not
pipeline knobs (``skip``, ``vae``). Markers, metadata and the command line carry text
(``skip=yes``); a TOML shot list has its own types, so there ``skip = "yes"`` is an
error (``text=False``).

``prompt = "auto"`` asks a captioner for the shot's prompt (:mod:`uav_otio.captions`);
such a shot also carries ``captioner`` and ``caption_frame`` (:data:`AUTO_PROMPT_KEYS`),
which every other shot drops, so the settings hash of a shot with a written prompt is
what it was before automatic prompts existed.

Where the values come from and how they combine is :mod:`uav.shots.layers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Literal, Optional

from uav.knobs import Knob, is_bool_word, parse_value
from uav.settings import AUTO_PROMPT, SettingsError, UpscaleSettings, combination_errors, is_auto_prompt

__all__ = [
    "AUTO_PROMPT_DEFAULTS",
    "AUTO_PROMPT_KEYS",
    "DEFAULT_SETTINGS",
    "FIELD_TO_KEY",
    "PIPELINE_KEYS",
    "SHOT_KEYS",
    "TILE_CHOICES",
    "TILE_MODE_CHOICES",
    "VAE_CHOICES",
    "ShotSettingsError",
    "check_combination",
    "check_layer",
    "to_upscale_settings",
    "validate_settings",
]


#: shot key -> the :class:`~uav.settings.UpscaleSettings` field it sets. Every value is
#: parsed and checked by that field's rule; only the spelling of a few values differs
#: (``steps``; ``tile`` as auto/on/off; ``propagation_steps`` as a sorted list). Adding
#: a key here changes the settings hash of every shot, so every output renders again.
PIPELINE_KEYS: dict[str, str] = {key: "num_inference_steps" if key == "steps" else key for key in (
    "prompt", "negative_prompt", "added_prompt", "noise_level", "guidance_scale", "steps", "propagation_steps",
    "color_fix", "seed", "flow", "tiling", "scheduler", "tile", "tile_mode", "tile_size", "tile_overlap",
    "window_batch", "decode_chunk", "decode_tile")}
#: keys that matter only to a shot whose prompt is ``auto`` (the caption is made from them):
#: they join its settings, hence its hash, then and only then, so that the hash of every
#: other shot stays what it was before automatic prompts existed
AUTO_PROMPT_KEYS: dict[str, str] = {key: key for key in ("captioner", "caption_frame")}
#: per-shot keys that are not pipeline knobs: the renderer or the planner reads them
_BOOL = Knob(bool)
#: values accepted for ``vae`` (the decoder the renderer loads)
_VAE = Knob(Optional[Literal["3d", "video"]])
VAE_CHOICES: tuple[str, ...] = _VAE.choices
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
    if key == "tiling" and (isinstance(value, bool) or (text and is_bool_word(value))):
        # ``tiling = true/false`` predates ``tile``: it switches tiling (folded into ``tile``)
        return parse_value(_BOOL, key, value, text=text)
    return _to_shot_value(key, UpscaleSettings.parse_value(PIPELINE_KEYS[key], value, text=text))


#: every key a shot may set (:func:`validate_settings` reads and checks their values)
SHOT_KEYS: tuple[str, ...] = (*DEFAULT_SETTINGS, *AUTO_PROMPT_KEYS)
#: what an ``auto`` shot that names no captioner or frame uses
AUTO_PROMPT_DEFAULTS: dict[str, Any] = {key: getattr(UpscaleSettings(), name) for key, name in AUTO_PROMPT_KEYS.items()}

FIELD_TO_KEY = {name: key for key, name in PIPELINE_KEYS.items()}


def check_layer(values: Mapping[str, Any], *, where: str, clip: str | None, text: bool = True) -> dict[str, Any]:
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


def check_combination(settings: Mapping[str, Any], *, clip: str | None,
                       where: Callable[[str], str]) -> None:
    """The pipeline's rules that tie keys together; ``where(field)`` locates the culprit."""
    fields = {PIPELINE_KEYS[k]: v for k, v in settings.items() if k in PIPELINE_KEYS}
    for _, field_name, reason in combination_errors(fields):
        subject = f"clip {clip!r}: " if clip is not None else ""
        key = FIELD_TO_KEY.get(field_name, field_name)
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
    out = check_layer(values, where=where, clip=clip, text=text)
    check_combination(out, clip=clip, where=lambda key: where)
    return out


def to_upscale_settings(settings: Mapping[str, Any]) -> UpscaleSettings:
    """The pipeline settings for a resolved shot (``vae`` and ``skip`` are not
    sampling knobs: the renderer picks the VAE when it loads the model).

    The values are the typed ones :func:`validate_settings` gives (or JSON of them):
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
    return UpscaleSettings.from_mapping(knobs)
