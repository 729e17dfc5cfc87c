"""Host memory bounded (issue 22, item 4): a long clip's state in memory-mapped files, worked on
a chunk of frames at a time, with the numbers of the run that holds it all in RAM."""

from __future__ import annotations

import pytest
import torch

import uav.sampling.store as store_module
from uav import UpscaleSettings, VideoUpscaler
from uav.host_memory import clip_state_bytes, host_memory
from uav.sampling.propagation import propagate_latents
from uav.sampling.store import ClipStore, frame_chunks
from uav.sampling.streamed import propagate_into
from uav.sampling.windows import official_segment_plan, uniform_segment_plan
from uav.weights import make_tiny_release, moving_pattern

TWO_MINUTES, TWO_HOURS = 24 * 120, 24 * 7200


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    folder = tmp_path / "state"
    monkeypatch.setenv("UAV_STATE_DIR", str(folder))
    return folder


def test_the_store_draws_torchs_noise_a_piece_at_a_time(monkeypatch, state_dir):
    monkeypatch.setattr(store_module, "_PIECE", 16 * 5)  # many pieces on a small tensor
    for shape in [(1, 3, 7, 5, 9), (1, 4, 3, 4, 4), (2, 17)]:
        a = ClipStore(streamed=True).randn(shape, torch.Generator().manual_seed(3))
        assert torch.equal(a, torch.randn(shape, generator=torch.Generator().manual_seed(3)))
    assert list(state_dir.iterdir()) == []  # mapped files are unlinked at once


def test_streamed_propagation_is_the_published_propagation(monkeypatch, state_dir):
    monkeypatch.setattr(store_module, "CHUNK_FRAMES", 3)
    g = torch.Generator().manual_seed(0)
    for frames in (2, 7, 10):
        x = torch.randn(1, 4, frames, 10, 12, generator=g)
        forward = torch.randn(1, 2, frames - 1, 10, 12, generator=g) * 2
        backward = -forward + 0.1 * torch.randn(forward.shape, generator=g)
        store = ClipStore(streamed=True)
        y = store.like(x)
        y.copy_(x)
        assert torch.equal(propagate_into(y, forward, backward, store), propagate_latents(x, forward, backward))


def test_long_clips_get_window_weights_in_a_band():
    short = official_segment_plan(100)
    assert torch.equal(torch.stack([short.window_weights(k) for k in range(len(short.windows))]),
                       torch.stack([short.weights[k, s:e] for k, (s, e) in enumerate(short.windows)]))
    long = official_segment_plan(TWO_HOURS)
    assert long.weights.device.type == "meta" and long.weights.shape == (len(long.windows), TWO_HOURS)
    assert long.band.numel() * 4 < 2**20  # the dense weights would be 20 GB
    assert torch.equal(long.window_weights(0), official_segment_plan(100).window_weights(0))
    assert uniform_segment_plan(TWO_HOURS).weights.device.type == "meta"


def test_two_hours_need_the_host_ram_of_two_minutes():
    s = UpscaleSettings(propagation_steps=(24, 26, 28))
    short, long = (host_memory(s, height=480, width=854, frames=f) for f in (TWO_MINUTES, TWO_HOURS))
    assert short.streamed and long.streamed and long.peak_gib == short.peak_gib < 4
    assert long.disk_gib == pytest.approx(60 * short.disk_gib)
    tiny = host_memory(s, height=32, width=32, frames=48)
    assert not tiny.streamed and tiny.working_gib * 2**30 == clip_state_bytes(s, height=32, width=32, frames=48)


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    return VideoUpscaler.from_pretrained(make_tiny_release(tmp_path_factory.mktemp("w") / "tiny", fmt="bin"),
                                         vae="video", device="cpu")


def test_a_streamed_run_gives_the_frames_of_a_run_in_ram(upscaler, monkeypatch, state_dir):
    clip = moving_pattern(frames=11, height=20, width=28)
    kw = dict(prompt="a cat", num_inference_steps=2, seed=5, propagation_steps=(1,), flow="farneback", tile=True,
              tile_size=16, tile_overlap=4)
    in_ram = upscaler.upscale(clip, output_type="pt", **kw)
    monkeypatch.setenv("UAV_STREAM_ABOVE", "0")
    monkeypatch.setattr(store_module, "CHUNK_FRAMES", 4)
    assert list(frame_chunks(11)) == [(0, 4), (4, 8), (8, 11)]
    streamed = upscaler.upscale(clip, output_type="pt", **kw)
    assert torch.equal(streamed, in_ram)
    assert list(state_dir.iterdir()) == []
    with open("/proc/self/maps") as maps:
        assert [line for line in maps if "uav-clip-" in line] == []  # every mapping went with its tensor
