"""Plugin discovery: the pluggy manager and how each ``uav`` plugin loaded.

:func:`build_plugin_manager` builds a fresh pluggy manager: it loads every plugin of
the ``uav`` entry-point group one by one (a plugin that fails to import or to be
registered is recorded with its error and skipped, the others still load), honours
``UAV_BLOCK_PLUGINS``, and falls back to importing the built-in plugin packages
by name when their entry points are not visible (an installation whose metadata
was lost); a missing package is then reported as such. The by-name lookup over the
plugins it loaded is :class:`uav.registry.manager.Registry`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from types import ModuleType

import pluggy

from uav.registry import hookspecs
from uav.registry.hookspecs import PROJECT_NAME

__all__ = [
    "ENTRYPOINT_GROUP",
    "BLOCK_ENV_VAR",
    "BUILTIN_PLUGINS",
    "PluginRecord",
    "UavPluginManager",
    "build_plugin_manager",
    "error_text",
    "manual_record",
    "plugin_code",
]

log = logging.getLogger("uav.registry")

#: entry-point group plugins are discovered in (``[project.entry-points.uav]``)
ENTRYPOINT_GROUP = PROJECT_NAME
#: comma-separated plugin names to block, e.g. ``UAV_BLOCK_PLUGINS=flow,my-plugin``
BLOCK_ENV_VAR = "UAV_BLOCK_PLUGINS"

#: the built-in plugins: entry-point name -> import package (``uav_<name>``). They normally
#: arrive through the ``uav`` distribution's entry points like any third-party plugin; this
#: table is only the fallback for when those entry points are not visible.
BUILTIN_PLUGINS: dict[str, str] = {name: f"uav_{name}" for name in (
    "flow", "color", "schedulers", "tiling", "segments", "captioners", "scenes")}


@dataclass(frozen=True)
class PluginRecord:
    """How one plugin was (or was not) loaded by :func:`build_plugin_manager`."""

    name: str
    module: str | None
    distribution: str | None
    version: str | None
    #: ``"entry-point"``, ``"builtin"`` (direct import fallback) or ``"manual"``
    source: str
    #: ``"ok"``, ``"failed"`` or ``"blocked"``
    status: str = "ok"
    error: str | None = None


class UavPluginManager(pluggy.PluginManager):
    """A pluggy manager for project ``uav`` that remembers how each plugin loaded."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        #: plugin name -> load record, in load order (failed and blocked ones included)
        self.records: dict[str, PluginRecord] = {}

    def register(self, plugin: object, name: str | None = None) -> str | None:  # type: ignore[override]
        """Register like pluggy does, and keep a ``manual`` record for plugins added
        by hand (e.g. in tests) so that they are listed too."""
        result = super().register(plugin, name=name)
        if result is not None and result not in self.records:
            self.records[result] = manual_record(result, plugin)
        return result


def manual_record(name: str, plugin: object) -> PluginRecord:
    """The record of a plugin registered by hand rather than discovered."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    return PluginRecord(name, module, None, None, "manual")


def error_text(exc: BaseException) -> str:
    """``Type: message``: how a plugin's failure is recorded and shown."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def plugin_code() -> Iterator[None]:
    """Run a plugin's import or hook with its ``print`` output sent to stderr: stdout
    belongs to the command (``uav plugins --json`` prints one JSON document there)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _parse_blocked(blocked: Iterable[str] | str | None) -> set[str]:
    if blocked is None:
        blocked = os.environ.get(BLOCK_ENV_VAR, "")
    if isinstance(blocked, str):
        blocked = blocked.split(",")
    names = set()
    for item in blocked:
        if not isinstance(item, str):
            raise TypeError(f"blocked must hold plugin names (str), got {type(item).__name__}")
        if item.strip():
            names.add(item.strip())
    return names


def _uav_version() -> str | None:
    try:
        return importlib.metadata.version("uav")
    except importlib.metadata.PackageNotFoundError:
        from uav import __version__

        return __version__


def _import_builtin(module_name: str) -> ModuleType:
    """Import a built-in plugin package that arrived without its entry point.

    The packages are installed with the ``uav`` distribution; they are never loaded
    from a source tree by file path (that would run code the installation does not
    vouch for, and hide a broken install).
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ModuleNotFoundError(
            f"built-in plugin package {module_name!r} is not installed: reinstall uav "
            "(pip install uav, or pip install -e . in a source checkout) so that its plugins and their "
            "entry points are present", name=module_name) from None


