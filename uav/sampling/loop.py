"""The denoising loop (paper §3, SPEC §6 step 5), as one plain function with a callback.

Per step: run the U-Net on every temporal window (CFG batch ``[uncond, cond]``), merge
the window predictions with the segment plan's weights, apply guidance, predict x0,
optionally propagate x0 along the optical flow, and step from x0.

No step makes the host wait for the accelerator (issue 21): window groups are pipelined
one deep. Group *k+1*'s inputs are copied in (pinned, side stream) and its U-Net call
queued before group *k*'s prediction, copied out without blocking, is merged on the
host, and the fp16 NaN/inf check of each call travels with its prediction as a device
flag instead of being read back per call (:mod:`uav.sampling.transfer`). The opt-in
``fast`` strategies (step caching, guidance reuse) live in :mod:`uav.sampling.stepcache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, Sequence

import torch

from uav.events import Event
from uav.protocols import DenoisingScheduler, SegmentPlan, Tile
from uav.sampling.propagation import propagate_latents
from uav.sampling.recovery import OUT_OF_MEMORY, Recovery
from uav.sampling.stepcache import StepCache
from uav.sampling.store import ClipStore
from uav.sampling.streamed import finish_step
from uav.sampling.transfer import Pending, Transfers

Tensor = torch.Tensor
StepCallback = Callable[[Event], None]


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
    step_cache: StepCache | None = None,
    guidance_reuse_from: int | None = None,
    transfers: Transfers | None = None,
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
            call's output is checked for NaN/inf (a device flag read with its prediction,
            no sync of its own) and a non-finite one recomputed in bf16/fp32. ``None``: no
            checks, errors propagate.
        step_cache: DeepCache state (:class:`~uav.sampling.stepcache.StepCache`), opt-in;
            not used with ``spatial_tiles``.
        guidance_reuse_from: from this step on, only the conditional half runs and the
            last guidance difference is reused (opt-in, see :mod:`uav.sampling.stepcache`).
        transfers: the run's host <-> device copier (default: one for the U-Net's device).
        store: where the clip-length buffers live (:class:`~uav.sampling.store.ClipStore`);
            a streamed store with an elementwise scheduler finishes each step a chunk of
            frames at a time (:mod:`uav.sampling.streamed`: the same numbers, RAM bounded).
    """
    cfg = text_embeddings.shape[0] == 2
    param = next(unet.parameters())
    # The clip-length state (latents, low-res clip, merged prediction, x0) lives on the
    # device the caller put `latents` on; only one group of windows at a time visits the
    # U-Net's device. With CPU state and a CUDA U-Net, GPU memory does not grow with T.
    state_device = latents.device
    low_res = low_res.to(state_device)
    text = text_embeddings.to(device=param.device, dtype=param.dtype)
    # per window (a long clip's plan keeps its weights in a band, not a dense matrix)
    weights = [plan.window_weights(k).to(device=state_device, dtype=torch.float32).reshape(1, 1, -1, 1, 1)
               for k in range(len(plan.windows))]
    cache = None if spatial_tiles else step_cache
    prop = set(int(s) for s in propagation_steps)
    if prop and flows is None:
        raise ValueError("propagation_steps were given but no flows: pass flows or a flow estimator")
    streamed = store is not None and store.streamed and trace is None and state_device.type == "cpu" \
        and getattr(scheduler, "elementwise", False) and guidance_reuse_from is None
    model = _MergedModel(unet, low_res, text, noise_level, plan.windows, weights, spatial_tiles, recovery,
                         transfers or Transfers(param.device), cache, window_batch, store if streamed else None)
    delta: Tensor | None = None  # the last guidance difference (guidance reuse)
    for i, t in enumerate(timesteps):
        t_int = int(t)
        _record(trace, i, latents_in=latents)
        guided = cfg and (guidance_reuse_from is None or i < guidance_reuse_from or delta is None)
        v = model(latents, t_int, guided=guided, full=cache is None or cache.full_step(i))
        step_flows = flows if i in prop else None
        if model.store is not None:  # a chunk of frames at a time, the same numbers
            latents, x0 = finish_step(model.store, scheduler, v, t_int, latents, guidance_scale if cfg else None,
                                      step_flows, fuse_scale)
        else:
            v, delta = _guide(v, guided, cfg, guidance_scale, delta, keep=guidance_reuse_from is not None)
            latents, x0 = sample_step(scheduler, v.to(latents.dtype), t_int, latents, step_flows, fuse_scale,
                                      generator, trace, i)
        del v
        if callback is not None:
            callback(Event.of("denoise", i, len(timesteps), timestep=t_int, latents=latents, x0=x0))
    return latents


