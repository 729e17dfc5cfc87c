"""The pipeline end to end on tiny random networks saved to disk, and its input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uav import InputError, SettingsError, UpscaleSettings, VideoUpscaler
from uav.weights import make_tiny_release, moving_pattern


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("release") / "upscale_a_video", fmt="bin")


@pytest.fixture(scope="module")
def upscaler(tiny_release):
    return VideoUpscaler.from_pretrained(tiny_release, vae="video")


@pytest.mark.slow
def test_from_pretrained_end_to_end_with_propagation_and_colour_fix(upscaler):
    clip = moving_pattern(frames=20, height=12, width=12)
    events: list[dict] = []
    out = upscaler.upscale(clip, prompt="a cat", num_inference_steps=2, propagation_steps=(1,),
                           color_fix="wavelet", seed=0, callback=events.append)
    assert out.shape == (20, 48, 48, 3) and out.dtype == np.uint8
    stages = [e["stage"] for e in events]
    assert stages.count("denoise") == 2 and "flow" in stages and stages.count("decode") == 7  # ceil(20/3)


@pytest.mark.slow
def test_seed_makes_runs_reproducible(upscaler):
    clip = moving_pattern(frames=4, height=12, width=12)
    kw = dict(prompt="a cat", num_inference_steps=2, propagation_steps=(1,), color_fix="wavelet")
    out = upscaler.upscale(clip, seed=0, **kw)
    assert np.array_equal(out, upscaler.upscale(clip, seed=0, **kw))
    assert not np.array_equal(out, upscaler.upscale(clip, seed=1, **kw))


@pytest.mark.slow
def test_colour_fix_pulls_low_frequencies_to_the_input(upscaler):
    clip = np.full((4, 8, 8, 3), 200, dtype=np.uint8)
    plain = upscaler.upscale(clip, num_inference_steps=1, seed=0, output_type="pt")
    fixed = upscaler.upscale(clip, num_inference_steps=1, seed=0, output_type="pt", color_fix="adain")
    target = 200 / 255 * 2 - 1
    mean_plain = plain.mean(dim=(0, 1, 3, 4))
    mean_fixed = fixed.mean(dim=(0, 1, 3, 4))
    assert torch.all((mean_fixed - target).abs() < (mean_plain - target).abs())
    assert torch.allclose(mean_fixed, torch.full_like(mean_fixed, target), atol=0.02)


@pytest.mark.slow
def test_streaming_matches_whole_output(upscaler):
    clip = moving_pattern(frames=7, height=8, width=8)
    whole = upscaler.upscale(clip, num_inference_steps=1, seed=3)
    chunks = list(upscaler.upscale_iter(clip, num_inference_steps=1, seed=3))
    assert [c.shape[0] for c in chunks] == [3, 3, 1]
    assert np.array_equal(np.concatenate(chunks), whole)


@pytest.mark.slow
def test_one_frame_and_odd_sizes(upscaler):
    one = upscaler.upscale(moving_pattern(frames=1, height=9, width=13), num_inference_steps=1, seed=0,
                           propagation_steps=(0,))
    assert one.shape == (1, 36, 52, 3)


@pytest.mark.slow
def test_explicit_embeddings_need_no_text_encoder(tiny_release):
    up = VideoUpscaler.from_pretrained(tiny_release, vae="3d", load_text_encoder=False)
    emb = torch.randn(1, 16, 32)
    out = up.upscale(moving_pattern(frames=3, height=8, width=8), num_inference_steps=1, seed=0,
                     prompt_embeds=emb, negative_prompt_embeds=emb * 0.5, output_type="pt")
    assert out.shape == (1, 3, 3, 32, 32) and out.abs().max() <= 1
    with pytest.raises(InputError, match="text encoder"):
        up.upscale(moving_pattern(frames=3, height=8, width=8), num_inference_steps=1)


@pytest.mark.slow
def test_automatic_tiling_covers_the_frame(upscaler):
    clip = moving_pattern(frames=2, height=16, width=20)
    events: list[dict] = []
    out = upscaler.upscale(clip, num_inference_steps=1, seed=0, tile_size=12, tile_overlap=4, tile_threshold=100,
                           callback=events.append, output_type="pt")
    assert out.shape == (1, 3, 2, 64, 80)
    assert max(e.get("tiles", 1) for e in events) > 1
    feathered = upscaler.upscale(clip, num_inference_steps=1, seed=0, tile=True, tiling="feather", tile_size=12,
                                 tile_overlap=4, output_type="pt")
    assert feathered.shape == out.shape and torch.isfinite(feathered).all()


@pytest.mark.parametrize(
    "video,match",
    [
        (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)], "one size"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((2, 8, 8), np.uint8), r"\(T, H, W, 3\)"),
        (torch.zeros(1, 4, 2, 8, 8), r"\(1, 3, T, H, W\)"),
        (42, "expected a path"),
    ],
)
def test_bad_video_inputs(upscaler, video, match):
    with pytest.raises(InputError, match=match):
        upscaler.upscale(video, num_inference_steps=1)


@pytest.mark.parametrize(
    "knobs,match",
    [
        (dict(propagation_steps=(3,), num_inference_steps=3), "propagation_steps"),
        (dict(propagation_steps=(-1,)), "propagation_steps"),
        (dict(noise_level=351), "noise_level"),
        (dict(noise_level=-5), "noise_level"),
        (dict(guidance_scale=0.5), "negative_prompt"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(bogus=1), "unknown setting"),
    ],
)
def test_bad_settings(upscaler, knobs, match):
    with pytest.raises(SettingsError, match=match):
        upscaler.upscale(np.zeros((2, 8, 8, 3), np.uint8), **knobs)


def test_unknown_component_names_list_installed(upscaler):
    with pytest.raises(KeyError, match="wavelet"):
        upscaler.upscale(np.zeros((2, 8, 8, 3), np.uint8), num_inference_steps=1, color_fix="nope")


def test_settings_prompt_join_and_parse():
    s = UpscaleSettings.from_strings({"prompt": "a dog", "propagation_steps": "24, 26,28"})
    assert s.full_prompt == "a dog, best quality, extremely detailed"
    assert s.propagation_steps == (24, 26, 28)
    assert UpscaleSettings(guidance_scale=0.5, negative_prompt="").do_classifier_free_guidance is False


@pytest.mark.parametrize("knobs", [dict(scheduler="dpmsolver++"), dict(segments="uniform"),
                                   dict(scheduler="unipc", segments="uniform", window_batch=4)])
@pytest.mark.slow
def test_components_selected_by_name_run_end_to_end(upscaler, knobs):
    clip = moving_pattern(frames=10, height=12, width=12)
    out = upscaler.upscale(clip, num_inference_steps=2, propagation_steps=(1,), seed=0, output_type="pt", **knobs)
    assert out.shape == (1, 3, 10, 48, 48) and torch.isfinite(out).all()


@pytest.mark.slow
def test_window_batching_does_not_change_the_numbers(upscaler):
    clip = moving_pattern(frames=13, height=8, width=8)
    a = upscaler.upscale(clip, num_inference_steps=1, seed=0, output_type="pt")
    b = upscaler.upscale(clip, num_inference_steps=1, seed=0, output_type="pt", window_batch=4)
    assert (a - b).abs().max() < 1e-5


def test_latent_tiling_merges_tile_predictions_by_weight():
    """With a pointwise stand-in U-Net, averaging overlapping tile predictions must give the untiled result."""
    from types import SimpleNamespace

    from uav.sampling.loop import _tiled_call, _unet_call
    from uav.sampling.tiling import feather_tile_plan

    class Pointwise(torch.nn.Module):
        def forward(self, sample, t, low_res, encoder_hidden_states=None, class_labels=None):
            return SimpleNamespace(sample=2 * sample + low_res[:, :1])

    sample, lr = torch.randn(2, 4, 8, 20, 28), torch.randn(2, 3, 8, 20, 28)
    text = torch.zeros(2, 3, 32)
    tiles = feather_tile_plan(20, 28, tile_size=12, overlap=4, scale=1)
    assert len(tiles) > 1
    whole = _unet_call(Pointwise(), sample, lr, text, 5, 20)
    tiled = _tiled_call(Pointwise(), sample, lr, text, 5, 20, tiles)
    assert torch.allclose(whole, tiled, atol=1e-5)


@pytest.mark.slow
def test_latent_tile_mode_runs_end_to_end(upscaler):
    clip = moving_pattern(frames=3, height=16, width=20)
    kw = dict(num_inference_steps=1, seed=0, output_type="pt", tile=True, tiling="feather", tile_size=12,
              tile_overlap=4)
    latent = upscaler.upscale(clip, tile_mode="latent", **kw)
    per_tile = upscaler.upscale(clip, **kw)
    assert latent.shape == per_tile.shape == (1, 3, 3, 64, 80)
    assert torch.isfinite(latent).all() and not torch.allclose(latent, per_tile)


def test_tiled_decode_blends_to_the_whole_frame_result():
    """With a decoder that is local (x4 nearest of the latent), tiled and whole-frame decoding agree."""
    from types import SimpleNamespace

    from uav.sampling.decode import decode_chunks

    class LocalVAE(torch.nn.Module):
        config = SimpleNamespace(scaling_factor=1.0)
        upscale_factor = 4

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def decode(self, z, img, w_lr):
            up = torch.nn.functional.interpolate(z[:, :3], scale_factor=(1, 4, 4), mode="nearest")
            return SimpleNamespace(sample=torch.tanh(up + 0.1 * torch.nn.functional.interpolate(
                img, scale_factor=(1, 4, 4), mode="nearest")))

    z, lr = torch.randn(1, 4, 5, 30, 41), torch.rand(1, 3, 5, 30, 41) * 2 - 1
    whole = torch.cat([c for _, c in decode_chunks(LocalVAE(), z, lr, chunk=3)], dim=2)
    tiled = torch.cat([c for _, c in decode_chunks(LocalVAE(), z, lr, chunk=3, tile=12, tile_overlap=4)], dim=2)
    assert whole.shape == tiled.shape == (1, 3, 5, 120, 164)
    assert torch.allclose(whole, tiled, atol=1e-5)


@pytest.mark.slow
def test_decode_tile_setting_runs_end_to_end(upscaler):
    out = upscaler.upscale(moving_pattern(frames=2, height=20, width=24), num_inference_steps=1, seed=0,
                           decode_tile=12, output_type="pt")
    assert out.shape == (1, 3, 2, 80, 96) and torch.isfinite(out).all()
