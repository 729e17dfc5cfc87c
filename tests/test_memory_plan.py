"""Settings chosen for the card (issue 22): ``memory``/``--vram``, the planner, ``uav doctor --memory --card-gib``.

The proof cases: a 1-minute 854x480 and a 1-minute 480x270 clip (24 fps) fit 24, 16, 12 and
8 GiB cards with the predicted peak within 90 % of the card; and on the tiny networks, the
settings a plan chooses give the same frames as the same settings typed by hand.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

import uav.cli  # noqa: E402
from uav import UpscaleSettings, VideoUpscaler  # noqa: E402
from uav.cli.app import app  # noqa: E402
from uav.memory import UNET_CALIBRATION, Placement, network_costs, traced_working_set  # noqa: E402
from uav.memory_plan import Budget, plan_for_configs, settings_by_hand  # noqa: E402
from uav.settings import SettingsError  # noqa: E402
from uav.weights import make_tiny_release, moving_pattern  # noqa: E402
from uav.weights.tiny import TINY_UNET_CONFIG, TINY_VAE_CONFIG  # noqa: E402

uav.cli._load_commands()
RELEASE = Path(uav.__file__).parent / "weights" / "release_configs"
CARDS = (24, 16, 12, 8)


def _config(name: str) -> dict:
    return json.loads((RELEASE / name).read_text())


def _minute_clip(path: Path, width: int, height: int, frames: int = 24 * 60) -> Path:
    """A real 1-minute 24 fps file (a flat grey picture encodes in seconds)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 128, np.uint8), format="rgb24")
        for i in range(frames):
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def minute_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {"854x480": _minute_clip(root / "480p.mp4", 854, 480), "480x270": _minute_clip(root / "270p.mp4", 480, 270)}


# ----------------------------------------------------------------------------- settings
def test_settings_know_which_fields_were_given():
    s = UpscaleSettings(window_batch=2, memory=8)
    assert s.given == {"window_batch", "memory"} and s.memory == 8.0
    t = s.replace(decode_chunk=1)
    assert t.given == {"window_batch", "memory", "decode_chunk"}
    assert pickle.loads(pickle.dumps(t)).given == t.given
    assert UpscaleSettings.from_dict(t.to_dict(given_only=True)).given == t.given
    assert UpscaleSettings() == UpscaleSettings(window_batch=1)  # values compare, not their origin
    parsed = UpscaleSettings.from_strings({"memory": "12GiB", "tile_size": "128", "seed": None})
    assert parsed.given == {"memory", "tile_size"} and parsed.memory == 12.0
    assert UpscaleSettings.from_strings({"memory": "AUTO"}).memory == "auto"
    for bad in ("0", "-3", "lots", "nan"):
        with pytest.raises(SettingsError, match="memory must be auto or a number of GiB > 0"):
            UpscaleSettings.from_strings({"memory": bad})
    with pytest.raises(SettingsError):
        UpscaleSettings(memory="8")  # typed sources give numbers


def test_vram_is_a_command_line_option(tmp_path):
    res = CliRunner().invoke(app, ["upscale", str(tmp_path / "x.mp4"), "--vram", "none-of-it"])
    assert res.exit_code == 2 and "--vram" in res.stderr and "Traceback" not in res.output


# ----------------------------------------------------------------------------- the planner
def _plan(card: float | None, settings: UpscaleSettings | None = None, *, height: int = 480, width: int = 854,
          frames: int = 1440):
    return plan_for_configs(_config("unet_video_config.json"), _config("vae_3d_config.json"), height=height,
                            width=width, frames=frames, settings=settings or UpscaleSettings(),
                            budget=Budget(card, "test"))


def test_without_a_budget_the_published_settings_run_untouched():
    s = UpscaleSettings(seed=1)
    plan = _plan(None, s)
    assert plan.settings is s and plan.estimate is None and plan.changed == () and plan.fits
    assert "no GPU" in Budget(None, "cpu: no GPU memory budget").source