def sample_step(scheduler: DenoisingScheduler, v: Tensor, t: int, latents: Tensor, flows: Any, fuse_scale: float,
                generator: torch.Generator | None, trace: dict[str, Tensor] | None = None,
                i: int = 0) -> tuple[Tensor, Tensor]:
    """One step of the published sampler from the guided prediction ``v``: x0, propagated
    along ``flows`` when given (paper §3.3), then the scheduler's step from x0.
    Returns ``(latents, x0 used)``."""
    x0 = scheduler.predict_x0(v, t, latents)
    _record(trace, i, timestep=torch.tensor([t]), noise_pred_guided=v, x0=x0)
    if flows is not None:
        x0 = propagate_latents(x0, flows[0].to(x0), flows[1].to(x0), fuse_scale=fuse_scale)
    _record(trace, i, x0_used=x0)
    latents = _step(scheduler, v, t, latents, x0, generator)
    _record(trace, i, latents_out=latents)
    return latents, x0


def _record(trace: dict[str, Tensor] | None, i: int, **tensors: Tensor) -> None:
    """Copies of step ``i``'s tensors into ``trace``, named as in the parity fixture."""
    if trace is not None:
        for name, tensor in tensors.items():
            trace[f"step{i}_{name}"] = tensor.detach().clone()


@dataclass(frozen=True)
class _MergedModel:
    """The model call of a step, wrapped: every window through the U-Net (groups pipelined
    one deep, out-of-memory and non-finite recovery, latent tiles, DeepCache) and merged
    with the segment plan's weights on the state device (in ``store`` when streamed)."""

    unet: torch.nn.Module
    low_res: Tensor
    text: Tensor
    noise_level: int
    windows: Sequence[tuple[int, int]]
    weights: list[Tensor]
    tiles: Sequence[Tile] | None
    recovery: Recovery | None
    xfer: Transfers
    cache: StepCache | None
    window_batch: int
    store: ClipStore | None

    def __call__(self, latents: Tensor, t: int, *, guided: bool, full: bool) -> Tensor:
        calls = _WindowCalls(self, latents, t, guided=guided, full=full)
        shape = (2 if guided else 1,) + tuple(latents.shape[1:])
        v = self.store.zeros(shape) if self.store is not None else \
            torch.zeros(shape, dtype=torch.float32, device=latents.device)
        for k, (s, e), pred in calls.predictions():
            v[:, :, s:e].add_(pred.to(device=latents.device, dtype=torch.float32) * self.weights[k])
        return v


def _guide(v: Tensor, guided: bool, cfg: bool, scale: float, delta: Tensor | None,
           keep: bool) -> tuple[Tensor, Tensor | None]:
    """Classifier-free guidance of the merged prediction ``v``; ``(guided v, guidance difference)``."""
    if guided:
        v_uncond, v_cond = v.chunk(2)
        diff = v_cond - v_uncond
        return v_uncond + scale * diff, (diff if keep else None)
    if cfg:  # guidance reuse: only the conditional half ran
        return v + (scale - 1.0) * delta, delta
    return v, delta


