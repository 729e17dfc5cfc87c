"""Measurements behind docs/scaling.md: executor throughput and the temporal split's difference.

    python benchmarks/scaling.py throughput [--out benchmarks/results/scaling_throughput.json]
    python benchmarks/scaling.py split      [--out benchmarks/results/scaling_split.json]

``throughput`` renders one job list with a renderer of fixed cost
(:class:`uav.executors.simulate.SimulatedRenderer`: it sleeps, so workers do not
compete for this machine's CPUs) on the local executor and on Ray with 1 and 2
workers, and reports wall time, scaling efficiency and the driver's per-job
overhead; then :func:`uav.executors.simulate.throughput_model` extrapolates to 8-64
GPUs. ``split`` upscales one clip with a tiny random release whole and as
``temporal-split`` parts, and reports how far apart the two are (PSNR, max
difference; at the seams and away from them) next to the distance between two
whole renders with different seeds, for scale.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from uav.executors import Job, LocalExecutor, make_executor
from uav.executors.simulate import SimulatedRenderer, throughput_model

#: frames per job of the throughput workload: shots of a cut, uneven on purpose
WORKLOAD = (48, 40, 32, 32, 24, 24, 16, 16, 12, 8, 8, 4)
SECONDS_PER_FRAME = 0.05


def _jobs(folder: Path) -> list[Job]:
    return [Job(f"shot{k:02d}", f"shot{k:02d}.mov", folder / f"shot{k:02d}.txt", frames=n)
            for k, n in enumerate(WORKLOAD)]


def _timed(executor: Any, folder: Path) -> tuple[float, float, list[Any]]:
    """``(wall, seconds until every worker had started its first job, results)``."""
    factory = functools.partial(SimulatedRenderer, SECONDS_PER_FRAME)
    starts: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def on_event(event: Any) -> None:
        if event.kind == "start" and event.worker not in {w for w, _ in starts}:
            starts.append((event.worker, time.perf_counter() - t0))

    results = list(executor.run(_jobs(folder), factory, on_event=on_event))
    return time.perf_counter() - t0, max(t for _, t in starts), results


def throughput() -> dict[str, Any]:
    import ray

    serial = SECONDS_PER_FRAME * sum(WORKLOAD)
    rows = []
    costs = [SECONDS_PER_FRAME * n for n in WORKLOAD]
    with tempfile.TemporaryDirectory() as tmp:
        wall, ready, _ = _timed(LocalExecutor(), Path(tmp) / "local")
        rows.append({"executor": "local", "workers": 1, "wall_s": round(wall, 3), "startup_s": round(ready, 3)})
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for workers in (1, 2):
                for attempt in range(2):
                    wall, ready, results = _timed(make_executor("ray", workers=workers),
                                                  Path(tmp) / f"ray{workers}-{attempt}")
                    rows.append({"executor": "ray", "workers": workers, "wall_s": round(wall, 3),
                                 "startup_s": round(ready, 3), "render_s": round(sum(r.seconds for r in results), 3)})
        finally:
            ray.shutdown()
    for row in rows:
        # efficiency against a perfect split of the serial render time (start-up included)
        row["efficiency"] = round(serial / row["workers"] / row["wall_s"], 3)
        # what the run cost beyond its start-up and the schedule of the render times itself
        schedule = throughput_model(costs, row["workers"]).seconds
        per_worker_jobs = math.ceil(len(WORKLOAD) / row["workers"])
        row["overhead_per_job_s"] = round(max(0.0, row["wall_s"] - row["startup_s"] - schedule) / per_worker_jobs, 4)
    ray_rows = [r for r in rows if r["executor"] == "ray"]
    overhead = sum(r["overhead_per_job_s"] for r in ray_rows) / len(ray_rows)
    startup = sum(r["startup_s"] for r in ray_rows) / len(ray_rows)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else None
    return {"seconds_per_frame": SECONDS_PER_FRAME, "workload_frames": list(WORKLOAD),
            "serial_render_s": round(serial, 3), "load_average": load, "runs": rows,
            "ray_startup_s": round(startup, 3), "driver_overhead_per_job_s": round(overhead, 4),
            "model": _model(overhead)}


def _model(overhead: float) -> list[dict[str, Any]]:
    """A 90-minute conform at 24 fps: 1500 shots, lengths drawn from a fixed log-normal, 9 s/frame."""
    rng = np.random.default_rng(0)
    frames = np.clip(rng.lognormal(mean=math.log(70), sigma=0.8, size=1500), 8, 2000).astype(int)
    frames = np.maximum(1, np.rint(frames * (90 * 60 * 24 / frames.sum()))).astype(int)
    cost = [9.0 * n for n in frames]
    out = []
    for workers in (1, 8, 16, 32, 64, 128, 256):
        est = throughput_model(cost, workers, startup_s=60.0, overhead_s=overhead)
        out.append({"gpus": workers, "hours": round(est.seconds / 3600, 2), "efficiency": round(est.efficiency, 3)})
    longest = max(cost) / 3600
    return [{"shots": len(frames), "frames": int(frames.sum()), "longest_shot_hours": round(longest, 2)}] + out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def split(frames: int = 12, part_frames: int = 6, overlap: int = 2, steps: int = 2) -> dict[str, Any]:
    import torch

    from uav import VideoUpscaler
    from uav.executors.split import TemporalSplit, merge_frames, render_part
    from uav.settings import UpscaleSettings
    from uav.weights.tiny import make_tiny_release, moving_pattern

    torch.set_num_threads(2)
    strategy = TemporalSplit(part_frames=part_frames, overlap=overlap, min_frames=part_frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        release = make_tiny_release(root / "w")
        up = VideoUpscaler.from_pretrained(release, device="cpu")
        clip = moving_pattern(frames, 24, 32)
        np.save(root / "clip.npy", clip)
        # the reader takes files: write the clip losslessly as a PNG sequence
        import cv2

        (root / "seq").mkdir()
        for k, f in enumerate(clip):
            cv2.imwrite(str(root / "seq" / f"{k:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        source = str(root / "seq" / "%04d.png")
        for propagation in ((), (1,)):
            settings = UpscaleSettings(seed=7, num_inference_steps=steps, propagation_steps=propagation)
            whole = up.upscale(source, settings=settings, output_type="np")
            other_seed = up.upscale(source, settings=settings.replace(seed=8), output_type="np")
            job = Job("clip", source, root / "out.mp4", frames=frames, settings=settings.to_dict())
            parts, _ = strategy.split([job])
            arrays = []
            for p in parts:
                render_part(up, p, settings, None)
                arrays.append(np.load(p.output))
            merged = np.stack(list(merge_frames(arrays, [p.payload.offset for p in parts], frames)))
            ranges = strategy.ranges(frames)
            seams = sorted({t for b, _ in ranges[1:] for t in range(b, b + overlap)})
            away = [t for t in range(frames) if t not in seams]
            rows.append({
                "propagation_steps": list(propagation),
                "parts": [list(r) for r in ranges],
                "seam_frames": seams,
                "psnr_split_vs_whole_db": round(_psnr(merged, whole), 2),
                "psnr_at_seams_db": round(_psnr(merged[seams], whole[seams]), 2),
                "psnr_away_from_seams_db": round(_psnr(merged[away], whole[away]), 2),
                "max_abs_diff": int(np.abs(merged.astype(int) - whole).max()),
                "psnr_other_seed_vs_whole_db": round(_psnr(other_seed, whole), 2),
            })
    return {"model": "tiny random release (uav.weights.tiny)", "frames": frames, "size": [32, 24], "steps": steps,
            "part_frames": part_frames, "overlap": overlap, "results": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("throughput", "split"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = throughput() if args.what == "throughput" else split()
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
