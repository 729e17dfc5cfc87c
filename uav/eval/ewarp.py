"""E*warp, the flow warping error (Lai et al., ECCV 2018): how much a clip flickers.

Videos report it multiplied by 1000 ("x 10^-3"), like the Upscale-A-Video paper
(:data:`EWARP_SCALE`). The flow comes from a flow estimator chosen by name through
the plugin registry (kind ``flow``: the built-in ``uav_flow`` plugin gives ``dis``,
``farneback`` and ``raft``) or passed as an object following
:class:`uav.protocols.FlowEstimator`. The default, ``dis``, is OpenCV's DIS flow on
8-bit BT.601 luma, as the plugin computes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch

from uav.eval.frames import check_frames, to_float01
from uav.protocols import FlowEstimator

__all__ = ["EWARP_SCALE", "resolve_flow_estimator", "occlusion_mask", "warp_frame", "warping_error"]

#: E*warp is reported multiplied by this factor ("x 10^-3").
EWARP_SCALE = 1e3

#: the estimator used when none is named: weight-free, so E*warp works on any install
DEFAULT_FLOW = "dis"


def resolve_flow_estimator(flow: str | FlowEstimator | None = None, **options: Any) -> FlowEstimator:
    """Turn a flow choice into an estimator object.

    Args:
        flow: ``None`` (``"dis"``), a name registered by a flow plugin (``"dis"``,
            ``"farneback"``, ``"raft"``, ...; see ``uav plugins``), or an object
            following :class:`uav.protocols.FlowEstimator`, returned as it is.
        options: passed to the plugin's factory when ``flow`` is a name (e.g.
            ``weights=`` and ``device=`` for ``raft``).

    Raises:
        ValueError: unknown name (the message lists the installed ones), or the
            plugin's factory refused the options.
        TypeError: neither a name nor a callable.
    """
    if flow is None:
        flow = DEFAULT_FLOW
    if isinstance(flow, str):
        from uav.registry import get_component  # noqa: PLC0415 - plugin discovery only when a name is resolved

        try:
            return get_component("flow", flow, **options)
        except KeyError as exc:  # UnknownComponentError is a KeyError and a ValueError
            raise ValueError(f"flow: {exc}") from None
    if options:
        raise TypeError("flow: options can only be given when the estimator is selected by name")
    if callable(flow):
        return flow  # type: ignore[return-value]
    raise TypeError(f"flow: expected a name or a FlowEstimator object; got {type(flow).__name__}")


def _chunk_flows(
    estimator: FlowEstimator, frames: np.ndarray, size: tuple[int, int], chunk: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_pair, forward, backward)`` per chunk, flows ``(n, h, w, 2)`` float32.

    Chunks overlap by one frame so every neighbouring pair is seen exactly once;
    only one chunk's frames and flows are held at a time, which keeps memory
    bounded for long high-resolution clips.
    """
    T = frames.shape[0]
    start = 0
    while start < T - 1:
        stop = min(T, start + chunk)
        sub01 = to_float01(frames[start:stop], name="flow frames")
        sub = torch.from_numpy(np.ascontiguousarray(sub01.transpose(0, 3, 1, 2))) * 2.0 - 1.0
        result = estimator(sub, size=size)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise ValueError("flow estimator: expected a (forward, backward) tuple")
        out = []
        for flows, label in ((result[0], "forward"), (result[1], "backward")):
            shape = (1, 2, stop - start - 1, size[0], size[1])
            if not isinstance(flows, torch.Tensor) or tuple(flows.shape) != shape:
                got = tuple(flows.shape) if isinstance(flows, torch.Tensor) else type(flows).__name__
                raise ValueError(f"flow estimator: {label} flow should have shape {shape}; got {got}")
            out.append(flows[0].detach().float().cpu().numpy().transpose(1, 2, 3, 0))
        yield start, out[0], out[1]
        start = stop - 1



# --------------------------------------------------------------------------- E*warp


