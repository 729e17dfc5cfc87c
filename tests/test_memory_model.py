"""The memory model (``uav.memory``, ``uav doctor --memory``): traced on fake tensors on the CPU.

The real-size cases compare the prediction with what an H200 measured for the same
networks, shapes and dtypes (``benchmarks/results/bench_h200.json``): peak of one
window per call in bf16 at 192x352 (resident weights included) 11.52 GiB, decode
working sets 7.81 GiB (vae_3d, bf16, 192x352) and 29.81 GiB (vae_video, fp32, 270x480).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from io_helpers import make_clip  # noqa: E402


import uav.cli  # noqa: E402
from uav.cli.app import app  # noqa: E402
from uav.memory import estimate_memory  # noqa: E402
from uav.models import AutoencoderKLVideo, UNetVideoModel  # noqa: E402
from uav.settings import UpscaleSettings  # noqa: E402
from uav.weights import make_tiny_release  # noqa: E402

uav.cli._load_commands()
RELEASE = Path(uav.__file__).parent / "weights" / "release_configs"
PARITY = Path(__file__).parent / "data" / "parity"
GIB = 2**30


def _config(name: str, folder: Path = RELEASE) -> dict:
    return json.loads((folder / name).read_text())


def _tiny() -> tuple[dict, dict]:
    return _config("unet_video_tiny_config.json", PARITY), _config("vae_video_tiny_config.json", PARITY)


def test_the_bundled_configs_are_the_release_configs():
    for name in ("unet_video_config.json", "vae_3d_config.json", "vae_video_config.json"):
        assert _config(name) == _config(name, PARITY / "release_configs")


@pytest.mark.slow
def test_weights_are_the_networks_parameter_bytes():
    unet_cfg, vae_cfg = _tiny()
    e = estimate_memory(unet_cfg, vae_cfg, height=32, width=48, frames=8, unet_dtype=torch.float16,
                        vae_dtype=torch.float32)
    unet = UNetVideoModel.from_config(unet_cfg)
    vae = AutoencoderKLVideo.from_config(vae_cfg)
    assert e.weights_gib["unet"] * GIB == sum(p.numel() * 2 for p in unet.parameters())
    assert e.weights_gib["vae"] * GIB == sum(p.numel() * 4 for p in vae.parameters())
    assert e.shapes == {"unet": [2, 4, 8, 32, 48], "decode": [1, 4, 3, 32, 48]}
    assert e.clip_state_gib == 0.0  # offloaded by default


@pytest.mark.slow
def test_working_sets_follow_the_settings():
    unet_cfg, vae_cfg = _tiny()
    size = dict(height=48, width=64, frames=16)
    one = estimate_memory(unet_cfg, vae_cfg, **size, settings=UpscaleSettings(window_batch=1))
    two = estimate_memory(unet_cfg, vae_cfg, **size, settings=UpscaleSettings(window_batch=2))
    # two windows: the tensors that carry the batch double, one item's transients do not (uav.models.batching)
    assert two.shapes["unet"][0] == 4 and one.denoise_gib < two.denoise_gib < 1.9 * one.denoise_gib
    chunk1 = estimate_memory(unet_cfg, vae_cfg, **size, settings=UpscaleSettings(decode_chunk=1))
    assert chunk1.decode_gib == pytest.approx(one.decode_gib / 3, rel=0.1)
    tiled = estimate_memory(unet_cfg, vae_cfg, **size, settings=UpscaleSettings(decode_tile=32))
    assert tiled.shapes["decode"][3:] == [32, 32] and tiled.decode_gib < one.decode_gib
    no_cfg = estimate_memory(unet_cfg, vae_cfg, **size, settings=UpscaleSettings(guidance_scale=1.0))
    assert no_cfg.shapes["unet"][0] == 1
    on_gpu = estimate_memory(unet_cfg, vae_cfg, **size, settings=UpscaleSettings(offload=False))
    assert on_gpu.clip_state_gib * GIB == 16 * 48 * 64 * 96
    assert on_gpu.peak_gib == pytest.approx(one.peak_gib + on_gpu.clip_state_gib)


@pytest.mark.parametrize("kind, dtype, size, measured", [
    ("3d", torch.bfloat16, (192, 352), 7.81),
    ("video", torch.float32, (270, 480), 29.81),
])
@pytest.mark.slow
def test_decode_prediction_matches_the_h200(kind, dtype, size, measured):
    def predict(published: bool) -> float:
        return estimate_memory(_config("unet_video_config.json"), _config(f"vae_{kind}_config.json"),
                               height=size[0], width=size[1], frames=16, settings=UpscaleSettings(tile=False),
                               vae_dtype=dtype, published=published).decode_gib

    # the H200 ran the published module structure (issue 21 made the glue in place since)
    assert predict(True) == pytest.approx(measured, rel=0.05)
    assert predict(False) <= measured * 1.05


@pytest.mark.slow
def test_denoise_peak_matches_the_h200():
    def predict(published: bool = False):
        return estimate_memory(_config("unet_video_config.json"), _config("vae_3d_config.json"), height=192,
                               width=352, frames=16, settings=UpscaleSettings(tile=False),
                               unet_dtype=torch.bfloat16, vae_dtype=torch.bfloat16, published=published)

    e = predict(True)  # the structure the H200 measured
    assert e.peak_stage == "denoise" and e.peak_gib == pytest.approx(11.52, rel=0.05)
    # in-place glue (issue 21): the library's own U-Net call traces smaller
    assert predict().denoise_gib < 0.8 * e.denoise_gib
    assert e.fits(12) and not e.fits(10)
    advice = e.advice(8)
    assert advice and advice[0].startswith("--tile-mode latent --tile-size ")
    assert e.advice(12) == []


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("weights") / "tiny")


@pytest.mark.slow
def test_doctor_memory_fits_or_says_what_to_change(tiny_release, tmp_path):
    clip = make_clip(tmp_path / "c.mp4", num_frames=4)
    runner = CliRunner()
    big = runner.invoke(app, ["doctor", "--memory", str(clip), "--weights", str(tiny_release), "--card-gib", "100",
                              "--json"])
    assert big.exit_code == 0, big.output
    doc = json.loads(big.stdout)
    assert doc["fits"] is True and doc["advice"] == [] and doc["configs"] == str(tiny_release)
    assert doc["estimate"]["weights_gib"]["text_encoder"] > 0  # counted from text_encoder/config.json
    small = runner.invoke(app, ["doctor", "--memory", str(clip), "--weights", str(tiny_release), "--card-gib",
                                "0.0001", "--decode-chunk", "2", "--json"])
    assert small.exit_code == 4
    assert json.loads(small.stdout)["fits"] is False and json.loads(small.stdout)["advice"]
    text = runner.invoke(app, ["doctor", "--memory", str(clip), "--weights", str(tiny_release), "--card-gib", "100"])
    assert text.exit_code == 0 and "fits on a 100 GiB card" in text.stdout


def test_doctor_memory_bad_input_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["doctor", "--memory", str(tmp_path / "missing.mp4")])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.mp4" in lines[0]
    res = CliRunner().invoke(app, ["doctor", "--memory", str(tmp_path / "missing.mp4"), "--tile-size", "x"])
    assert res.exit_code == 2 and "--tile-size" in res.stderr


def test_live_bytes_count_each_storage_once_until_its_last_view_goes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from uav.memory import _LiveBytes

    mib = 2**20
    with FakeTensorMode():
        device = torch.device("cuda", 0)
        tracker = _LiveBytes(device)
        with tracker:
            a = torch.empty(mib, dtype=torch.uint8, device=device)
            view = a[: mib // 2]  # a view: no new storage
            b = torch.empty(2 * mib, dtype=torch.uint8, device=device)
            assert tracker.live == 3 * mib
            del a
            assert tracker.live == 3 * mib  # the view keeps the storage alive
            del view
            assert tracker.live == 2 * mib
            c = torch.empty(mib, dtype=torch.uint8, device=device)
            cpu = torch.empty(8 * mib, dtype=torch.uint8)  # another device: not counted
        assert tracker.peak == 3 * mib and tracker.live == 3 * mib
        del b, c, cpu