def _entry_point_dist(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"], dist.version
    except Exception:  # a malformed METADATA must not stop discovery
        return None, None


def _load_one(pm: UavPluginManager, record: PluginRecord, load: Callable[[], object]) -> None:
    """Load and register one plugin, or leave ``record`` as blocked or failed; ``pm.records`` keeps it."""
    if pm.is_blocked(record.name):
        pm.records.setdefault(record.name, replace(record, status="blocked"))
        return
    try:
        with plugin_code():
            pm.register(load(), name=record.name)
    except (Exception, SystemExit) as exc:
        log.warning("uav plugin %r (%s) failed to load: %s", record.name, record.module, error_text(exc))
        log.debug("%s", traceback.format_exc())
        record = replace(record, status="failed", error=error_text(exc))
    pm.records[record.name] = record


def build_plugin_manager(
    *,
    load_entrypoints: bool = True,
    blocked: Iterable[str] | str | None = None,
    include_builtins: bool = True,
) -> UavPluginManager:
    """Build a fresh plugin manager with every available ``uav`` plugin registered.

    Args:
        load_entrypoints: discover plugins through the ``uav`` entry-point group
            (built-ins and third-party). With ``False`` only the built-ins are
            registered, imported directly (useful for isolated tests).
        blocked: plugin names not to load. ``None`` reads the comma-separated
            ``UAV_BLOCK_PLUGINS`` environment variable; an explicit value replaces it.
        include_builtins: register the built-in plugins (from entry points when
            visible, otherwise by importing the installed ``uav_*`` packages by name).

    Returns:
        A :class:`UavPluginManager`; its ``records`` tell how each plugin loaded.
        Plugins that failed to import or register are recorded with their error
        and skipped; they never stop the others from loading.
    """
    pm = UavPluginManager()
    blocked_names = _parse_blocked(blocked)
    for name in sorted(blocked_names):
        pm.set_blocked(name)
    if load_entrypoints:
        eps = list(importlib.metadata.entry_points(group=ENTRYPOINT_GROUP))
        builtin_modules = set(BUILTIN_PLUGINS.values())
        # Built-ins first so that, on a name clash, the built-in component is kept.
        eps.sort(key=lambda ep: (ep.value not in builtin_modules, ep.name))
        for ep in eps:
            dist, version = _entry_point_dist(ep)
            if not include_builtins and ep.value in builtin_modules:
                continue
            record = PluginRecord(ep.name, ep.value, dist, version, "entry-point")
            previous = pm.records.get(ep.name)
            if previous is not None and not pm.is_blocked(ep.name):
                # The same distribution reachable twice on sys.path is harmless.
                if previous.module != ep.value:
                    log.warning("uav plugin name %r is used by both %s and %s", ep.name, previous.module, ep.value)
                    taken = f"plugin name {ep.name!r} is already taken by {previous.module!r}"
                    pm.records[f"{ep.name} ({dist or ep.value})"] = replace(record, status="failed", error=taken)
                continue
            _load_one(pm, record, ep.load)

    if include_builtins:
        loaded_modules = {rec.module for rec in pm.records.values()}
        for name, module_name in BUILTIN_PLUGINS.items():
            if name in pm.records or module_name in loaded_modules:
                continue
            _load_one(pm, PluginRecord(name, module_name, "uav", _uav_version(), "builtin"),
                      functools.partial(_import_builtin, module_name))
    return pm

