"""A faithful replay of the published Upscale-A-Video loop, for side-by-side timing (issue 7).

The published code (SPEC §6) runs one U-Net call per temporal window *call*, the
duplicated last window included, merges the predictions with a running 0.5/0.5 blend,
computes attention explicitly (``softmax(QKᵀ)V`` in the U-Net's fp16), keeps the VAE in
fp32 and decodes 3-frame chunks. Nothing here is used by the library: it exists so that
every speed-up the benchmark reports is a ratio against this code measured on the same
card in the same process.

Numerically this loop is the one :func:`uav.sampling.loop.denoise` runs (the running
blend equals the segment plan's fixed weights, see :func:`uav.sampling.windows.official_segment_plan`);
``tests/test_benchmarks.py`` checks that, so the ratios compare equal work.
"""

from __future__ import annotations

import contextlib
from typing import Any, Collection, Iterator, Sequence

import torch

from uav.models import temporal as _temporal
from uav.models import transformer as _transformer
from uav.sampling.propagation import propagate_latents

Tensor = torch.Tensor

__all__ = ["eager_attention", "published_step", "published_to_uint8"]


def _eager_cross_attention(self: Any, x: Tensor, context: Tensor | None = None,
                           residual: Tensor | None = None, pending: list[Tensor] | None = None) -> Tensor:
    """``uav.models.transformer.Attention.forward`` with the score matrix materialised (its bias
    always added here, so nothing is owed to ``pending``)."""
    context = x if context is None else context
    b, n_q, c = x.shape
    n = self.heads
    d = c // n
    n_k = context.shape[1]
    # (batch·heads, tokens, head size), as the published CrossAttention lays it out
    q = self.to_q(x).view(b, n_q, n, d).transpose(1, 2).reshape(b * n, n_q, d)
    k = self.to_k(context).view(b, n_k, n, d).transpose(1, 2).reshape(b * n, n_k, d)
    v = self.to_v(context).view(b, n_k, n, d).transpose(1, 2).reshape(b * n, n_k, d)
    # baddbmm(scale·q·kᵀ), softmax, bmm — all in the U-Net dtype, the scores materialised
    scores = torch.baddbmm(torch.empty((b * n, n_q, n_k), dtype=q.dtype, device=q.device), q, k.transpose(1, 2),
                           beta=0, alpha=d**-0.5)
    out = torch.bmm(scores.softmax(dim=-1), v)
    out = self.to_out[0](out.view(b, n, n_q, d).transpose(1, 2).reshape(b, n_q, c))
    return out if residual is None else residual + out


def _eager_temporal_attention(self: Any, x: Tensor, residual: Tensor | None = None,
                              pending: list[Tensor] | None = None) -> Tensor:
    """``uav.models.temporal.TemporalAttention.forward`` with the score matrix materialised
    (for the published module structure, which has ``project``, and for the library's)."""
    s, t, c = x.shape
    if hasattr(self, "project"):  # published: q scaled before RoPE
        q, k, v, bias = self.project(x)
        scale = 1.0
    else:
        n, d = self.heads, self.head_dim
        q, k, v = (proj(x).view(s, t, n, d) for proj in (self.to_q, self.to_k, self.to_v))
        if self.rotary_emb is not None:
            q, k = self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        bias, scale = self.time_rel_pos_bias(t, x.device).to(q.dtype), d**-0.5
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + bias
    out = self.to_out[0](torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(s, t, c))
    return out if residual is None else residual + out


@contextlib.contextmanager
def eager_attention() -> Iterator[None]:
    """Make every U-Net attention compute ``softmax(QKᵀ)V`` explicitly while the block runs.

    Patches the two U-Net attention classes (cross/spatial and temporal) for all
    instances and restores them on exit, even on error. The VAE's mid-block attention
    is left on SDPA: explicit scores there would need ``(h·w)²`` floats per frame
    (18 GB per 192x352 frame in fp32), which the published run could not have held
    either.
    """
    saved = (_transformer.Attention.forward, _temporal.TemporalAttention.forward)
    _transformer.Attention.forward = _eager_cross_attention  # type: ignore[method-assign]
    _temporal.TemporalAttention.forward = _eager_temporal_attention  # type: ignore[method-assign]
    try:
        yield
    finally:
        _transformer.Attention.forward, _temporal.TemporalAttention.forward = saved  # type: ignore[method-assign]


