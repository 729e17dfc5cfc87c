"""uav: temporally consistent diffusion video super-resolution (Upscale-A-Video).

The public surface is small on purpose::

    from uav import VideoUpscaler, UpscaleSettings
"""

from __future__ import annotations

__version__ = "0.1.0"

from uav.settings import SettingsError, UpscaleSettings
from uav.upscaler import InputError, VideoUpscaler

__all__ = ["VideoUpscaler", "UpscaleSettings", "SettingsError", "InputError", "__version__"]
