"""The training building blocks on their own: data stream, degradation TOML, captions, schedule,
EMA, atomic checkpoints, gradient checkpointing and the SD x4 starting point."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from conftest import torch_threads
from train_fixtures import fast_degradations, make_clips
from uav.train.config import TrainConfigError, degradation_config_from_dict, load_degradation_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_clips(tmp_path_factory.mktemp("train_parts") / "data", count=2, frames=8, size=32)


def _dataset(data, seed=0, **kw):
    from uav.train.data import WindowDataset, find_clips

    clips = find_clips(data, frames=4, crop=4)
    cfg = degradation_config_from_dict({"video_prob": 0.0, "second": False})
    return WindowDataset(clips, frames=4, stride=2, crop=4, degradation=cfg, seed=seed, **kw)


def test_samples_are_a_pure_function_of_seed_and_index(data):
    ds = _dataset(data)
    assert len(ds) == 6  # 2 clips x starts 0, 2, 4
    a, b = ds[7], _dataset(data)[7]
    assert torch.equal(a["hq"], b["hq"]) and torch.equal(a["lq"], b["lq"]) and a["key"] == b["key"]
    assert a["hq"].shape == (3, 4, 16, 16) and a["lq"].shape == (3, 4, 4, 4)
    assert a["hq"].min() >= -1 and a["hq"].max() <= 1
    # every epoch visits every window once, in a seed-dependent order
    first_epoch = [ds.window(g) for g in range(6)]
    assert sorted(first_epoch) == sorted(ds.windows)
    assert first_epoch != [_dataset(data, seed=1).window(g) for g in range(6)]
    assert ds[0]["caption"] == "a textured pattern moving right" or ds[0]["caption"] == ""


@pytest.mark.slow
def test_loader_in_workers_matches_the_main_process_and_resumes_at_a_position(data):
    from uav.train.data import make_loader

    ds = _dataset(data)
    main = make_loader(ds, start=0, batch_size=2, num_workers=0)
    worker = make_loader(ds, start=0, batch_size=2, num_workers=2)
    it_main, it_worker = iter(main), iter(worker)
    batches = [next(it_main) for _ in range(3)]
    for expected in batches:
        got = next(it_worker)
        assert torch.equal(got["index"], expected["index"]) and torch.equal(got["lq"], expected["lq"])
    del it_worker
    resumed = next(iter(make_loader(ds, start=4, batch_size=2, num_workers=0)))
    assert resumed["index"].tolist() == [4, 5] and torch.equal(resumed["hq"], batches[2]["hq"])
    # two processes share the stream without overlap
    r0 = next(iter(make_loader(ds, start=0, batch_size=2, num_workers=0, rank=0, world=2)))
    r1 = next(iter(make_loader(ds, start=0, batch_size=2, num_workers=0, rank=1, world=2)))
    assert r0["index"].tolist() == [0, 2] and r1["index"].tolist() == [1, 3]


def test_captions_from_json_csv_and_sidecars(tmp_path, data):
    from uav.train.data import find_clips, load_captions

    (tmp_path / "c.json").write_text(json.dumps({"clip1.mp4": "second clip"}))
    (tmp_path / "c.csv").write_text("clip,caption\nclip1,from csv\n")
    by_json = find_clips(data, frames=4, crop=4, captions=load_captions(tmp_path / "c.json"))
    by_csv = find_clips(data, frames=4, crop=4, captions=load_captions(tmp_path / "c.csv"))
    assert [c.caption for c in by_json] == ["a textured pattern moving right", "second clip"]
    assert by_csv[1].caption == "from csv"
    (tmp_path / "bad.csv").write_text("name,words\nx,y\n")
    with pytest.raises(TrainConfigError, match="'clip' and a 'caption' column"):
        load_captions(tmp_path / "bad.csv")
    with pytest.raises(TrainConfigError, match="smaller than the HQ crop"):
        find_clips(data, frames=4, crop=16)


def test_degradation_toml_overrides_defaults_and_rejects_unknown_keys(tmp_path):
    from uav.eval.degrade import DegradationConfig

    cfg = load_degradation_config(fast_degradations(tmp_path))
    assert cfg.video_prob == 0.0 and cfg.second is None and cfg.first.blur.kernel_sizes == (3, 5)
    assert cfg.first.noise == DegradationConfig().first.noise  # untouched tables keep their defaults
    assert load_degradation_config(None) == DegradationConfig()
    with pytest.raises(TrainConfigError, match="unknown key"):
        degradation_config_from_dict({"first": {"blurr": {}}})
    with pytest.raises(TrainConfigError, match="video_prob"):
        degradation_config_from_dict({"video_prob": 2.0})
    (tmp_path / "x.toml").write_text("video_prob = [")
    with pytest.raises(TrainConfigError, match="not valid TOML"):
        load_degradation_config(tmp_path / "x.toml")


def test_learning_rate_warm_up_then_cosine():
    from uav.train.loop import lr_factor

    f = [lr_factor(s, warmup=4, total=12, schedule="cosine") for s in range(12)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0
    assert all(a >= b for a, b in zip(f[4:], f[5:])) and f[-1] < 0.05
    assert lr_factor(100, warmup=0, total=10, schedule="constant") == 1.0


def test_ema_follows_the_weights():
    from uav.train.checkpoints import EMA

    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([("p", p)], decay=0.5)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # ramp: min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.shadow["p"], torch.full((3,), 0.9))
    state = ema.state_dict()
    other = EMA([("p", p)], decay=0.5)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.shadow["p"], ema.shadow["p"])


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    from uav.train import checkpoints as ck

    p = torch.nn.Parameter(torch.randn(4))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    p.grad = torch.ones(4)
    opt.step()
    for step in (2, 4, 6):
        ck.save_checkpoint(tmp_path, step, trained={"p": p}, ema=None, optimizer=opt, scheduler=sched,
                           state={"stage": "unet", "samples": step}, keep=2)
    assert [c.step for c in ck.list_checkpoints(tmp_path)] == [4, 6]
    # a torn write (killed before the rename) and a folder without state.json are ignored
    (tmp_path / ".tmp-step-00000008-123").mkdir()
    (tmp_path / "step-00000010").mkdir()
    latest = ck.latest_checkpoint(tmp_path)
    assert latest.step == 6 and latest.state["samples"] == 6
    assert not (tmp_path / ".tmp-step-00000008-123").exists()
    assert torch.equal(latest.tensors("trained.safetensors")["p"], p.detach())
    state = latest.load("training_state.pt")
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4))], lr=0.1)
    fresh.load_state_dict(state["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    os.unlink(tmp_path / "latest")
    assert ck.latest_checkpoint(tmp_path).step == 6


def test_gradient_checkpointing_gives_the_same_gradients():
    from uav.weights.tiny import tiny_unet
    from uav.train.stage import enable_gradient_checkpointing
    from uav.train.unet_stage import is_temporal_parameter

    g = torch.Generator().manual_seed(0)
    x, lr = torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(1, 3, 3, 8, 8, generator=g)
    text = torch.randn(1, 4, 32, generator=g)
    grads = []
    with torch_threads(1):
        for checkpointing in (False, True):
            unet = tiny_unet().train()
            for name, p in unet.named_parameters():
                p.requires_grad_(is_temporal_parameter(name))
            if checkpointing:
                n = enable_gradient_checkpointing([*unet.down_blocks, *unet.up_blocks, unet.mid_block])
                assert n == 9
            unet(x, 500, lr, encoder_hidden_states=text, class_labels=20).sample.square().mean().backward()
            grads.append({n: p.grad.clone() for n, p in unet.named_parameters() if p.requires_grad})
            assert all(p.grad is None for n, p in unet.named_parameters() if not p.requires_grad)
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6, rtol=1e-5) for k in grads[0])


@pytest.mark.slow
def test_training_starts_from_the_image_sd_x4_upscaler(tmp_path, data):
    """A diffusers-layout SD x4 folder: U-Net inflated (temporal layers = identity), VAE -> vae_3d."""
    import shutil

    from diffusers import AutoencoderKL, UNet2DConditionModel

    from uav.weights.tiny import TINY_UNET_CONFIG, TINY_VAE_CONFIG, make_tiny_release
    from uav.train.starting_point import load_starting_point

    tiny = make_tiny_release(tmp_path / "tiny", vae=("3d",))
    sd = tmp_path / "sdx4"
    c = TINY_UNET_CONFIG
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=16, in_channels=7, out_channels=4, layers_per_block=c["layers_per_block"],
        block_out_channels=c["block_out_channels"],
        attention_head_dim=c["attention_head_dim"], down_block_types=[t.replace("3D", "2D") for t in c["down_block_types"]],
        up_block_types=[t.replace("3D", "2D") for t in c["up_block_types"]],
        only_cross_attention=c["only_cross_attention"], cross_attention_dim=32, norm_num_groups=c["norm_num_groups"],
        use_linear_projection=True, num_class_embeds=1000,
    ).save_pretrained(sd / "unet")
    v = TINY_VAE_CONFIG
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                  up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=v["block_out_channels"],
                  layers_per_block=v["layers_per_block"], latent_channels=4, norm_num_groups=v["norm_num_groups"],
                  scaling_factor=0.08333,
                  ).save_pretrained(sd / "vae")
    for name in ("text_encoder", "tokenizer", "scheduler", "low_res_scheduler"):
        shutil.copytree(tiny / name, sd / name)
    start = load_starting_point(sd)
    assert start.kind == "sd-x4" and set(start.vaes) == {"3d"}
    ref = AutoencoderKL.from_pretrained(sd / "vae").eval()
    img = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        ours = start.vaes["3d"].encode(img).latent_dist.mean[:, :, 0]
        theirs = ref.encode(img[:, :, 0]).latent_dist.mean
    assert torch.allclose(ours, theirs, atol=1e-5)

    from uav import VideoUpscaler
    from uav.train import train_unet

    with torch_threads(1):
        result = train_unet(data=data, output=tmp_path / "out", init=sd, frames=4, stride=4, crop=8, steps=2,
                            warmup_steps=0, num_workers=0, eval_samples=0, progress=False, device="cpu",
                            degradations=fast_degradations(tmp_path), cache_latents=True)
    assert result.steps == 2 and len(result.losses) == 2
    assert len(list((tmp_path / "out" / "latent_cache").glob("*.safetensors"))) == 2
    VideoUpscaler.from_pretrained(result.release, device="cpu")


@pytest.mark.slow
def test_memory_model_on_the_meta_device():
    from uav.weights.tiny import TINY_UNET_CONFIG, TINY_VAE_CONFIG, tiny_unet
    from uav.train.memory import step_memory
    from uav.train.unet_stage import is_temporal_parameter

    small = step_memory("unet", TINY_UNET_CONFIG, crop=8, frames=4)
    large = step_memory("unet", TINY_UNET_CONFIG, crop=16, frames=4)
    assert small["trained_parameters"] == sum(p.numel() for n, p in tiny_unet().named_parameters()
                                              if is_temporal_parameter(n))
    b_small, b_large = small["bytes"], large["bytes"]
    assert 0 < b_small["activations_checkpointed"] < b_small["activations"] < b_large["activations"]
    vae = step_memory("vae", TINY_VAE_CONFIG, crop=8, frames=4)
    assert 0 < vae["trained_parameters"] < vae["parameters"]
