"""The components one run uses, resolved through the plugin registry before any frame is read.

Every component goes through the registry, the defaults (``ddim-official``, ``none``,
``official``, ``auto`` flow) included, so a misspelt name (``color_fix="wavlet"``) or a
scheduler that cannot run the requested steps fails in a second, not after the whole clip
has been denoised. :meth:`uav.VideoUpscaler.check_inputs` is the public entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from diffusers import DDIMScheduler

from uav.plugin_results import describe_component
from uav.protocols import ColorCorrector, DenoisingScheduler, FlowEstimator, SegmentStrategy, TilingStrategy
from uav.sampling.schedulers import OfficialDDIM
from uav.settings import SettingsError, UpscaleSettings

__all__ = ["Components", "resolve_components", "merge_settings"]


@dataclass(frozen=True)
class Components:
    """Everything one run uses, resolved through the plugin registry by :meth:`VideoUpscaler.check_inputs`.

    ``flow`` builds the flow estimator when propagation needs one (RAFT loads its
    weights then, not before); it is ``None`` without propagation.
    """

    settings: UpscaleSettings
    scheduler: DenoisingScheduler
    segments: SegmentStrategy
    tiling: TilingStrategy
    color: ColorCorrector | None
    flow: Callable[[], FlowEstimator] | None
    #: kind -> how error lines name the component (``colour corrector 'wavelet' (plugin 'color')``)
    labels: Mapping[str, str] = field(default_factory=dict)


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
    """Resolve every component ``s`` names.

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

    def resolve(field: str, kind: str, name: str, **options: Any) -> Any:
        UpscaleSettings.check_component(field, name, registry)
        return registry.get(kind, name, **options)

    labels = {kind: describe_component(kind, name, registry) for kind, name in (
        ("scheduler", s.scheduler), ("segments", s.segments), ("tiling", s.tiling), ("color", s.color_fix_name),
        ("flow", _flow_name(s, flow, raft_weights)))}
    return Components(
        settings=s,
        scheduler=_resolve_scheduler(s, registry, scheduler),
        segments=resolve("segments", "segments", s.segments),
        tiling=resolve("tiling", "tiling", s.tiling),
        color=None if s.color_fix_name == "none" else resolve("color_fix", "color", s.color_fix_name),
        flow=_flow_builder(s, registry, flow, raft_weights, device) if s.propagation_steps else None,
        labels=labels,
    )


def _resolve_scheduler(s: UpscaleSettings, registry: Any, sched: Any) -> DenoisingScheduler:
    """The scheduler ``s.scheduler`` names, built through the registry on the upscaler's
    noise schedule (the release's ``scheduler_config.json``)."""
    own = not isinstance(sched, (DDIMScheduler, OfficialDDIM, Mapping)) and hasattr(sched, "predict_x0") \
        and hasattr(sched, "step")
    if own and s.scheduler == "ddim-official":
        return sched  # a ready DenoisingScheduler handed in by the caller: used as given
    config = sched if isinstance(sched, Mapping) else getattr(sched, "config", None)
    if not isinstance(config, Mapping):
        raise SettingsError(f"scheduler: cannot build {s.scheduler!r} from a {type(sched).__name__}; give the "
                            "upscaler a diffusers scheduler or its config", field="scheduler")
    UpscaleSettings.check_component("scheduler", s.scheduler, registry)
    options: dict[str, Any] = {"config": dict(config)}
    if s.scheduler == "ddim-official":
        options["eta"] = s.eta
    scheduler = registry.get("scheduler", s.scheduler, **options)
    try:
        scheduler.set_timesteps(s.num_inference_steps)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"num_inference_steps: {exc}", field="num_inference_steps") from None
    return scheduler


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
    """Check the flow estimator's name now; build it (RAFT loads weights) on first use."""
    if given is not None and not isinstance(given, str) and s.flow == "auto":
        return lambda: given
    name = _flow_name(s, given, raft_weights)
    UpscaleSettings.check_component("flow", name, registry)
    options: dict[str, Any] = {}
    if name == "raft":
        if raft_weights is None:
            raise SettingsError("flow='raft' needs propagator/raft-things.pth in the weights folder; "
                                "use flow='dis' (no weights) instead", field="flow")
        options = {"weights": str(raft_weights), "device": device}
    built: list[FlowEstimator] = []

    def build() -> FlowEstimator:
        if not built:
            built.append(registry.get("flow", name, **options))
        return built[0]

    return build
