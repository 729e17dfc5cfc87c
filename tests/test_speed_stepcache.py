"""Issue 21 item 5: the opt-in ``fast`` preset (step caching, guidance reuse), a library setting."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.static import _fast_calls, flops_per_frame  # noqa: E402
from benchmarks.workloads import TINY_WORKLOADS, WORKLOADS  # noqa: E402
from uav.sampling.loop import denoise  # noqa: E402
from uav.sampling.stepcache import StepCache  # noqa: E402
from uav.sampling.windows import official_segment_plan  # noqa: E402
from uav.settings import UpscaleSettings  # noqa: E402
from uav.weights.tiny import tiny_unet  # noqa: E402


def test_the_finest_branch_alone_reproduces_the_full_call():
    unet = tiny_unet()
    g = torch.Generator().manual_seed(0)
    x, lr, ctx = torch.randn(2, 4, 5, 12, 20, generator=g), torch.randn(2, 3, 5, 12, 20, generator=g), \
        torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        full = unet(x, 500, lr, encoder_hidden_states=ctx, class_labels=120, keep_deep_feature=True)
        cached = unet(x, 500, lr, encoder_hidden_states=ctx, class_labels=120, deep_feature=full.deep_feature)
        moved = unet(x * 0.9, 450, lr, encoder_hidden_states=ctx, class_labels=120, deep_feature=full.deep_feature)
    assert full.deep_feature.shape == (2, 32, 5, 12, 20)
    assert torch.equal(cached.sample, full.sample)
    assert not torch.allclose(moved.sample, full.sample)  # the finest branch follows the new input


def test_fast_is_a_library_preset():
    fast = UpscaleSettings(preset="fast")
    assert (fast.scheduler, fast.num_inference_steps, fast.step_cache, fast.step_cache_interval,
            fast.guidance_reuse_from) == ("dpmsolver++", 10, "deepcache", 3, 5)
    assert UpscaleSettings(preset="fast", num_inference_steps=12).num_inference_steps == 12  # given values stay
    assert UpscaleSettings.from_strings({"preset": "fast"}) == fast  # what `--preset fast` parses to
    default = UpscaleSettings()
    assert (default.preset, default.step_cache, default.guidance_reuse_from) == ("default", "none", None)


def test_fast_call_pattern():
    calls = _fast_calls(TINY_WORKLOADS["lr270x480"])  # 13 frames: 2 distinct windows
    # full every 3rd step (0, 3, 6, 9); guidance on steps 0-4, reused after
    assert calls == {(2, False): 2 * 2, (2, True): 3 * 2, (1, False): 2 * 2, (1, True): 3 * 2}


class _ConstantGuidance(torch.nn.Module):
    """A U-Net whose conditional / unconditional outputs differ by a constant (guidance reuse is exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, sample, t, low_res, encoder_hidden_states, class_labels, **kw):
        return (sample * self.w + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1),)


def test_guidance_reuse_is_exact_when_the_difference_holds():
    from uav.sampling.schedulers import OfficialDDIM

    cfg = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "scaled_linear",
           "prediction_type": "v_prediction", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    unet = _ConstantGuidance()
    g = torch.Generator().manual_seed(0)
    lat, lr, text = torch.randn(1, 4, 9, 4, 4, generator=g), torch.randn(1, 3, 9, 4, 4, generator=g), \
        torch.randn(2, 7, 8, generator=g)
    plan = official_segment_plan(9, 8)

    def run(reuse):
        sched = OfficialDDIM(cfg)
        ts = [int(t) for t in sched.set_timesteps(6)]
        with torch.no_grad():
            return denoise(unet, sched, lat, lr, text, noise_level=20, guidance_scale=6.0, plan=plan, timesteps=ts,
                           guidance_reuse_from=reuse)

    assert torch.allclose(run(2), run(None), atol=1e-5)


@pytest.mark.slow  # 15 s on 2 cores: the full suite runs it, the quick loop does not
def test_fast_upscale_runs_through_the_library(tmp_path):
    from uav import VideoUpscaler
    from uav.weights import make_tiny_release

    up = VideoUpscaler.from_pretrained(make_tiny_release(tmp_path / "tiny"), vae="video", device="cpu")
    clip = (np.random.RandomState(0).rand(9, 8, 8, 3) * 255).astype(np.uint8)
    fast = up.upscale(clip, prompt="a", seed=0, preset="fast")
    default = up.upscale(clip, prompt="a", seed=0, num_inference_steps=10, scheduler="dpmsolver++")
    assert fast.shape == default.shape == (9, 32, 32, 3)
    assert not np.array_equal(fast, default)  # step caching and guidance reuse change the numbers


@pytest.mark.slow
def test_fast_needs_8x_fewer_unet_flops_per_frame():
    flops = flops_per_frame(WORKLOADS["lr192x352"], tiny=False)
    assert flops["default"] == pytest.approx(flops["baseline"], rel=0.01)  # same work, restructured
    assert flops["baseline"] / flops["fast"] >= 8
