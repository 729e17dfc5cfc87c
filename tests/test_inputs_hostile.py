"""Inputs that used to be refused, misread or hang (issue #23 item 10): MPEG-TS, video
files whose names look like image patterns, named pipes, and batch folders holding
broken links or damaged files (one rule: every bad input is named and nothing renders)."""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import uav.cli
from uav.cli.app import app
from uav.io import VideoInputError, probe, read_frames, write_video
from uav.weights import moving_pattern

uav.cli._load_commands()


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def errors(res: object) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


def _ts(path: Path, encoder: str, frames: int = 30, gop: int = 12) -> Path:
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------- MPEG-TS
@pytest.mark.parametrize("encoder", ["libx264", "mpeg2video"])
def test_mpeg_ts_reads_every_frame_and_any_range(tmp_path, encoder):
    path = _ts(tmp_path / "cam.ts", encoder)
    info = probe(path)
    assert info.num_frames == 30 and info.fps == Fraction(25)
    levels = [int(round(f.mean() / 8)) for f in read_frames(path)]
    assert levels == list(range(30))
    for start, end in ((0, 3), (13, 17), (25, None)):
        got = [int(round(f.mean() / 8)) for f in read_frames(path, start=start, end=end)]
        assert got == list(range(start, end or 30)), (start, end)


def test_mpeg_ts_upscales_from_the_command_line(tmp_path):
    path = _ts(tmp_path / "cam.ts", "libx264", frames=5)
    res = run("upscale", path, "--self-check", "-o", tmp_path / "out.mp4", "--steps", "1", "--seed", "0",
              "--end", "2")
    assert res.exit_code == 0, res.output
    assert probe(tmp_path / "out_selfcheck_random.mp4").num_frames == 2


# ---------------------------------------------------------------------------- names that look like patterns
@pytest.mark.parametrize("name", ["take%d.mp4", "shot_%04d_final.mov"])
def test_an_existing_video_named_like_a_pattern_is_a_video(tmp_path, name):
    path = write_video(tmp_path / name, moving_pattern(frames=3, height=12, width=16), fps=24)
    assert probe(path).num_frames == 3 and not probe(path).is_image_sequence
    res = run("upscale", path, "--self-check", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    assert '"input_kind": "video"' in res.stdout


# ---------------------------------------------------------------------------- pipes, devices
@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "live.mp4"
    os.mkfifo(path)
    return path


def _finishes(fn, seconds: float = 60.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) when it blocks."""
    box: dict[str, object] = {}
    thread = threading.Thread(target=lambda: box.update(result=fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail("the command blocked on the named pipe")
    return box["result"]


@pytest.mark.parametrize("extra", [["--dry-run"], []])
def test_a_named_pipe_is_refused_not_waited_on(fifo, tmp_path, extra):
    res = _finishes(lambda: run("upscale", fifo, "--self-check", "-o", tmp_path / "o.mp4", *extra))
    assert res.exit_code == 2 and errors(res) == [
        f"error: {fifo}: is a named pipe (FIFO), not a file; uav reads its input several times: save the stream to "
        "a file first and pass that"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mp4"]


def test_devices_are_refused_too():
    with pytest.raises(VideoInputError, match="is a device, not a file"):
        probe("/dev/zero")


# ---------------------------------------------------------------------------- batch folders: one rule
def test_every_bad_input_of_a_batch_is_named_and_nothing_renders(tmp_path):
    folder = tmp_path / "dailies"
    folder.mkdir()
    write_video(folder / "a_good.mp4", moving_pattern(frames=2, height=12, width=16), fps=24)
    (folder / "b_gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (folder / "c_text.mp4").write_text("not a video")
    os.mkfifo(folder / "d_pipe.mov")
    for extra in (["--dry-run"], []):
        res = _finishes(lambda: run("upscale", folder, "--self-check", "-o", tmp_path / "out", *extra))
        assert res.exit_code == 2, res.output
        [line] = errors(res)
        assert line.startswith("error: 3 of 4 inputs cannot be used, so nothing was upscaled: ")
        assert "b_gone.mp4: is a broken symbolic link" in line and "c_text.mp4" in line
        assert "d_pipe.mov: is a named pipe (FIFO)" in line and "a_good" not in line
        assert not (tmp_path / "out").exists()
