"""The by-name component registry over the plugins discovery loaded.

:class:`Registry` calls the registry-style hooks of :mod:`uav.registry.hookspecs`
once per plugin and keeps the named factories, so components are built by name:
``Registry().get("flow", "dis")``. How the plugins are found and loaded is
:mod:`uav.registry.discovery`.

There is no hidden global state: every :class:`Registry` owns its manager.
:func:`default_registry` is only a cache for callers that want one shared instance.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pluggy

from uav.registry.discovery import (PluginRecord, UavPluginManager, build_plugin_manager, error_text, manual_record,
                                   plugin_code)


__all__ = ["KINDS", "ComponentInfo", "PluginExitError", "PluginInfo", "Registry", "UnknownComponentError",
           "UnknownKindError", "default_registry", "reset_default_registry"]

log = logging.getLogger("uav.registry")

#: component kind -> (hook name, human-readable singular)
KINDS: dict[str, tuple[str, str]] = {
    "flow": ("register_flow_estimators", "flow estimator"),
    "color": ("register_color_correctors", "colour corrector"),
    "scheduler": ("register_schedulers", "scheduler"),
    "tiling": ("register_tiling_strategies", "tiling strategy"),
    "segments": ("register_segment_strategies", "segment strategy"),
    "captioner": ("register_captioners", "captioner"),
    "scenes": ("register_scene_detectors", "scene detector"),
}

_WILDCARD = ":*"


class UnknownKindError(KeyError, ValueError):
    """An unknown component kind; the message lists the valid kinds."""

    def __str__(self) -> str:
        # KeyError would otherwise print the repr of its message (extra quotes).
        return str(self.args[0]) if self.args else ""


class PluginExitError(ValueError):
    """A component's factory called ``sys.exit``; the message names the plugin."""


class UnknownComponentError(KeyError, ValueError):
    """No component of that name is installed; the message lists the installed names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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
        return {**asdict(self), "errors": list(self.errors),
                "components": {k: list(v) for k, v in self.components.items()}}


def _known_kind(kind: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    if kind not in KINDS:
        raise UnknownKindError(f"unknown component kind {kind!r}; expected one of: {', '.join(KINDS)}")
    return kind


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
            with plugin_code():
                impl.function(**{arg: register for arg in impl.argnames})
        except (Exception, SystemExit) as exc:
            log.warning("uav plugin %r failed in %s: %s", plugin, hook_name, error_text(exc))
            self._errors.setdefault(plugin, []).append(f"{hook_name}: {error_text(exc)}")
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
        ``segments``, ``captioner``, ``scenes``."""
        return list(KINDS)

    def names(self, kind: str, *, sort: bool = True) -> list[str]:
        """Names of the installed components of ``kind`` (families as ``prefix:*``), sorted,
        or with ``sort=False`` in registration order (built-ins first, defaults first)."""
        table = self._components[_known_kind(kind)]
        return sorted(table) if sort else list(table)

    def components(self, kind: str | None = None) -> list[ComponentInfo]:
        """Registered components, of one kind or of all kinds."""
        kinds = [_known_kind(kind)] if kind is not None else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def __contains__(self, item: tuple[str, str]) -> bool:
        kind, name = item
        try:
            self._lookup(kind, name)
        except KeyError:
            return False
        return True

    def _lookup(self, kind: str, name: str) -> tuple[ComponentInfo, dict[str, Any]]:
        kind = _known_kind(kind)
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

    def owner(self, kind: str, name: str) -> str | None:
        """The name of the plugin that registered ``name`` (``None`` when none did)."""
        try:
            return self._lookup(kind, name)[0].plugin
        except KeyError:
            return None

    def get(self, kind: str, name: str, **options: Any) -> Any:
        """Build the component of ``kind`` registered as ``name``.

        ``options`` go to the component's factory (e.g. ``weights=``, ``device=`` for
        ``raft``). Raises :class:`UnknownKindError` / :class:`UnknownComponentError`
        (both ``KeyError`` and ``ValueError``) listing the valid choices.
        """
        info, extra = self._lookup(kind, name)
        try:
            with plugin_code():
                return info.factory(**extra, **options)
        except SystemExit as exc:
            # a plugin must not end the command silently; its failure is one line naming it
            raise PluginExitError(f"{KINDS[info.kind][1]} {info.name!r} (plugin {info.plugin!r}) called "
                                  f"sys.exit({exc.code!r}) while being built; fix or remove that plugin") from None

    # -- reporting ------------------------------------------------------------------

    def list_plugins(self) -> list[PluginInfo]:
        """Every plugin known to the manager (loaded, failed or blocked), in load order,
        with its distribution, version and the components it registered."""
        pm = self.plugin_manager
        records: dict[str, PluginRecord] = dict(getattr(pm, "records", {}))
        for name, plugin in pm.list_name_plugin():
            if name not in records and plugin is not None:
                records[name] = manual_record(name, plugin)
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
