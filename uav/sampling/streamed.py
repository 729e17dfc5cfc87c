"""The end of a denoising step for a streamed clip: a chunk of frames at a time, the same numbers.

When the clip-length state lives in memory-mapped files (:mod:`uav.sampling.store`),
guidance, ``x0``, propagation and the scheduler's step must not build clip-length
temporaries in RAM. With an elementwise scheduler (:attr:`OfficialDDIM.elementwise
<uav.sampling.schedulers.OfficialDDIM.elementwise>`) each of them acts on every element
alone, so :func:`finish_step` runs them over :data:`~uav.sampling.store.CHUNK_FRAMES`
frames at a time into the store; :func:`propagate_into` runs the published propagation's
two recurrences frame by frame with the masks of a chunk of frame pairs at a time.
"""

from __future__ import annotations

from typing import Any

import torch

from uav.sampling.propagation import consistency_mask, flow_warp, resize_flows
from uav.sampling.store import ClipStore, frame_chunks

Tensor = torch.Tensor

__all__ = ["finish_step", "propagate_into"]


def finish_step(store: ClipStore, scheduler: Any, v: Tensor, t: int, latents: Tensor, guidance: float | None,
                flows: tuple[Tensor, Tensor] | None, fuse_scale: float) -> tuple[Tensor, Tensor]:
    """``(next latents, x0)`` from the merged predictions ``v`` (``[uncond, cond]`` when
    ``guidance`` is a scale), as :func:`uav.sampling.loop.denoise` computes them."""
    frames = latents.shape[2]
    x0, nxt = store.like(latents), store.like(latents)

    def guided(a: int, b: int) -> Tensor:
        part = v[:, :, a:b]
        if guidance is not None:
            uncond, cond = part.chunk(2)
            part = uncond + guidance * (cond - uncond)
        return part.to(latents.dtype)

    for a, b in frame_chunks(frames):
        part = guided(a, b)
        x0[:, :, a:b] = scheduler.predict_x0(part, t, latents[:, :, a:b])
        if flows is None:
            nxt[:, :, a:b] = scheduler.step(part, t, latents[:, :, a:b], x0[:, :, a:b])
    if flows is not None:
        propagate_into(x0, flows[0], flows[1], store, fuse_scale=fuse_scale)
        for a, b in frame_chunks(frames):
            nxt[:, :, a:b] = scheduler.step(guided(a, b), t, latents[:, :, a:b], x0[:, :, a:b])
    return nxt, x0


def propagate_into(x: Tensor, flows_forward: Tensor, flows_backward: Tensor, store: ClipStore, *,
                   fuse_scale: float = 0.5, alpha1: float = 1e-3, alpha2: float = 0.05) -> Tensor:
    """:func:`~uav.sampling.propagation.propagate_latents` (``"fuse"`` mode) written back into
    ``x``, holding a chunk of flows and masks and two frames of features at a time."""
    b, _, t, h, w = x.shape
    if t == 1:
        return x
    work = torch.promote_types(x.dtype, torch.float32)

    def pairs(a: int, e: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ff = resize_flows(flows_forward[:, :, a:e].to(device=x.device, dtype=work), (h, w))
        fb = resize_flows(flows_backward[:, :, a:e].to(device=x.device, dtype=work), (h, w))
        bwd = consistency_mask(ff, fb, alpha1=alpha1, alpha2=alpha2).to(work).expand(b, -1, -1, -1, -1)
        fwd = consistency_mask(fb, ff, alpha1=alpha1, alpha2=alpha2).to(work).expand(b, -1, -1, -1, -1)
        return ff.expand(b, -1, -1, -1, -1), fb.expand(b, -1, -1, -1, -1), bwd, fwd

    def blend(warped: Tensor, current: Tensor, mask: Tensor) -> Tensor:
        proposal = fuse_scale * warped + (1 - fuse_scale) * current
        return mask * proposal + (1 - mask) * current

    backward = store.empty((b, x.shape[1], t, h, w), work)
    prev = x[:, :, t - 1].to(work)
    backward[:, :, t - 1] = prev
    for a, e in reversed(list(frame_chunks(t - 1))):
        ff, _, mask, _ = pairs(a, e)
        for k in range(e - 1, a - 1, -1):
            prev = blend(flow_warp(prev, ff[:, :, k - a], "nearest"), x[:, :, k].to(work), mask[:, :, k - a])
            backward[:, :, k] = prev
    prev = backward[:, :, 0].clone()
    x[:, :, 0] = prev.to(x.dtype)
    for a, e in frame_chunks(t - 1):
        _, fb, _, mask = pairs(a, e)
        for k in range(a + 1, e + 1):
            prev = blend(flow_warp(prev, fb[:, :, k - 1 - a], "nearest"), backward[:, :, k], mask[:, :, k - 1 - a])
            x[:, :, k] = prev.to(x.dtype)
    return x
