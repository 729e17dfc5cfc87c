"""One run of the method over a low-res clip: noise draws, flows, denoising per spatial
tile, chunked decoding, tile blending and colour fix (paper §3, SPEC §7).

:func:`generate` yields the 4x frames a decode chunk at a time, so only low-res state
(clip, noise, latents, flows) is held for the whole video. The facade
(:class:`uav.VideoUpscaler`) loads the clip, resolves the components and writes the result.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from uav.compilation import compile_regions, decide, mark_compiled, uncompile_regions
from uav.components import Components
from uav.events import Event, EventCallback
from uav.frames import InputError
from uav.overlap import Deferred
from uav.plugin_results import CheckedScheduler, check_clip, check_flows, check_segment_plan, check_tiles
from uav.protocols import FlowEstimator, Tile, TilingStrategy
from uav.sampling.decode import decode_chunks, piece_starts
from uav.sampling.loop import denoise
from uav.sampling.recovery import Recovery
from uav.sampling.schedulers import low_res_add_noise
from uav.sampling.store import ClipStore, frame_chunks
from uav.sampling.stepcache import StepCache
from uav.sampling.tiling import blend_tiles
from uav.sampling.transfer import Pending, Transfers
from uav.settings import UpscaleSettings

__all__ = ["generate", "spatial_tiles", "state_device"]

Tensor = torch.Tensor
log = logging.getLogger("uav")


def generate(
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    low_res_scheduler: Any,
    lr: Tensor,
    comps: Components,
    text: Tensor,
    *,
    callback: EventCallback | None = None,
    latents: Tensor | None = None,
    low_res_noise: Tensor | None = None,
    flows: tuple[Tensor, Tensor] | None = None,
    trace: dict[str, Tensor] | None = None,
    stage: Callable[[str], None] | None = None,
    store: ClipStore | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """Upscale the low-res clip ``lr`` ``(1, 3, T, h, w)`` in [-1, 1].

    Yields ``(first frame, frames (1, 3, t, 4h, 4w))`` per decode chunk, on the CPU.
    ``text`` holds the (negative, positive) prompt embeddings; ``latents``,
    ``low_res_noise`` and ``flows`` replace the seeded draws and the flow estimate (the
    parity fixtures record them); ``trace`` receives per-step tensors; ``stage`` is told
    ``"decode"`` once denoising is done (a memory plan swaps the networks there);
    ``store`` holds the clip-length tensors (:class:`~uav.sampling.store.ClipStore`: RAM,
    or memory-mapped files for a long clip).
    """
    s = comps.settings
    store = store or ClipStore()
    generator = torch.Generator(device="cpu").manual_seed(s.seed if s.seed is not None else random.randrange(2**63))
    noise, x_t = _draws(lr, store, generator, low_res_noise, latents)
    flow_pair = _flow_pair(lr, comps, flows, callback, store)
    # plugins' results are checked where they arrive: one line naming the plugin, not a wrong file
    scheduler = CheckedScheduler(comps.scheduler, _label(comps, "scheduler"))
    timesteps = scheduler.set_timesteps(s.num_inference_steps)
    # 1 for DDIM; Euler-type plugin schedulers start from a slightly different scale
    sigma = float(scheduler.init_noise_sigma)
    # in place only in a streamed store's own tensor (never a caller's latents)
    x_t = x_t.mul_(sigma) if store.streamed and latents is None else x_t * sigma
    device = next(unet.parameters()).device
    run = _Run(unet, vae, scheduler, comps, lr, text, store, generator, callback, trace,
               Recovery(window_batch=s.window_batch, decode_chunk=s.decode_chunk, decode_tile=s.decode_tile,
                        notify=callback), state_device(s, device), Transfers(device),
               int(getattr(vae, "upscale_factor", 4)))
    tiles, latent_tiles = _tile_plans(run)
    plan = check_segment_plan(comps.segments.plan(lr.shape[2], s.window), lr.shape[2], _label(comps, "segments"))
    compiled = _apply_compile(unet, vae, s, device, timesteps, tiles, latent_tiles, lr.shape[2], len(plan.windows),
                              text, callback)
    tile_latents = []
    for k, tile in enumerate(tiles):
        out = _denoise_tile(run, k, tiles, latent_tiles, x_t, noise, low_res_scheduler, flow_pair, plan, timesteps)
        # keep finished tiles off the accelerator while the others denoise
        tile_latents.append(out.cpu() if device.type != "cpu" and len(tiles) > 1 else out)
        if compiled is not None and k == 0:
            mark_compiled(unet, device, compiled)
    if stage is not None:
        stage("decode")
    yield from _decoded(run, tile_latents, tiles)


@dataclass(frozen=True)
class _Run:
    """What every part of one :func:`generate` run shares."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: CheckedScheduler
    comps: Components
    lr: Tensor
    text: Tensor
    store: ClipStore
    generator: torch.Generator
    callback: EventCallback | None
    trace: dict[str, Tensor] | None
    recovery: Recovery
    state: torch.device
    xfer: Transfers
    scale: int

    @property
    def settings(self) -> UpscaleSettings:
        return self.comps.settings


