"""Colour correction of the upscaled clip against its low-res source.

Implements SPEC §7.4 of the Upscale-A-Video reproduction notes (Zhou et al.,
CVPR 2024, official ``models_video/color_correction.py``, the ``--color_fix``
options ``AdaIn`` and ``Wavelet``):

* AdaIN: per frame and channel, ``(out − μ_out)/σ_out·σ_ref + μ_ref`` with
  ``σ = sqrt(unbiased var + 1e-5)``;
* wavelet: the high frequencies of the output plus the low frequencies of the
  reference, from a 5-level dilated à-trous decomposition (radius ``2^i``,
  replicate padding, kernel ``[[1,2,1],[2,4,2],[1,2,1]]/16``).

:func:`wavelet_color_fix` and :func:`adain_color_fix` implement the
:class:`uav.protocols.ColorCorrector` protocol: they bicubic-upsample the low-res
reference to the output size first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = [
    "wavelet_reconstruction",
    "adaptive_instance_normalization",
    "wavelet_decomposition",
    "wavelet_color_fix",
    "adain_color_fix",
]

_ADAIN_EPS = 1e-5
_WAVELET_LEVELS = 5


def _check_video(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 4:
        raise ValueError(f"{name} must be (T, C, H, W), got shape {tuple(value.shape)}")
    if value.shape[1] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels, got {value.shape[1]} (shape {tuple(value.shape)})")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def _check_frames(content: Tensor, style: Tensor, style_name: str) -> None:
    if content.shape[0] != style.shape[0]:
        raise ValueError(
            f"{style_name} must have as many frames as the output: expected {content.shape[0]}, got {style.shape[0]}"
        )


def _work_dtype(x: Tensor) -> torch.dtype:
    # Statistics and 5 levels of blurring are fragile in half precision.
    return torch.promote_types(x.dtype, torch.float32)


def _mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.flatten(2)
    std = (flat.var(dim=2) + _ADAIN_EPS).sqrt()
    return flat.mean(dim=2)[..., None, None], std[..., None, None]


def adaptive_instance_normalization(content: Tensor, style: Tensor) -> Tensor:
    """Give each frame/channel of ``content`` the mean and std of ``style``.

    Args:
        content: ``(T, 3, H, W)``, the clip to correct.
        style: ``(T, 3, H', W')``, the reference (usually the same size as ``content``).
    """
    _check_video("content", content)
    _check_video("style", style)
    _check_frames(content, style, "style")
    for name, value in (("content", content), ("style", style)):
        if value.shape[-2] * value.shape[-1] < 2:
            raise ValueError(
                f"{name} needs at least 2 pixels per frame for a standard deviation, got {tuple(value.shape)}"
            )
    dtype = _work_dtype(content)
    c = content.to(dtype)
    c_mean, c_std = _mean_std(c)
    s_mean, s_std = _mean_std(style.to(dtype))
    return ((c - c_mean) / c_std * s_std + s_mean).to(content.dtype)


def _wavelet_blur(x: Tensor, radius: int) -> Tensor:
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=x.dtype, device=x.device) / 16
    channels = x.shape[1]
    kernel = kernel.expand(channels, 1, 3, 3)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)


def wavelet_decomposition(x: Tensor, levels: int = _WAVELET_LEVELS) -> tuple[Tensor, Tensor]:
    """``(high, low)`` of a ``(N, C, H, W)`` tensor: ``x == high + low`` up to rounding.

    Level ``i`` blurs the previous level's low band with dilation ``2^i``; ``high`` sums
    the per-level differences and ``low`` is the last blur.
    """
    high = torch.zeros_like(x)
    low = x
    for i in range(levels):
        blurred = _wavelet_blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_reconstruction(content: Tensor, style: Tensor) -> Tensor:
    """High frequencies of ``content`` plus low frequencies of ``style`` (same-size ``(T, 3, H, W)``)."""
    _check_video("content", content)
    _check_video("style", style)
    if content.shape != style.shape:
        raise ValueError(f"style must have the shape of content {tuple(content.shape)}, got {tuple(style.shape)}")
    dtype = _work_dtype(content)
    high, _ = wavelet_decomposition(content.to(dtype))
    _, low = wavelet_decomposition(style.to(dtype))
    return (high + low).to(content.dtype)


def _upsample_reference(output: Tensor, low_res: Tensor) -> Tensor:
    _check_video("output", output)
    _check_video("low_res", low_res)
    _check_frames(output, low_res, "low_res")
    size = tuple(output.shape[-2:])
    if tuple(low_res.shape[-2:]) == size:
        return low_res
    dtype = _work_dtype(low_res)
    return F.interpolate(low_res.to(dtype), size=size, mode="bicubic", align_corners=False)


def wavelet_color_fix(output: Tensor, low_res: Tensor) -> Tensor:
    """``ColorCorrector``: wavelet colour fix of ``output`` ``(T, 3, H, W)`` against the
    bicubic upsampling of ``low_res`` ``(T, 3, h, w)``."""
    return wavelet_reconstruction(output, _upsample_reference(output, low_res))


def adain_color_fix(output: Tensor, low_res: Tensor) -> Tensor:
    """``ColorCorrector``: AdaIN colour fix of ``output`` ``(T, 3, H, W)`` against the
    bicubic upsampling of ``low_res`` ``(T, 3, h, w)``."""
    return adaptive_instance_normalization(output, _upsample_reference(output, low_res))
