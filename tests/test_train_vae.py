"""Stage 2 end to end on tiny random networks: the loss drops, only the decoder's temporal and SFT
parts change, and a vae_video inflated from vae_3d starts as vae_3d."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train_fixtures import assert_carried_over, events, state_of, train_in_process
from uav.train.vae_stage import is_decoder_temporal_or_sft


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_in_process("vae", tmp_path_factory.mktemp("train_vae"), steps=30, checkpoint_every=15,
                            eval_samples=3, validate_every=15, validation_inference_steps=2)


@pytest.mark.slow
def test_vae_stage_lowers_the_fixed_evaluation_loss(run):
    _, out = run
    evals = events(out, "validation")
    before, after = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert after < 0.9 * before, (before, after)


@pytest.mark.slow
def test_validation_upscales_the_held_out_clip_and_scores_it(run):
    _, out = run
    evals = events(out, "validation")
    assert [e["step"] for e in evals] == [0, 15, 30]
    for e in evals:
        assert e["clip"] == "clip0.mp4" and 0 < e["psnr"] < 60 and -1 <= e["ssim"] <= 1 and e["ewarp"] >= 0
    assert [e["ema"] for e in evals] == [False, False, False]  # --ema-decay 0: the raw weights


@pytest.mark.slow
def test_only_decoder_temporal_and_sft_parameters_change(run):
    init, out = run
    old = state_of(init / "vae" / "vae_video.safetensors")
    new = state_of(out / "release" / "vae" / "vae_video.safetensors")
    trained = [k for k in old if is_decoder_temporal_or_sft(k)]
    frozen = [k for k in old if k not in trained]
    assert any(k.startswith("encoder.") for k in frozen) and any(".conv_3d." in k for k in trained)
    assert any(k.startswith("decoder.condition_fuse.") for k in trained)
    assert all(np.array_equal(old[k], new[k]) for k in frozen)
    changed = [k for k in trained if not np.array_equal(old[k], new[k])]
    assert len(changed) == len(trained), sorted(set(trained) - set(changed))[:5]
    # the U-Net and vae_3d are carried over bit for bit
    assert_carried_over(init, out, ["unet/unet_video.safetensors", "vae/vae_3d.safetensors"])


@pytest.mark.slow
def test_release_with_the_trained_decoder_upscales(run):
    from uav import VideoUpscaler
    from uav.weights.tiny import moving_pattern

    _, out = run
    up = VideoUpscaler.from_pretrained(out / "release", vae="video", device="cpu")
    frames = up.upscale(moving_pattern(frames=4, height=8, width=8), num_inference_steps=2, seed=0)
    assert frames.shape == (4, 32, 32, 3)


def test_inflated_video_decoder_starts_as_vae_3d():
    from uav.weights.tiny import tiny_vae
    from uav.train.starting_point import inflate_video_vae

    base = tiny_vae("3d")
    video = inflate_video_vae(base)
    assert video.is_conditioned
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 3, 6, 6, generator=g)
    img = torch.rand(1, 3, 3, 6, 6, generator=g) * 2 - 1
    with torch.no_grad():
        ref = base.decode(z).sample
        out = video.decode(z, img).sample
    assert torch.allclose(out, ref, atol=1e-5)
    # and the new parts are live: a non-zero SFT output changes the result
    with torch.no_grad():
        video.decoder.condition_fuse.shift.bias.fill_(0.5)
        assert not torch.allclose(video.decode(z, img).sample, ref, atol=1e-3)
