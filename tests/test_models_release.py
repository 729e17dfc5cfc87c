"""Real-size key sets, release-folder loading (.bin / .safetensors), image-model loading, errors."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import PARITY, load_parity, rel_err
from uav import weights as release
from uav.models import AutoencoderKLVideo, UNetVideoModel
from uav.weights.checkpoint import CheckpointKeyError


def _official_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (PARITY / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        keys[key] = tuple(json.loads(shape))
    return keys


@pytest.mark.parametrize(
    "cls,config,keys",
    [
        (UNetVideoModel, "unet_video_config.json", "unet_video_keys.txt"),
        (AutoencoderKLVideo, "vae_3d_config.json", "vae_3d_keys.txt"),
        (AutoencoderKLVideo, "vae_video_config.json", "vae_video_keys.txt"),
    ],
)
def test_real_size_configs_have_official_keys_and_shapes(cls, config, keys):
    cfg = json.loads((PARITY / "release_configs" / config).read_text())
    with torch.device("meta"):
        model = cls.from_config(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = _official_keys(keys)
    assert set(ours) == set(official)
    assert {k: ours[k] for k in official} == official


def test_real_size_unet_parameter_count():
    stats = json.loads((PARITY / "real_size_stats.json").read_text())
    cfg = json.loads((PARITY / "release_configs" / "unet_video_config.json").read_text())
    with torch.device("meta"):
        model = UNetVideoModel.from_config(cfg)
    # the published count includes the one shared RoPE table (16 values)
    n = sum(p.numel() for p in model.parameters()) + model.temporal_rotary_emb.freqs.numel()
    assert n == stats["unet_total_unique_params"]
    by_top = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    # the published count attributes the shared RoPE parameter to down_blocks (registered first)
    by_top["down_blocks"] += model.temporal_rotary_emb.freqs.numel()
    for name, count in stats["unet_by_top_module"].items():
        assert by_top[name] == count, name


def _decode_case(vae):
    io = load_parity("vae_io.safetensors")
    with torch.no_grad():
        return vae.decode(io["dec0.z"], io["dec0.img"], io["dec0.w_lr"]).sample, io["dec0.out"]


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.slow
def test_release_folder_round_trip(tmp_path, tiny_unet, tiny_vae, fmt):
    from diffusers import DDIMScheduler, DDPMScheduler

    ddim = DDIMScheduler.from_config(json.loads((PARITY / "scheduler_config_ddim_x4.json").read_text()))
    ddpm = DDPMScheduler.from_config(json.loads((PARITY / "low_res_scheduler_config_ddpm_x4.json").read_text()))
    rel = release.save_release(tmp_path / "rel", unet=tiny_unet, vae={"video": tiny_vae}, fmt=fmt,
                               scheduler=ddim, low_res_scheduler=ddpm)
    assert rel.unet_weights.suffix == "." + fmt
    # the saved file carries exactly the official key set, RoPE aliases included
    saved = release.load_state_dict_file(rel.unet_weights)
    assert set(saved) == set(load_parity("unet_weights.safetensors"))
    unet = release.load_unet(rel)
    vae = release.load_vae(rel, "video")
    io = load_parity("unet_io.safetensors")
    with torch.no_grad():
        out = unet(io["case1.sample"], io["case1.timestep"], io["case1.low_res"],
                   encoder_hidden_states=io["case1.encoder_hidden_states"], class_labels=io["case1.class_labels"]).sample
    assert rel_err(out, io["case1.out"]) <= 1e-4
    dec, ref = _decode_case(vae)
    assert rel_err(dec, ref) <= 1e-4
    s1, s2 = release.load_schedulers(rel)
    assert s1.config.prediction_type == "v_prediction" and s2.config.variance_type == "fixed_small"


@pytest.mark.slow
def test_convert_to_safetensors(tmp_path, tiny_unet, tiny_vae):
    rel = release.save_release(tmp_path / "rel", unet=tiny_unet, vae={"video": tiny_vae}, fmt="bin")
    written = release.convert_to_safetensors(rel.root, remove_original=True)
    assert sorted(p.name for p in written) == ["unet_video.safetensors", "vae_video.safetensors"]
    rel2 = release.find_release(rel.root)
    assert rel2.unet_weights.suffix == ".safetensors" and not (rel.root / "unet" / "unet_video.bin").exists()
    dec, ref = _decode_case(release.load_vae(rel2, "video"))
    assert rel_err(dec, ref) <= 1e-4


def test_checkpoint_that_does_not_fit_names_keys(tmp_path, tiny_unet):
    state = dict(tiny_unet.state_dict())
    state.pop("conv_in.weight")
    state["bogus.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError) as info:
        from uav.weights.checkpoint import load_official_state_dict
        load_official_state_dict(tiny_unet.__class__.from_config(dict(tiny_unet.config)), state, source="x.bin")
    msg = str(info.value)
    assert "conv_in.weight" in msg and "bogus.weight" in msg and "x.bin" in msg


def test_vae_3d_weights_into_video_config_is_a_clear_error(tmp_path, tiny_vae):
    cfg = dict(tiny_vae.config)
    cfg["up_block_types"] = ["UpDecoderBlock3D"] * 3
    cfg["condition_img"] = False
    vae3d = AutoencoderKLVideo.from_config(cfg)
    rel = release.save_release(tmp_path / "rel", unet=None or _tiny_unet_placeholder(), vae={"3d": vae3d})
    # swap: put the 3d weights where the video variant is expected
    (rel.root / "vae" / "vae_video_config.json").write_text(json.dumps(dict(tiny_vae.config), default=list))
    (rel.root / "vae" / "vae_3d.safetensors").rename(rel.root / "vae" / "vae_video.safetensors")
    with pytest.raises(CheckpointKeyError, match="missing"):
        release.load_vae(rel.root, "video")


def _tiny_unet_placeholder():
    return UNetVideoModel.from_config(json.loads((PARITY / "unet_video_tiny_config.json").read_text()))


def test_missing_release_folder_is_clear(tmp_path):
    with pytest.raises(release.ReleaseError, match="does not exist"):
        release.find_release(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(release.ReleaseError, match="unet_video"):
        release.load_unet(tmp_path / "empty")


def test_bin_is_read_without_pickle_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "unet_video.bin"
    torch.save({"a": Evil()}, path)
    with pytest.raises(release.ReleaseError, match="cannot read"):
        release.load_state_dict_file(path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sample=torch.zeros(1, 5, 2, 8, 8)), "sample: expected 4 channels"),
        (dict(sample=torch.zeros(1, 4, 8, 8)), "5-D"),
        (dict(low_res=torch.zeros(1, 3, 3, 8, 8)), "share batch, frames"),
        (dict(class_labels=torch.tensor([351])), r"\[0, 350\]"),
        (dict(class_labels=torch.tensor([-1])), r"\[0, 350\]"),
    ],
)
def test_unet_input_errors(tiny_unet, kwargs, match):
    args = dict(sample=torch.zeros(1, 4, 2, 8, 8), timestep=10, low_res=torch.zeros(1, 3, 2, 8, 8),
                encoder_hidden_states=torch.zeros(1, 3, 32), class_labels=torch.tensor([20]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tiny_unet(**args)


def test_vae_input_errors(tiny_vae):
    with pytest.raises(ValueError, match="img"):
        tiny_vae.decode(torch.zeros(1, 4, 2, 8, 8))
    with pytest.raises(ValueError, match="4 channels"):
        tiny_vae.decode(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8))


@pytest.mark.slow
def test_image_model_loads_and_matches_for_one_frame(tmp_path):
    """The image-only SD x4 upscaler (diffusers layout) in the video U-Net equals the image model at T=1."""
    from diffusers import UNet2DConditionModel

    cfg = json.loads((PARITY / "unet_video_tiny_config.json").read_text())
    image_cfg = dict(
        sample_size=16, in_channels=7, out_channels=4, layers_per_block=2,
        block_out_channels=cfg["block_out_channels"], attention_head_dim=cfg["attention_head_dim"],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        only_cross_attention=cfg["only_cross_attention"], cross_attention_dim=32, norm_num_groups=16,
        use_linear_projection=True, num_class_embeds=1000, flip_sin_to_cos=True, freq_shift=0,
    )
    torch.manual_seed(0)
    image = UNet2DConditionModel(**image_cfg).eval()
    with torch.no_grad():  # diffusers zero-inits nothing we rely on, but randomise norms too
        for p in image.parameters():
            p.add_(0.05 * torch.randn_like(p))
    image.save_pretrained(tmp_path / "sdx4" / "unet")
    video = release.load_image_unet(tmp_path / "sdx4")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 1, 12, 20, generator=g)
    lr = torch.randn(2, 3, 1, 12, 20, generator=g)
    text = torch.randn(2, 5, 32, generator=g)
    labels = torch.tensor([20, 100])
    with torch.no_grad():
        ref = image(torch.cat([x, lr], 1)[:, :, 0], 500, encoder_hidden_states=text, class_labels=labels).sample
        out = video(x, 500, lr, encoder_hidden_states=text, class_labels=labels).sample[:, :, 0]
    assert rel_err(out, ref) <= 1e-4
    # for T > 1 the clip-wide GroupNorm statistics make frames interact, by design
    x2 = torch.cat([x, torch.randn_like(x)], 2)
    lr2 = torch.cat([lr, torch.randn_like(lr)], 2)
    with torch.no_grad():
        out2 = video(x2, 500, lr2, encoder_hidden_states=text, class_labels=labels).sample[:, :, 0]
    assert rel_err(out2, ref) > 1e-3


def test_raft_checkpoint_is_found_and_read(tmp_path, tiny_unet, tiny_vae):
    """The release folder finds propagator/raft-things.pth; the raft flow plugin maps it strictly
    (tests/test_flow_raft.py), so the folder only reads it as plain tensors."""
    from conftest import PARITY as P

    keys = [line.split("\t") for line in (P / "raft_things_keys.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    state = {k: torch.zeros(json.loads(shape)) for k, shape, *_ in keys}
    rel = release.save_release(tmp_path / "rel", unet=tiny_unet, vae={"video": tiny_vae}, fmt="bin", raft_state=state)
    assert rel.raft_weights is not None and rel.raft_weights.name == "raft-things.pth"
    assert set(release.load_state_dict_file(rel.raft_weights)) == set(state)


def test_diffusers_save_and_from_pretrained_round_trip(tmp_path, tiny_unet, tiny_vae):
    tiny_unet.save_pretrained(tmp_path / "unet")
    tiny_vae.save_pretrained(tmp_path / "vae")
    unet = UNetVideoModel.from_pretrained(tmp_path / "unet", low_cpu_mem_usage=False)
    vae = AutoencoderKLVideo.from_pretrained(tmp_path / "vae", low_cpu_mem_usage=False)
    for a, b in ((tiny_unet, unet), (tiny_vae, vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
