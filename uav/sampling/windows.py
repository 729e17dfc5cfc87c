"""Temporal windows of the denoising UNet and how their predictions merge.

Implements SPEC §6 step 5 and surprise 5 of the Upscale-A-Video reproduction notes
(Zhou et al., CVPR 2024): clips longer than the 8-frame UNet window are cut into
windows starting every 6 frames, the last one clamped back to a full window (so it
can be processed twice), and the per-frame predictions are merged by a running
0.5/0.5 blend in processing order. :func:`official_segment_plan` turns that rule
into explicit per-window weights; :func:`uniform_segment_plan` is a duplicate-free,
feathered alternative; :func:`merge_windows` applies either plan.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uav.protocols import SegmentPlan, int_arg
from uav.sampling.tiling import even_spans

Tensor = torch.Tensor

__all__ = ["official_segment_plan", "uniform_segment_plan", "merge_windows"]


def official_segment_plan(num_frames: int, window: int = 8, stride: int = 6) -> SegmentPlan:
    """The published window rule and the weights its running blend amounts to.

    Clips with ``num_frames <= window`` run as one window. Longer clips get a window
    at every start ``s = 0, stride, 2·stride, ... < num_frames``, each ``[s, min(T, s +
    window))`` and, when that is short, moved back to ``[e − window, e)``; duplicates
    are kept in ``calls`` (``T = 13`` gives ``[0,8), [5,13), [5,13)``).

    The published merge stores a frame's first prediction and then updates
    ``acc ← 0.5·acc + 0.5·new`` for every later call covering it. Given that repeated
    calls of one window return the same prediction, that equals a fixed weighted sum
    over the unique windows, which ``weights`` holds (for ``T = 13`` frames 5..7 get
    0.25 from ``[0,8)`` and 0.75 from ``[5,13)``).

    Raises:
        ValueError: non-positive sizes, or ``stride > window`` (frames would be skipped).
    """
    t = int_arg("num_frames", num_frames, 1)
    window = int_arg("window", window, 1)
    stride = int_arg("stride", stride, 1)
    if stride > window:
        raise ValueError(f"stride must be <= window ({window}) so every frame is covered, got {stride}")

    if t <= window:
        calls: tuple[tuple[int, int], ...] = ((0, t),)
    else:
        found = []
        for s in range(0, t, stride):
            e = min(t, s + window)
            found.append((e - window, e) if e - s < window else (s, e))
        calls = tuple(found)

    windows = tuple(dict.fromkeys(calls))  # unique, in order
    index = {win: k for k, win in enumerate(windows)}
    # Track, per frame, each unique window's share of the running blend (float64, as the
    # dense matrix this replaced: halving and adding 0.5 in the same order).
    shares: list[dict[int, float]] = [{} for _ in range(t)]
    for win in calls:
        s, e = win
        k = index[win]
        for f in range(s, e):
            share = shares[f]
            if not share:
                share[k] = 1.0
                continue
            for other in share:
                share[other] *= 0.5
            share[k] = share.get(k, 0.0) + 0.5
    band = torch.zeros((len(windows), max(e - s for s, e in windows)), dtype=torch.float64)
    for k, (s, e) in enumerate(windows):
        band[k, :e - s] = torch.tensor([shares[f].get(k, 0.0) for f in range(s, e)], dtype=torch.float64)
    return _plan(windows, band.to(torch.float32), t, calls)


#: clips up to this many frames also get the dense (windows x frames) weights
DENSE_FRAMES = 4096


def _plan(windows: tuple[tuple[int, int], ...], band: Tensor, t: int,
          calls: tuple[tuple[int, int], ...]) -> SegmentPlan:
    """A plan with its band, and the dense weights where the clip is short enough to hold them."""
    if t > DENSE_FRAMES:
        return SegmentPlan(windows=windows, weights=torch.empty((len(windows), t), device="meta"), calls=calls,
                           band=band)
    weights = torch.zeros((len(windows), t), dtype=torch.float32)
    for k, (s, e) in enumerate(windows):
        weights[k, s:e] = band[k, :e - s]
    return SegmentPlan(windows=windows, weights=weights, calls=calls, band=band)


def uniform_segment_plan(num_frames: int, window: int = 8, overlap: int = 2) -> SegmentPlan:
    """Evenly spaced, duplicate-free windows with feathered blend weights.

    Uses the fewest windows of length ``window`` whose neighbours overlap by at least
    ``overlap`` frames, spread evenly from the first to the last frame. Each window's
    raw weight ramps linearly up over its first ``overlap`` frames and down over its
    last ``overlap`` frames (not at the clip's ends); weights are then normalised so
    every frame's column sums to 1.

    Raises:
        ValueError: non-positive sizes or ``overlap`` not in ``[0, window)``.
    """
    t = int_arg("num_frames", num_frames, 1)
    window = int_arg("window", window, 1)
    overlap = int_arg("overlap", overlap, 0)
    if overlap >= window:
        raise ValueError(f"overlap must be smaller than window ({window}), got {overlap}")

    windows = tuple(even_spans(t, window, overlap))

    band = torch.zeros((len(windows), window), dtype=torch.float64)
    totals = torch.zeros(t, dtype=torch.float64)
    for k, (s, e) in enumerate(windows):
        frames = torch.arange(s, e, dtype=torch.float64)
        ramp = torch.ones(e - s, dtype=torch.float64)
        if overlap > 0:
            if s > 0:
                ramp = torch.minimum(ramp, (frames - s + 1) / (overlap + 1))
            if e < t:
                ramp = torch.minimum(ramp, (e - frames) / (overlap + 1))
        band[k, :e - s] = ramp
        totals[s:e] += ramp
    for k, (s, e) in enumerate(windows):
        band[k, :e - s] /= totals[s:e]
    return _plan(windows, band.to(torch.float32), t, windows)


def merge_windows(preds: Sequence[Tensor], plan: SegmentPlan, num_frames: int, dim: int = 2) -> Tensor:
    """Merge per-window predictions: ``out[f] = Σ_k weights[k, f] · preds[k][f − start_k]``.

    Args:
        preds: one tensor per entry of ``plan.windows``, covering that window's frames
            along ``dim``; all other dimensions equal.
        plan: the plan the windows came from.
        num_frames: the clip length (``plan.weights.shape[1]``).
        dim: the frame dimension of the predictions (2 for ``(B, C, T, H, W)``).

    Returns:
        The merged tensor, ``num_frames`` long along ``dim``, in ``preds[0]``'s dtype.
    """
    if len(preds) != len(plan.windows):
        raise ValueError(f"expected one prediction per window ({len(plan.windows)}), got {len(preds)}")
    if len(preds) == 0:
        raise ValueError("preds must not be empty")
    if tuple(plan.weights.shape) != (len(plan.windows), num_frames):
        raise ValueError(
            f"plan.weights has shape {tuple(plan.weights.shape)}, expected ({len(plan.windows)}, {num_frames}) "
            f"for num_frames={num_frames}"
        )
    ref = preds[0]
    ndim = ref.ndim
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim must index a dimension of the {ndim}-D predictions, got {dim}")
    dim = dim % ndim
    out_shape = list(ref.shape)
    out_shape[dim] = num_frames
    out = ref.new_zeros(out_shape)
    view = [1] * ndim
    for k, (pred, (s, e)) in enumerate(zip(preds, plan.windows)):
        expected = list(out_shape)
        expected[dim] = e - s
        if list(pred.shape) != expected:
            raise ValueError(
                f"preds[{k}] must have shape {tuple(expected)} for window [{s}, {e}), got {tuple(pred.shape)}"
            )
        view[dim] = e - s
        w = plan.window_weights(k).to(device=pred.device, dtype=pred.dtype).reshape(view)
        out.narrow(dim, s, e - s).add_(pred * w)
    return out