def warp_frame(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp ``image`` (H, W[, C]) float32 with ``flow`` (H, W, 2): sample at ``p + flow(p)``.

    Bilinear, with samples outside the frame clamped to the border.
    """
    H, W = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32),
        gx + flow[..., 0].astype(np.float32),
        gy + flow[..., 1].astype(np.float32),
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Occluded pixels of frame t from the flows t->t+1 (``forward``) and t+1->t (``backward``).

    Both flows are (H, W, 2). A pixel p is occluded (True) when the
    forward-backward check fails,
    ``|f(p) + b(p + f(p))|^2 > 0.01 (|f(p)|^2 + |b(p + f(p))|^2) + 0.5``,
    or when it lies on a motion boundary, ``|grad f(p)|^2 > 0.01 |f(p)|^2 + 0.002``
    (Sundaram et al. 2010, as used by Lai et al. 2018 for the warping error).
    """
    b_at = warp_frame(backward, forward)
    f2 = np.sum(forward.astype(np.float64) ** 2, axis=-1)
    b2 = np.sum(b_at.astype(np.float64) ** 2, axis=-1)
    inconsistent = np.sum((forward + b_at).astype(np.float64) ** 2, axis=-1) > 0.01 * (f2 + b2) + 0.5
    du = np.zeros_like(forward, dtype=np.float64)
    dv = np.zeros_like(forward, dtype=np.float64)
    du[:, :-1] = forward[:, :-1] - forward[:, 1:]
    dv[:-1, :] = forward[:-1, :] - forward[1:, :]
    boundary = np.sum(du**2 + dv**2, axis=-1) > 0.01 * f2 + 0.002
    return inconsistent | boundary


def warping_error(
    frames: np.ndarray,
    *,
    flow: str | FlowEstimator | None = None,
    flow_frames: np.ndarray | None = None,
    chunk: int = 16,
) -> np.ndarray:
    """Per-pair flow warping error of a clip (raw, not multiplied by 1000).

    For each pair ``(t, t+1)``, with ``f`` the flow t->t+1 and ``M_t`` the
    non-occluded pixels of frame t (:func:`occlusion_mask`), the error is::

        E_t = sum_p M_t(p) ||V_t(p) - W(V_{t+1})(p)||^2 / (3 * sum_p M_t(p))

    where ``W(V_{t+1})(p) = V_{t+1}(p + f(p))`` (bilinear) and pixel values are in
    ``[0, 1]``. The division by 3 averages over the colour channels, as Lai et
    al.'s reference evaluation does (their mask is stored per channel). A pair with
    no valid pixel scores 0, as there. E_warp of the clip is the mean of ``E_t``.

    Args:
        frames: the clip to score, ``(T, H, W, 3)`` with ``T >= 2``.
        flow: the flow estimator (see :func:`resolve_flow_estimator`); DIS by default.
        flow_frames: the clip the flow is estimated on (e.g. the ground truth);
            ``frames`` itself by default. It must have the same length; its spatial
            size may differ (flows are returned at the size of ``frames``).
        chunk: how many frames the estimator sees at once (>= 2).

    Returns:
        float64 array of length ``T - 1``.
    """
    check_frames(frames, "frames")
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"frames: the warping error needs a clip (T>=2, H, W, 3); got shape {frames.shape}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2:
        raise ValueError(f"chunk: expected an integer >= 2; got {chunk!r}")
    src = frames if flow_frames is None else check_frames(flow_frames, "flow_frames")
    if src.ndim != 4 or src.shape[0] != frames.shape[0]:
        raise ValueError(f"flow_frames: expected {frames.shape[0]} frames (T, H, W, 3); got shape {src.shape}")
    estimator = resolve_flow_estimator(flow)
    H, W = frames.shape[1:3]
    errors = np.empty(frames.shape[0] - 1, dtype=np.float64)
    # Frames are converted one at a time: a float copy of a whole 4K clip would not fit.
    for first, fw, bw in _chunk_flows(estimator, src, (H, W), chunk):
        for k in range(fw.shape[0]):
            t = first + k
            valid = ~occlusion_mask(fw[k], bw[k])
            n = int(valid.sum())
            if n == 0:
                errors[t] = 0.0
                continue
            cur = to_float01(frames[t], name="frames", dtype=np.float64)
            nxt = warp_frame(to_float01(frames[t + 1], name="frames"), fw[k]).astype(np.float64)
            errors[t] = float(np.sum(np.sum((cur - nxt) ** 2, axis=-1)[valid]) / (3.0 * n))
    return errors
