"""uav: temporally consistent diffusion video super-resolution (Upscale-A-Video).

The public surface is small on purpose::

    from uav import VideoUpscaler, UpscaleSettings

Names are imported lazily, so ``import uav.io`` or ``uav --help`` do not pay for torch
and diffusers until a model is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uav.protocols import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "VideoUpscaler": "uav.upscaler",
    "InputError": "uav.upscaler",
    "UpscaleSettings": "uav.settings",
    "SettingsError": "uav.settings",
    "hookimpl": "uav.registry.hookspecs",
}

__all__ = ["VideoUpscaler", "UpscaleSettings", "SettingsError", "InputError", "hookimpl", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from uav.registry.hookspecs import hookimpl
    from uav.settings import SettingsError, UpscaleSettings
    from uav.upscaler import InputError, VideoUpscaler


__getattr__ = lazy_attributes(__name__, _LAZY)
