"""Built-in uav plugin: colour correctors ``none``, ``wavelet`` and ``adain``.

Thin registrations of :mod:`uav.color_fix` (SPEC §7.4), registered through the
``uav`` entry-point group (name ``color``) like any third-party plugin.
"""

from __future__ import annotations

from typing import Any

import torch

from uav.registry import hookimpl

Tensor = torch.Tensor


class NoColorFix:
    """The identity corrector: returns the upscaled clip unchanged (the published default)."""

    def __call__(self, output: Tensor, reference: Tensor) -> Tensor:
        """Return ``output`` as it is; ``reference`` is ignored."""
        if not isinstance(output, Tensor):
            raise TypeError(f"output must be a torch.Tensor, got {type(output).__name__}")
        return output

    def __repr__(self) -> str:
        return "NoColorFix()"


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise TypeError(f"the {name!r} colour corrector takes no options, got {sorted(options)}")


def none(**options: Any) -> NoColorFix:
    """No colour correction (identity)."""
    _no_options("none", options)
    return NoColorFix()


def wavelet(**options: Any) -> Any:
    """Wavelet colour fix: high frequencies of the output plus low frequencies of the bicubic-upscaled LR."""
    _no_options("wavelet", options)
    from uav.color_fix import wavelet_color_fix

    return wavelet_color_fix


def adain(**options: Any) -> Any:
    """AdaIN colour fix: per-frame, per-channel mean/std of the output matched to the bicubic-upscaled LR."""
    _no_options("adain", options)
    from uav.color_fix import adain_color_fix

    return adain_color_fix


@hookimpl
def register_color_correctors(register: Any) -> None:
    """Register ``none``, ``wavelet`` and ``adain``."""
    register("none", none)
    register("wavelet", wavelet)
    register("adain", adain)
