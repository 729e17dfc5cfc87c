"""Builders shared by the tests/test_train_*.py files: a tiny release and a synthetic clip folder."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from conftest import torch_threads

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


def training_setup(root: Path) -> tuple[Path, Path, Path, Path]:
    """``(root, init, data, degradations)``: a tiny release, two clips and the fast recipe under ``root``."""
    from uav.weights.tiny import make_tiny_release

    return root, make_tiny_release(root / "init"), make_clips(root / "data"), fast_degradations(root)


def train_in_process(stage: str, root: Path, **extra: Any) -> tuple[Path, Path]:
    """``uav train <stage>`` on :func:`training_setup` under ``root``, in this process on one
    thread (the machine's cores are shared); returns ``(init, output)`` once it exited 0."""
    from typer.testing import CliRunner

    from uav.cli.train import train_app

    _, init, data, degradations = training_setup(root)
    out = root / "out"
    with torch_threads(1):
        result = CliRunner().invoke(train_app, [stage, *tiny_args(data, out, init, degradations, **extra)])
    assert result.exit_code == 0, result.output
    return init, out


def assert_carried_over(init: Path, output: Path, files: list[str]) -> None:
    """The release's ``files`` (relative to it) hold the starting point's weights bit for bit."""
    for name in files:
        a, b = state_of(init / name), state_of(output / "release" / name)
        assert all(np.array_equal(a[k], b[k]) for k in a), name


#: environment of the training subprocesses (one thread each: see conftest's ``one_thread``)
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
