"""Built-in uav plugin: denoising schedulers.

Registered through the ``uav`` entry-point group (name ``schedulers``) like any
third-party plugin:

* ``ddim-official`` (default): the published DDIM split (:class:`uav.sampling.schedulers.OfficialDDIM`),
  which reuses the network's noise estimate after propagation edits ``x0``;
* ``ddim``, ``dpmsolver++``, ``unipc``, ``euler``, ``euler-a``, ``heun`` and
  ``diffusers:<ClassName>``: any diffusers scheduler through
  :class:`~uav_schedulers.adapter.DiffusersSchedulerAdapter`, which turns the edited
  ``x0`` into a consistent model output for that scheduler's ``step`` (see
  ``docs/plugins.md`` for how this differs from the published rule).

Every factory takes ``config=``: a scheduler config mapping, a path to a
``scheduler_config.json`` (or its folder), or a diffusers scheduler; the default is
the release's DDIM config (Stable Diffusion x4 upscaler, v-prediction).
"""

from __future__ import annotations

import functools
from typing import Any

from uav.registry import hookimpl

from .adapter import SCHEDULER_PRESETS


def ddim_official(*, config: Any = None, eta: float = 0.0) -> Any:
    """Published DDIM update (SPEC §5.4): x_prev from the propagated x0 and the network's epsilon; options: config, eta."""
    from uav.sampling.schedulers import OfficialDDIM

    from .adapter import load_scheduler_config

    return OfficialDDIM(load_scheduler_config(config), eta=eta)


def diffusers_scheduler(
    *, variant: str, config: Any = None, generator: Any = None, eta: float | None = None, **overrides: Any
) -> Any:
    """Any diffusers scheduler class by name (diffusers:<ClassName>), propagation-aware; options: config, generator, eta, config overrides."""
    from .adapter import DiffusersSchedulerAdapter, build_diffusers_scheduler

    scheduler = build_diffusers_scheduler(variant, config, **overrides)
    return DiffusersSchedulerAdapter(scheduler, generator=generator, eta=eta)


def _preset(name: str, **options: Any) -> Any:
    class_name, defaults = SCHEDULER_PRESETS[name]
    return diffusers_scheduler(variant=class_name, **{**defaults, **options})


@hookimpl
def register_schedulers(register: Any) -> None:
    """Register ``ddim-official``, the diffusers presets and the ``diffusers:*`` family."""
    register("ddim-official", ddim_official)
    for name, (class_name, _) in SCHEDULER_PRESETS.items():
        factory = functools.partial(_preset, name)
        # A docstring per preset, so `uav plugins` can say what each one is.
        factory.__doc__ = f"diffusers {class_name} through the propagation-aware adapter; options: config, generator, eta."
        register(name, factory)
    register("diffusers:*", diffusers_scheduler)
