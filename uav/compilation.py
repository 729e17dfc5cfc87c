"""Regional ``torch.compile`` of the networks, and the rule ``compile="auto"`` follows (issue 21, item 1).

**Regional compilation.** Compiling the whole U-Net as one graph took 185 s on an H200
(``benchmarks/results/compile_attempt_h200.json``). Instead every *block* is compiled on
its own (:func:`regions`: residual blocks, transformers, temporal modules, resamplers,
the VAE's attention), with one compiled function per block class: the compiled code is
keyed on the class's ``forward``, so blocks of one class with the same shapes share one
graph, and the compile time is that of the distinct (class, shape) pairs, not of the
network. The networks trace without graph breaks (``tests/test_speed_compile.py``) and
shapes are static per window, so ``dynamic=False``.

**The cache.** Inductor's compiled kernels are kept between runs in
``$XDG_CACHE_HOME/uav/inductor`` (``~/.cache/uav/inductor``) unless
``TORCHINDUCTOR_CACHE_DIR`` says otherwise; a marker file per network, dtype, device and
window shape records that a compile finished there, so ``auto`` counts the next one as warm.

**The ``auto`` rule** (:func:`decide`): off on a CPU (inductor's C++ compile takes minutes
there for a small gain; ``compile=True`` still forces it); on a GPU, on when the U-Net time
it is expected to save exceeds the compile time it costs::

    saving = EXPECTED_SAVING x (U-Net calls x eager seconds per call)
    on  iff  saving > COLD_COMPILE_S (WARM_COMPILE_S when the cache holds this network)

The eager seconds per call scale the H200 measurement (one CFG window of 8 frames at
192x352: 0.74 s, ``bench_h200.json``) by the call's latent pixels. With the defaults (30
steps, 8-frame windows) that is about 130 frames of 192x352 cold and 16 warm. The three
constants are estimates until ``benchmarks/gpu_run.sh`` measures ``compile_s`` and the
compiled step time on a card; they are module constants so a measurement can replace them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["regions", "CompileDecision", "decide", "compile_regions", "uncompile_regions", "is_compiled", "cache_dir",
           "mark_compiled", "EXPECTED_SAVING", "COLD_COMPILE_S", "WARM_COMPILE_S", "EAGER_S_PER_PIXEL"]

log = logging.getLogger("uav")

#: eager U-Net seconds of one CFG call (2 x 8 frames) per latent pixel of a frame: 2.222 s per step
#: of 3 such calls at 192x352 on an H200 (bf16, SDPA; benchmarks/results/bench_h200.json)
EAGER_S_PER_PIXEL = 2.222 / 3 / (192 * 352)
#: the share of U-Net time compiling is expected to save (element-wise and normalisation kernels fused)
EXPECTED_SAVING = 0.25
#: seconds a cold regional compile of the U-Net and decoder costs on a GPU, and a warm (cached) one
COLD_COMPILE_S = 120.0
WARM_COMPILE_S = 15.0
#: compiled code per block class
_COMPILED: dict[type, Any] = {}


def regions() -> tuple[type, ...]:
    """The block classes compiled one by one (the outermost instance of any of them is a region)."""
    from uav.models.layers import Downsample3D, ResnetBlock3D, ResnetBlock3DCNN, Upsample3D
    from uav.models.temporal import TemporalModule3D
    from uav.models.transformer import Transformer3DModel
    from uav.models.vae_video import AttentionBlock

    return (Transformer3DModel, TemporalModule3D, ResnetBlock3D, ResnetBlock3DCNN, Upsample3D, Downsample3D,
            AttentionBlock)


def cache_dir() -> Path:
    """Where inductor keeps compiled kernels between runs (``TORCHINDUCTOR_CACHE_DIR`` when set)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "uav" / "inductor"


def _region_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost blocks of :data:`REGIONS` classes in ``model`` (never one inside another)."""
    classes = regions()
    found: list[torch.nn.Module] = []

    def walk(m: torch.nn.Module) -> None:
        for child in m.children():
            if isinstance(child, classes):
                found.append(child)
            else:
                walk(child)

    walk(model)
    return found


def compile_regions(model: torch.nn.Module) -> int:
    """Compile ``model``'s blocks in place, one compiled function per block class (idempotent);
    returns how many blocks run compiled. Undo with :func:`uncompile_regions`."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir()))
    # every block class compiles once per distinct shape: more than dynamo's default 8 per function
    for knob in ("recompile_limit", "cache_size_limit"):
        if isinstance(getattr(torch._dynamo.config, knob, None), int):
            setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 128))
    blocks = _region_modules(model)
    for block in blocks:
        cls = type(block)
        if cls not in _COMPILED:
            _COMPILED[cls] = torch.compile(cls.forward, dynamic=False)
        block.forward = types.MethodType(_COMPILED[cls], block)  # type: ignore[method-assign]
    return len(blocks)


def uncompile_regions(model: torch.nn.Module) -> None:
    """Run ``model``'s blocks eagerly again (their compiled code stays cached for a later compile)."""
    for block in _region_modules(model):
        block.__dict__.pop("forward", None)


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether any of ``model``'s blocks runs compiled."""
    return any("forward" in b.__dict__ for b in _region_modules(model))


@dataclass(frozen=True)
class CompileDecision:
    """Whether a run compiles, and why (``reason`` is one line for logs and summaries)."""

    on: bool
    reason: str
    saving_s: float = 0.0
    compile_s: float = 0.0


def _marker(unet: torch.nn.Module, device: torch.device, window: tuple[int, ...]) -> Path:
    """The file in :func:`cache_dir` that says this network, card and window shape compiled once."""
    param = next(unet.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available() else device.type
    blob = json.dumps([dict(getattr(unet, "config", {})), str(param.dtype), name, list(window), torch.__version__],
                      sort_keys=True, default=str)
    return cache_dir() / f"uav-compiled-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def mark_compiled(unet: torch.nn.Module, device: torch.device, window: tuple[int, ...]) -> None:
    """Record that a compile of this network and window shape finished in :func:`cache_dir`."""
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        _marker(unet, device, window).touch()
    except OSError:
        pass  # a read-only cache only makes the next estimate cold


def decide(setting: bool | None, unet: torch.nn.Module, device: torch.device, *, calls: int, window: tuple[int, ...],
           guided: bool) -> CompileDecision:
    """Apply ``compile`` (``True``/``False``/``None`` = auto) to a run of ``calls`` U-Net calls of
    ``window`` = ``(frames, h, w)`` latents (see the module docstring for the rule)."""
    if setting is not None:
        return CompileDecision(setting, "compile=on" if setting else "compile=off")
    if device.type != "cuda":
        return CompileDecision(False, f"auto: off on {device.type} (compile time is not repaid there)")
    _, h, w = window
    eager = calls * h * w * EAGER_S_PER_PIXEL * (1.0 if guided else 0.5)
    warm = _marker(unet, device, window).exists()
    cost = WARM_COMPILE_S if warm else COLD_COMPILE_S
    saving = EXPECTED_SAVING * eager
    on = saving > cost
    return CompileDecision(on, f"auto: {'on' if on else 'off'}: saves ~{saving:.0f} s of ~{eager:.0f} s U-Net "
                               f"time vs ~{cost:.0f} s to compile ({'cached' if warm else 'cold'})", saving, cost)
