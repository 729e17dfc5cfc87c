"""Built-in uav plugin: optical-flow estimators ``raft``, ``dis`` and ``farneback``.

Registered through the ``uav`` entry-point group (name ``flow``) like any
third-party plugin. The factories import OpenCV / torchvision only when called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from uav.registry import hookimpl

#: name -> (module of this package, estimator class, the factory's docstring, which ``uav plugins`` lists)
ESTIMATORS: dict[str, tuple[str, str, str]] = {
    "raft": (".raft", "RaftFlow", "RAFT-large (torchvision) with the release's raft-things.pth; options: weights, "
             "device, iters, batch_size, dtype."),
    "dis": (".opencv", "DISFlow", "OpenCV DIS flow, no weights needed; options: preset ('ultrafast'|'fast'|'medium')."),
    "farneback": (".opencv", "FarnebackFlow", "OpenCV Farneback flow, no weights needed; options: the "
                  "cv2.calcOpticalFlowFarneback parameters."),
}


def factory(name: str) -> Callable[..., Any]:
    """The factory of estimator ``name``: its class built with the options, imported on first call."""
    module, cls, doc = ESTIMATORS[name]

    def build(**options: Any) -> Any:
        return getattr(importlib.import_module(module, __name__), cls)(**options)

    build.__doc__ = doc
    build.__qualname__ = build.__name__ = f"build_{name}"
    return build


@hookimpl
def register_flow_estimators(register: Any) -> None:
    """Register ``raft``, ``dis`` and ``farneback``."""
    for name in ESTIMATORS:
        register(name, factory(name))
