"""Builders shared by the tests/test_train_*.py files: a tiny release and a synthetic clip folder."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

#: a first-order recipe without the video codec: keeps the tests' data loading fast
FAST_DEGRADATIONS = """\
video_prob = 0.0
second = false
final_sinc_prob = 0.0

[first]
jpeg_quality = [60, 95]

[first.blur]
kernel_sizes = [3, 5]
"""


def make_clips(folder: Path, *, count: int = 2, frames: int = 8, size: int = 32) -> Path:
    """``count`` textured moving clips as H.264 .mp4 files (read back with PyAV)."""
    from uav.io import write_video
    from uav.weights.tiny import moving_pattern

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_video(folder / f"clip{i}.mp4", moving_pattern(frames, size, size, seed=i), fps=Fraction(24))
    (folder / "clip0.txt").write_text("a textured pattern moving right")
    return folder


def fast_degradations(folder: Path) -> Path:
    path = folder / "degradations.toml"
    path.write_text(FAST_DEGRADATIONS)
    return path


def read_log(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines() if line.strip()]


def events(output: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in read_log(output) if e["event"] == name]


def tiny_args(data: Path, output: Path, init: Path, degradations: Path, **extra: Any) -> list[str]:
    """CLI arguments of a tiny, fast CPU run."""
    opts = {"--frames": 4, "--stride": 2, "--crop": 8, "--steps": 4, "--warmup-steps": 0, "--lr": 1e-3,
            "--checkpoint-every": 2, "--num-workers": 0, "--ema-decay": 0, "--eval-samples": 2, "--seed": 0}
    opts.update({f"--{k.replace('_', '-')}": v for k, v in extra.items()})
    args = [str(data), "--output", str(output), "--init", str(init), "--degradations", str(degradations), "--cpu",
            "--no-progress"]
    for k, v in opts.items():
        args += [k] if v is None else [k, str(v)]
    return args


def state_of(path: Path) -> dict[str, np.ndarray]:
    from uav.weights import load_state_dict_file

    return {k: v.numpy() for k, v in load_state_dict_file(path).items()}


def one_thread():
    """Use one intra-op thread while training: the test machine's cores are shared, and spinning
    OpenMP threads on an oversubscribed CPU slow a tiny model down by an order of magnitude."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def scope():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return scope()


#: environment of the training subprocesses (same reason as :func:`one_thread`)
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
