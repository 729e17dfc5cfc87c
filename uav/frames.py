"""Frames in and out of the pipeline: any supported container -> ``(1, 3, T, H, W)`` in [-1, 1] -> uint8.

Kept apart from the facade so that readers, writers and tests convert frames the one
way the pipeline does, without loading the facade.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["InputError", "frames_to_tensor", "to_float32", "to_uint8"]


#: how far outside their range float frames may stray (rounding of a float pipeline) before they are refused
RANGE_SLACK = 1e-2


class InputError(ValueError):
    """A video argument that cannot be upscaled (names the argument and the fix)."""


def frames_to_tensor(video: Any, name: str = "video") -> Tensor:
    """Normalise any supported frame container to a float32 ``(1, 3, T, H, W)`` clip in [-1, 1]."""
    if torch.is_tensor(video):
        t = video.detach()
        if t.is_meta:
            raise InputError(f"{name}: a meta tensor has a shape but no data; pass real frames")
        if not t.is_floating_point():
            raise InputError(f"{name}: a tensor must hold floats in [-1, 1], got {str(t.dtype).replace('torch.', '')}"
                             " (pass uint8 frames as a numpy array (T, H, W, 3))")
        if t.ndim == 4:  # (T, 3, H, W)
            if t.shape[1] != 3:
                raise InputError(f"{name}: a 4-D tensor must be (T, 3, H, W), got {tuple(t.shape)}")
            t = t.permute(1, 0, 2, 3)[None]
        if t.ndim != 5 or t.shape[0] != 1 or t.shape[1] != 3:
            raise InputError(f"{name}: expected a tensor (1, 3, T, H, W) or (T, 3, H, W) in [-1, 1], "
                             f"got {tuple(t.shape)}")
        t = t.float().cpu()
    else:
        if isinstance(video, np.ndarray):
            arr = video
        else:
            try:
                frames = [np.asarray(f) for f in video]
            except TypeError:
                raise InputError(f"{name}: expected a path, an array, a tensor or an iterable of frames, "
                                 f"got {type(video).__name__}") from None
            if not frames:
                raise InputError(f"{name}: the video has no frames")
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                first = frames[0].shape
                bad = next(i for i, f in enumerate(frames) if f.shape != first)
                raise InputError(f"{name}: all frames must have one size; frame 0 is {first}, frame {bad} is "
                                 f"{frames[bad].shape}")
            arr = np.stack(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise InputError(f"{name}: expected frames (T, H, W, 3) RGB, got array of shape {arr.shape}")
        if arr.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0
        elif arr.dtype == np.uint16:
            x = torch.from_numpy(arr.astype(np.float32)) / 65535.0
        elif np.issubdtype(arr.dtype, np.floating):
            x = torch.from_numpy(arr.astype(np.float32))
        else:
            raise InputError(f"{name}: unsupported frame dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")
        t = (x * 2.0 - 1.0).permute(3, 0, 1, 2)[None]
    if t.shape[2] == 0:
        raise InputError(f"{name}: the video has no frames")
    if t.shape[-1] < 1 or t.shape[-2] < 1:
        raise InputError(f"{name}: frames have no pixels ({tuple(t.shape[-2:])})")
    if not torch.isfinite(t).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    _check_range(t, name, given_as_tensor=torch.is_tensor(video))
    return t.contiguous()


def _check_range(t: Tensor, name: str, *, given_as_tensor: bool) -> None:
    """Refuse a clip outside [-1, 1] (float frames outside [0, 1]): 0..255 values given as
    floats would otherwise be clamped into a white picture without a word."""
    low, high = float(t.min()), float(t.max())
    if low >= -1.0 - RANGE_SLACK and high <= 1.0 + RANGE_SLACK:
        return
    if given_as_tensor:
        given, expected = "a tensor's values", "[-1, 1]"
    else:
        given, expected, low, high = "float frames", "[0, 1]", (low + 1) / 2, (high + 1) / 2
    raise InputError(f"{name}: {given} must lie in {expected}, got {low:.4g} to {high:.4g}"
                     + (" (0..255 frames? pass them as uint8)" if high > 2 else ""))


def to_uint8(frames: Tensor) -> np.ndarray:
    """``(1, 3, t, H, W)`` in [-1, 1] -> uint8 ``(t, H, W, 3)``, rounded (the published code truncates)."""
    x = ((frames[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()


def to_float32(frames: Tensor) -> np.ndarray:
    """``(1, 3, t, H, W)`` in [-1, 1] -> float32 ``(t, H, W, 3)`` in [0, 1], for outputs deeper
    than 8 bits (the writer quantises once, to the output's own depth)."""
    x = (frames[0].float().clamp(-1, 1) + 1.0) * 0.5
    return x.permute(1, 2, 3, 0).contiguous().numpy()
