"""Writing 1080p finishing deliverables on the CPU: EXR, DPX and DNxHR HQX (issue #26).

For each format, a child process writes N frames of a 1920x1080 sample clip (the
pattern of ``scripts/make_sample_clip.py`` with a fine grain) through
:class:`uav.io.VideoWriter` exactly as ``VideoUpscaler`` feeds it for outputs deeper
than 8 bits (float32 frames, ``bit_depth=32``), and reports the file sizes, the write
throughput (frames/s, writing only: the frames are made before the clock starts) and
its resident memory after every frame. Two lengths per format show whether memory
grows with the clip: a writer that held frames would grow by about one float frame
(24.9 MB at 1080p) per frame written.

A benchmark, not a test: run by hand, results kept in ``benchmarks/results/``::

    .venv/bin/python benchmarks/deliver_formats.py --frames 12 48 --out benchmarks/results/deliver_formats_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1920, 1080
#: name -> (codec, output name, writer options)
FORMATS = {
    "exr-piz": ("exr", "exr_piz", {"compression": "piz"}),
    "exr-zip": ("exr", "exr_zip", {"compression": "zip"}),
    "exr-dwaa": ("exr", "exr_dwaa", {"compression": "dwaa"}),
    "dpx-10bit": ("dpx", "dpx10", {}),
    "dpx-16bit": ("dpx", "dpx16", {"pix_fmt": "rgb48be"}),
    "dnxhr_hqx-mov": ("dnxhr_hqx", "hqx.mov", {}),
    "dnxhr_hqx-mxf": ("dnxhr_hqx", "hqx.mxf", {}),
}
_POOL = 4  # distinct frames, cycled (their memory is the benchmark's, not the writer's)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _frames() -> list[np.ndarray]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_sample_clip import sample_frame

    # the sample pattern with a fine grain (sigma 2/255, seeded), like upscaled footage has:
    # a smooth synthetic pattern alone would flatter the compressed formats' sizes
    rng = np.random.default_rng(26)
    frames = []
    for i in range(_POOL):
        rgb = sample_frame(i, _POOL, WIDTH, HEIGHT).astype(np.float32) / 255.0
        grain = rng.normal(0.0, 2.0 / 255.0, rgb.shape).astype(np.float32)
        frames.append(np.ascontiguousarray(np.clip(rgb + grain, 0.0, 1.0)))
    return frames


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


def write_one(name: str, frames: int, folder: Path) -> dict[str, object]:
    """Write ``frames`` frames as format ``name`` into ``folder``; the measurements."""
    from uav.io import VideoWriter

    codec, out, options = FORMATS[name]
    pool = _frames()
    rss = [_rss_mb()]
    writer = VideoWriter(folder / out, fps=24, width=WIDTH, height=HEIGHT, codec=codec, bit_depth=32,
                         timecode="01:00:00:00", provenance={"benchmark": name}, **options)
    start = time.perf_counter()
    for i in range(frames):
        writer.write(pool[i % _POOL])
        rss.append(_rss_mb())
    path = writer.close()
    seconds = time.perf_counter() - start
    size = _size(path)
    return {"format": name, "codec": codec, "frames": frames, "seconds": round(seconds, 3),
            "frames_per_second": round(frames / seconds, 2), "bytes": size,
            "mb_per_frame": round(size / frames / 2**20, 2),
            "rss_before_mb": round(rss[0], 1), "rss_after_first_frame_mb": round(rss[1], 1),
            "rss_peak_mb": round(max(rss), 1), "rss_growth_after_first_frame_mb": round(max(rss) - rss[1], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one format, one length
    args = parser.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory(prefix="uav-deliver-bench-") as tmp:
            print(json.dumps(write_one(args.one, args.frames[0], Path(tmp))))
        return 0
    rows = []
    for name in args.formats:
        for n in args.frames:
            done = subprocess.run([sys.executable, __file__, "--one", name, "--frames", str(n)], check=True,
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{name:15s} {n:3d} frames  {row['frames_per_second']:6.2f} frames/s  {row['mb_per_frame']:6.2f} "
                  f"MB/frame  RSS peak {row['rss_peak_mb']:7.1f} MB, +{row['rss_growth_after_first_frame_mb']:.1f} MB "
                  "after the first frame", flush=True)
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "size": [WIDTH, HEIGHT], "frame_mb_float32": round(WIDTH * HEIGHT * 3 * 4 / 2**20, 1), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
