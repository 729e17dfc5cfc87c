"""The denoising loop (paper §3, SPEC §6 step 5), as one plain function with a callback.

Per step: run the U-Net on every temporal window (CFG batch ``[uncond, cond]``), merge
the window predictions with the segment plan's weights, apply guidance, predict x0,
optionally propagate x0 along the optical flow, and step from x0.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator, Sequence

import torch

from uav.protocols import DenoisingScheduler, SegmentPlan, Tile
from uav.sampling.propagation import propagate_latents
from uav.sampling.recovery import OUT_OF_MEMORY, Recovery
from uav.sampling.store import ClipStore
from uav.sampling.streamed import finish_step

Tensor = torch.Tensor
StepCallback = Callable[[dict[str, Any]], None]


def denoise(
    unet: torch.nn.Module,
    scheduler: DenoisingScheduler,
    latents: Tensor,
    low_res: Tensor,
    text_embeddings: Tensor,
    *,
    noise_level: int,
    guidance_scale: float,
    plan: SegmentPlan,
    timesteps: Sequence[int] | Tensor,
    propagation_steps: Collection[int] = (),
    flows: tuple[Tensor, Tensor] | None = None,
    fuse_scale: float = 0.5,
    window_batch: int = 1,
    spatial_tiles: Sequence[Tile] | None = None,
    callback: StepCallback | None = None,
    trace: dict[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
    recovery: Recovery | None = None,
    store: ClipStore | None = None,
) -> Tensor:
    """Run the reverse diffusion on a whole clip and return the final latents.

    Args:
        unet: the video U-Net (called as ``unet(sample, t, low_res, encoder_hidden_states=,
            class_labels=)``); runs in its own dtype.
        scheduler: a :class:`~uav.protocols.DenoisingScheduler` whose schedule is set.
        latents: initial ``x_T``, ``(1, 4, T, h, w)``.
        low_res: the *noised* low-res clip ``(1, 3, T, h, w)``.
        text_embeddings: ``(2, L, D)`` = ``[negative, positive]`` when guidance is on,
            else ``(1, L, D)``.
        noise_level: the class label of every U-Net call.
        plan: temporal windows and merge weights (see :mod:`uav.sampling.windows`).
        timesteps: the schedule, in order.
        propagation_steps: 0-based step indices at which x0 is propagated.
        flows: ``(forward, backward)`` at latent resolution, each ``(1, 2, T-1, h, w)``.
        window_batch: windows stacked into one U-Net call (GroupNorm is per batch item,
            so this changes nothing numerically).
        spatial_tiles: MultiDiffusion-style latent tiling: every window's prediction is
            assembled from overlapping spatial tiles (weights at latent scale, ``scale=1``)
            averaged by their weights, so large frames denoise in bounded memory as one
            picture, without seams.
        generator: handed to every ``scheduler.step`` (stochastic schedulers draw from it,
            so a seeded run is reproducible); ``None`` calls ``step`` without it.
        callback: called after every step with ``{"stage": "denoise", "index", "total",
            "timestep", "latents", "x0"}``.
        trace: if a dict, receives the per-step tensors named as in the parity fixture.
        recovery: a :class:`~uav.sampling.recovery.Recovery`: out of memory on a group of
            windows halves ``window_batch`` (same numbers) and retries; in fp16 each U-Net
            call's output is checked (one host sync per call) and a non-finite one recomputed
            in bf16/fp32. ``None``: no checks, errors propagate.
        store: where the clip-length buffers live (:class:`~uav.sampling.store.ClipStore`);
            a streamed store with an elementwise scheduler finishes each step a chunk of
            frames at a time (:mod:`uav.sampling.streamed`: the same numbers, RAM bounded).
    """
    cfg = text_embeddings.shape[0] == 2
    param = next(unet.parameters())
    unet_dtype, unet_device = param.dtype, param.device
    # The clip-length state (latents, low-res clip, merged prediction, x0) lives on the
    # device the caller put `latents` on; only one group of windows at a time visits the
    # U-Net's device. With CPU state and a CUDA U-Net, GPU memory does not grow with T.
    state_device = latents.device
    low_res = low_res.to(state_device)
    text = text_embeddings.to(device=unet_device, dtype=unet_dtype)
    total = len(timesteps)
    prop = set(int(s) for s in propagation_steps)
    if prop and flows is None:
        raise ValueError("propagation_steps were given but no flows: pass flows or a flow estimator")

    streamed = store is not None and store.streamed and trace is None and state_device.type == "cpu" \
        and getattr(scheduler, "elementwise", False)
    for i, t in enumerate(timesteps):
        t_int = int(t)
        if trace is not None:
            trace[f"step{i}_latents_in"] = latents.detach().clone()
        shape = (text.shape[0],) + tuple(latents.shape[1:])
        v = store.zeros(shape) if streamed and store is not None else \
            torch.zeros(shape, dtype=torch.float32, device=state_device)
        for k, (s, e), pred in _window_predictions(unet, latents, low_res, text, t_int, noise_level, plan.windows,
                                                    window_batch, spatial_tiles, cfg, recovery):
            w = plan.window_weights(k).to(device=state_device, dtype=torch.float32).reshape(1, 1, -1, 1, 1)
            v[:, :, s:e].add_(pred.to(device=state_device, dtype=torch.float32) * w)
        if streamed and store is not None:
            latents, x0 = finish_step(store, scheduler, v, t_int, latents, guidance_scale if cfg else None,
                                      flows if i in prop else None, fuse_scale)
            del v
            if callback is not None:
                callback({"stage": "denoise", "index": i, "total": total, "timestep": t_int, "latents": latents,
                          "x0": x0})
            continue
        if cfg:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + guidance_scale * (v_cond - v_uncond)
            del v_uncond, v_cond
        v = v.to(latents.dtype)
        x0 = scheduler.predict_x0(v, t_int, latents)
        if trace is not None:
            trace[f"step{i}_timestep"] = torch.tensor([t_int])
            trace[f"step{i}_noise_pred_guided"] = v.detach().clone()
            trace[f"step{i}_x0"] = x0.detach().clone()
        if i in prop:
            x0 = propagate_latents(x0, flows[0].to(x0), flows[1].to(x0), fuse_scale=fuse_scale)
        if trace is not None:
            trace[f"step{i}_x0_used"] = x0.detach().clone()
        latents = _step(scheduler, v, t_int, latents, x0, generator)
        del v
        if trace is not None:
            trace[f"step{i}_latents_out"] = latents.detach().clone()
        if callback is not None:
            callback({"stage": "denoise", "index": i, "total": total, "timestep": t_int, "latents": latents,
                      "x0": x0})
    return latents


def _window_predictions(
    unet: torch.nn.Module,
    latents: Tensor,
    low_res: Tensor,
    text: Tensor,
    t: int,
    noise_level: int,
    windows: Sequence[tuple[int, int]],
    window_batch: int,
    spatial_tiles: Sequence[Tile] | None,
    cfg: bool,
    recovery: Recovery | None = None,
) -> Iterator[tuple[int, tuple[int, int], Tensor]]:
    """Yield ``(k, window, prediction)`` with the CFG batch ``[uncond, cond]``, one U-Net
    group at a time; inputs move to the U-Net's device per group."""
    param = next(unet.parameters())
    order = list(range(len(windows)))
    while order:
        batch = recovery.window_batch if recovery is not None else window_batch
        length = windows[order[0]][1] - windows[order[0]][0]
        group = [k for k in order if windows[k][1] - windows[k][0] == length][:batch]

        def call(net: torch.nn.Module, group: list[int] = group) -> Tensor:
            dtype = next(net.parameters()).dtype

            def take(x: Tensor) -> Tensor:
                parts = [x[:, :, windows[k][0]:windows[k][1]] for k in group]
                out = torch.cat(parts).to(device=param.device, dtype=dtype)
                # CFG: both halves see the same latents and the same noised low-res clip
                return torch.cat([out, out]) if cfg else out

            sample, cond = take(latents), take(low_res)
            # batch layout: window-major, [uncond, cond] inside each window (text repeated alike)
            if cfg:
                n = len(group)
                idx = torch.arange(2 * n, device=sample.device).reshape(2, n).t().reshape(-1)
                sample, cond = sample[idx], cond[idx]
            ctx = text.to(dtype).repeat(len(group), 1, 1)
            if spatial_tiles:
                return _tiled_call(net, sample, cond, ctx, t, noise_level, spatial_tiles)
            return _unet_call(net, sample, cond, ctx, t, noise_level)

        if recovery is None:
            out = call(unet)
        else:
            failed = False
            try:
                out = recovery.finite(call, unet, where="U-Net output", network="U-Net")
            except OUT_OF_MEMORY:
                if len(group) == 1:
                    raise  # the caller's policy takes over (latent tiles)
                failed = True
            if failed:
                recovery.shrink_window_batch(len(group))
                continue
        order = [k for k in order if k not in group]
        b = text.shape[0]
        for j, k in enumerate(group):
            yield k, windows[k], out[j * b:(j + 1) * b]


