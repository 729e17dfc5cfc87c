"""Moved to :mod:`uav.shots.layers` (the core reads shot lists too: ``uav upscale --scenes``);
this module keeps the names it published, private helpers included."""

from __future__ import annotations

import uav.shots.layers as _moved
from uav.shots.layers import *  # noqa: F401,F403

__all__ = list(_moved.__all__)
globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
