"""Plugin discovery and the by-name component registry.

:func:`build_plugin_manager` builds a fresh pluggy manager: it loads every plugin of
the ``uav`` entry-point group one by one (a plugin that fails to import or to be
registered is recorded with its error and skipped, the others still load), honours
``UAV_BLOCK_PLUGINS``, and falls back to importing the built-in plugin packages
by name when their entry points are not visible (an installation whose metadata
was lost); a missing package is then reported as such. :class:`Registry` then calls the registry-style hooks of
:mod:`uav.registry.hookspecs` once per plugin and keeps the named factories, so
components are built by name: ``Registry().get("flow", "dis")``.

There is no hidden global state: every :class:`Registry` owns its manager.
:func:`default_registry` is only a cache for callers that want one shared instance.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from uav.registry import hookspecs
from uav.registry.hookspecs import PROJECT_NAME

__all__ = [
    "ENTRYPOINT_GROUP",
    "BLOCK_ENV_VAR",
    "BUILTIN_PLUGINS",
    "KINDS",
    "PluginRecord",
    "PluginInfo",
    "ComponentInfo",
    "UavPluginManager",
    "UnknownKindError",
    "UnknownComponentError",
    "build_plugin_manager",
    "Registry",
    "default_registry",
    "reset_default_registry",
]

log = logging.getLogger("uav.registry")

#: entry-point group plugins are discovered in (``[project.entry-points.uav]``)
ENTRYPOINT_GROUP = PROJECT_NAME
#: comma-separated plugin names to block, e.g. ``UAV_BLOCK_PLUGINS=flow,my-plugin``
BLOCK_ENV_VAR = "UAV_BLOCK_PLUGINS"

#: the built-in plugins: entry-point name -> import package. They normally arrive
#: through the ``uav`` distribution's entry points like any third-party plugin; this
#: table is only the fallback for when those entry points are not visible.
BUILTIN_PLUGINS: dict[str, str] = {
    "flow": "uav_flow",
    "color": "uav_color",
    "schedulers": "uav_schedulers",
    "tiling": "uav_tiling",
    "segments": "uav_segments",
    "captioners": "uav_captioners",
}

#: component kind -> (hook name, human-readable singular)
KINDS: dict[str, tuple[str, str]] = {
    "flow": ("register_flow_estimators", "flow estimator"),
    "color": ("register_color_correctors", "colour corrector"),
    "scheduler": ("register_schedulers", "scheduler"),
    "tiling": ("register_tiling_strategies", "tiling strategy"),
    "segments": ("register_segment_strategies", "segment strategy"),
    "captioner": ("register_captioners", "captioner"),
}

# Spellings users reach for (API argument names, plurals, British English).
_KIND_ALIASES: dict[str, str] = {
    "flows": "flow",
    "flow_estimator": "flow",
    "flow-estimator": "flow",
    "colour": "color",
    "colors": "color",
    "colours": "color",
    "color_fix": "color",
    "colour_fix": "color",
    "color-fix": "color",
    "schedulers": "scheduler",
    "tile": "tiling",
    "tiles": "tiling",
    "segment": "segments",
    "windows": "segments",
    "captioners": "captioner",
    "caption": "captioner",
}

_WILDCARD = ":*"


class UnknownKindError(KeyError, ValueError):
    """An unknown component kind; the message lists the valid kinds."""

    def __str__(self) -> str:
        # KeyError would otherwise print the repr of its message (extra quotes).
        return str(self.args[0]) if self.args else ""


class UnknownComponentError(KeyError, ValueError):
    """No component of that name is installed; the message lists the installed names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component factory."""

    kind: str
    #: the exact name used to select it (``prefix:*`` for a family)
    name: str
    plugin: str
    factory: Callable[..., Any] = field(repr=False, compare=False)

    @property
    def summary(self) -> str:
        """First line of the factory's docstring (empty if it has none)."""
        doc = getattr(self.factory, "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class PluginInfo:
    """A plugin as :meth:`Registry.list_plugins` reports it."""

    name: str
    distribution: str | None
    version: str | None
    module: str | None
    source: str
    #: ``"ok"``, ``"failed"`` (did not import/register), ``"blocked"`` or ``"partial"``
    #: (loaded, but some registrations failed; see ``errors``)
    status: str
    errors: tuple[str, ...]
    #: kind -> names this plugin registered, each as used to select it
    components: Mapping[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "source": self.source,
            "status": self.status,
            "errors": list(self.errors),
            "components": {k: list(v) for k, v in self.components.items()},
        }


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
            module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
            self.records[result] = PluginRecord(result, module, None, None, "manual")
        return result


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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


def _load_one(
    pm: UavPluginManager,
    name: str,
    module: str | None,
    dist: str | None,
    version: str | None,
    source: str,
    load: Callable[[], object],
) -> None:
    try:
        plugin = load()
        pm.register(plugin, name=name)
    except Exception as exc:
        log.warning("uav plugin %r (%s) failed to load: %s", name, module, _error_text(exc))
        log.debug("%s", traceback.format_exc())
        pm.records[name] = PluginRecord(name, module, dist, version, source, "failed", _error_text(exc))
        return
    pm.records[name] = PluginRecord(name, module, dist, version, source)


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

    def skip_blocked(name: str, module: str | None, dist: str | None, version: str | None, source: str) -> bool:
        if pm.is_blocked(name):
            pm.records.setdefault(name, PluginRecord(name, module, dist, version, source, "blocked"))
            return True
        return False

    if load_entrypoints:
        eps = list(importlib.metadata.entry_points(group=ENTRYPOINT_GROUP))
        builtin_modules = set(BUILTIN_PLUGINS.values())
        # Built-ins first so that, on a name clash, the built-in component is kept.
        eps.sort(key=lambda ep: (ep.value not in builtin_modules, ep.name))
        for ep in eps:
            dist, version = _entry_point_dist(ep)
            if not include_builtins and ep.value in builtin_modules:
                continue
            if skip_blocked(ep.name, ep.value, dist, version, "entry-point"):
                continue
            previous = pm.records.get(ep.name)
            if previous is not None:
                # The same distribution reachable twice on sys.path is harmless.
                if previous.module != ep.value:
                    log.warning("uav plugin name %r is used by both %s and %s", ep.name, previous.module, ep.value)
                    pm.records[f"{ep.name} ({dist or ep.value})"] = PluginRecord(
                        ep.name, ep.value, dist, version, "entry-point", "failed",
                        f"plugin name {ep.name!r} is already taken by {previous.module!r}",
                    )
                continue
            _load_one(pm, ep.name, ep.value, dist, version, "entry-point", ep.load)

    if include_builtins:
        loaded_modules = {rec.module for rec in pm.records.values()}
        for name, module_name in BUILTIN_PLUGINS.items():
            if name in pm.records or module_name in loaded_modules:
                continue
            if skip_blocked(name, module_name, "uav", _uav_version(), "builtin"):
                continue
            _load_one(pm, name, module_name, "uav", _uav_version(), "builtin",
                      functools.partial(_import_builtin, module_name))
    return pm


def _canonical_kind(kind: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    key = kind.strip().lower()
    key = _KIND_ALIASES.get(key, key)
    if key not in KINDS:
        raise UnknownKindError(f"unknown component kind {kind!r}; expected one of: {', '.join(KINDS)}")
    return key


class Registry:
    """Named component factories collected from the plugins of one plugin manager.

    Args:
        plugin_manager: a manager built by :func:`build_plugin_manager` (or any pluggy
            manager of project ``uav`` with the hookspecs added). ``None`` builds one
            with ``load_entrypoints`` and ``blocked``.
        load_entrypoints, blocked: passed to :func:`build_plugin_manager` when no
            manager is given.

    Each plugin's hooks are called separately: if one raises, that plugin's
    registrations for that hook are dropped and the error is reported by
    :meth:`list_plugins`; every other plugin still registers. When two plugins
    register the same name, the first one loaded keeps it (built-ins load first) and
    the clash is reported against the second.
    """

    def __init__(
        self,
        plugin_manager: pluggy.PluginManager | None = None,
        *,
        load_entrypoints: bool = True,
        blocked: Iterable[str] | str | None = None,
    ) -> None:
        if plugin_manager is None:
            plugin_manager = build_plugin_manager(load_entrypoints=load_entrypoints, blocked=blocked)
        elif not isinstance(plugin_manager, pluggy.PluginManager):
            raise TypeError(f"plugin_manager must be a pluggy.PluginManager, got {type(plugin_manager).__name__}")
        self.plugin_manager = plugin_manager
        self._components: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in KINDS}
        self._errors: dict[str, list[str]] = {}
        self._collect()

    # -- collection -----------------------------------------------------------------

    def _collect(self) -> None:
        pm = self.plugin_manager
        order = {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}
        for kind, (hook_name, _) in KINDS.items():
            hook = getattr(pm.hook, hook_name, None)
            if hook is None:
                continue
            impls = sorted(hook.get_hookimpls(), key=lambda impl: order.get(impl.plugin_name, len(order)))
            for impl in impls:
                self._call_impl(kind, hook_name, impl)

    def _call_impl(self, kind: str, hook_name: str, impl: Any) -> None:
        plugin = impl.plugin_name
        staged: list[tuple[str, Callable[..., Any]]] = []

        def register(name: str, factory: Callable[..., Any]) -> None:
            if not isinstance(name, str) or not name.strip() or name != name.strip():
                raise ValueError(f"component name must be a non-empty str without surrounding spaces, got {name!r}")
            if not callable(factory):
                raise TypeError(f"factory for {kind} {name!r} must be callable, got {type(factory).__name__}")
            staged.append((name, factory))

        try:
            # pluggy lets an implementation take only some of the spec's arguments.
            impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:
            log.warning("uav plugin %r failed in %s: %s", plugin, hook_name, _error_text(exc))
            self._errors.setdefault(plugin, []).append(f"{hook_name}: {_error_text(exc)}")
            return
        table = self._components[kind]
        for name, factory in staged:
            existing = table.get(name)
            if existing is not None:
                self._errors.setdefault(plugin, []).append(
                    f"{kind} {name!r} is already registered by plugin {existing.plugin!r}; kept that one"
                )
                continue
            table[name] = ComponentInfo(kind, name, plugin, factory)

    # -- lookup ---------------------------------------------------------------------

    def kinds(self) -> list[str]:
        """The component kinds: ``flow``, ``color``, ``scheduler``, ``tiling``,
        ``segments``, ``captioner``."""
        return list(KINDS)

    def names(self, kind: str, *, sort: bool = True) -> list[str]:
        """Names of the installed components of ``kind`` (families as ``prefix:*``), sorted,
        or with ``sort=False`` in registration order (built-ins first, defaults first)."""
        table = self._components[_canonical_kind(kind)]
        return sorted(table) if sort else list(table)

    def components(self, kind: str | None = None) -> list[ComponentInfo]:
        """Registered components, of one kind or of all kinds."""
        kinds = [_canonical_kind(kind)] if kind is not None else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def __contains__(self, item: tuple[str, str]) -> bool:
        kind, name = item
        try:
            self._lookup(kind, name)
        except KeyError:
            return False
        return True

    def _lookup(self, kind: str, name: str) -> tuple[ComponentInfo, dict[str, Any]]:
        kind = _canonical_kind(kind)
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a str, got {type(name).__name__}")
        table = self._components[kind]
        key = name.strip()
        for candidate in (key, key.lower()):
            if candidate in table:
                return table[candidate], {}
        prefix, sep, variant = key.partition(":")
        if sep and variant:
            for candidate in (prefix + _WILDCARD, prefix.lower() + _WILDCARD):
                if candidate in table:
                    return table[candidate], {"variant": variant}
        installed = ", ".join(sorted(table)) or "(none)"
        message = f"unknown {KINDS[kind][1]} {name!r}; installed: {installed}"
        failed = [p.name for p in self.list_plugins() if p.status == "failed"]
        if failed:
            message += f" (plugins that failed to load: {', '.join(failed)}; see `uav plugins`)"
        raise UnknownComponentError(message)

    def factory(self, kind: str, name: str) -> Callable[..., Any]:
        """The factory registered for ``name`` (a family's factory gets ``variant=`` bound)."""
        info, extra = self._lookup(kind, name)
        return functools.partial(info.factory, **extra) if extra else info.factory

    def get(self, kind: str, name: str, **options: Any) -> Any:
        """Build the component of ``kind`` registered as ``name``.

        ``options`` go to the component's factory (e.g. ``weights=``, ``device=`` for
        ``raft``). Raises :class:`UnknownKindError` / :class:`UnknownComponentError`
        (both ``KeyError`` and ``ValueError``) listing the valid choices.
        """
        info, extra = self._lookup(kind, name)
        return info.factory(**extra, **options)

    # -- reporting ------------------------------------------------------------------

    def list_plugins(self) -> list[PluginInfo]:
        """Every plugin known to the manager (loaded, failed or blocked), in load order,
        with its distribution, version and the components it registered."""
        pm = self.plugin_manager
        records: dict[str, PluginRecord] = dict(getattr(pm, "records", {}))
        for name, plugin in pm.list_name_plugin():
            if name not in records and plugin is not None:
                module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
                records[name] = PluginRecord(name, module, None, None, "manual")
        result = []
        for key, rec in records.items():
            comps: dict[str, tuple[str, ...]] = {}
            if rec.status == "ok":
                for kind in KINDS:
                    names = tuple(sorted(n for n, c in self._components[kind].items() if c.plugin == rec.name))
                    if names:
                        comps[kind] = names
            errors = ([rec.error] if rec.error else []) + (self._errors.get(rec.name, []) if rec.status == "ok" else [])
            status = rec.status
            if status == "ok" and errors:
                status = "partial" if comps else "failed"
            result.append(PluginInfo(
                name=rec.name, distribution=rec.distribution, version=rec.version, module=rec.module,
                source=rec.source, status=status, errors=tuple(errors), components=comps,
            ))
        return result

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in self._components.items())
        return f"Registry({counts})"


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """A shared :class:`Registry` of all installed plugins, built on first use.

    Tests and embedders that need isolation should build their own ``Registry``.
    """
    return Registry()


def reset_default_registry() -> None:
    """Forget the cached default registry (e.g. after installing a plugin)."""
    default_registry.cache_clear()