class _WindowCalls:
    """One step's U-Net calls over the windows, pipelined one group deep (see the module docstring)."""

    def __init__(self, run: _MergedModel, latents: Tensor, t: int, *, guided: bool, full: bool) -> None:
        self.run, self.latents, self.t, self.guided, self.full = run, latents, t, guided, full
        self.windows, self.recovery, self.xfer, self.cache = run.windows, run.recovery, run.xfer, run.cache
        # the text rows of this step's calls: [negative, positive] when guided, else the last
        self.text = run.text if guided else run.text[-1:]
        self._ahead: tuple[tuple[int, ...], tuple[Tensor, Tensor, Tensor | None]] | None = None

    def predictions(self) -> Iterator[tuple[int, tuple[int, int], Tensor]]:
        """Yield ``(k, window, prediction on the state device)`` with the CFG rows ``[uncond, cond]``."""
        order = list(range(len(self.windows)))
        pending: tuple[list[int], Pending] | None = None
        while order:
            group = self._group(order)
            rest = [k for k in order if k not in group]
            try:
                launched = self._launch(group, self._group(rest) if rest else None)
            except OUT_OF_MEMORY:
                if self.recovery is None or len(group) == 1:
                    raise  # the caller's policy takes over (latent tiles)
                self._ahead = None
                self.recovery.shrink_window_batch(len(group))
                continue
            order = rest
            if pending is not None:
                yield from self._resolve(pending)
            pending = launched
        if pending is not None:
            yield from self._resolve(pending)

    def _group(self, order: list[int]) -> list[int]:
        batch = self.recovery.window_batch if self.recovery is not None else self.run.window_batch
        length = self.windows[order[0]][1] - self.windows[order[0]][0]
        return [k for k in order if self.windows[k][1] - self.windows[k][0] == length][:batch]

    def _inputs(self, group: list[int]) -> tuple[Tensor, Tensor, Tensor | None]:
        """The group's latents, noised low-res clip and kept deep feature, on the U-Net's device."""
        dtype = next(self.run.unet.parameters()).dtype

        def take(x: Tensor) -> Tensor:
            return self.xfer.to_device(torch.cat([x[:, :, self.windows[k][0]:self.windows[k][1]] for k in group]),
                                       dtype)

        feature = None
        if self.cache is not None and not self.full:
            kept = self.cache.feature(tuple(group), self.guided)
            feature = None if kept is None else self.xfer.to_device(kept, dtype)
        return take(self.latents), take(self.run.low_res), feature

    def _launch(self, group: list[int], upcoming: list[int] | None) -> tuple[list[int], Pending]:
        if self._ahead is not None and self._ahead[0] == tuple(group):
            inputs = self._ahead[1]
        else:
            inputs = self._inputs(group)
        self._ahead = None
        out, feature = self._call(self.run.unet, group, *inputs)
        if upcoming is not None:  # its copies overlap this call on the GPU
            self._ahead = (tuple(upcoming), self._inputs(upcoming))
        dtype = next(self.run.unet.parameters()).dtype
        flag = torch.isfinite(out).all() if self.recovery is not None and self.recovery.checks(dtype) else None
        if self.latents.device.type == "cpu":
            return group, self.xfer.to_host(out, feature, flag)
        # the clip state is on the device too: only the flag travels to the host
        flag_copy = self.xfer.to_host(flag)
        return group, Pending((out, feature, flag_copy.tensors[0]), flag_copy.event)

    def _call(self, net: torch.nn.Module, group: list[int], sample: Tensor, cond: Tensor,
              feature: Tensor | None) -> tuple[Tensor, Tensor | None]:
        dtype = next(net.parameters()).dtype
        sample, cond = sample.to(dtype), cond.to(dtype)
        if self.guided:  # window-major batch, [uncond, cond] per window: both see the same inputs
            sample, cond = sample.repeat_interleave(2, dim=0), cond.repeat_interleave(2, dim=0)
        ctx = self.text.to(dtype).repeat(len(group), 1, 1)
        if self.run.tiles:
            return _tiled_call(net, sample, cond, ctx, self.t, self.run.noise_level, self.run.tiles), None
        if self.cache is None:
            return _unet_call(net, sample, cond, ctx, self.t, self.run.noise_level), None
        self.cache.calls["full" if feature is None else "cached"] += 1
        return _deep_call(net, sample, cond, ctx, self.t, self.run.noise_level,
                          deep_feature=None if feature is None else feature.to(dtype), keep=feature is None)

    def _resolve(self, launched: tuple[list[int], Pending]) -> Iterator[tuple[int, tuple[int, int], Tensor]]:
        group, pending = launched
        out, feature, flag = pending.wait()
        if flag is not None and not bool(flag):  # a host copy: reading it waits for nothing more
            assert self.recovery is not None
            wider = self.recovery.wider(self.run.unet)
            self.recovery.non_finite("U-Net output", next(wider.parameters()).dtype)
            out, feature = self._recompute(wider, group)
        if feature is not None and self.cache is not None:
            self.cache.keep(tuple(group), feature, self.guided)
        b = self.text.shape[0]
        for j, k in enumerate(group):
            yield k, self.windows[k], out[j * b:(j + 1) * b]

    def _recompute(self, net: torch.nn.Module, group: list[int]) -> tuple[Tensor, Tensor | None]:
        """The group again, in ``net`` (a wider dtype), synchronously: the rare path."""
        from uav.sampling.recovery import NonFiniteError

        out, feature = self._call(net, group, *self._inputs(group))
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteError("the U-Net gives NaN/inf even in a wider dtype: the weights or inputs are broken "
                                 "(try `uav weights verify`)")
        device = self.latents.device
        return out.to(device), None if feature is None else feature.to(device)


