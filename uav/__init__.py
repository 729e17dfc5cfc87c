"""uav: temporally consistent diffusion video super-resolution (Upscale-A-Video)."""

from __future__ import annotations

__version__ = "0.1.0"
