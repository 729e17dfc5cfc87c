"""Scene-aware splitting (issue #25): detection accuracy, and the speed-up of 2 Ray workers.

* accuracy: every built-in detector on the test suite's cut clip (tests/scene_fixtures.py)
  at two sizes: cuts found within +-1 frame of the truth, missed cuts, false cuts, seconds;
* scaling: ``uav upscale --scenes FILE`` of a clip of four scenes with the tiny random
  release, on the local executor and on a local Ray cluster of 2 workers (1 CPU each),
  wall seconds of the whole command (model loads included), and whether the two
  outputs decode to the same frames.

A benchmark, not a test: run by hand, results kept in ``benchmarks/results/``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scenes.py --out benchmarks/results/scenes_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import scene_fixtures as S  # noqa: E402  (the test suite's cut clip)

DETECTORS = ("adaptive", "content", "histogram", "hash", "threshold")
#: 7 cuts: the four kinds of content twice, each scene 16-24 frames
LONG = (20, 18, 22, 16, 24, 19, 21, 17)


def accuracy(folder: Path) -> list[dict[str, Any]]:
    from uav.scenes.detect import detect_cuts

    rows = []
    for width, height in ((64, 48), (320, 240)):
        clip = S.make_cut_clip(folder / f"cuts_{width}.mov", segments=LONG, width=width, height=height)
        truth = [int(c) for c in S.cuts_of(LONG)]
        for name in DETECTORS:
            t0 = time.perf_counter()
            found = detect_cuts(clip, detector=name)
            seconds = time.perf_counter() - t0
            hits = [t for t in truth if any(abs(f - t) <= 1 for f in found)]
            false = [f for f in found if all(abs(f - t) > 1 for t in truth)]
            rows.append({"size": f"{width}x{height}", "frames": sum(LONG), "detector": name, "truth": truth,
                         "found": found, "within_1": len(hits), "missed": len(truth) - len(hits),
                         "false": len(false), "seconds": round(seconds, 3)})
            print(f"{width}x{height} {name:10s} found {found} hits {len(hits)}/{len(truth)} false {len(false)} "
                  f"{seconds:.2f} s", flush=True)
    return rows


def scaling(folder: Path, scenes: int, frames: int, size: tuple[int, int], steps: int) -> dict[str, Any]:
    import numpy as np
    import ray
    from typer.testing import CliRunner

    import uav.cli
    from uav.cli.app import app
    from uav.io import read_frames
    from uav.weights.tiny import make_tiny_release

    uav.cli._load_commands()
    segments = (frames,) * scenes
    clip = S.make_cut_clip(folder / "scenes.mov", segments=segments, width=size[0], height=size[1])
    weights = make_tiny_release(folder / "tiny")
    bounds = [(k * frames, (k + 1) * frames) for k in range(scenes)]
    (folder / "s.toml").write_text("".join(f'[[shot]]\nclip = "s{k}"\nstart = {a}\nend = {b}\n\n'
                                           for k, (a, b) in enumerate(bounds)))
    common = ["upscale", str(clip), "--weights", str(weights), "--device", "cpu", "--steps", str(steps), "--seed", "3",
              "--scenes", str(folder / "s.toml"), "--json"]

    def timed(*extra: str) -> tuple[float, Path, dict[str, Any]]:
        t0 = time.perf_counter()
        res = CliRunner().invoke(app, [*common, *extra])
        assert res.exit_code == 0, res.output
        summary = json.loads(res.stdout)
        return time.perf_counter() - t0, Path(summary["outputs"][0]["output"]), summary

    local_s, local, local_sum = timed("-o", str(folder / "local.mov"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray_s, remote, ray_sum = timed("-o", str(folder / "ray.mov"), "--executor", "ray", "--workers", "2")
    finally:
        ray.shutdown()
    same = bool(np.array_equal(read_frames(local), read_frames(remote)))
    # the scenes' own render seconds (model loads and Ray's start excluded)
    render_local = sum(j["seconds"] for j in local_sum["jobs"])
    workers = sorted({j["worker"] for j in ray_sum["jobs"]})
    busy = {w: sum(j["seconds"] for j in ray_sum["jobs"] if j["worker"] == w) for w in workers}
    print(f"local {local_s:.1f} s (scenes {render_local:.1f} s), ray x2 {ray_s:.1f} s (per worker {busy}), "
          f"speed-up {local_s / ray_s:.2f}, same frames {same}")
    return {"scenes": scenes, "frames_per_scene": frames, "size": f"{size[0]}x{size[1]}", "steps": steps,
            "local_seconds": round(local_s, 2), "local_scene_seconds": round(render_local, 2),
            "ray_2_workers_seconds": round(ray_s, 2), "ray_worker_busy_seconds": busy,
            "speed_up": round(local_s / ray_s, 3), "same_frames": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8, help="frames per scene of the scaling run")
    parser.add_argument("--size", default="64x48", help="frame size of the scaling run")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="uav-bench-scenes-") as tmp:
        result: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(),
                                  "torch_threads": torch.get_num_threads(),
                                  "load_average": os.getloadavg(), "accuracy": accuracy(Path(tmp))}
        if not args.skip_scaling:
            width, height = (int(v) for v in args.size.split("x"))
            result["scaling"] = scaling(Path(tmp), args.scenes, args.frames, (width, height), args.steps)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
