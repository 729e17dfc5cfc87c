"""Built-in uav plugin: optical-flow estimators ``raft``, ``dis`` and ``farneback``.

Registered through the ``uav`` entry-point group (name ``flow``) like any
third-party plugin. The factories import OpenCV / torchvision only when called.
"""

from __future__ import annotations

from typing import Any

from uav.registry import hookimpl


def build_raft(**options: Any) -> Any:
    """RAFT-large (torchvision) with the release's raft-things.pth; options: weights, device, iters, batch_size, dtype."""
    from .raft import RaftFlow

    return RaftFlow(**options)


def build_dis(**options: Any) -> Any:
    """OpenCV DIS flow, no weights needed; options: preset ('ultrafast'|'fast'|'medium')."""
    from .opencv import DISFlow

    return DISFlow(**options)


def build_farneback(**options: Any) -> Any:
    """OpenCV Farneback flow, no weights needed; options: the cv2.calcOpticalFlowFarneback parameters."""
    from .opencv import FarnebackFlow

    return FarnebackFlow(**options)


@hookimpl
def register_flow_estimators(register: Any) -> None:
    """Register ``raft``, ``dis`` and ``farneback``."""
    register("raft", build_raft)
    register("dis", build_dis)
    register("farneback", build_farneback)