@pytest.mark.slow  # 14 s on 2 cores: the full suite runs it, the quick loop does not
def test_a_big_card_keeps_the_published_numerics_and_batches_windows():
    plan = _plan(80)
    assert plan.fits and plan.estimate.peak_gib <= 0.9 * 80
    s = plan.settings
    assert (s.tile_mode, s.tile, s.decode_chunk, s.decode_tile) == ("pipeline", None, 3, None)
    assert s.window_batch > 1 and plan.changed == ("window_batch",)


def test_given_settings_are_never_changed():
    given = UpscaleSettings(decode_chunk=3, tile_size=256, window_batch=1)
    plan = _plan(8, given)
    assert (plan.settings.decode_chunk, plan.settings.tile_size, plan.settings.tile_mode) == (3, 256, "pipeline")
    assert not plan.fits and any("given explicitly" in n for n in plan.notes)
    free = _plan(8)
    assert free.fits and free.settings.tile_mode == "latent"


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("clip", ["854x480", "480x270"])
def test_doctor_chooses_settings_that_fit_the_card(minute_clips, clip, card):
    res = CliRunner().invoke(app, ["doctor", "--memory", str(minute_clips[clip]), "--card-gib", str(card), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["frames"] == 1440 and doc["fits"] is True
    assert doc["estimate"]["peak_gib"] <= 0.9 * card
    assert set(doc["chosen"]) >= {"window_batch", "tile_mode", "tile_size", "decode_chunk", "decode_tile",
                                  "text_encoder_placement", "vae_placement", "unet_placement"}
    assert doc["host_peak_gib"] > 0 and doc["host"]["streamed"] is True  # a minute of 480p is streamed
    if card == 24:
        # nothing but the decode chunk and the window batch (same numbers) moves on 24 GiB
        assert set(doc["changed"]) <= {"window_batch", "decode_chunk", "text_encoder_placement", "vae_placement"}


@pytest.mark.slow  # 45 s on 2 cores: the full suite runs it, the quick loop does not
def test_the_per_pixel_model_is_the_trace_of_the_chosen_shape():
    from uav.memory import _unet_call
    from uav.models import UNetVideoModel

    plan = _plan(8, height=270, width=480)
    b, _, t, h, w = plan.estimate.shapes["unet"]
    _, peak = traced_working_set(UNetVideoModel, _config("unet_video_config.json"), torch.float16,
                                 _unet_call(b, t, h, w, torch.float16))
    assert plan.estimate.denoise_gib * 2**30 == pytest.approx(peak * UNET_CALIBRATION, rel=0.002)


def test_24_gib_costs_only_the_window_batching():
    """The throughput model (uav.memory_cost): vs unlimited memory (8 windows per call) the 24 GiB
    plan gives up only part of the per-call savings of batching windows. Issue 22's target is
    <= 15 %: one U-Net call of one window of the published 320x384 tile took 13.0 GiB (17.8 before
    issue 21), so two did not fit in 0.9 x 24 GiB (+21 %); since the up path runs one batch item at
    a time (uav.models.batching) two windows take 15.8 GiB, and each window pays half the per-call
    cost (0.27 / 2 of a window vs 0.27 / 8): about +10 % on the U-Net, +9 % with the decode.
    Against the same two windows per call the chosen settings cost nothing."""
    for height, width in ((480, 854), (270, 480)):
        plan = _plan(24, height=height, width=width)
        assert plan.settings.window_batch == 2 and plan.settings.tile_mode == "pipeline", plan.describe()
        assert plan.fits and plan.estimate.peak_gib <= 0.9 * 24
        assert 0.05 < plan.throughput_cost <= 0.15, plan.describe()
    same_batch = _plan(24, UpscaleSettings(window_batch=2))
    assert abs(same_batch.throughput_cost) < 0.01


# ----------------------------------------------------------------------------- runs on the tiny networks
@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    return VideoUpscaler.from_pretrained(make_tiny_release(tmp_path_factory.mktemp("w") / "tiny", fmt="bin"),
                                         vae="video", device="cpu")


def _resident_and_working(e) -> tuple[float, float]:
    working = max(e.denoise_gib, e.decode_gib)
    return e.peak_gib - working, working


def _tiny_budget(card: int, height: int, width: int, frames: int) -> float:
    """The budget that leaves the tiny networks the share of their published working set that a
    ``card`` GiB card leaves the released ones on a minute of 854x480: the same tightness."""
    from uav.memory import estimate_memory

    real = _resident_and_working(estimate_memory(_config("unet_video_config.json"), _config("vae_3d_config.json"),
                                                 height=480, width=854, frames=1440))
    tiny = _resident_and_working(estimate_memory(TINY_UNET_CONFIG, TINY_VAE_CONFIG, height=height, width=width,
                                                 frames=frames, unet_dtype=torch.float32, vae_dtype=torch.float32))
    share = (0.9 * card - real[0]) / real[1]
    return (tiny[0] + share * tiny[1]) / 0.9


# the 24 GiB case traces the largest shapes (28 s); the quick loop checks the three smaller cards
@pytest.mark.parametrize("card", [pytest.param(24, marks=pytest.mark.slow), *CARDS[1:]])
def test_chosen_settings_give_the_frames_of_the_same_settings_by_hand(upscaler, card, one_thread):
    clip = moving_pattern(frames=6, height=48, width=80)
    common = dict(prompt="a cat", num_inference_steps=1, seed=5)
    auto = upscaler.upscale(clip, memory=_tiny_budget(card, 48, 80, 6), output_type="pt", **common)
    plan = upscaler.last_memory_plan
    assert plan is not None and plan.fits, plan.describe()
    # 24 GiB's tightness needs no tiles since the up path stopped copying its skips (issue 21: the
    # tiny U-Net's call traces 18 % smaller); the tighter cards still take latent tiles
    assert plan.settings.tile_mode == "latent" or card >= 24, plan.describe()
    by_hand = settings_by_hand(plan)
    manual = upscaler.upscale(clip, output_type="pt", **common, **by_hand)
    assert upscaler.last_memory_plan.budget.gib is None  # the CPU's auto: nothing chosen
    assert torch.equal(auto, manual), plan.describe()
    assert all(p.device.type == "cpu" for p in upscaler.unet.parameters())  # everything back in place


def test_the_plan_of_a_run_is_in_the_json_summary_and_the_dry_run(tmp_path):
    from io_helpers import make_clip

    clip = make_clip(tmp_path / "c.mp4", num_frames=4)
    runner = CliRunner()
    dry = runner.invoke(app, ["upscale", str(clip), "--self-check", "--dry-run", "--vram", "0.05", "--json",
                              "-o", str(tmp_path / "o.mp4")])
    assert dry.exit_code == 0, dry.output
    memory = json.loads(dry.stdout)["outputs"][0]["memory"]
    assert memory["budget_gib"] == 0.05 and memory["predicted_peak_gib"] <= 0.045 and memory["chosen"]
    assert "memory: 0.05 GiB" in dry.stderr
    cpu = runner.invoke(app, ["upscale", str(clip), "--self-check", "--dry-run", "--json", "-o",
                              str(tmp_path / "o.mp4")])
    assert json.loads(cpu.stdout)["outputs"][0]["memory"]["budget_gib"] is None


def test_placement_keeps_the_weights_where_the_plan_says(upscaler):
    from uav.memory_plan import MemoryPlan
    from uav.placement import placed

    plan = MemoryPlan(settings=UpscaleSettings(), budget=Budget(1.0, "test"),
                      placement=Placement(text_encoder="host", vae="host", unet="blocks"))
    before = {n: p.clone() for n, p in upscaler.unet.named_parameters()}
    with placed(upscaler, plan) as stage:
        stage("decode")
    after = dict(upscaler.unet.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_costs_are_traced_once_per_release_and_dtype():
    first = network_costs(TINY_UNET_CONFIG, TINY_VAE_CONFIG, unet_dtype=torch.float32, vae_dtype=torch.float32)
    again = network_costs(dict(TINY_UNET_CONFIG, _diffusers_version="x"), TINY_VAE_CONFIG, unet_dtype=torch.float32,
                          vae_dtype=torch.float32)
    assert again == first
