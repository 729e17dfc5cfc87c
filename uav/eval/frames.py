"""Frame conventions shared by every metric of :mod:`uav.eval`.

* **Frames** are numpy arrays, either one frame ``(H, W, 3)`` or a clip
  ``(T, H, W, 3)``, RGB channel order. ``uint8`` frames span ``[0, 255]``,
  ``uint16`` frames span ``[0, 65535]`` and floating-point frames span
  ``[0, 1]`` (values a hair outside are clipped; anything clearly outside is an
  error, because it usually means ``[0, 255]`` floats were passed).
* **Y channel** is ITU-R BT.601 luma as MATLAB's ``rgb2ycbcr`` computes it:
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in ``[0, 1]``,
  kept as a float in ``[16, 235]`` (not rounded), then scored on the ``[0, 255]``
  scale.
* ``crop_border`` removes that many pixels from every side before scoring (the
  literature usually crops ``scale`` pixels); it is 0 by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_frames",
    "to_255",
    "to_float01",
    "to_uint8",
    "rgb_to_y",
    "prepare_pair",
    "pair_clips",
    "per_frame",
]

_FLOAT_TOLERANCE = 1e-3
_BT601_Y = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def check_frames(frames: Any, name: str) -> np.ndarray:
    """``frames`` itself once it is a numpy RGB frame or clip of a supported dtype; else TypeError/ValueError."""
    if isinstance(frames, torch.Tensor):
        raise TypeError(
            f"{name}: expected a numpy array (T, H, W, 3) or (H, W, 3); got a torch tensor "
            "(convert with .permute(...).cpu().numpy() first)"
        )
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array; got {type(frames).__name__}")
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (T, H, W, 3) or (H, W, 3); got {frames.shape}")
    if frames.dtype == np.bool_ or not (
        np.issubdtype(frames.dtype, np.floating) or frames.dtype in (np.uint8, np.uint16)
    ):
        raise TypeError(f"{name}: expected dtype uint8, uint16 or float; got {frames.dtype}")
    if frames.size == 0:
        raise ValueError(f"{name}: empty array of shape {frames.shape}")
    return frames


def to_255(frames: np.ndarray, name: str) -> np.ndarray:
    """float64 copy of ``frames`` on the [0, 255] scale (exact for uint8)."""
    frames = check_frames(frames, name)
    if frames.dtype == np.uint8:
        return frames.astype(np.float64)
    if frames.dtype == np.uint16:
        return frames.astype(np.float64) * (255.0 / 65535.0)
    return to_float01(frames, name=name, dtype=np.float64) * 255.0


def to_float01(frames: np.ndarray, *, name: str = "frames", dtype: Any = np.float32) -> np.ndarray:
    """Convert frames (uint8, uint16 or float in ``[0, 1]``) to floats in ``[0, 1]``.

    Args:
        frames: ``(T, H, W, 3)`` or ``(H, W, 3)`` RGB frames.
        name: the argument name used in error messages.
        dtype: the floating-point dtype of the result.

    Raises:
        ValueError: float input clearly outside ``[0, 1]`` (more than 1e-3 off), or
            contains NaN/inf.
    """
    frames = check_frames(frames, name)
    if frames.dtype == np.uint8:
        return frames.astype(dtype) / dtype(255.0)
    if frames.dtype == np.uint16:
        return frames.astype(dtype) / dtype(65535.0)
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{name}: float frames contain NaN or infinite values")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
        raise ValueError(
            f"{name}: float frames must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}] "
            "(pass uint8 for [0, 255] data)"
        )
    return np.clip(frames, 0.0, 1.0).astype(dtype)


def to_uint8(frames: np.ndarray, *, name: str = "frames") -> np.ndarray:
    """Convert frames (uint8, uint16 or float in ``[0, 1]``) to uint8 with rounding."""
    frames = check_frames(frames, name)
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.rint(to_float01(frames, name=name, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def rgb_to_y(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB frames on the ``[0, 255]`` scale (values in ``[16, 235]``).

    Matches MATLAB's ``rgb2ycbcr`` (and BasicSR's ``rgb2ycbcr(..., y_only=True)``)
    without the final rounding to integers. Returns float64 of shape ``frames.shape[:-1]``.
    """
    rgb01 = to_255(frames, "frames") / 255.0
    return rgb01 @ _BT601_Y + 16.0


def prepare_pair(
    a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """[0, 255] float64 copies of ``a`` and ``b``, cropped, as (..., H, W, C) (C=1 for Y)."""
    check_frames(a, names[0])
    check_frames(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape; got {a.shape} and {b.shape}")
    if not isinstance(crop_border, (int, np.integer)) or isinstance(crop_border, bool) or crop_border < 0:
        raise ValueError(f"crop_border: expected an integer >= 0; got {crop_border!r}")
    h, w = a.shape[-3], a.shape[-2]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border: {crop_border} removes the whole {h}x{w} frame")
    if y_channel:
        xa, xb = rgb_to_y(a)[..., None], rgb_to_y(b)[..., None]
    else:
        xa, xb = to_255(a, names[0]), to_255(b, names[1])
    if crop_border:
        xa = xa[..., crop_border:-crop_border, crop_border:-crop_border, :]
        xb = xb[..., crop_border:-crop_border, crop_border:-crop_border, :]
    return xa, xb



def pair_clips(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs checked, of equal shape, as clips (a single frame becomes T=1)."""
    check_frames(output, "output")
    check_frames(reference, "reference")
    if output.shape != reference.shape:
        raise ValueError(f"output and reference must have the same shape; got {output.shape} and {reference.shape}")
    if output.ndim == 3:
        return output[None], reference[None]
    return output, reference


def per_frame(
    output: np.ndarray,
    reference: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
    *,
    crop_border: int = 0,
    y_channel: bool = False,
) -> np.ndarray:
    """``score(a, b)`` of every frame pair, as a float64 array of length T (1 for a single frame).

    ``a`` and ``b`` are one frame of each, prepared by :func:`prepare_pair`: float64 on
    the ``[0, 255]`` scale, cropped, ``(H, W, C)`` with ``C = 1`` for the Y channel.
    """
    a, b = pair_clips(output, reference)
    out = np.empty(a.shape[0], dtype=np.float64)
    # Frame by frame: float64 copies of a whole high-resolution clip would be huge.
    for t in range(a.shape[0]):
        xa, xb = prepare_pair(a[t], b[t], crop_border, y_channel, ("output", "reference"))
        out[t] = score(xa, xb)
    return out