def _draws(lr: Tensor, store: ClipStore, generator: torch.Generator, low_res_noise: Tensor | None,
           latents: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(low-res noise, x_T)``: the caller's, or drawn in the published order (noise first)."""
    _, _, num_frames, h, w = lr.shape
    noise = _given("low_res_noise", low_res_noise, (1, 3, num_frames, h, w)) if low_res_noise is not None \
        else store.randn(tuple(lr.shape), generator)
    x_t = _given("latents", latents, (1, 4, num_frames, h, w)) if latents is not None \
        else store.randn((1, 4, num_frames, h, w), generator)
    return noise, x_t


def _flow_pair(lr: Tensor, comps: Components, flows: Any, callback: EventCallback | None,
               store: ClipStore) -> Deferred | tuple[Tensor, Tensor] | None:
    """The caller's ``(forward, backward)`` flows, or the estimate on a worker thread; ``None``
    without propagation."""
    _, _, num_frames, h, w = lr.shape
    if not comps.settings.propagation_steps or num_frames <= 1:
        return None
    if flows is not None:
        if not isinstance(flows, (tuple, list)) or len(flows) != 2:
            raise InputError(f"flows: expected a (forward, backward) pair of tensors (1, 2, {num_frames - 1}, {h}, "
                             f"{w}), got {type(flows).__name__}" + (f" of {len(flows)}" if isinstance(
                                 flows, (tuple, list)) else ""))
        return (_given("flows[0]", flows[0], (1, 2, num_frames - 1, h, w)),
                _given("flows[1]", flows[1], (1, 2, num_frames - 1, h, w)))
    assert comps.flow is not None  # check_inputs builds it whenever propagation is asked for
    # on a worker thread: the first propagation step is late, the U-Net need not wait for it
    estimator, who = comps.flow, _label(comps, "flow")
    return Deferred(lambda: _estimate_flows(lr, estimator(), callback, store, who), name="uav-flow")


def _tile_plans(run: _Run) -> tuple[list[Tile], list[Tile] | None]:
    """``(spatial tiles of the run, latent tiles that split each U-Net call or None)``."""
    s, (h, w) = run.settings, run.lr.shape[-2:]
    tiling = _CheckedTiling(run.comps.tiling, _label(run.comps, "tiling"))
    tiles = spatial_tiles(h, w, s, tiling, run.scale)
    if s.tile_mode == "latent" and len(tiles) > 1:
        # one run over the whole frame; the plan's tiles only split each U-Net call
        latent = tiling.plan(h, w, tile_size=s.tile_size, overlap=s.tile_overlap, scale=1)
        return spatial_tiles(h, w, s.replace(tile=False), tiling, run.scale), latent
    return tiles, None


def _denoise_tile(run: _Run, k: int, tiles: list[Tile], latent_tiles: list[Tile] | None, x_t: Tensor,
                  noise: Tensor, low_res_scheduler: Any, flow_pair: Any, plan: Any, timesteps: list[int]) -> Tensor:
    """Denoise spatial tile ``k`` over the whole schedule; out of memory at ``window_batch=1``
    restarts it with smaller latent tiles."""
    s, scheduler = run.settings, run.scheduler
    y0, y1, x0, x1 = tiles[k].region
    crop = (slice(None), slice(None), slice(None), slice(y0, y1), slice(x0, x1))
    noisy = _noised(run.lr[crop].to(run.state), noise[crop].to(run.state), s.noise_level, low_res_scheduler,
                    run.store)
    tile_flows = None if flow_pair is None else _TileFlows(flow_pair, crop, run.state)
    if k > 0:
        scheduler.set_timesteps(s.num_inference_steps)  # every tile runs the whole schedule again

    def step_cb(info: Event) -> None:
        if isinstance(flow_pair, Deferred) and flow_pair.failed():
            flow_pair.result()  # the flow worker's exception stops the run now, not at propagation
        if run.callback is not None:
            run.callback(info.with_fields(tile=k, tiles=len(tiles)))

    def denoise_with(spatial: list[Tile] | None) -> Tensor:
        with torch.no_grad():
            return denoise(
                run.unet, scheduler, x_t[crop].to(run.state), noisy, run.text, noise_level=s.noise_level,
                guidance_scale=s.guidance_scale, plan=plan, timesteps=timesteps,
                propagation_steps=s.propagation_steps if tile_flows is not None else (),
                flows=tile_flows, fuse_scale=s.fuse_scale, window_batch=s.window_batch,
                spatial_tiles=spatial, callback=step_cb, trace=run.trace if len(tiles) == 1 else None,
                generator=run.generator, recovery=run.recovery, store=run.store, transfers=run.xfer,
                step_cache=StepCache(s.step_cache_interval, run.state) if s.step_cache == "deepcache" else None,
                guidance_reuse_from=s.guidance_reuse_from,
            )

    th, tw = y1 - y0, x1 - x0
    tiling = _CheckedTiling(run.comps.tiling, _label(run.comps, "tiling"))
    return run.recovery.denoise(
        denoise_with, latent_tiles, size=(th, tw), generator=run.generator,
        start_tile=s.tile_size // 2 if latent_tiles else max(th, tw) // 2,
        plan=lambda size: tiling.plan(th, tw, tile_size=size, overlap=min(s.tile_overlap, size // 4), scale=1),
        restart=lambda: scheduler.set_timesteps(s.num_inference_steps))


def _decoded(run: _Run, tile_latents: list[Tensor], tiles: list[Tile]) -> Iterator[tuple[int, Tensor]]:
    """Decode, blend and colour-fix the tiles' latents a chunk at a time; ``(first frame, frames)``
    on the host, each chunk's copy waited for only once the next chunk is queued."""
    s, lr, (h, w) = run.settings, run.lr, run.lr.shape[-2:]
    # chunks move to the decoder's device one at a time: no clip-length tensor on it
    decoders = [decode_chunks(run.vae, z, lr[:, :, :, t.region[0]:t.region[1], t.region[2]:t.region[3]],
                              chunk=s.decode_chunk, w_lr=s.w_lr, tile=s.decode_tile, recovery=run.recovery,
                              overlap=s.decode_overlap)
                for z, t in zip(tile_latents, tiles)]
    n_chunks = len(piece_starts(lr.shape[2], s.decode_chunk, s.decode_overlap))
    waiting: tuple[int, Pending] | None = None
    for c, parts in enumerate(zip(*decoders)):
        start = parts[0][0]
        outs = [p[1] for p in parts]
        frames = outs[0] if len(tiles) == 1 else blend_tiles(outs, tiles, h * run.scale, w * run.scale)
        frames = _color_fixed(run, frames, start)
        if run.callback is not None:
            run.callback(Event.of("decode", c, n_chunks, frames=frames.shape[2]))
        if waiting is not None:
            yield waiting[0], waiting[1].wait()[0]
        waiting = (start, run.xfer.to_host(frames))
    if waiting is not None:
        yield waiting[0], waiting[1].wait()[0]


def _color_fixed(run: _Run, frames: Tensor, start: int) -> Tensor:
    """The colour fix of a blended chunk (SPEC §7.4), pulled towards its low-res frames."""
    if run.comps.color is None:
        return frames
    ref = run.lr[0, :, start:start + frames.shape[2]].permute(1, 0, 2, 3).to(frames.device)
    given = frames[0].permute(1, 0, 2, 3)
    fixed = check_clip(run.comps.color(given, ref), given, _label(run.comps, "color"))
    return fixed.permute(1, 0, 2, 3)[None].clamp(-1.0, 1.0)


def _apply_compile(unet: torch.nn.Module, vae: torch.nn.Module, s: UpscaleSettings, device: torch.device,
                   timesteps: list[int], tiles: list[Tile], latent_tiles: Any, num_frames: int, windows: int,
                   text: Tensor, callback: EventCallback | None) -> tuple[int, int, int] | None:
    """Compile the networks' blocks or run them eagerly, as ``s.compile`` decides for this clip
    (:mod:`uav.compilation`); returns the window shape compiled for, or ``None``."""
    sizes = [(t.region[1] - t.region[0], t.region[3] - t.region[2]) for t in (latent_tiles or tiles)]
    h, w = max(sizes, key=lambda hw: hw[0] * hw[1])
    window = (min(s.window, num_frames), h, w)
    calls = len(timesteps) * windows * len(sizes)
    decision = decide(s.compile, unet, device, calls=calls, window=window, guided=text.shape[0] == 2)
    log.info("torch.compile %s", decision.reason)
    if callback is not None and decision.on:  # a stage of its own only when it takes time
        callback(Event.of("compile", 0, 1, on=decision.on, reason=decision.reason))
    for net in (unet, vae):
        compile_regions(net) if decision.on else uncompile_regions(net)
    return window if decision.on else None


def state_device(s: UpscaleSettings, device: torch.device) -> torch.device:
    """Where the clip-length state (latents, noisy clip, flows) lives: on the host when
    ``offload`` (the default on CUDA), so GPU memory does not grow with the clip's length."""
    offload = s.offload if s.offload is not None else device.type == "cuda"
    return torch.device("cpu") if offload else device


def spatial_tiles(h: int, w: int, s: UpscaleSettings, strategy: TilingStrategy, scale: int) -> list[Tile]:
    """The spatial tiles of an ``h`` x ``w`` low-res frame (one whole-frame tile when
    tiling is off or the frame is under ``tile_threshold``)."""
    use = s.tile if s.tile is not None else h * w >= s.tile_threshold
    if not use:
        return [Tile((0, h, 0, w), torch.ones(h * scale, w * scale))]
    tiles = strategy.plan(h, w, tile_size=s.tile_size, overlap=s.tile_overlap, scale=scale)
    log.info("tiling %dx%d into %d tiles (%s)", w, h, len(tiles), s.tiling)
    return tiles


class _CheckedTiling:
    """A tiling strategy whose plans are checked (tiles inside the frame, every pixel covered)."""

    def __init__(self, strategy: TilingStrategy, who: str) -> None:
        self.strategy, self.who = strategy, who

    def plan(self, height: int, width: int, *, tile_size: int, overlap: int, scale: int = 4) -> list[Tile]:
        tiles = self.strategy.plan(height, width, tile_size=tile_size, overlap=overlap, scale=scale)
        return check_tiles(tiles, height, width, scale, self.who)


def _label(comps: Components, kind: str) -> str:
    return comps.labels.get(kind) or f"the {kind} component"


class _TileFlows:
    """A tile's ``(forward, backward)`` flows, cropped and moved when first used (the whole-clip
    flows may still be computing on their worker thread)."""

    def __init__(self, source: Deferred | tuple[Tensor, Tensor], crop: tuple, device: torch.device) -> None:
        self._source, self._crop, self._device = source, crop, device
        self._pair: tuple[Tensor, ...] | None = None

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Tensor:
        if self._pair is None:
            pair = self._source.result() if isinstance(self._source, Deferred) else self._source
            self._pair = tuple(f[self._crop].to(self._device) for f in pair)
        return self._pair[i]


def _estimate_flows(lr: Tensor, estimator: FlowEstimator, callback: EventCallback | None,
                    store: ClipStore, who: str = "the flow estimator") -> tuple[Tensor, Tensor]:
    if callback is not None:
        callback(Event.of("flow", 0, 1))
    size, pairs = tuple(lr.shape[-2:]), lr.shape[2] - 1
    out = store.empty((1, 2, pairs) + size), store.empty((1, 2, pairs) + size)
    # streamed: a chunk of frames (and the next one) at a time, into the store; else the whole clip at once
    for a, b in frame_chunks(pairs) if store.streamed else [(0, pairs)]:
        forward, backward = check_flows(estimator(lr[0, :, a:b + 1].permute(1, 0, 2, 3), size=size),
                                        (1, 2, b - a) + size, who)
        out[0][:, :, a:b], out[1][:, :, a:b] = forward.float().cpu(), backward.float().cpu()
    if callback is not None:
        callback(Event.of("flow", 1, 1))
    return out


def _noised(lr: Tensor, noise: Tensor, level: int, scheduler: Any, store: ClipStore) -> Tensor:
    """The low-res augmentation (elementwise): into the store a chunk of frames at a time when streamed."""
    if not store.streamed:
        return low_res_add_noise(lr, noise, level, scheduler)
    out = store.like(lr)
    for a, b in frame_chunks(lr.shape[2]):
        out[:, :, a:b] = low_res_add_noise(lr[:, :, a:b], noise[:, :, a:b], level, scheduler)
    return out


def _given(name: str, t: Any, shape: tuple[int, ...]) -> Tensor:
    if torch.is_tensor(t) and t.is_meta:
        raise InputError(f"{name}: a meta tensor has a shape but no data; pass real values")
    if not torch.is_tensor(t):
        raise InputError(f"{name}: expected a tensor of shape {shape}, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise InputError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return t.float().cpu()
