"""A memory plan applied to a run: the upscaler's networks moved as :class:`~uav.memory.Placement` says.

:func:`plan_run` asks :mod:`uav.memory_plan` for the settings of one clip on the
upscaler's device (``settings.memory``: ``auto`` = the device's free memory plus what
uav's own networks already hold there). :func:`placed` keeps the text encoder, the VAE
and the U-Net's blocks where the plan wants them while the run lasts and puts everything
back afterwards; the stage hook it yields swaps the U-Net and the VAE before decoding.
Moving a network changes where its parameters are, never their values.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

import torch

from uav.memory_plan import MemoryPlan, plan_for_configs, resolve_budget
from uav.settings import UpscaleSettings

__all__ = ["plan_run", "placed"]

log = logging.getLogger("uav")


def _on(module: Any, device: torch.device) -> int:
    if module is None:
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.device == device)


def plan_run(upscaler: Any, shape: tuple[int, ...], settings: UpscaleSettings) -> MemoryPlan:
    """The :class:`MemoryPlan` of upscaling a low-res clip of ``shape`` ``(1, 3, T, h, w)``."""
    device = upscaler.device
    own = sum(_on(m, device) for m in (upscaler.unet, upscaler.vae, upscaler.text_encoder))
    budget = resolve_budget(settings.memory, device, own_bytes=own if device.type == "cuda" else 0)
    if budget.gib is None:
        return MemoryPlan(settings=settings, budget=budget)
    unet_config = getattr(upscaler.unet, "config", None)
    vae_config = getattr(upscaler.vae, "config", None)
    if unet_config is None or vae_config is None:
        return MemoryPlan(settings=settings, budget=budget, fits=False,
                          notes=("networks without a config: the memory model cannot trace them",))
    te = upscaler.text_encoder
    te_params = sum(p.numel() for p in te.parameters()) if te is not None else 0
    _, _, frames, h, w = shape
    return plan_for_configs(unet_config, vae_config, height=h, width=w, frames=frames, settings=settings,
                            budget=budget, unet_dtype=next(upscaler.unet.parameters()).dtype,
                            vae_dtype=next(upscaler.vae.parameters()).dtype, text_encoder_params=te_params,
                            registry=upscaler.registry)


@contextlib.contextmanager
def placed(upscaler: Any, plan: MemoryPlan) -> Iterator[Callable[[str], None]]:
    """Keep the networks where ``plan.placement`` says during a run; yields the stage hook
    (``"decode"``: the U-Net leaves, the VAE comes) for :func:`uav.pipeline.generate`."""
    from uav.offload import BlockOffload

    device, where = upscaler.device, plan.placement
    host = torch.device("cpu")
    te, vae, unet = upscaler.text_encoder, upscaler.vae, upscaler.unet
    te_home = next(te.parameters()).device if te is not None else host
    if te is not None and where.text_encoder == "host":
        te.to(host)  # the prompts are encoded (and cached) before the run
    if where.vae == "host":
        vae.to(host)
    offload = BlockOffload(unet, device) if where.unet == "blocks" else None

    def stage(name: str) -> None:
        if name == "decode" and where.vae == "host":
            if offload is not None:
                offload.release()
            unet.to(host)
            vae.to(device)

    try:
        with offload if offload is not None else contextlib.nullcontext():
            yield stage
    finally:
        unet.to(device)
        vae.to(device)
        if te is not None:
            te.to(te_home)
