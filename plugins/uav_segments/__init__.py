"""Built-in uav plugin: temporal segment strategies ``official`` and ``uniform``.

Thin registrations of :mod:`uav.sampling.windows`, registered through the ``uav``
entry-point group (name ``segments``) like any third-party plugin.

* ``official`` (default): the published rule (SPEC §6): windows every ``stride``
  frames, the last one moved back to a full window (and run twice), predictions
  merged by a running 0.5/0.5 blend.
* ``uniform``: evenly spread windows with no duplicate, merged by a feathered
  weighted mean (each frame's weights sum to 1).
"""

from __future__ import annotations

from typing import Any

from uav.protocols import SegmentPlan, int_arg
from uav.registry import hookimpl


class OfficialSegments:
    """The published window rule. ``stride`` defaults to ``window - 2`` (6 for the
    8-frame window of the release)."""

    def __init__(self, *, stride: int | None = None) -> None:
        self.stride = None if stride is None else int_arg("stride", stride, 1)

    def plan(self, num_frames: int, window: int = 8) -> SegmentPlan:
        """Windows and merge weights of a ``num_frames`` clip."""
        from uav.sampling.windows import official_segment_plan

        stride = self.stride if self.stride is not None else max(1, int_arg("window", window, 1) - 2)
        return official_segment_plan(num_frames, window=window, stride=stride)

    def __repr__(self) -> str:
        return f"OfficialSegments(stride={self.stride})"


class UniformSegments:
    """Duplicate-free, evenly spread windows overlapping by at least ``overlap`` frames,
    merged by a feathered weighted mean."""

    def __init__(self, *, overlap: int = 2) -> None:
        self.overlap = int_arg("overlap", overlap, 0)

    def plan(self, num_frames: int, window: int = 8) -> SegmentPlan:
        """Windows and merge weights of a ``num_frames`` clip."""
        from uav.sampling.windows import uniform_segment_plan

        return uniform_segment_plan(num_frames, window=window, overlap=self.overlap)

    def __repr__(self) -> str:
        return f"UniformSegments(overlap={self.overlap})"


def official(**options: Any) -> OfficialSegments:
    """Published window rule (stride 6, last window clamped and repeated, running 0.5/0.5 blend); option: stride."""
    return OfficialSegments(**options)


def uniform(**options: Any) -> UniformSegments:
    """Evenly spread windows without duplicates, feathered weighted mean; option: overlap (frames, default 2)."""
    return UniformSegments(**options)


@hookimpl
def register_segment_strategies(register: Any) -> None:
    """Register ``official`` and ``uniform``."""
    register("official", official)
    register("uniform", uniform)