def published_step(
    unet: torch.nn.Module,
    scheduler: Any,
    latents: Tensor,
    low_res: Tensor,
    text_embeddings: Tensor,
    *,
    index: int,
    timestep: int,
    calls: Sequence[tuple[int, int]],
    noise_level: int,
    guidance_scale: float,
    propagation_steps: Collection[int] = (),
    flows: tuple[Tensor, Tensor] | None = None,
    fuse_scale: float = 0.5,
) -> Tensor:
    """One denoising step exactly as the published pipeline structures it (SPEC §6 step 5).

    Args:
        unet: the video U-Net, in the dtype the run uses (fp16 as published).
        scheduler: an :class:`~uav.sampling.schedulers.OfficialDDIM` with its schedule set.
        latents: ``(1, 4, T, h, w)`` in the U-Net dtype (the published latents are fp16).
        low_res: the noised low-res clip, already duplicated for CFG: ``(2, 3, T, h, w)``.
        text_embeddings: ``(2, L, D)`` = ``[negative, positive]``.
        index: the 0-based step index (decides propagation).
        timestep: this step's timestep.
        calls: the window calls in published order, duplicates included (``SegmentPlan.calls``).
        noise_level: the U-Net class label.
        guidance_scale: CFG weight.
        propagation_steps, flows, fuse_scale: flow-guided propagation of x0 (SPEC §4).

    Returns:
        The latents of the next step, same dtype as ``latents``.
    """
    if text_embeddings.shape[0] != 2 or low_res.shape[0] != 2:
        raise ValueError(
            "published_step replays the guided loop: text_embeddings and low_res need a batch of 2 "
            f"([uncond, cond]), got {text_embeddings.shape[0]} and {low_res.shape[0]}"
        )
    if not calls:
        raise ValueError("calls must name at least one window")
    num_frames = latents.shape[2]
    inp = torch.cat([latents, latents])
    labels = torch.full((2,), noise_level, dtype=torch.long, device=latents.device)
    t = torch.tensor(timestep, device=latents.device)
    acc: Tensor | None = None
    seen = torch.zeros(num_frames, dtype=torch.bool)
    for s, e in calls:
        out = unet(inp[:, :, s:e], t, low_res[:, :, s:e], encoder_hidden_states=text_embeddings,
                   class_labels=labels).sample
        if acc is None:
            acc = torch.zeros((2, out.shape[1], num_frames) + tuple(out.shape[3:]), dtype=out.dtype,
                              device=out.device)
        # per-frame running blend: the first prediction is stored, later ones are averaged in
        first = ~seen[s:e]
        idx = torch.arange(s, e)
        new_idx, old_idx = idx[first], idx[~first]
        if new_idx.numel():
            acc[:, :, new_idx] = out[:, :, new_idx - s]
        if old_idx.numel():
            acc[:, :, old_idx] = 0.5 * acc[:, :, old_idx] + 0.5 * out[:, :, old_idx - s]
        seen[s:e] = True
    assert acc is not None
    v_uncond, v_cond = acc.chunk(2)
    v = v_uncond + guidance_scale * (v_cond - v_uncond)
    x0 = scheduler.predict_x0(v, timestep, latents)
    if index in set(propagation_steps):
        if flows is None:
            raise ValueError("propagation_steps were given but no flows")
        x0 = propagate_latents(x0, flows[0].to(x0.device), flows[1].to(x0.device), fuse_scale=fuse_scale)
    return scheduler.step(v, timestep, latents, x0)


def published_to_uint8(frames: Tensor) -> Tensor:
    """``uint8((x/2 + 0.5).clamp(0, 1)·255)`` on the host, truncating as published (SPEC §7.5).

    ``frames`` is ``(1, 3, t, H, W)``; returns ``(t, H, W, 3)`` uint8 on the CPU.
    """
    x = frames[0].detach().float().cpu()
    return ((x / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous()
