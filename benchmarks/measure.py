"""One workload measured in every configuration, the smoke check and the ``torch.compile`` stage.

Configurations (each a row of the results): ``baseline`` (the published loop,
:mod:`benchmarks.baseline`), ``default`` (what the library runs with its default
settings and dtypes: the row ``speedup`` and ``peak_mem_ratio`` compare), and the named
presets ``bf16`` (bf16, every window of a step in one call, benchmark-only layout and
host copies), ``fast`` (DPM-Solver++) and ``uniform`` (the opt-in uniform windows), plus
the unbatched ablation. A failed stage is recorded and never stops the others; the
report is saved after each one.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks.clocks import (GIB, Budget, StageErrors, device_name, module_bytes, sync)
from benchmarks.library import load_uav
from benchmarks.report import Report, summarise
from benchmarks.stages import (DecodeTiming, DenoiseTiming, choose_layout, clip_stages, count_window_flops,
                               time_baseline_denoise, time_decode, time_fast_denoise, time_library_denoise,
                               time_propagation)
from benchmarks.workloads import (TINY_WORKLOADS, WORKLOADS, Dtypes, Inputs, Models, Settings, Workload, ddim_config,
                                  make_inputs, model_config)

__all__ = ["run_workload", "smoke_real_models", "run_compile"]


def run_workload(wl: Workload, models: Models, dtypes: Dtypes, settings: Settings, device: torch.device,
                 report: Report, key: str, budget: Budget, skip: Sequence[str] = (),
                 peak_tflops: float | None = None) -> dict[str, Any]:
    """Measure every configuration of one workload, saving the report after each stage."""
    uav = load_uav()
    entry: dict[str, Any] = report.data.setdefault(key, {}).setdefault(wl.name, {})
    entry.update(device=report.data.get("device"), lr=[wl.height, wl.width], out=list(wl.out_size),
                 frames=wl.frames, vae=f"vae_{wl.vae}", configs={})
    configs = entry["configs"]
    errs = StageErrors(device)
    T = wl.frames
    n_steps, n_prop = settings.steps, len(settings.propagation_steps)
    plan = uav["official_segment_plan"](T, settings.window)
    uniform = uav["uniform_segment_plan"](T, settings.window, overlap=0)
    entry["windows"] = {"official_calls": [list(c) for c in plan.calls],
                        "official_unique": [list(w) for w in plan.windows],
                        "uniform_overlap0": [list(w) for w in uniform.windows]}

    def save() -> None:
        if errs.errors:
            entry["errors"] = dict(errs.errors)
        report.save()

    inputs: Inputs | None = None
    with errs.stage("inputs+flow"):
        inputs = make_inputs(wl, device, models.unet_ours.config.cross_attention_dim, settings)
        entry["flow"] = {"seconds": inputs.flow_s, "note": inputs.flow_note}
    if inputs is None:
        save()
        return entry
    flow_s = inputs.flow_s

    flops: int | None = None
    if "flops" not in skip and not budget.exhausted():
        with errs.stage("flops"):
            flops = count_window_flops(models.unet_ours, inputs, settings.window)
            entry["unet_tflop_per_window"] = flops / 1e12
    save()

    layout = {"chosen": "nchw", "channels_last": False, "cudnn_benchmark": False, "measured": False}
    if "layout" not in skip and not budget.exhausted():
        with errs.stage("layout"):
            layout = {**choose_layout(models.unet_ours, inputs, device, settings.window), "measured": True}
    entry["layout"] = layout
    save()

    def mfu_fields(t: DenoiseTiming, windows_per_step: int) -> dict[str, Any]:
        if flops is None or not t.unet_s:
            return {}
        achieved = flops * windows_per_step / t.unet_s / 1e12
        return {"unet_tflops": achieved, "mfu": achieved / peak_tflops if peak_tflops else None}

    prop_s: float | None = None
    with errs.stage("propagation"):
        prop_s = time_propagation(inputs, settings, device)
        entry["propagation_s_per_call"] = prop_s

    per_clip = dict(frames=T, steps=n_steps, flow_s=flow_s, prop_s=prop_s, n_prop=n_prop)

    # ---------------------------------------------------------------- baseline
    base_t: DenoiseTiming | None = None
    with errs.stage("baseline.denoise"):
        base_t = time_baseline_denoise(models.unet_base, inputs, settings, device, settings.steps_timed)
    base_d: DecodeTiming | None = None
    with errs.stage("baseline.decode"):
        base_d = time_decode(models.vae_base[wl.vae], inputs, settings, device, published=True,
                             frames_limit=settings.decode_frames)
    if base_t is not None and base_d is not None:
        resident = module_bytes(models.unet_base) + module_bytes(models.vae_base[wl.vae])
        peak = _max_opt(base_t.peak_delta, base_d.peak_delta)
        configs["baseline"] = summarise(
            T, clip_stages(base_t, base_d, **per_clip), resident, peak, unet_s_per_step=base_t.unet_s,
            step_s=base_t.step_s, unet_calls_per_step=base_t.unet_calls_per_step,
            denoise_working_set_gib=_gib(base_t.peak_delta), decode_working_set_gib=_gib(base_d.peak_delta),
            finite=base_t.finite and base_d.finite, decode_frames_timed=base_d.frames_timed,
            dtypes={"unet": dtypes.unet_base, "vae": dtypes.vae_base},
            description="published structure: one U-Net call per window call, explicit attention, fp16 U-Net, "
                        "fp32 VAE, 3-frame decode chunks, host-side uint8",
            **mfu_fields(base_t, len(plan.calls)))
    save()

    # ---------------------------------------------------------------- default: what the library runs
    defaults = uav["UpscaleSettings"]()
    state = uav["state_device"](defaults, device)
    unet_default, vae_default = models.unet_default or models.unet_base, models.vae_default.get(wl.vae)
    def_t: DenoiseTiming | None = None
    compiled = _default_compile(uav, unet_default, vae_default, defaults, device, wl, plan, n_steps, entry)
    with errs.stage("default.denoise"):
        sched = uav["OfficialDDIM"](ddim_config())
        sched.set_timesteps(n_steps)
        t0 = time.perf_counter()
        def_t = time_library_denoise(unet_default, sched, inputs, plan, settings, device, settings.steps_timed,
                                     window_batch=defaults.window_batch, state_device=state, recovery=True)
        if compiled:  # the warm-up step compiled: its excess over a timed step is the compile time
            warm = time.perf_counter() - t0 - def_t.step_s * settings.steps_timed
            entry["compile_s"] = max(0.0, warm - def_t.step_s)
    with errs.stage("default.host_syncs"):
        entry["gpu_host_syncs_per_step"] = _count_gpu_syncs(uav, unet_default, inputs, plan, settings, device, state)
    def_d: DecodeTiming | None = None
    with errs.stage("default.decode"):
        def_d = time_decode(vae_default or models.vae_base[wl.vae], inputs, settings, device, published=False,
                            library=True, frames_limit=settings.decode_frames)
    def_prop = prop_s
    if state != device:
        with errs.stage("default.propagation"):
            def_prop = time_propagation(inputs, settings, device, state_device=state)
    if def_t is not None and def_d is not None:
        resident = module_bytes(unet_default) + module_bytes(vae_default or models.vae_base[wl.vae])
        peak = _max_opt(def_t.peak_delta, def_d.peak_delta)
        configs["default"] = summarise(
            T, clip_stages(def_t, def_d, **{**per_clip, "prop_s": def_prop}), resident, peak,
            unet_s_per_step=def_t.unet_s, step_s=def_t.step_s, unet_calls_per_step=def_t.unet_calls_per_step,
            denoise_working_set_gib=_gib(def_t.peak_delta), decode_working_set_gib=_gib(def_d.peak_delta),
            finite=def_t.finite and def_d.finite, decode_frames_timed=def_d.frames_timed,
            dtypes={"unet": _name(next(unet_default.parameters()).dtype),
                    "vae": _name(next((vae_default or models.vae_base[wl.vae]).parameters()).dtype)},
            default_path=True, state_device=str(state),
            description=f"the library's defaults: uav.sampling.loop.denoise with window_batch="
                        f"{defaults.window_batch}, the Recovery policy (fp16 NaN/inf checks), clip state on "
                        f"{state}, the default dtypes, compile=auto, decode_chunks then the non-blocking hand-over "
                        f"and uav.frames.to_uint8",
            **mfu_fields(def_t, len(plan.windows)))
        if base_t is not None and base_t.latents is not None and def_t.latents is not None:
            # same inputs, same steps: how far the library's numbers are from the published loop's
            entry["max_abs_diff_latents"] = float((def_t.latents - base_t.latents).abs().max())
            entry["latents_abs_max"] = float(base_t.latents.abs().max())
    save()

    # ---------------------------------------------------------------- the bf16 preset
    ours_t: DenoiseTiming | None = None
    ours_wb = len(plan.windows)
    with errs.stage("bf16.denoise"):
        while ours_t is None:
            sched = uav["OfficialDDIM"](ddim_config())
            sched.set_timesteps(n_steps)
            oom = False
            try:
                ours_t = time_library_denoise(models.unet_ours, sched, inputs, plan, settings, device,
                                              settings.steps_timed, cudnn_bench=layout["cudnn_benchmark"],
                                              window_batch=ours_wb)
            except torch.cuda.OutOfMemoryError:
                if ours_wb == 1:
                    raise
                oom = True
            if oom:
                # fewer windows per call: the same numbers with a smaller working set
                entry.setdefault("notes", []).append(f"bf16: window_batch={ours_wb} ran out of memory; halved")
                ours_wb = max(1, ours_wb // 2)
                torch.cuda.empty_cache()
    ours_d: DecodeTiming | None = None
    with errs.stage("bf16.decode"):
        # cuDNN autotuning of the decoder's full-resolution (3-D) convolutions would cost seconds
        # per shape for 6 timed frames; both decoders use the default heuristics
        ours_d = time_decode(models.vae_ours[wl.vae], inputs, settings, device, published=False,
                             frames_limit=settings.decode_frames)
    ours_resident = module_bytes(models.unet_ours) + module_bytes(models.vae_ours[wl.vae])
    if ours_t is not None and ours_d is not None:
        peak = _max_opt(ours_t.peak_delta, ours_d.peak_delta)
        configs["bf16"] = summarise(
            T, clip_stages(ours_t, ours_d, **per_clip), ours_resident, peak, unet_s_per_step=ours_t.unet_s,
            step_s=ours_t.step_s, unet_calls_per_step=ours_t.unet_calls_per_step,
            denoise_working_set_gib=_gib(ours_t.peak_delta),
            decode_working_set_gib=_gib(ours_d.peak_delta), finite=ours_t.finite and ours_d.finite,
            decode_frames_timed=ours_d.frames_timed, dtypes={"unet": dtypes.unet_ours, "vae": dtypes.vae_ours},
            default_path=False,
            description=f"preset: library loop (uav.sampling.loop.denoise), window_batch={ours_wb} "
                        f"(all windows of a step in one call, duplicates folded), SDPA, layout {layout['chosen']}, "
                        f"{_name(dtypes.unet_ours)} U-Net, {_name(dtypes.vae_ours)} VAE, decode without the O(n^2) "
                        f"SDPA fallback, GPU uint8 + overlapped copy; same numerics as the baseline",
            decode_note=ours_d.note, **mfu_fields(ours_t, len(plan.windows)))
    _ratios(entry)
    save()

    # ---------------------------------------------------------------- fast preset (the library's)
    # one of the keys: it keeps running a little past the budget
    if "fast" not in skip and not budget.exhausted(grace_s=30.0) and def_d is not None:
        with errs.stage("fast.denoise"):
            fast_t, how = time_fast_denoise(unet_default, inputs, plan, settings, device, state)
            n_all = uav["UpscaleSettings"](preset="fast").num_inference_steps
            peak = _max_opt(fast_t.peak_delta, def_d.peak_delta)
            resident = module_bytes(unet_default) + module_bytes(vae_default or models.vae_base[wl.vae])
            configs["fast"] = summarise(
                T, {"flow": flow_s, "unet": fast_t.unet_s * n_all, "loop_other": (fast_t.step_s - fast_t.unet_s) * n_all,
                    "propagation": 0.0, "decode": def_d.decode_s_per_frame * T, "io": def_d.io_s_per_frame * T},
                resident, peak, unet_s_per_step=fast_t.unet_s, step_s=fast_t.step_s, finite=fast_t.finite,
                scheduler=how, default_path=False, dtypes={"unet": _name(next(unet_default.parameters()).dtype)},
                description=f"{how}; the library's defaults otherwise (dtypes, window_batch, offload, decode); "
                            f"propagation at {list(settings.fast_propagation_steps)} (inside loop_other); "
                            "different numerics (a preset, not a replay)")
        _ratios(entry)
        save()

    # ---------------------------------------------------------------- uniform windows
    if "uniform" not in skip and not budget.exhausted() and ours_d is not None:
        with errs.stage("uniform.denoise"):
            sched = uav["OfficialDDIM"](ddim_config())
            sched.set_timesteps(n_steps)
            uni_t = time_library_denoise(models.unet_ours, sched, inputs, uniform, settings, device,
                                         max(1, settings.steps_timed - 1), cudnn_bench=layout["cudnn_benchmark"],
                                         window_batch=min(ours_wb, len(uniform.windows)))
            peak = _max_opt(uni_t.peak_delta, ours_d.peak_delta)
            configs["uniform"] = summarise(
                T, clip_stages(uni_t, ours_d, **per_clip), ours_resident, peak, unet_s_per_step=uni_t.unet_s,
                step_s=uni_t.step_s, finite=uni_t.finite,
                default_path=False,
                description=f"bf16 with the opt-in uniform window rule, overlap 0: windows "
                            f"{[list(w) for w in uniform.windows]} (vs {len(plan.windows)} official); different "
                            "numerics (a hard window seam)",
                **mfu_fields(uni_t, len(uniform.windows)))
        _ratios(entry)
        save()

    # ---------------------------------------------------------------- ablation: what batching buys
    if "ablation" not in skip and not budget.exhausted():
        with errs.stage("ablation.unbatched"):
            sched = uav["OfficialDDIM"](ddim_config())
            sched.set_timesteps(n_steps)
            ab = time_library_denoise(models.unet_ours, sched, inputs, plan, settings, device, 1,
                                      cudnn_bench=layout["cudnn_benchmark"], window_batch=1)
            peak = _max_opt(ab.peak_delta, ours_d.peak_delta if ours_d is not None else None)
            entry["ablation"] = {
                "ours_window_batch1_step_s": ab.step_s, "ours_window_batch1_unet_s": ab.unet_s,
                "ours_window_batch1_peak_mem_gib": (ours_resident + peak) / GIB if peak is not None else None,
                "note": "ours with one U-Net call per window: what bf16 + SDPA + layout give without batching, "
                        "and the peak memory of that lower-memory setting"}
        save()
    return entry


def _default_compile(uav: dict, unet: torch.nn.Module, vae: torch.nn.Module | None, defaults: Any,
                     device: torch.device, wl: Workload, plan: Any, steps: int, entry: dict[str, Any]) -> bool:
    """Compile the default row's networks where ``compile="auto"`` says so for this clip (as
    :func:`uav.pipeline.generate` would); records the decision and the memory model's peak."""
    comp = uav["compilation"]
    decision = comp.decide(defaults.compile, unet, device, calls=steps * len(plan.windows),
                           window=(min(defaults.window, wl.frames), wl.height, wl.width), guided=True)
    entry["compile"] = decision.reason
    for net in (unet, vae):
        if net is not None:
            comp.compile_regions(net) if decision.on else comp.uncompile_regions(net)
    try:
        est = uav["estimate_memory"](dict(unet.config), dict(vae.config) if vae is not None else {}, height=wl.height,
                                     width=wl.width, frames=wl.frames, settings=defaults.replace(tile=False),
                                     unet_dtype=next(unet.parameters()).dtype,
                                     vae_dtype=next(vae.parameters()).dtype if vae is not None else torch.float32)
        entry["predicted_peak_gib"] = est.peak_gib
    except Exception as exc:  # noqa: BLE001 - a prediction must not cost the measurement
        entry["predicted_peak_gib_error"] = f"{type(exc).__name__}: {exc}"
    return decision.on


