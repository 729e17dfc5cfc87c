"""Issue 21 item 1: compile-ready networks, regional compilation and the ``compile`` setting."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.static import graph_breaks  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402
from uav import compilation  # noqa: E402
from uav.settings import SettingsError, UpscaleSettings  # noqa: E402
from uav.weights.tiny import tiny_unet  # noqa: E402


@pytest.mark.slow
def test_every_network_traces_in_one_graph():
    assert graph_breaks(WORKLOADS["lr270x480"]) == {"unet": 0, "vae_3d": 0, "vae_video": 0, "propagation": 0}


def test_compile_setting_reads_auto_on_off():
    assert UpscaleSettings().compile is None
    assert UpscaleSettings.from_strings({"compile": "on"}).compile is True
    assert UpscaleSettings.from_strings({"compile": "off"}).compile is False
    with pytest.raises(SettingsError, match="compile"):
        UpscaleSettings.from_strings({"compile": "sometimes"})


def test_auto_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    unet = tiny_unet()
    cuda = torch.device("cuda")
    window = (8, 192, 352)
    assert compilation.decide(None, unet, torch.device("cpu"), calls=10**6, window=window, guided=True).on is False
    assert compilation.decide(True, unet, torch.device("cpu"), calls=1, window=window, guided=True).on is True
    assert compilation.decide(False, unet, cuda, calls=10**6, window=window, guided=True).on is False
    # 16 frames (3 windows x 30 steps) do not repay a cold compile; 200 frames (33 windows) do
    short = compilation.decide(None, unet, cuda, calls=90, window=window, guided=True)
    long = compilation.decide(None, unet, cuda, calls=990, window=window, guided=True)
    assert not short.on and long.on and long.saving_s > long.compile_s
    # once a compile of this network and window has finished, the cache makes it cheap
    compilation.mark_compiled(unet, cuda, window)
    warm = compilation.decide(None, unet, cuda, calls=90, window=window, guided=True)
    assert warm.on and warm.compile_s == compilation.WARM_COMPILE_S and "cached" in warm.reason


def test_regions_compile_once_per_class_and_shape(monkeypatch):
    from torch._dynamo.utils import counters

    unet = tiny_unet()
    real = torch.compile
    monkeypatch.setattr(compilation, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend="eager", **kw))
    blocks = compilation.compile_regions(unet)
    assert blocks > 10 and compilation.is_compiled(unet)
    assert all(isinstance(b.forward, types.MethodType) for b in compilation._region_modules(unet))
    torch._dynamo.reset()
    counters.clear()
    x, lr, ctx = torch.randn(2, 4, 5, 8, 12), torch.randn(2, 3, 5, 8, 12), torch.randn(2, 7, 32)
    with torch.no_grad():
        out = unet(x, 500, lr, encoder_hidden_states=ctx, class_labels=120).sample
        graphs = counters["stats"]["unique_graphs"]
        unet(x, 500, lr, encoder_hidden_states=ctx, class_labels=120)
        assert counters["stats"]["unique_graphs"] == graphs  # nothing recompiles on the next call
        assert graphs < blocks  # blocks of one class and shape share a graph
        compilation.uncompile_regions(unet)
        assert not compilation.is_compiled(unet)
        eager = unet(x, 500, lr, encoder_hidden_states=ctx, class_labels=120).sample
    assert torch.allclose(out, eager, atol=1e-5)
    torch._dynamo.reset()


def test_inductor_cache_lives_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation.cache_dir() == tmp_path / "uav" / "inductor"


@pytest.mark.slow
def test_compiled_upscale_equals_eager(tmp_path):
    from uav import VideoUpscaler
    from uav.weights import make_tiny_release

    up = VideoUpscaler.from_pretrained(make_tiny_release(tmp_path / "tiny"), vae="video", device="cpu", dtype="fp32")
    clip = (np.random.RandomState(0).rand(9, 8, 12, 3) * 255).astype(np.uint8)
    kw = dict(prompt="a", num_inference_steps=2, seed=0, output_type="pt", propagation_steps=(1,))
    eager = up.upscale(clip, compile=False, **kw)
    compiled = up.upscale(clip, compile=True, **kw)
    assert compilation.is_compiled(up.unet) and compilation.is_compiled(up.vae)
    assert (compiled - eager).abs().max() <= 1e-4
    up.upscale(clip, compile=False, **kw)
    assert not compilation.is_compiled(up.unet)
