"""Each scene's settings: the run's, with what the scene list sets for that scene.

The per-scene values are per-shot settings (the keys of ``uav timeline``'s shot lists
and markers, :mod:`uav.shots.settings`); options given on the command line win over
them, as they win over a shot list in ``uav timeline``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from uav.scenes.detect import Scene, SceneError
from uav.settings import SettingsError, UpscaleSettings

__all__ = ["layer_fields", "scene_settings"]


def layer_fields(layer: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`UpscaleSettings` fields a per-shot layer sets, with their parsed values."""
    from uav.shots.settings import AUTO_PROMPT_KEYS, PIPELINE_KEYS, to_upscale_settings

    parsed = to_upscale_settings(layer)
    names = set()
    for key, value in layer.items():
        if key in ("skip", "vae") or value is None:
            continue
        if key in ("tiling", "tile") and isinstance(value, bool) or key == "tile":
            names.add("tile")
        else:
            names.add(PIPELINE_KEYS.get(key) or AUTO_PROMPT_KEYS.get(key, key))
    return {name: getattr(parsed, name) for name in names}


def scene_settings(base: UpscaleSettings, scene: Scene, *, given: Collection[str] = (),
                   vae: str | None = None) -> UpscaleSettings:
    """``base`` with ``scene.settings`` applied, except the fields in ``given`` (the command line's).

    Raises:
        SceneError: ``skip`` (every scene of an output is rendered), a ``vae`` other than the
            run's, or a combination the pipeline refuses; the message names the scene.
    """
    layer = dict(scene.settings)
    if layer.get("skip"):
        raise SceneError(f"scene {scene.name!r}: skip = true, but every frame of the output is rendered; remove it "
                         "(or cut the range with --start/--end)")
    if layer.get("vae") not in (None, vae or "3d"):
        raise SceneError(f"scene {scene.name!r}: vae = {layer['vae']!r}, but this run loads the {vae or '3d'!r} "
                         "decoder for every scene; give --vae or render such scenes in a run of their own")
    try:
        changes = {k: v for k, v in layer_fields(layer).items() if k not in given}
        return base.replace(**changes) if changes else base
    except SettingsError as exc:
        raise SceneError(f"scene {scene.name!r}: {exc}") from None
