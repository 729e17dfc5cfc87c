"""The components one run uses, resolved through the plugin registry before any frame is read.

This is the one module where a setting meets the registry: :data:`COMPONENT_FIELDS` says
which registry kind each component field names, and :func:`lookup` is the one lookup. The
command line's preflight and the timeline planner call :func:`check_components`;
:meth:`uav.VideoUpscaler.check_inputs` calls :func:`resolve_components`, which keeps what
it builds. Every component goes through the registry, the defaults (``ddim-official``,
``none``, ``official``, ``auto`` flow) included, so a misspelt name
(``color_fix="wavlet"``) or a scheduler that cannot run the requested steps fails in a
second, not after the whole clip has been denoised.

Nothing here imports torch at module level: a timeline plan of default shots loads no
plugin and no network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uav.settings import ComponentError, SettingsError, UpscaleSettings

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from uav.protocols import ColorCorrector, DenoisingScheduler, FlowEstimator, SegmentStrategy, TilingStrategy

__all__ = ["COMPONENT_FIELDS", "Components", "build", "check_component", "check_components", "lookup", "merge_settings",
           "registry_or_default", "resolve_components"]

#: settings field -> the registry kind of the component it names
COMPONENT_FIELDS: dict[str, str] = {
    "flow": "flow",
    "scheduler": "scheduler",
    "segments": "segments",
    "tiling": "tiling",
    "color_fix": "color",
}


@dataclass(frozen=True)
class Components:
    """Everything one run uses, resolved through the plugin registry by :meth:`VideoUpscaler.check_inputs`.

    ``color`` is ``None`` for ``color_fix="none"``; ``flow`` builds the flow estimator when
    propagation needs one (RAFT loads its weights then, not before); it is ``None`` without
    propagation.
    """

    settings: UpscaleSettings
    scheduler: DenoisingScheduler
    segments: SegmentStrategy
    tiling: TilingStrategy
    color: ColorCorrector | None
    flow: Callable[[], FlowEstimator] | None
    #: kind -> how error lines name the component (``colour corrector 'wavelet' (plugin 'color')``)
    labels: Mapping[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------ the lookup
def lookup(field: str, name: str, registry: Any = None) -> Callable[..., Any]:
    """The factory of the component that ``field=name`` selects in ``registry`` (default: the
    shared one): the one place a component name is looked up, once per registry and name
    (the command line's preflight finds it, the run builds from it).

    Raises:
        ComponentError: a name the registry does not offer (the message lists the installed ones).
    """
    return _factory(registry_or_default(registry), field, name)


@functools.lru_cache(maxsize=64)
def _factory(registry: Any, field: str, name: str) -> Callable[..., Any]:
    kind = COMPONENT_FIELDS[field]
    try:
        return registry.factory(kind, name)
    except KeyError as exc:
        reason = str(exc.args[0]) if exc.args else str(exc)
        choices = ", ".join(registry.names(kind, sort=False)) or "(none installed)"
        raise ComponentError(f"{field}: {reason}", field=field, reason=reason, expected=f"one of {choices}",
                             value=name) from None


def build(field: str, name: str, registry: Any = None, **options: Any) -> Any:
    """The component that ``field=name`` selects, built with ``options`` (see :func:`lookup`).

    Raises:
        ComponentError: an unknown name, or a factory refusing it (``diffusers:__class__``).
    """
    factory = lookup(field, name, registry)
    try:
        return factory(**options)
    except (ValueError, TypeError) as exc:
        # a family member the family does not have (``diffusers:__class__``), or a factory
        # refusing to build: either way the name does not give a usable component
        raise ComponentError(f"{field}: {exc}", field=field, reason=str(exc), value=name) from None


def check_components(settings: UpscaleSettings, registry: Any = None, *, changed_only: bool = False) -> None:
    """Resolve every component ``settings`` names, and keep nothing.

    ``flow`` is looked up (building RAFT needs its weights, which only the upscaler has);
    schedulers, segment and tiling strategies and colour correctors are built, so a
    ``diffusers:<Name>`` family member is checked too, and the scheduler is asked for a
    schedule of ``num_inference_steps`` steps. With ``changed_only``, names equal to the
    defaults (built-ins the upscaler resolves anyway) are skipped, so that checking a plan
    of default shots loads no plugin.

    Raises:
        ComponentError: a name the registry does not offer.
        SettingsError: a component refuses the settings (e.g. too many steps).
    """
    defaults = UpscaleSettings()
    for field in COMPONENT_FIELDS:
        name = getattr(settings, field)
        if (field == "flow" and name == "auto") or (changed_only and name == getattr(defaults, field)):
            continue
        check_component(field, name, registry, steps=settings.num_inference_steps if field == "scheduler" else None)


def check_component(field: str, name: str, registry: Any = None, *, steps: int | None = None) -> None:
    """Resolve one component name of ``field`` (see :func:`check_components`); ``steps``: also
    ask a scheduler for a schedule of that many steps."""
    _check(registry_or_default(registry), field, name, steps)


@functools.lru_cache(maxsize=256)
def _check(registry: Any, field: str, name: str, steps: int | None) -> None:
    # cached: a timeline resolves the same few names for every clip
    if field == "flow":
        lookup(field, name, registry)
        return
    component = build(field, name, registry)
    if steps is not None:
        _set_steps(component, steps)


def registry_or_default(registry: Any) -> Any:
    """``registry``, or the default registry (loaded on first use) when it is ``None``."""
    if registry is not None:
        return registry
    from uav.registry import default_registry

    return default_registry()


def _set_steps(scheduler: Any, steps: int) -> None:
    try:
        scheduler.set_timesteps(steps)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"num_inference_steps: {exc}", field="num_inference_steps", reason=str(exc),
                            value=steps) from None


# ------------------------------------------------------------------------------ one run's components
def merge_settings(settings: UpscaleSettings | None, knobs: Mapping[str, Any]) -> UpscaleSettings:
    """``settings`` (default: the published defaults) with keyword overrides (``steps`` is
    ``num_inference_steps``)."""
    if settings is not None and not isinstance(settings, UpscaleSettings):
        raise SettingsError(f"settings must be an UpscaleSettings, got {type(settings).__name__}")
    knobs = dict(knobs)
    if "steps" in knobs:
        knobs["num_inference_steps"] = knobs.pop("steps")
    base = settings or UpscaleSettings()
    return base.replace(**knobs) if knobs else base


def resolve_components(s: UpscaleSettings, registry: Any, *, scheduler: Any, flow: Any = None,
                       raft_weights: Path | None = None, device: torch.device | None = None) -> Components:
    """Build every component ``s`` names.

    Args:
        s: checked settings.
        registry: the plugin registry to ask.
        scheduler: the upscaler's own scheduler: a diffusers scheduler or its config (the
            noise schedule the named scheduler is built on), or a ready
            :class:`~uav.protocols.DenoisingScheduler`, used as given with ``ddim-official``.
        flow: the upscaler's flow estimator (an object or a name) for ``flow="auto"``.
        raft_weights: the release's RAFT weights (``flow="raft"`` needs them).
        device: where RAFT runs.
    """
    if s.auto_prompt:
        # builds the captioner (folder, model type, options) without its weights: seconds
        from uav.captioning import check_captioner

        check_captioner(s.captioner, dict(s.captioner_options), registry=registry)
    from uav.plugin_results import describe_component  # torch: the planner and the CLI preflight never get here

    labels = {kind: describe_component(kind, name, registry) for kind, name in (
        ("scheduler", s.scheduler), ("segments", s.segments), ("tiling", s.tiling), ("color", s.color_fix),
        ("flow", _flow_name(s, flow, raft_weights)))}
    return Components(
        settings=s,
        scheduler=_scheduler(s, registry, scheduler),
        segments=build("segments", s.segments, registry),
        tiling=build("tiling", s.tiling, registry),
        color=None if s.color_fix == "none" else build("color_fix", s.color_fix, registry),
        flow=_flow_builder(s, registry, flow, raft_weights, device) if s.propagation_steps else None,
        labels=labels,
    )


def _scheduler(s: UpscaleSettings, registry: Any, sched: Any) -> DenoisingScheduler:
    """The scheduler ``s.scheduler`` names, built through the registry on the upscaler's
    noise schedule (the release's ``scheduler_config.json``)."""
    from diffusers import DDIMScheduler

    from uav.sampling.schedulers import OfficialDDIM

    own = not isinstance(sched, (DDIMScheduler, OfficialDDIM, Mapping)) and hasattr(sched, "predict_x0") \
        and hasattr(sched, "step")
    if own and s.scheduler == "ddim-official":
        return sched  # a ready DenoisingScheduler handed in by the caller: used as given
    config = sched if isinstance(sched, Mapping) else getattr(sched, "config", None)
    if not isinstance(config, Mapping):
        raise SettingsError(f"scheduler: cannot build {s.scheduler!r} from a {type(sched).__name__}; give the "
                            "upscaler a diffusers scheduler or its config", field="scheduler")
    options: dict[str, Any] = {"config": dict(config)}
    if s.scheduler == "ddim-official":
        options["eta"] = s.eta
    built = build("scheduler", s.scheduler, registry, **options)
    _set_steps(built, s.num_inference_steps)
    return built


def _flow_name(s: UpscaleSettings, given: Any, raft_weights: Path | None) -> str:
    """The registry name ``flow="auto"`` stands for (the upscaler's own name, else RAFT when the
    release has its weights, else DIS); an estimator object handed to the upscaler is ``"given"``."""
    if s.flow != "auto":
        return s.flow
    if given is not None:
        return given if isinstance(given, str) else "given"
    return "raft" if raft_weights is not None else "dis"


def _flow_builder(s: UpscaleSettings, registry: Any, given: Any, raft_weights: Path | None,
                  device: torch.device | None) -> Callable[[], FlowEstimator]:
    """Look the flow estimator up now; build it (RAFT loads weights) on first use."""
    if given is not None and not isinstance(given, str) and s.flow == "auto":
        return lambda: given
    name = _flow_name(s, given, raft_weights)
    factory = lookup("flow", name, registry)
    options: dict[str, Any] = {}
    if name == "raft":
        if raft_weights is None:
            raise SettingsError("flow='raft' needs propagator/raft-things.pth in the weights folder; "
                                "use flow='dis' (no weights) instead", field="flow")
        options = {"weights": str(raft_weights), "device": device}
    built: list[FlowEstimator] = []

    def estimator() -> FlowEstimator:
        if not built:
            built.append(factory(**options))
        return built[0]

    return estimator