def _count_gpu_syncs(uav: dict, unet: torch.nn.Module, inputs: Inputs, plan: Any, settings: Settings,
                     device: torch.device, state: torch.device) -> int | None:
    """Synchronising CUDA calls during one default step, as ``torch.cuda.set_sync_debug_mode`` reports
    them (the GPU check of what ``benchmarks/static.py`` counts on fake tensors); ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    import warnings

    sched = uav["OfficialDDIM"](ddim_config())
    timesteps = [int(t) for t in sched.set_timesteps(settings.steps)]
    lat, noisy = inputs.x_t.to(state, copy=True), inputs.noisy_lr.to(state)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            uav["denoise"](unet, sched, lat, noisy, inputs.text, noise_level=settings.noise_level,
                           guidance_scale=settings.guidance, plan=plan, timesteps=timesteps[:1],
                           recovery=uav["Recovery"]())
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _gib(value: int | None) -> float | None:
    return None if value is None else value / GIB


def _max_opt(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def _ratios(entry: dict[str, Any]) -> None:
    """The issue's per-workload keys: speedup / peak_mem_ratio (``default``, the library's
    defaults), bf16_*, fast_*, uniform_*."""
    configs = entry.get("configs", {})
    base = configs.get("baseline")
    if not base:
        return
    entry["default_path"] = "default" in configs
    if "max_abs_diff_latents" in entry:
        entry["max_abs_diff"] = entry["max_abs_diff_latents"]
    if configs.get("default", {}).get("peak_mem_gib") is not None:
        entry["measured_peak_gib"] = configs["default"]["peak_mem_gib"]
    for cname, prefix in (("default", ""), ("bf16", "bf16_"), ("fast", "fast_"), ("uniform", "uniform_")):
        c = configs.get(cname)
        if not c:
            continue
        entry[f"{prefix}speedup"] = base["s_per_frame"] / c["s_per_frame"]
        if c.get("peak_mem_gib") and base.get("peak_mem_gib"):
            entry[f"{prefix}peak_mem_ratio"] = c["peak_mem_gib"] / base["peak_mem_gib"]
        bu = base["stages_s"].get("unet", 0.0) + base["stages_s"].get("loop_other", 0.0)
        cu = c["stages_s"].get("unet", 0.0) + c["stages_s"].get("loop_other", 0.0)
        if cu:
            entry[f"{prefix}denoise_speedup"] = bu / cu


def smoke_real_models(models: Models, device: torch.device, workloads: Sequence[Workload]) -> dict[str, Any]:
    """One small call of each real-size network in each dtype: outputs must be finite."""
    uav = load_uav()
    out: dict[str, Any] = {}
    g = torch.Generator().manual_seed(5)
    sample = torch.randn((2, 4, 8, 32, 48), generator=g).to(device)
    lr = torch.randn((2, 3, 8, 32, 48), generator=g).clamp(-1, 1).to(device)
    text = torch.randn((2, 77, models.unet_ours.config.cross_attention_dim), generator=g).to(device)
    labels = torch.full((2,), 120, dtype=torch.long, device=device)
    t = torch.tensor(500, device=device)
    with torch.no_grad():
        for name, unet, ctx in (("unet_base_eager", models.unet_base, uav["baseline"].eager_attention()),
                                ("unet_ours_sdpa", models.unet_ours, contextlib.nullcontext())):
            dt = next(unet.parameters()).dtype
            with ctx:
                y = unet(sample.to(dt), t, lr.to(dt), encoder_hidden_states=text.to(dt), class_labels=labels).sample
            out[name] = {"finite": bool(torch.isfinite(y).all()), "abs_max": float(y.float().abs().max())}
        z = torch.randn((1, 4, 3, 16, 24), generator=g).to(device)
        img = torch.randn((1, 3, 3, 16, 24), generator=g).clamp(-1, 1).to(device)
        for kind in sorted({w.vae for w in workloads}):
            for name, vae in ((f"vae_{kind}_base", models.vae_base[kind]), (f"vae_{kind}_ours", models.vae_ours[kind])):
                dt = next(vae.parameters()).dtype
                y = vae.decode(z.to(dt) / 0.08333, img.to(dt)).sample
                out[name] = {"finite": bool(torch.isfinite(y).all()), "abs_max": float(y.float().abs().max())}
    sync(device)
    out["ok"] = all(v["finite"] for v in out.values() if isinstance(v, dict))
    return out


def run_compile(args: argparse.Namespace, device: torch.device, settings: Settings) -> int:
    """The ``default`` row with its blocks compiled (``compile=True``, :mod:`uav.compilation`):
    compile time, then the step time beside the eager one.

    Runs in its own process (``gpu_run.sh`` bounds it with ``timeout``) and merges its
    result into ``bench.json`` in ``--out``, saving after each phase: ``compile_s`` and the
    compiled step are what ``compile="auto"``'s constants should be calibrated on.
    """
    report = Report.load(Path(args.out))
    name = args.workloads[0]
    wl = (TINY_WORKLOADS if args.tiny else WORKLOADS)[name]
    comp: dict[str, Any] = {"workload": name, "mode": "regional (uav.compilation.compile_regions)",
                            "status": "started", "device": device_name(device)}
    report.data.setdefault("device", comp["device"])
    report.data["compile"] = comp
    report.save()
    uav = load_uav()
    dtypes = Dtypes.for_device(device)
    torch.manual_seed(0)
    with torch.device(device):
        unet = uav["UNetVideoModel"].from_config(model_config("unet", args.tiny))
    unet = unet.eval().requires_grad_(False).to(dtypes.unet_default)
    inputs = make_inputs(wl, device, unet.config.cross_attention_dim, settings)
    plan = uav["official_segment_plan"](wl.frames, settings.window)
    state = uav["state_device"](uav["UpscaleSettings"](), device)
    done = report.data.get("workloads", {}).get(name, {})

    def step(warmup: int, timed: int) -> DenoiseTiming:
        sched = uav["OfficialDDIM"](ddim_config())
        sched.set_timesteps(settings.steps)
        return time_library_denoise(unet, sched, inputs, plan, settings, device, timed, warmup=warmup,
                                    window_batch=1, state_device=state, recovery=True)

    default = done.get("configs", {}).get("default")
    if default and default.get("step_s") and not done.get("compile", "").startswith("auto: on"):
        comp.update(eager_step_s=default["step_s"], eager_source="main run (default row, eager)")
    else:
        comp.update(eager_step_s=step(1, args.steps_timed).step_s, eager_source="measured in this process")
    report.save()
    comp["blocks"] = uav["compilation"].compile_regions(unet)
    t0 = time.perf_counter()
    step(0, 1)
    comp["first_step_s"] = time.perf_counter() - t0
    comp["compile_s"] = max(0.0, comp["first_step_s"] - comp["eager_step_s"])
    comp["status"] = "compiled"
    report.save()
    timed = step(1, args.steps_timed)
    comp.update(compiled_step_s=timed.step_s, compiled_unet_s=timed.unet_s,
                step_speedup=comp["eager_step_s"] / timed.step_s, finite=timed.finite, status="done")
    if done:
        done["compile_s"] = comp["compile_s"]
    report.save()
    print(f"[bench] compile: {comp['compile_s']:.1f} s, step {timed.step_s:.3f} s vs eager "
          f"{comp['eager_step_s']:.3f} s", flush=True)
    return 0
