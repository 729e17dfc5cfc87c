"""The API's edges: what ``VideoUpscaler`` refuses, each in one line before any work
(issue #23 items 3 and 13): its own input as the output, tensors and devices torch
would fail on with a traceback, frames on the wrong scale, a zero frame rate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from uav import VideoUpscaler
from uav.io import probe, write_video
from uav.weights import make_tiny_release, moving_pattern


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("release") / "tiny")


@pytest.fixture(scope="module")
def upscaler(tiny_release):
    return VideoUpscaler.from_pretrained(tiny_release, device="cpu")


@pytest.fixture()
def source(tmp_path):
    path = write_video(tmp_path / "in.mp4", moving_pattern(frames=2, height=12, width=16), fps=24)
    return path, path.read_bytes()


# ---------------------------------------------------------------------------- item 3: never onto the input
@pytest.mark.parametrize("spelling", ["same", "relative", "symlink", "hardlink"])
def test_output_onto_the_input_is_refused(upscaler, source, tmp_path, monkeypatch, spelling):
    path, before = source
    if spelling == "same":
        output = path
    elif spelling == "relative":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        output = Path("..") / "sub" / ".." / "in.mp4"
    elif spelling == "symlink":
        output = tmp_path / "link.mp4"
        output.symlink_to(path)
    else:
        output = tmp_path / "hard.mp4"
        os.link(path, output)
    with pytest.raises(ValueError, match="is the input itself") as info:
        upscaler.upscale(str(path), output=output, steps=1, seed=0)
    assert "\n" not in str(info.value) and "choose another output name" in str(info.value)
    assert path.read_bytes() == before and probe(path).num_frames == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_output_beside_the_input_is_written(upscaler, source, tmp_path):
    path, before = source
    out = upscaler.upscale(str(path), output=tmp_path / "out.mp4", steps=1, seed=0)
    assert probe(out).num_frames == 2 and (probe(out).width, probe(out).height) == (64, 48)
    assert path.read_bytes() == before


def test_the_cli_refuses_links_to_its_input_too(source, tmp_path):
    from uav.cli.jobs import plan_jobs

    path, _ = source
    os.link(path, tmp_path / "hard.mp4")
    (tmp_path / "soft.mp4").symlink_to(path)
    for name in ("hard.mp4", "soft.mp4"):
        with pytest.raises(ValueError, match="is the input itself"):
            plan_jobs(str(path), str(tmp_path / name), "h264", self_check=False)
