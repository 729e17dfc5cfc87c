"""How long planning a timeline takes as it grows (issue #13: planning must be linear).

Builds a one-track timeline of N short clips over three media files (made on the fly,
tiny), plans it with :func:`uav_otio.plan_timeline` and prints/records the seconds.
A benchmark, not a test: run by hand, results kept in ``benchmarks/results/``.

    .venv/bin/python benchmarks/plan_scale.py --clips 1000 10000 --out benchmarks/results/plan_scale_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import opentimelineio as otio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import otio_fixtures as F  # noqa: E402  (the test suite's tiny media makers)

from uav_otio import plan_timeline  # noqa: E402


def build(n: int, media: dict[str, Path]) -> otio.schema.Timeline:
    tl = otio.schema.Timeline(f"{n} clips")
    track = otio.schema.Track("V1")
    refs = [(F.ext_ref(media["a"], 60, F.TC_START), F.TC_START), (F.ext_ref(media["b"]), 0),
            (F.ext_ref(media["e"], 120), 0)]
    for i in range(n):
        ref, start = refs[i % 3]
        track.append(F.clip(f"SH{i:05d}", ref.clone(), start + (i * 7) % 40, 5))
    tl.tracks.append(track)
    return tl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        media = F.media_set(Path(tmp))
        for n in args.clips:
            tl = build(n, media)
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                plan = plan_timeline(tl)
                times.append(time.perf_counter() - t)
            rows.append({"clips": n, "jobs": len(plan.jobs), "seconds_best": min(times), "seconds_all": times})
            print(f"{n:>6} clips: {min(times):.2f} s (best of {args.repeat}), {len(plan.jobs)} jobs", flush=True)
    result = {"benchmark": "plan_scale", "machine": platform.processor() or platform.machine(),
              "python": platform.python_version(), "otio": otio.__version__, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
