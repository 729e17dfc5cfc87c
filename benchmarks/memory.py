#!/usr/bin/env python3
"""Host-memory benchmark (issues 3 and 22): peak RSS of ``VideoUpscaler.upscale_iter`` vs clip length.

Each clip length runs in its own process (peak RSS is per process), with the tiny test
networks (random weights), explicit random prompt embeddings (no text encoder), 2 steps
and small frames, on the CPU. What grows with the clip length is the state the loop keeps
for the whole clip (low-res clip, noise, latents, per-step tensors); the 4x frames are
handed out a decode chunk at a time and should not accumulate.

``--stream on`` runs with the clip-length state in memory-mapped files
(``UAV_STREAM_ABOVE=0``, as a long clip would): then the RAM a run *needs* is its
anonymous memory, sampled every few milliseconds (``peak_anon_mib``), while the mapped
files' pages (``RssFile``) are the page cache's to keep or drop.

Usage::

    python benchmarks/memory.py [--frames 48 480] [--size 32] [--steps 2] [--stream auto|on|off]
                                [--out benchmarks/results/memory_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARITY = ROOT / "tests" / "data" / "parity"
MIB = 2**20


def current_rss_bytes() -> int:
    """This process's resident set size now (psutil when installed, else /proc)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def anon_rss_bytes() -> int:
    """Anonymous resident memory now (``RssAnon``: what cannot be dropped without swap)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return current_rss_bytes()


class AnonPeak:
    """Samples :func:`anon_rss_bytes` on a thread; ``peak`` is the largest seen."""

    def __init__(self, every_s: float = 0.005) -> None:
        import threading

        self.peak = anon_rss_bytes()
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, anon_rss_bytes())

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss_bytes())


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure(frames: int, size: int, steps: int, seed: int = 0) -> dict[str, Any]:
    """Upscale a random ``frames x size x size`` clip and report RSS before and at peak.

    Meant to run in a fresh process (see :func:`main`); ``rss_growth_mib`` is the peak
    during the upscale minus the RSS just before it (models built, inputs made).
    """
    import gc

    import numpy as np
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    from uav import VideoUpscaler
    from uav.models import AutoencoderKLVideo, UNetVideoModel

    torch.manual_seed(seed)
    unet = UNetVideoModel.from_config(json.loads((PARITY / "unet_video_tiny_config.json").read_text()))
    # the published default decoder (vae_3d): the tiny video-VAE config without its temporal/SFT parts
    vae_cfg = json.loads((PARITY / "vae_video_tiny_config.json").read_text())
    vae_cfg.update(up_block_types=["UpDecoderBlock3D"] * len(vae_cfg["up_block_types"]), condition_img=False)
    vae = AutoencoderKLVideo.from_config(vae_cfg)
    unet.eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    up = VideoUpscaler.from_components(
        unet=unet, vae=vae,
        scheduler=DDIMScheduler.from_config(json.loads((PARITY / "scheduler_config_ddim_x4.json").read_text())),
        low_res_scheduler=DDPMScheduler.from_config(
            json.loads((PARITY / "low_res_scheduler_config_ddpm_x4.json").read_text())),
    )
    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8)
    dim = unet.config.cross_attention_dim
    cond = torch.randn((1, 77, dim))
    uncond = torch.randn((1, 77, dim))
    gc.collect()
    rss_before = current_rss_bytes()
    anon_before = anon_rss_bytes()
    peak_before = peak_rss_bytes()
    t0 = time.perf_counter()
    out_frames = 0
    largest_chunk = 0
    with AnonPeak() as anon:
        for chunk in up.upscale_iter(clip, num_inference_steps=steps, seed=seed, prompt_embeds=cond,
                                     negative_prompt_embeds=uncond):
            out_frames += chunk.shape[0]
            largest_chunk = max(largest_chunk, chunk.nbytes)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    if out_frames != frames:
        raise RuntimeError(f"upscale_iter returned {out_frames} frames for a {frames}-frame clip")
    return {
        "frames": frames, "size": size, "steps": steps, "seconds": seconds,
        "rss_before_mib": rss_before / MIB, "peak_rss_mib": peak / MIB,
        "peak_rss_before_upscale_mib": peak_before / MIB,
        "rss_growth_mib": max(0, peak - rss_before) / MIB,
        "anon_before_mib": anon_before / MIB, "peak_anon_mib": anon.peak / MIB,
        "anon_growth_mib": max(0, anon.peak - anon_before) / MIB,
        "streamed": os.environ.get("UAV_STREAM_ABOVE") == "0",
        "input_clip_mib": clip.nbytes / MIB, "largest_output_chunk_mib": largest_chunk / MIB,
    }


def run_child(frames: int, size: int, steps: int, timeout: float, stream: str = "auto") -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter; returns its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(frames), "--size", str(size),
           "--steps", str(steps)]
    env = dict(os.environ)
    if stream != "auto":
        env["UAV_STREAM_ABOVE"] = "0" if stream == "on" else str(2**62)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {frames} frames failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"memory child for {frames} frames printed no result:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Growth per extra frame between the shortest and the longest clip."""
    runs = sorted(runs, key=lambda r: r["frames"])
    out: dict[str, Any] = {"runs": list(runs)}
    if len(runs) >= 2 and runs[-1]["frames"] > runs[0]["frames"]:
        a, b = runs[0], runs[-1]
        per_frame = (b["rss_growth_mib"] - a["rss_growth_mib"]) * MIB / (b["frames"] - a["frames"])
        out["growth_bytes_per_frame"] = per_frame
        out["peak_rss_ratio"] = b["peak_rss_mib"] / a["peak_rss_mib"]
        if "peak_anon_mib" in a and "peak_anon_mib" in b:
            out["anon_growth_bytes_per_frame"] = (b["anon_growth_mib"] - a["anon_growth_mib"]) * MIB \
                / (b["frames"] - a["frames"])
            out["peak_anon_ratio"] = b["peak_anon_mib"] / a["peak_anon_mib"]
        # fp32 bytes one low-res frame occupies in the clip-length state: clip (3) + noise (3) + latents (4) channels
        size = b["size"]
        out["low_res_state_bytes_per_frame"] = size * size * (3 + 3 + 4) * 4
    return out


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[48, 480], help="clip lengths to compare")
    p.add_argument("--size", type=int, default=32, help="low-res frame side, pixels")
    p.add_argument("--steps", type=int, default=2, help="denoising steps")
    p.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                   help="clip-length state in memory-mapped files: auto (above 2 GiB), on or off")
    p.add_argument("--out", default=str(HERE / "results" / "memory_cpu.json"))
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per clip length")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("size", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if any(f < 2 for f in args.frames):
        p.error(f"--frames must all be >= 2, got {args.frames}")
    if args.child is not None:
        print(json.dumps(measure(args.child, args.size, args.steps)), flush=True)
        return 0
    runs = []
    for frames in args.frames:
        r = run_child(frames, args.size, args.steps, args.timeout, args.stream)
        print(f"{frames:5d} frames: peak RSS {r['peak_rss_mib']:.0f} MiB, growth during upscale "
              f"{r['rss_growth_mib']:.1f} MiB (anonymous {r['anon_growth_mib']:.1f} MiB), {r['seconds']:.1f} s",
              flush=True)
        runs.append(r)
    import platform

    import torch

    data = {"benchmark": "host peak RSS of VideoUpscaler.upscale_iter vs clip length (issue 3)",
            "device": "cpu", "machine": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "models": "tiny test configs (U-Net, vae_3d decoder), random weights",
            "stream": args.stream,
            **summarise(runs)}
    _write(Path(args.out), data)
    if "growth_bytes_per_frame" in data:
        print(f"growth per extra frame: {data['growth_bytes_per_frame'] / 1024:.1f} KiB "
              f"(low-res fp32 state alone: {data['low_res_state_bytes_per_frame'] / 1024:.1f} KiB); "
              f"peak RSS ratio {data['peak_rss_ratio']:.3f}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
