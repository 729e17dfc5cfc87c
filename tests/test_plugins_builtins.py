"""The built-in colour, tiling, segment and scheduler components, selected by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from uav.protocols import ColorCorrector, DenoisingScheduler, SegmentStrategy, TilingStrategy
from uav.registry import Registry

PARITY = Path(__file__).parent / "data" / "parity"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


# -- colour ----------------------------------------------------------------------------


def test_colour_correctors_by_name_match_the_fixture(registry):
    io = load_file(PARITY / "color_io.safetensors")
    # The fixture's style is already the bicubic-upsampled LR, so it is passed at full size.
    wavelet = registry.get("color", "wavelet")
    adain = registry.get("color", "adain")
    assert isinstance(wavelet, ColorCorrector) and isinstance(adain, ColorCorrector)
    assert torch.allclose(wavelet(io["content"], io["style"]), io["wavelet_reconstruction"], atol=1e-5, rtol=0)
    assert torch.allclose(adain(io["content"], io["style"]), io["adaptive_instance_normalization"], atol=1e-5, rtol=0)
    none = registry.get("color", "none")
    assert none(io["content"], io["style"]) is io["content"]
    with pytest.raises(TypeError, match="takes no options"):
        registry.get("color", "wavelet", levels=3)


def test_colour_corrector_upsamples_a_low_res_reference(registry):
    g = torch.Generator().manual_seed(0)
    output = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    low_res = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    fixed = registry.get("color", "adain")(output, low_res)
    assert fixed.shape == output.shape
    up = torch.nn.functional.interpolate(low_res, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(fixed.mean(dim=(-2, -1)), up.mean(dim=(-2, -1)), atol=1e-5)


# -- tiling ----------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(100, 150), (64, 64), (37, 211)])
def test_feather_tiling_reproduces_a_constant_image_and_covers_every_pixel(registry, height, width):
    from uav.sampling.tiling import blend_tiles

    tiling = registry.get("tiling", "feather", tile_size=48, overlap=12)
    assert isinstance(tiling, TilingStrategy)
    scale = 4
    tiles = tiling.plan(height, width, scale=scale)
    assert len(tiles) >= 1
    coverage = torch.zeros(height * scale, width * scale, dtype=torch.float64)
    outputs = []
    for tile in tiles:
        y0, y1, x0, x1 = tile.region
        assert tile.weight.shape == ((y1 - y0) * scale, (x1 - x0) * scale)
        coverage[y0 * scale : y1 * scale, x0 * scale : x1 * scale] += tile.weight.double()
        outputs.append(torch.full((3, (y1 - y0) * scale, (x1 - x0) * scale), 0.37))
    assert bool((coverage > 0).all()), "every output pixel needs a positive weight"
    blended = blend_tiles(outputs, tiles, height * scale, width * scale)
    assert (blended - 0.37).abs().max() < 1e-5


def test_official_tiling_by_name_pastes_cores(registry):
    from uav.sampling.tiling import official_tile_plan

    defaults = registry.get("tiling", "official")
    assert (defaults.tile_size, defaults.overlap) == (256, 64)  # the published values
    tiling = registry.get("tiling", "official", tile_size=96, overlap=24)
    tiles = tiling.plan(200, 260)
    expected = official_tile_plan(200, 260, tile_size=96, overlap=24, scale=4)
    assert [t.region for t in tiles] == [t.region for t in expected]
    assert len(tiles) > 1
    # Hard paste: weights are 0/1 and the cores partition the output.
    total = torch.zeros(200 * 4, 260 * 4)
    for t in tiles:
        y0, y1, x0, x1 = t.region
        assert set(torch.unique(t.weight).tolist()) <= {0.0, 1.0}
        total[y0 * 4 : y1 * 4, x0 * 4 : x1 * 4] += t.weight
    assert torch.equal(total, torch.ones_like(total))
    with pytest.raises(ValueError, match="tile_size must be an int >= 1"):
        registry.get("tiling", "feather", tile_size=0)


# -- segments --------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [5, 8, 13, 21, 40])
def test_uniform_segments_weights_sum_to_one_without_duplicates(registry, num_frames):
    strategy = registry.get("segments", "uniform")
    assert isinstance(strategy, SegmentStrategy)
    plan = strategy.plan(num_frames, window=8)
    assert torch.allclose(plan.weights.sum(dim=0), torch.ones(num_frames), atol=1e-6)
    assert len(set(plan.windows)) == len(plan.windows) == len(plan.calls)
    assert all(e - s == min(8, num_frames) for s, e in plan.windows)
    assert bool((plan.weights >= 0).all())


def test_official_segments_follow_the_published_rule(registry):
    plan = registry.get("segments", "official").plan(13)
    assert plan.windows == ((0, 8), (5, 13))
    assert plan.calls == ((0, 8), (5, 13), (5, 13))  # the last window runs twice
    assert torch.allclose(plan.weights[:, 5], torch.tensor([0.25, 0.75]))
    assert registry.get("segments", "official").plan(11).windows == ((0, 8), (3, 11))
    with pytest.raises(ValueError, match="overlap must be an int >= 0"):
        registry.get("segments", "uniform", overlap=-1)


# -- schedulers --------------------------------------------------------------------------


def test_ddim_official_by_name_matches_the_fixture(registry):
    io = load_file(PARITY / "scheduler_io.safetensors")
    config_path = PARITY / "scheduler_config_ddim_x4.json"
    for config in (config_path, json.loads(config_path.read_text()), None):
        sched = registry.get("scheduler", "ddim-official", config=config)
        assert isinstance(sched, DenoisingScheduler)
        assert torch.equal(sched.set_timesteps(30), io["set_timesteps_30"])
        assert torch.allclose(sched.alphas_cumprod, io["ddim_alphas_cumprod"], atol=0, rtol=0)
    for i in (0, 1):
        t = io[f"step{i}_timestep"]
        v, x = io[f"step{i}_model_output"], io[f"step{i}_sample"]
        x0 = sched.predict_x0(v, t, x)
        assert torch.allclose(x0, io[f"step{i}_x0"], atol=1e-6)
        assert torch.allclose(sched.step(v, t, x, x0), io[f"step{i}_prev_sample"], atol=1e-6)
        override = io[f"step{i}_x0_override"]
        assert torch.allclose(sched.step(v, t, x, override), io[f"step{i}_prev_sample_with_x0_override"], atol=1e-6)
