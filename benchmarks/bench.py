#!/usr/bin/env python3
"""GPU benchmark of the Upscale-A-Video loop: the published structure against the library (issues 7, 11).

One command measures, per workload and side by side on one card:

* ``baseline``: the published loop replayed (:mod:`baseline`): fp16 U-Net with explicit
  attention, one U-Net call per window call (duplicates included), fp32 VAE, 3-frame
  decode chunks, host-side uint8 conversion;
* ``default``: what the library runs with its default settings (issue 11): the library's
  default dtypes (fp16 U-Net, fp32 VAE on CUDA), ``window_batch=1``, the clip state
  offloaded to the host, the out-of-memory / fp16 NaN policy, ``decode_chunks`` then
  the non-blocking hand-over and :func:`uav.frames.to_uint8`, ``compile="auto"``;
  ``speedup`` and ``peak_mem_ratio`` compare this row with ``baseline``, and
  ``max_abs_diff`` its latents after the same steps;
* ``bf16`` (a preset, partly benchmark-only, see :mod:`benchmarks.library`): bf16 U-Net on
  SDPA, all windows of a step in one batched call (``window_batch``), the faster of NCHW /
  channels-last / cuDNN autotuning measured on one window, bf16 VAE with SDPA kept off
  its O(n²) fallback, uint8 conversion on the GPU with the copy overlapped;
* ``uniform``: ``bf16`` with the opt-in ``uniform`` window rule (2 windows per
  16 frames instead of 3; different numerics, so reported apart);
* ``fast``: the library's ``UpscaleSettings(preset="fast")`` (issue 21): DPM-Solver++ 10
  steps, guidance reused from step 5, DeepCache every 3 steps, propagation at 7/8/9, the
  default row's dtypes (different numerics, reported as ``fast_speedup``);
* optionally (``--compile``, a separate process so a slow compile cannot lose the rest)
  the ``default`` row with its blocks compiled (``uav.compilation``): ``compile_s`` and the
  compiled step time.

The networks are the real-size ones, built from the release configs with random
weights. Denoising is timed on ``--steps-timed`` steps after one warm-up step and scaled
to 30; propagation is timed for real and counted 3 times; decode is timed on
``--decode-frames`` frames after one warm-up chunk and scaled to the clip. Results go to
``<out>/bench.json`` (rewritten after every stage, so a timeout keeps what finished) and
``<out>/bench.md``.

Usage::

    python benchmarks/bench.py [--device cuda] [--tiny] [--steps-timed N] [--out DIR]
                               [--workloads lr192x352 lr270x480] [--smoke] [--budget-s S]
    python benchmarks/bench.py --compile --out DIR        # adds the torch.compile stage
    python benchmarks/bench.py --memory-model             # bytes of a 1-minute 480p clip

The harness is the package :mod:`benchmarks`; this module is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):
    # run as a script (python benchmarks/bench.py): the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.clocks import Budget, StageErrors, datasheet_tflops, device_name, measure_matmul_tflops  # noqa: E402
from benchmarks.library import load_uav  # noqa: E402
from benchmarks.measure import run_compile, run_workload, smoke_real_models  # noqa: E402
from benchmarks.memory_model import memory_model  # noqa: E402
from benchmarks.report import Report, jsonable, markdown_table  # noqa: E402
from benchmarks.stages import time_decode  # noqa: E402
from benchmarks.workloads import (TINY_WORKLOADS, WORKLOADS, Dtypes, Settings, build_models, build_vae,  # noqa: E402
                                  ddim_config, make_inputs, model_config)

HERE = Path(__file__).resolve().parent

#: every optional stage, for ``--skip``
OPTIONAL_STAGES = ("flops", "layout", "fast", "uniform", "ablation")

# The harness's entry points, importable from here as from the command line.
__all__ = [
    "main", "parse_args", "OPTIONAL_STAGES", "TINY_WORKLOADS", "WORKLOADS", "Dtypes", "Settings", "build_models",
    "build_vae", "ddim_config", "make_inputs", "model_config", "load_uav", "markdown_table", "memory_model",
    "time_decode",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny test configs and 1/8-size clips (seconds on a CPU)")
    p.add_argument("--steps-timed", type=int, default=2, help="timed denoising steps per configuration (>= 1)")
    p.add_argument("--decode-frames", type=int, default=6,
                   help="frames whose decode is timed after the warm-up chunk (0 = every remaining frame)")
    p.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results/local)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--smoke", action="store_true",
                   help="first run every stage on tiny models on the same device, and check the real networks "
                        "give finite outputs; stop if a core stage fails")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="skip optional stages once this many seconds have passed (0 = no limit)")
    p.add_argument("--skip", nargs="*", default=[], choices=list(OPTIONAL_STAGES), help="optional stages to skip")
    p.add_argument("--compile", action="store_true",
                   help="only the torch.compile stage (first workload), merged into an existing bench.json")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode for --compile")
    p.add_argument("--memory-model", action="store_true", help="print the 1-minute 480p memory model and exit")
    args = p.parse_args(argv)
    if args.steps_timed < 1:
        p.error(f"--steps-timed must be >= 1, got {args.steps_timed}")
    if args.decode_frames < 0:
        p.error(f"--decode-frames must be >= 0, got {args.decode_frames}")
    if args.out is None:
        args.out = os.environ.get("OUT") or str(HERE / "results" / "local")
    return args


def _resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch; use --device cpu --tiny")
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device must be cuda or cpu, got {name!r}")
    return device


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 when the smoke step fails, 1 on other failures."""
    args = parse_args(argv)
    if args.memory_model:
        print(json.dumps(memory_model(), indent=1))
        return 0
    device = _resolve_device(args.device)
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("the real-size networks need a GPU: pass --device cuda, or --tiny on a CPU")
    settings = Settings(steps_timed=args.steps_timed, decode_frames=args.decode_frames)
    if args.compile:
        return run_compile(args, device, settings)
    budget = Budget(args.budget_s)
    report = Report(Path(args.out))
    selected = [(TINY_WORKLOADS if args.tiny else WORKLOADS)[n] for n in args.workloads]
    uav = load_uav()
    peak = datasheet_tflops(device_name(device))
    report.data.update(
        schema=1, device=device_name(device), torch=torch.__version__, cuda=torch.version.cuda,
        diffusers=uav["diffusers"].__version__, python=platform.python_version(), tiny=args.tiny,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), datasheet_bf16_tflops=peak,
        settings={**jsonable(asdict(settings)), "frames": sorted({w.frames for w in selected})}, workloads={},
        import_note=uav.get("import_note"))
    report.save()
    print(f"[bench] {report.data['device']}, torch {torch.__version__}, diffusers {report.data['diffusers']}, "
          f"out {args.out}", flush=True)

    if args.smoke:
        t0 = time.perf_counter()
        dtypes = Dtypes.for_device(device)
        tiny_models = build_models(device, True, dtypes, selected)
        tiny_settings = Settings(steps_timed=1, decode_frames=3)
        for wl in [TINY_WORKLOADS[n] for n in args.workloads]:
            run_workload(wl, tiny_models, dtypes, tiny_settings, device, report, "smoke", Budget(0), skip=args.skip)
        core = ("inputs+flow", "baseline.denoise", "baseline.decode", "default.denoise", "default.decode",
                "bf16.denoise", "bf16.decode")
        failed = {f"{wl}:{k}": v for wl, e in report.data["smoke"].items() if isinstance(e, dict)
                  for k, v in e.get("errors", {}).items() if k in core}
        report.data["smoke_s"] = time.perf_counter() - t0
        report.data["smoke_ok"] = not failed
        report.save()
        del tiny_models
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if failed:
            print("[bench] smoke step FAILED in core stages:\n" + "\n".join(f"{k}: {v}" for k, v in failed.items()),
                  flush=True)
            return 2
        print(f"[bench] smoke step ok ({report.data['smoke_s']:.1f} s)", flush=True)

    dtypes = Dtypes.for_device(device)
    t0 = time.perf_counter()
    models = build_models(device, args.tiny, dtypes, selected)
    report.data["build_s"] = time.perf_counter() - t0
    report.data["params"] = {"unet": sum(p.numel() for p in models.unet_ours.parameters()),
                             **{f"vae_{k}": sum(p.numel() for p in v.parameters()) for k, v in models.vae_ours.items()}}
    checks = StageErrors(device)
    if args.smoke:
        with checks.stage("smoke_real_models"):
            report.data["smoke_real_models"] = smoke_real_models(models, device, selected)
    if "flops" not in args.skip:
        with checks.stage("matmul"):
            report.data["matmul_bf16_tflops"] = measure_matmul_tflops(device)
    if checks.errors:
        report.data["errors"] = checks.errors
    report.save()
    # every workload's core stages run even past --budget-s (which only drops optional
    # stages); gpu_run.sh bounds the whole process, and results are saved stage by stage
    for wl in selected:
        print(f"[bench] workload {wl.name}: {wl.frames} frames {wl.height}x{wl.width} -> "
              f"{wl.out_size[0]}x{wl.out_size[1]}, vae_{wl.vae} ({budget.elapsed():.0f} s elapsed)", flush=True)
        run_workload(wl, models, dtypes, settings, device, report, "workloads", budget, skip=args.skip,
                     peak_tflops=peak)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.data["elapsed_s"] = budget.elapsed()
    report.save()
    print(markdown_table(report.data), flush=True)
    ok = all({"baseline", "default", "bf16"} <= set(w.get("configs", {}))
             for w in report.data["workloads"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
