"""Input checks and flow resizing shared by the built-in flow estimators."""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = ["check_frames", "check_size", "resize_flow", "to_gray_uint8", "stack_flows"]


def check_frames(frames: object) -> Tensor:
    """Validate a ``(T, 3, H, W)`` floating clip with ``T >= 2`` and return it."""
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a torch.Tensor of shape (T, 3, H, W), got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (T, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise ValueError(f"frames must hold at least 2 frames to estimate flow, got T={frames.shape[0]}")
    if not frames.is_floating_point():
        raise TypeError(f"frames must be a float tensor in [-1, 1], got dtype {frames.dtype}")
    if frames.shape[2] < 1 or frames.shape[3] < 1:
        raise ValueError(f"frames must have a non-empty H and W, got {tuple(frames.shape)}")
    return frames


def check_size(size: object, default: tuple[int, int]) -> tuple[int, int]:
    """Validate the ``size=(h, w)`` argument (``None`` means ``default``)."""
    if size is None:
        return default
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"size must be None or a pair of positive ints (h, w), got {size!r}")
    return int(size[0]), int(size[1])


def resize_flow(flow: Tensor, size: tuple[int, int], mode: str = "auto") -> Tensor:
    """Resize ``(N, 2, H, W)`` flow fields to ``size = (h, w)`` and rescale the vectors.

    The x component is multiplied by ``w / W`` and the y component by ``h / H``, so
    the vectors stay in pixels of the new grid (the published ``RAFT_bi`` swaps these
    factors; see SPEC §7.6). ``mode="auto"`` shrinks with area averaging and
    enlarges with bilinear interpolation (``align_corners=False``); ``"bilinear"`` or
    ``"area"`` force one.
    """
    if mode not in ("auto", "bilinear", "area"):
        raise ValueError(f"mode must be 'auto', 'bilinear' or 'area', got {mode!r}")
    h, w = size
    src_h, src_w = flow.shape[-2:]
    if (h, w) == (src_h, src_w):
        return flow
    if mode == "auto":
        mode = "area" if h <= src_h and w <= src_w else "bilinear"
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    resized = F.interpolate(flow, size=(h, w), mode=mode, **kwargs)
    scale = torch.tensor([w / src_w, h / src_h], dtype=resized.dtype, device=resized.device)
    return resized * scale.view(1, 2, 1, 1)


def to_gray_uint8(frames: Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` in ``[-1, 1]`` -> ``(T, H, W)`` uint8 luma (ITU-R 601 weights)."""
    rgb = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    gray = (rgb * weights).sum(dim=1).round().clamp(0, 255)
    return gray.to(torch.uint8).numpy()


def stack_flows(pairs: list[Tensor], size: tuple[int, int], device: torch.device) -> Tensor:
    """``T-1`` flows of shape ``(2, H, W)`` -> ``(1, 2, T-1, h, w)`` float32 at ``size``."""
    flows = torch.stack(pairs, dim=0).float()
    flows = resize_flow(flows, size)
    return flows.permute(1, 0, 2, 3).unsqueeze(0).contiguous().to(device)