def _unet_call(unet: torch.nn.Module, sample: Tensor, cond: Tensor, ctx: Tensor, t: int, noise_level: int) -> Tensor:
    return _deep_call(unet, sample, cond, ctx, t, noise_level)[0]


def _deep_call(unet: torch.nn.Module, sample: Tensor, cond: Tensor, ctx: Tensor, t: int, noise_level: int, *,
               deep_feature: Tensor | None = None, keep: bool = False) -> tuple[Tensor, Tensor | None]:
    """One U-Net call: ``(prediction, kept deep feature or None)`` (see :mod:`uav.sampling.stepcache`)."""
    # built on the host: the U-Net checks the range there, without a device sync
    labels = torch.full((sample.shape[0],), noise_level, dtype=torch.long)
    extra: dict[str, Any] = {}
    if deep_feature is not None:
        extra["deep_feature"] = deep_feature
    if keep:
        extra["keep_deep_feature"] = True
    out = unet(sample, torch.tensor(t, device=sample.device), cond, encoder_hidden_states=ctx, class_labels=labels,
               **extra)
    if hasattr(out, "sample"):
        return out.sample, getattr(out, "deep_feature", None)
    return (out[0] if isinstance(out, tuple) else out), None


def _tiled_call(unet: torch.nn.Module, sample: Tensor, cond: Tensor, ctx: Tensor, t: int, noise_level: int,
                tiles: Sequence[Tile]) -> Tensor:
    """One U-Net call assembled from overlapping latent tiles (weighted mean, MultiDiffusion-style)."""
    norm = torch.zeros(sample.shape[-2:], dtype=torch.float32)
    for tile in tiles:
        y0, y1, x0, x1 = tile.region
        if tuple(tile.weight.shape) != (y1 - y0, x1 - x0):
            raise ValueError(f"latent tiling needs tile weights at latent scale (scale=1); got "
                             f"{tuple(tile.weight.shape)} for region {tile.region}")
        norm[y0:y1, x0:x1] += tile.weight.float().cpu()
    # checked on the host, where the tile weights are: no device read-back
    if bool((norm <= 0).any()):
        raise ValueError("latent tiling: the tiles do not cover every latent pixel with a positive weight")
    acc = torch.zeros(sample.shape, dtype=torch.float32, device=sample.device)
    for tile in tiles:
        y0, y1, x0, x1 = tile.region
        w = tile.weight.to(device=sample.device, dtype=torch.float32)
        pred = _unet_call(unet, sample[..., y0:y1, x0:x1], cond[..., y0:y1, x0:x1], ctx, t, noise_level)
        acc[..., y0:y1, x0:x1] += pred.float() * w
    return (acc / norm.to(sample.device)).to(sample.dtype)


def _step(scheduler: DenoisingScheduler, v: Tensor, t: int, latents: Tensor, x0: Tensor,
          generator: torch.Generator | None) -> Tensor:
    # the protocol's step takes ``generator``; without one, callers may drive a bare
    # scheduler that does not (a TypeError from a scheduler is a bug to see, not to retry)
    if generator is None:
        return scheduler.step(v, t, latents, x0)
    return scheduler.step(v, t, latents, x0, generator=generator)
