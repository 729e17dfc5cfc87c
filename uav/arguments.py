"""The facade's argument checks: devices, dtypes, writer options and the output size.

Each refuses what torch or the writer would fail on later (an absent GPU, an integer
dtype, a zero frame rate) with one :class:`~uav.frames.InputError` or
:class:`~uav.settings.SettingsError` line, before anything loads or renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from uav.frames import InputError
from uav.settings import SettingsError, UpscaleSettings

__all__ = ["LARGE_INPUT_SIDE", "check_device", "check_embeds", "default_dtypes", "is_large_input", "output_size", "torch_dtype",
           "writer_options"]

#: the published code downscales inputs whose sides are both >= this (SPEC §7.2)
LARGE_INPUT_SIDE = 1280


def is_large_input(width: int, height: int) -> bool:
    """Whether the published code would pre-downscale a ``width`` x ``height`` input."""
    return width >= LARGE_INPUT_SIDE and height >= LARGE_INPUT_SIDE


def output_size(width: int, height: int, settings: UpscaleSettings | None = None, scale: int = 4) -> tuple[int, int]:
    """``(width, height)`` of the frames :meth:`VideoUpscaler.upscale` writes for a
    ``width`` x ``height`` input: x``scale``, after the 1/4 pre-downscale of large inputs
    when ``settings.downscale_large``."""
    if settings is not None and settings.downscale_large and is_large_input(width, height):
        width, height = width // 4, height // 4
    return width * scale, height * scale


def default_dtypes(device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """``(U-Net and text encoder, VAE)`` dtypes :meth:`VideoUpscaler.from_pretrained` picks
    on ``device``: fp16 and fp32 on CUDA, as published (the fp32 VAE keeps the decoder's
    parity); fp32 and fp32 on the CPU, whose half-precision kernels are slow or missing."""
    return (torch.float16 if device.type == "cuda" else torch.float32), torch.float32


def check_device(device: str | torch.device, name: str = "device", *, subject: str | None = None,
                 use_cpu: str = "device='cpu'") -> torch.device:
    """``device`` as a :class:`torch.device` that exists here, or one :class:`InputError` line
    (an unknown name, CUDA without a GPU, ``cuda:3`` on a one-GPU machine, an XLA/TPU
    device torch was not built for) instead of torch's error at the first tensor moved.
    ``subject`` (default ``name 'device'``) and ``use_cpu`` word it for a caller with
    other spellings (the command line's ``--device cuda:7``, ``--device cpu``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{name}: {device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:N' or "
                         "'mps'") from None
    subject = subject or f"{name} {str(device)!r}"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{subject}: CUDA is not available here (no usable NVIDIA GPU; torch "
                             f"{torch.__version__} built for CUDA {torch.version.cuda or 'none'}); use {use_cpu}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{subject}: only {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, NotImplementedError, AssertionError) as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0].split(". ")[0].rstrip(".") if lines else type(exc).__name__
        raise InputError(f"{subject} is not available here ({reason}); use 'cpu' or 'cuda'") from None
    return dev


def torch_dtype(value: torch.dtype | str | None, name: str) -> torch.dtype | None:
    """``value`` as a floating-point torch dtype (``fp16``, ``bfloat16``, ... or a dtype);
    ``None`` stays ``None``."""
    if isinstance(value, torch.dtype):
        if not value.is_floating_point:
            raise SettingsError(f"{name} must be a floating-point dtype (fp32, fp16 or bf16), got {value}")
        return value
    if value is None:
        return value
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if value not in table:
        raise SettingsError(f"{name} must be one of {sorted(table)}, got {value!r}")
    return table[value]


def writer_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``writer_options`` checked before any work: known keys only, an exact ``fps`` > 0."""
    import inspect

    from uav.io.rates import parse_fps
    from uav.io.writer import VideoWriter

    options = dict(options or {})
    known = set(inspect.signature(VideoWriter).parameters) - {"path", "width", "height"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"writer_options: unknown option(s) {unknown}; known: {sorted(known)}")
    if options.get("fps") is not None:
        try:
            options["fps"] = parse_fps(options["fps"], name="writer_options['fps']")
        except TypeError as exc:
            raise InputError(str(exc)) from None
    return options


def check_embeds(name: str, t: Any) -> torch.Tensor:
    """Text embeddings given to the API: a finite ``(1, L, D)`` tensor with data."""
    if torch.is_tensor(t) and t.is_meta:
        raise InputError(f"{name}: a meta tensor has a shape but no data; pass real embeddings")
    if not torch.is_tensor(t) or t.ndim != 3 or t.shape[0] != 1:
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise InputError(f"{name}: expected a (1, L, D) tensor, got {got}")
    if not torch.isfinite(t).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return t
