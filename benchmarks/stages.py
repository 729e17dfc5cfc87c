"""Timers of each stage, for the published path and the library path.

Denoising is timed per step (the U-Net part with CUDA events), propagation per call
and decoding per frame; :mod:`benchmarks.measure` scales them to the clip. Code paths
marked "benchmark-only" here are not yet what the library runs (see
:mod:`benchmarks.library`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from benchmarks.clocks import GpuMemory, UNetClock, cudnn_benchmark, sync, timed_repeats
from benchmarks.library import load_uav
from uav.models.published import published_modules
from benchmarks.workloads import Inputs, Settings, ddim_config

Tensor = torch.Tensor

__all__ = [
    "count_window_flops", "window_call", "choose_layout", "set_conv_layout", "no_quadratic_attention",
    "DenoiseTiming", "time_baseline_denoise", "time_library_denoise", "time_propagation", "DecodeTiming",
    "time_decode", "build_fast_scheduler", "clip_stages",
]


def count_window_flops(unet: torch.nn.Module, inputs: Inputs, window: int) -> int:
    """FLOPs of one CFG U-Net call on one ``window``-frame window (torch.utils.flop_counter)."""
    from benchmarks.dispatch import flop_counter

    dtype = next(unet.parameters()).dtype
    w = min(window, inputs.x_t.shape[2])
    sample = torch.cat([inputs.x_t[:, :, :w]] * 2).to(dtype)
    lr = torch.cat([inputs.noisy_lr[:, :, :w]] * 2).to(dtype)
    labels = torch.full((2,), 120, dtype=torch.long, device=sample.device)
    with torch.no_grad(), flop_counter() as counter:
        unet(sample, torch.tensor(500, device=sample.device), lr, encoder_hidden_states=inputs.text.to(dtype),
             class_labels=labels)
    return int(counter.get_total_flops())


def window_call(unet: torch.nn.Module, inputs: Inputs, window: int) -> Callable[[], Tensor]:
    """A closure running one CFG window through ``unet`` (for the layout test)."""
    dtype = next(unet.parameters()).dtype
    w = min(window, inputs.x_t.shape[2])
    sample = torch.cat([inputs.x_t[:, :, :w]] * 2).to(dtype)
    lr = torch.cat([inputs.noisy_lr[:, :, :w]] * 2).to(dtype)
    text = inputs.text.to(dtype)
    labels = torch.full((2,), 120, dtype=torch.long, device=sample.device)
    t = torch.tensor(500, device=sample.device)

    def run() -> Tensor:
        with torch.no_grad():
            return unet(sample, t, lr, encoder_hidden_states=text, class_labels=labels).sample

    return run


def choose_layout(unet: torch.nn.Module, inputs: Inputs, device: torch.device, window: int) -> dict[str, Any]:
    """Time one window in each activation layout the U-Net offers (``UNetVideoModel.set_layout``:
    ``frames``, ``ncdhw``, ``channels_last``; on CUDA also ``frames`` with cuDNN autotuning);
    apply the fastest and return the times. The library's default layout is ``frames``: this
    measurement is what would change it."""
    variants = [("frames", "frames", False), ("ncdhw", "ncdhw", False), ("channels_last", "channels_last", False)]
    if device.type == "cuda":
        variants.append(("frames+cudnn_benchmark", "frames", True))
    times: dict[str, float] = {}
    run = window_call(unet, inputs, window)
    for name, layout, bench in variants:
        unet.set_layout(layout)
        with cudnn_benchmark(bench):
            times[name], _ = timed_repeats(device, run, warmup=1, timed=1)
    chosen = min(times, key=times.__getitem__)
    spec = {n: (lay, b) for n, lay, b in variants}[chosen]
    unet.set_layout(spec[0])
    return {"window_s": times, "chosen": chosen, "layout": spec[0], "channels_last": spec[0] == "channels_last",
            "cudnn_benchmark": spec[1]}


def set_conv_layout(model: torch.nn.Module, channels_last: bool) -> None:
    """Store every 2-D convolution weight channels-last (or back to contiguous).

    ``Module.to(memory_format=...)`` refuses the U-Net's 5-D Conv3d weights, so only
    the per-frame (``Conv2d``) weights are converted; PyTorch then runs those
    convolutions NHWC.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)


