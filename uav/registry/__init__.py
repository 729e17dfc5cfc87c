"""The ``uav`` plugin system: hook specifications, discovery and by-name selection.

Plugin authors only need :data:`hookimpl`::

    from uav.registry import hookimpl

    @hookimpl
    def register_flow_estimators(register):
        register("my-flow", MyFlow)

Users select components by name through :class:`Registry` (or the ``uav plugins``
command to see what is installed). See ``docs/plugins.md``.
"""

from __future__ import annotations

from typing import Any

from uav.registry import discovery, manager
from uav.registry.discovery import *  # noqa: F403  (how plugins are found)
from uav.registry.hookspecs import PROJECT_NAME, hookimpl, hookspec
from uav.registry.manager import *  # noqa: F403  (the registry over them)
from uav.registry.manager import PluginInfo, default_registry


def list_plugins() -> list[PluginInfo]:
    """The installed plugins (as ``uav plugins`` shows them), from the default registry."""
    return default_registry().list_plugins()


def get_component(kind: str, name: str, **options: Any) -> Any:
    """Build a component by name from the default registry (``default_registry().get``)."""
    return default_registry().get(kind, name, **options)


__all__ = ["PROJECT_NAME", "get_component", "hookimpl", "hookspec", "list_plugins", *discovery.__all__,
           *manager.__all__]
