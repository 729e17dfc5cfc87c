"""Moved to :mod:`uav.shots.shot_list` (the core reads shot lists too: ``uav upscale --scenes``);
this module keeps the names it published, private helpers included."""

from __future__ import annotations

import uav.shots.shot_list as _moved
from uav.shots.shot_list import *  # noqa: F401,F403

__all__ = list(_moved.__all__)
globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