@contextlib.contextmanager
def no_quadratic_attention(device: torch.device) -> Iterator[None]:
    """Keep SDPA off its math fallback, whose ``(h·w)²`` scores would not fit at 1080p."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        yield


@dataclass
class DenoiseTiming:
    step_s: float  # wall seconds per step
    unet_s: float  # U-Net seconds per step (CUDA events)
    peak_delta: int | None
    finite: bool
    unet_calls_per_step: int
    #: the latents after the warm-up and timed steps, float32 on the host (for max |Δ|)
    latents: Tensor | None = None


def time_baseline_denoise(unet: torch.nn.Module, inputs: Inputs, settings: Settings,
                          device: torch.device, steps_timed: int) -> DenoiseTiming:
    """The published loop: fp16 latents, one call per window call, the published module structure
    (:mod:`uav.models.published`), explicit attention."""
    uav = load_uav()
    bl = uav["baseline"]
    dtype = next(unet.parameters()).dtype
    sched = uav["OfficialDDIM"](ddim_config())
    timesteps = [int(t) for t in sched.set_timesteps(settings.steps)]
    plan = uav["official_segment_plan"](inputs.x_t.shape[2], settings.window)
    state = {"lat": inputs.x_t.to(dtype), "i": 0}
    lr_in = torch.cat([inputs.noisy_lr] * 2).to(dtype)
    text = inputs.text.to(dtype)

    def step() -> None:
        i = state["i"]
        state["lat"] = bl.published_step(unet, sched, state["lat"], lr_in, text, index=i, timestep=timesteps[i],
                                         calls=plan.calls, noise_level=settings.noise_level,
                                         guidance_scale=settings.guidance)
        state["i"] = i + 1

    clock = UNetClock(unet, device)
    mem = GpuMemory(device)
    mem.start()
    try:
        with torch.no_grad(), published_modules(), bl.eager_attention(), cudnn_benchmark(False):
            step_s, unet_s = timed_repeats(device, step, warmup=1, timed=steps_timed, clock=clock)
    finally:
        clock.remove()
    return DenoiseTiming(step_s, unet_s or 0.0, mem.peak_delta(), bool(torch.isfinite(state["lat"]).all()),
                         len(plan.calls), state["lat"].float().cpu())


def time_library_denoise(unet: torch.nn.Module, scheduler: Any, inputs: Inputs, plan: Any, settings: Settings,
                         device: torch.device, steps_timed: int, *, guided: bool = True, cudnn_bench: bool = False,
                         warmup: int = 1, window_batch: int | None = None,
                         state_device: torch.device | None = None, recovery: bool = False) -> DenoiseTiming:
    """``uav.sampling.loop.denoise`` one step at a time (float32 latents, as the library keeps them).

    ``state_device``: where the clip-length latents and noisy clip live (the library's
    offload keeps them on the host on CUDA); ``recovery``: run with the library's
    out-of-memory and fp16 NaN/inf policy (:class:`uav.sampling.recovery.Recovery`), as
    :func:`uav.pipeline.generate` does.
    """
    uav = load_uav()
    timesteps = [int(t) for t in scheduler.timesteps]
    text = inputs.text if guided else inputs.text[1:]
    wb = window_batch or len(plan.windows)
    where = state_device or inputs.x_t.device
    noisy = inputs.noisy_lr.to(where)
    state = {"lat": inputs.x_t.to(where, copy=True), "i": getattr(scheduler, "_bench_index", 0)}
    policy = uav["Recovery"](window_batch=wb, decode_chunk=settings.decode_chunk, decode_tile=None) \
        if recovery else None

    def step() -> None:
        i = state["i"]
        state["lat"] = uav["denoise"](unet, scheduler, state["lat"], noisy, text,
                                      noise_level=settings.noise_level, guidance_scale=settings.guidance, plan=plan,
                                      timesteps=[timesteps[i]], window_batch=wb, recovery=policy)
        state["i"] = i + 1

    clock = UNetClock(unet, device)
    mem = GpuMemory(device)
    mem.start()
    try:
        with torch.no_grad(), cudnn_benchmark(cudnn_bench):
            step_s, unet_s = timed_repeats(device, step, warmup=warmup, timed=steps_timed, clock=clock)
    finally:
        clock.remove()
    # stateful schedulers (DPM-Solver) must see their steps in order across calls
    scheduler._bench_index = state["i"]
    calls = math.ceil(len(plan.windows) / (policy.window_batch if policy else wb))
    return DenoiseTiming(step_s, unet_s or 0.0, mem.peak_delta(), bool(torch.isfinite(state["lat"]).all()), calls,
                         state["lat"].float().cpu())


def time_propagation(inputs: Inputs, settings: Settings, device: torch.device,
                     state_device: torch.device | None = None) -> float:
    """Seconds of one ``propagate_latents`` call on the whole clip (float32 x0, as in the loop),
    where the clip-length state lives (``state_device``, default: the inputs' device)."""
    uav = load_uav()
    where = state_device or inputs.x_t.device
    x0 = inputs.x_t.float().to(where)
    ff, fb = (f.to(where) for f in inputs.flows)
    dt, _ = timed_repeats(device, lambda: uav["propagate_latents"](x0, ff, fb, fuse_scale=settings.fuse_scale),
                          warmup=1, timed=2)
    return dt


@dataclass
class DecodeTiming:
    decode_s_per_frame: float
    io_s_per_frame: float
    frames_timed: int
    peak_delta: int | None
    finite: bool
    note: str = ""


def time_decode(vae: torch.nn.Module, inputs: Inputs, settings: Settings, device: torch.device, *,
                published: bool, frames_limit: int, cudnn_bench: bool = False, library: bool = False) -> DecodeTiming:
    """Decode 3-frame chunks (the first one untimed) and hand them to the host as uint8 frames.

    ``published``: after each chunk a float copy goes to the host and is converted there,
    truncating (as the published script); decode and I/O are timed apart. ``library``:
    what :func:`uav.pipeline.generate` and the writer path do, timed the same way: the
    chunk copied to the host (``.cpu()``), then :func:`uav.frames.to_uint8`. Otherwise the
    conversion runs on the GPU and the uint8 frames are copied into pinned buffers on a
    side stream, overlapping the next chunk's decode; the whole loop is timed and the
    I/O share is the wait for the last copy, the part not hidden behind decode. The VAE's
    attention is kept off SDPA's quadratic-memory fallback when a fused kernel takes it.

    Benchmark-only (issue 11): the GPU conversion, the pinned side-stream copies and
    the SDPA restriction are not what the library's writer path does yet.
    """
    if library:
        return _decode_pass(vae, inputs, settings, device, published=True, frames_limit=frames_limit,
                            cudnn_bench=cudnn_bench, guarded=False, library=True)
    if published:  # the published module structure, as the baseline's denoising
        with published_modules():
            return _decode_pass(vae, inputs, settings, device, published=True, frames_limit=frames_limit,
                                cudnn_bench=cudnn_bench, guarded=False)
    try:
        return _decode_pass(vae, inputs, settings, device, published=published, frames_limit=frames_limit,
                            cudnn_bench=cudnn_bench, guarded=not published)
    except RuntimeError as exc:
        if published or "kernel" not in str(exc).lower():
            raise
        timing = _decode_pass(vae, inputs, settings, device, published=published, frames_limit=frames_limit,
                              cudnn_bench=cudnn_bench, guarded=False)
        timing.note += f"; no fused SDPA kernel for the VAE attention ({exc}), default dispatch used"
        return timing


def _decode_pass(vae: torch.nn.Module, inputs: Inputs, settings: Settings, device: torch.device, *,
                 published: bool, frames_limit: int, cudnn_bench: bool, guarded: bool,
                 library: bool = False) -> DecodeTiming:
    uav = load_uav()
    # same shape and scale as final latents; the cost of the decoder does not depend on values
    chunks = uav["decode_chunks"](vae, inputs.x_t, inputs.lr, chunk=settings.decode_chunk)
    cuda = device.type == "cuda"
    copy_stream = torch.cuda.Stream(device) if cuda and not published else None
    slots: list[tuple[Tensor, Tensor, Any] | None] = [None, None]  # (pinned, source, done event)
    io_s = decode_s = 0.0
    timed_frames = 0
    n_chunk = 0
    last: Tensor | None = None
    finite = True
    mem = GpuMemory(device)
    guard = no_quadratic_attention(device) if guarded else contextlib.nullcontext()

    def to_host(frames: Tensor) -> None:
        if library:  # decode_chunks' output, handed over as uav.pipeline.generate does, then converted
            uav["to_uint8"](uav["Transfers"](device).to_host(frames).wait()[0])
            return
        if published:
            uav["baseline"].published_to_uint8(frames)
            return
        u8 = ((frames[0] + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous()
        if copy_stream is None:
            return
        k = n_chunk % 2
        slot = slots[k]
        if slot is not None:
            slot[2].synchronize()  # the copy that last used this pinned buffer is finished
        pinned = slot[0] if slot is not None and slot[0].shape == u8.shape else \
            torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True)
        ready = torch.cuda.Event()
        ready.record()
        done = torch.cuda.Event()
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(ready)
            pinned.copy_(u8, non_blocking=True)
            done.record(copy_stream)
        slots[k] = (pinned, u8, done)  # holding u8 keeps its memory from reuse until the copy is done

    mem.start()
    with torch.no_grad(), cudnn_benchmark(cudnn_bench), guard:
        # warm-up chunk: kernels load and cuDNN picks algorithms
        _, frames = next(chunks)
        to_host(frames)
        finite = bool(torch.isfinite(frames).all())
        n_chunk += 1
        sync(device)
        if copy_stream is not None:
            copy_stream.synchronize()
        loop_start = time.perf_counter()
        for _, frames in chunks:
            if published:
                sync(device)
                decode_s += time.perf_counter() - loop_start
                t1 = time.perf_counter()
                to_host(frames)
                io_s += time.perf_counter() - t1
                loop_start = time.perf_counter()
            else:
                to_host(frames)
            last = frames
            timed_frames += frames.shape[2]
            n_chunk += 1
            if frames_limit and timed_frames >= frames_limit:
                break
        if not published:
            # I/O overlaps decode; only the last copy's drain is left as I/O time
            sync(device)
            t1 = time.perf_counter()
            if copy_stream is not None:
                copy_stream.synchronize()
            io_s = time.perf_counter() - t1
            decode_s = t1 - loop_start
    if timed_frames == 0 or last is None:
        raise RuntimeError("decode: no chunk left to time after the warm-up chunk (clip too short)")
    finite = finite and bool(torch.isfinite(last).all())
    note = "library path: .cpu() then uav.frames.to_uint8" if library else \
        "" if published else "uint8 conversion on the GPU, copies to pinned memory on a side stream"
    return DecodeTiming(decode_s / timed_frames, io_s / timed_frames, timed_frames, mem.peak_delta(), finite, note)


def build_fast_scheduler(steps: int) -> tuple[Any, str]:
    """DPM-Solver++ for the fast preset: through the ``uav_schedulers`` adapter when importable,
    else diffusers' ``DPMSolverMultistepScheduler`` behind a minimal x0 / step wrapper."""
    cfg = ddim_config()
    try:
        from uav_schedulers.adapter import DiffusersSchedulerAdapter, build_diffusers_scheduler

        sched = DiffusersSchedulerAdapter(
            build_diffusers_scheduler("DPMSolverMultistepScheduler", cfg, algorithm_type="dpmsolver++"))
        how = "uav_schedulers.adapter (registry name dpmsolver++)"
    except Exception as exc:  # noqa: BLE001 - the plugin may be mid-change; the timing does not depend on it
        from diffusers import DPMSolverMultistepScheduler

        accepted = {"beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type",
                    "steps_offset", "trained_betas"}
        sched = _DirectSolver(DPMSolverMultistepScheduler.from_config(
            {k: v for k, v in cfg.items() if k in accepted}, algorithm_type="dpmsolver++"))
        how = f"diffusers DPMSolverMultistepScheduler directly (adapter unavailable: {type(exc).__name__}: {exc})"
    sched.set_timesteps(steps)
    return sched, how


class _DirectSolver:
    """Enough of :class:`uav.protocols.DenoisingScheduler` around a diffusers solver for timing."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.float()

    @property
    def timesteps(self) -> Tensor:
        return self.scheduler.timesteps

    def set_timesteps(self, n: int, device: Any = None) -> Tensor:
        self.scheduler.set_timesteps(n, device=device)
        return self.timesteps

    def predict_x0(self, v: Tensor, t: int, sample: Tensor) -> Tensor:
        a = float(self.alphas_cumprod[int(t)])
        return a**0.5 * sample - (1 - a) ** 0.5 * v

    def step(self, v: Tensor, t: int, sample: Tensor, x0: Tensor) -> Tensor:
        return self.scheduler.step(v, t, sample).prev_sample


def clip_stages(t: DenoiseTiming, d: DecodeTiming, *, frames: int, steps: int, flow_s: float | None,
                prop_s: float | None, n_prop: int) -> dict[str, float | None]:
    """Per-stage seconds for the whole clip from per-step, per-call and per-frame timings."""
    return {"flow": flow_s, "unet": t.unet_s * steps, "loop_other": (t.step_s - t.unet_s) * steps,
            "propagation": (prop_s or 0.0) * n_prop, "decode": d.decode_s_per_frame * frames,
            "io": d.io_s_per_frame * frames}


def time_fast_denoise(unet: torch.nn.Module, inputs: Inputs, plan: Any, settings: Settings, device: torch.device,
                      state_device: torch.device) -> tuple[DenoiseTiming, str]:
    """The library's ``fast`` preset (``UpscaleSettings(preset="fast")``): its scheduler from the
    registry, DeepCache step caching and guidance reuse, propagation at ``fast_propagation_steps``.

    Its steps differ (full / cached, guided / not), so every step is timed: a whole run after a
    two-step warm-up. ``step_s`` / ``unet_s`` are per step; propagation is inside ``step_s``.
    """
    uav = load_uav()
    from uav.registry import default_registry

    fast = uav["UpscaleSettings"](preset="fast")
    noisy = inputs.noisy_lr.to(state_device)
    flows = tuple(f.to(state_device) for f in inputs.flows)

    def run(steps: int) -> Tensor:
        sched = default_registry().get("scheduler", fast.scheduler, config=ddim_config())
        timesteps = [int(t) for t in sched.set_timesteps(fast.num_inference_steps)]
        return uav["denoise"](
            unet, sched, inputs.x_t.to(state_device, copy=True), noisy, inputs.text, noise_level=settings.noise_level,
            guidance_scale=settings.guidance, plan=plan, timesteps=timesteps[:steps],
            propagation_steps=[p for p in settings.fast_propagation_steps if p < steps], flows=flows,
            window_batch=fast.window_batch, recovery=uav["Recovery"](window_batch=fast.window_batch),
            step_cache=uav["StepCache"](fast.step_cache_interval, state_device),
            guidance_reuse_from=fast.guidance_reuse_from)

    clock = UNetClock(unet, device)
    mem = GpuMemory(device)
    mem.start()
    try:
        with torch.no_grad():
            run(2)
            sync(device)
            clock.reset()
            t0 = time.perf_counter()
            latents = run(fast.num_inference_steps)
            sync(device)
            total = time.perf_counter() - t0
    finally:
        clock.remove()
    n = fast.num_inference_steps
    how = (f"UpscaleSettings(preset='fast'): {fast.scheduler} {n} steps, guidance reused from step "
           f"{fast.guidance_reuse_from}, DeepCache every {fast.step_cache_interval} steps")
    return DenoiseTiming(total / n, (clock.total_s() or 0.0) / n, mem.peak_delta(), bool(torch.isfinite(latents).all()),
                         len(plan.windows), latents.float().cpu()), how
