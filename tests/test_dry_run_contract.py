"""``uav upscale --dry-run`` refuses exactly what the run refuses, with the same line
(issue #23 item 8): both go through one validation path (inputs probed, outputs and
their encoders opened, settings, plugins and weights checked) before anything loads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import uav.cli
from uav.cli.app import app
from uav.io import write_video
from uav.weights import moving_pattern

uav.cli._load_commands()


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _sequence(folder: Path, numbers: list[int], width: int = 16, height: int = 12) -> Path:
    folder.mkdir()
    for n in numbers:
        Image.fromarray(np.full((height, width, 3), n, np.uint8)).save(folder / f"f{n:03d}.png")
    return folder


def _clip(tmp: Path) -> Path:
    # named as a self-check output already is, so --self-check keeps the names as given
    return write_video(tmp / "clip_selfcheck_random.mp4", moving_pattern(frames=2, height=12, width=16), fps=24)


def _gap(tmp: Path) -> tuple[list[object], str]:
    return [_sequence(tmp / "seq", [1, 2, 4])], "is missing frame 3"


def _too_wide(tmp: Path) -> tuple[list[object], str]:
    # 4097x8 in, 16388x32 out: more than libx264 encodes; it used to fail after the whole render
    return [_sequence(tmp / "wide", [0, 1], width=4097, height=8)], \
        "h264 (libx264) cannot encode 16388x32 yuv420p frames: invalid width x height (16388x32)"


def _onto_itself(tmp: Path) -> tuple[list[object], str]:
    clip = _clip(tmp)
    os.link(clip, tmp / "same_selfcheck_random.mp4")
    return [clip, "-o", tmp / "same_selfcheck_random.mp4"], "is the input itself"


def _pipe(tmp: Path) -> tuple[list[object], str]:
    os.mkfifo(tmp / "pipe.mp4")
    return [tmp / "pipe.mp4"], "is a named pipe (FIFO), not a file"


def _unknown_plugin(tmp: Path) -> tuple[list[object], str]:
    return [_clip(tmp), "--color-fix", "wavlet"], "wavlet"


def _broken_link_in_batch(tmp: Path) -> tuple[list[object], str]:
    folder = tmp / "batch"
    folder.mkdir()
    write_video(folder / "a.mp4", moving_pattern(frames=2, height=12, width=16), fps=24)
    (folder / "b.mp4").symlink_to(tmp / "gone.mp4")
    return [folder], "b.mp4: is a broken symbolic link"


def _nan_gpus(tmp: Path) -> tuple[list[object], str]:
    pytest.importorskip("ray")
    return [_clip(tmp), "--executor", "ray", "--gpus-per-worker", "nan"], "--gpus-per-worker must be a number >= 0"


def _cluster_flag_without_ray(tmp: Path) -> tuple[list[object], str]:
    return [_clip(tmp), "--workers", "2"], "--workers only apply with --executor ray"


CASES: dict[str, Callable[[Path], tuple[list[object], str]]] = {
    "executor option": _nan_gpus, "cluster flag without ray": _cluster_flag_without_ray,
    "gap": _gap, "too wide for the encoder": _too_wide, "output onto the input": _onto_itself,
    "named pipe": _pipe, "unknown plugin": _unknown_plugin, "broken link in a batch": _broken_link_in_batch,
}


@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_and_run_refuse_alike(tmp_path, case):
    args, words = CASES[case](tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    lines = {}
    for mode, extra in (("dry", ["--dry-run"]), ("run", [])):
        default_out = [] if "-o" in args else ["-o", tmp_path / "out.mp4"] if case != "broken link in a batch" \
            else ["-o", tmp_path / "out"]
        res = run("upscale", *args, *default_out, "--self-check", "--steps", "1", *extra)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.exit_code == 2 and len(errors) == 1 and words in errors[0], (mode, res.output)
        assert "Traceback" not in res.output
        lines[mode] = errors[0]
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, mode  # nothing written, no folder left
    assert lines["dry"] == lines["run"]


def test_an_encoder_that_takes_the_size_passes_the_dry_run(tmp_path):
    args, _ = _too_wide(tmp_path)
    res = run("upscale", *args, "-o", tmp_path / "wide.mov", "--codec", "prores_hq", "--self-check", "--dry-run",
              "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["outputs"][0]["output_size"] == [16388, 32]