def _unet_call(unet: torch.nn.Module, sample: Tensor, cond: Tensor, ctx: Tensor, t: int, noise_level: int) -> Tensor:
    # built on the host: the U-Net checks the range there, without a device sync
    labels = torch.full((sample.shape[0],), noise_level, dtype=torch.long)
    out = unet(sample, torch.tensor(t, device=sample.device), cond, encoder_hidden_states=ctx, class_labels=labels)
    return out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out


def _tiled_call(unet: torch.nn.Module, sample: Tensor, cond: Tensor, ctx: Tensor, t: int, noise_level: int,
                tiles: Sequence[Tile]) -> Tensor:
    """One U-Net call assembled from overlapping latent tiles (weighted mean, MultiDiffusion-style)."""
    acc = torch.zeros(sample.shape, dtype=torch.float32, device=sample.device)
    norm = torch.zeros(sample.shape[-2:], dtype=torch.float32, device=sample.device)
    for tile in tiles:
        y0, y1, x0, x1 = tile.region
        w = tile.weight.to(device=sample.device, dtype=torch.float32)
        if w.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"latent tiling needs tile weights at latent scale (scale=1); got {tuple(w.shape)} "
                             f"for region {tile.region}")
        pred = _unet_call(unet, sample[..., y0:y1, x0:x1], cond[..., y0:y1, x0:x1], ctx, t, noise_level)
        acc[..., y0:y1, x0:x1] += pred.float() * w
        norm[y0:y1, x0:x1] += w
    if bool((norm <= 0).any()):
        raise ValueError("latent tiling: the tiles do not cover every latent pixel with a positive weight")
    return (acc / norm).to(sample.dtype)


def _step(scheduler: DenoisingScheduler, v: Tensor, t: int, latents: Tensor, x0: Tensor,
          generator: torch.Generator | None) -> Tensor:
    # the protocol's step takes ``generator``; without one, callers may drive a bare
    # scheduler that does not (a TypeError from a scheduler is a bug to see, not to retry)
    if generator is None:
        return scheduler.step(v, t, latents, x0)
    return scheduler.step(v, t, latents, x0, generator=generator)
