"""Stage 1 end to end on tiny random networks: the loss drops, only temporal layers change,
the release folder loads strictly and upscales."""

from __future__ import annotations

import numpy as np
import pytest

from train_fixtures import assert_carried_over, events, state_of, train_in_process
from uav.weights.checkpoint import ROPE_KEY, is_temporal_key


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_in_process("unet", tmp_path_factory.mktemp("train_unet"), steps=30, checkpoint_every=10,
                            prompt_dropout=0.0, eval_samples=3)


@pytest.mark.slow
def test_unet_stage_lowers_the_fixed_evaluation_loss(run):
    _, out = run
    evals = events(out, "validation")
    assert [e["step"] for e in evals] == [0, 30]
    before, after = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert after < 0.8 * before, (before, after)
    steps = events(out, "step")
    assert [s["step"] for s in steps] == list(range(1, 31))
    assert all(np.isfinite(s["loss"]) for s in steps)


@pytest.mark.slow
def test_only_temporal_parameters_change(run):
    init, out = run
    old = state_of(init / "unet" / "unet_video.safetensors")
    new = state_of(out / "release" / "unet" / "unet_video.safetensors")
    assert set(old) == set(new)
    temporal = [k for k in old if is_temporal_key(k) and not k.endswith("rotary_emb.freqs") and k != ROPE_KEY]
    spatial = [k for k in old if k not in temporal]
    assert len(temporal) > 100 and len(spatial) > 100
    assert all(np.array_equal(old[k], new[k]) for k in spatial)
    changed = [k for k in temporal if not np.array_equal(old[k], new[k])]
    assert len(changed) == len(temporal), sorted(set(temporal) - set(changed))[:5]
    # the VAEs and the text model are carried over unchanged
    assert_carried_over(init, out, ["vae/vae_3d.safetensors", "vae/vae_video.safetensors"])
    assert (out / "release" / "text_encoder").is_dir() and (out / "release" / "tokenizer").is_dir()


@pytest.mark.slow
def test_release_loads_strictly_and_upscales(run):
    from uav import VideoUpscaler
    from uav.weights.tiny import moving_pattern

    _, out = run
    for vae in ("3d", "video"):
        up = VideoUpscaler.from_pretrained(out / "release", vae=vae, device="cpu")
        frames = up.upscale(moving_pattern(frames=3, height=8, width=8), num_inference_steps=2, seed=0)
        assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
    assert (out / "release" / "training.json").is_file()
    names = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert names == ["step-00000020", "step-00000030"]  # --keep-checkpoints 2
