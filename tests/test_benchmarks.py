"""The GPU benchmark harness (``benchmarks/``) on the CPU with the tiny models.

The harness only earns its numbers on a GPU; here it runs every stage end to end on
tiny networks so it cannot rot, and its published-loop baseline is checked to compute
what the library loop computes (so the speed-ups it reports compare equal work).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import baseline, bench, memory  # noqa: E402
from conftest import torch_threads  # noqa: E402

FORBIDDEN = ("av", "opentimelineio")


@contextlib.contextmanager
def _without_video_io():
    """Make ``av`` / ``opentimelineio`` absent (``None`` in ``sys.modules``: ``find_spec`` finds
    nothing and ``import`` fails), as they are on the GPU machine."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in FORBIDDEN}
    for k in saved:
        del sys.modules[k]
    for name in FORBIDDEN:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in FORBIDDEN:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny ops: extra threads only add contention (and spin-waits) on a shared CPU."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("bench")
    with _without_video_io():
        # one workload keeps this under half a minute; lr270x480 has the odd sizes and the video VAE,
        # test_decode_with_the_3d_vae covers the other decoder
        rc = bench.main(["--device", "cpu", "--tiny", "--steps-timed", "1", "--decode-frames", "3",
                         "--workloads", "lr270x480", "--out", str(out)])
    return rc, out, json.loads((out / "bench.json").read_text())


@pytest.mark.slow
def test_harness_runs_every_stage_on_cpu(run):
    rc, out, data = run
    assert rc == 0
    assert data["tiny"] is True and data["device"].startswith("CPU")
    assert set(data["workloads"]) == {"lr270x480"}
    for name, wl in data["workloads"].items():
        assert "errors" not in wl, wl.get("errors")
        assert set(wl["configs"]) == {"baseline", "default", "bf16", "fast", "uniform"}
        for cname, c in wl["configs"].items():
            stages = c["stages_s"]
            assert set(stages) == {"flow", "unet", "loop_other", "propagation", "decode", "io"}, cname
            assert c["total_s"] == pytest.approx(sum(v for v in stages.values() if v is not None))
            assert c["s_per_frame"] * wl["frames"] == pytest.approx(c["total_s"])
            assert c["s_per_frame"] > 0 and c["finite"] is True, cname
            assert stages["unet"] > 0 and stages["decode"] > 0, cname
        # the keys are ratios of the measured configurations
        cfg = wl["configs"]
        assert wl["speedup"] == pytest.approx(cfg["baseline"]["s_per_frame"] / cfg["default"]["s_per_frame"])
        assert wl["bf16_speedup"] == pytest.approx(cfg["baseline"]["s_per_frame"] / cfg["bf16"]["s_per_frame"])
        assert wl["default_path"] is True and cfg["default"]["default_path"] is True
        assert all(cfg[c]["default_path"] is False for c in ("bf16", "fast", "uniform"))
        assert wl["fast_speedup"] == pytest.approx(cfg["baseline"]["s_per_frame"] / cfg["fast"]["s_per_frame"])
        assert wl["device"] == data["device"]
        assert wl["unet_tflop_per_window"] > 0
        assert wl["layout"]["measured"] and wl["layout"]["chosen"] in wl["layout"]["window_s"]
        assert wl["flow"]["seconds"] is not None and wl["flow"]["seconds"] >= 0
        assert wl["propagation_s_per_call"] > 0
        assert "ours_window_batch1_step_s" in wl["ablation"]


@pytest.mark.slow
def test_baseline_replays_the_published_window_calls(run):
    _, _, data = run
    wl = data["workloads"]["lr270x480"]
    # 13 frames: the published rule runs [5, 13) twice; ours folds all windows into one call
    assert wl["windows"]["official_calls"] == [[0, 8], [5, 13], [5, 13]]
    assert wl["windows"]["official_unique"] == [[0, 8], [5, 13]]
    assert wl["configs"]["baseline"]["unet_calls_per_step"] == 3
    assert wl["configs"]["bf16"]["unet_calls_per_step"] == 1
    assert wl["configs"]["baseline"]["dtypes"] == {"unet": "float32", "vae": "float32"}  # CPU: fp32 everywhere


@pytest.mark.slow
def test_markdown_names_the_card_and_every_config(run):
    _, out, data = run
    md = (out / "bench.md").read_text()
    assert data["device"] in md.splitlines()[0]
    for cname in ("baseline", "default", "bf16", "fast", "uniform"):
        assert f"| lr270x480 | {cname} |" in md


@pytest.mark.parametrize("published", [True, False])
def test_decode_with_the_3d_vae(published):
    dtypes = bench.Dtypes.for_device(torch.device("cpu"))
    base, ours = bench.build_vae("3d", torch.device("cpu"), True, dtypes)
    wl = bench.TINY_WORKLOADS["lr192x352"]
    inputs = bench.make_inputs(wl, torch.device("cpu"), 32, bench.Settings())
    t = bench.time_decode(base if published else ours, inputs, bench.Settings(), torch.device("cpu"),
                          published=published, frames_limit=3)
    assert t.frames_timed == 3 and t.finite  # one 3-frame chunk after the warm-up chunk
    assert t.decode_s_per_frame > 0 and t.io_s_per_frame >= 0


@pytest.mark.slow
def test_the_default_row_runs_the_library_defaults(run):
    from uav.settings import UpscaleSettings
    from uav.upscaler import default_dtypes

    _, _, data = run
    wl = data["workloads"]["lr270x480"]
    row = wl["configs"]["default"]
    defaults = UpscaleSettings()
    # one U-Net call per unique window: the library's default window_batch
    assert defaults.window_batch == 1 and row["unet_calls_per_step"] == len(wl["windows"]["official_unique"])
    unet, vae = default_dtypes(torch.device("cpu"))
    assert row["dtypes"] == {"unet": str(unet).replace("torch.", ""), "vae": str(vae).replace("torch.", "")}
    assert row["state_device"] == "cpu" and "to_uint8" in row["description"]
    # same inputs and steps as the baseline: in fp32 the library's numbers are the published ones
    assert wl["max_abs_diff_latents"] < 1e-4 * max(1.0, wl["latents_abs_max"])


def test_markdown_survives_partial_results():
    data = {"device": "X", "workloads": {"lr192x352": {
        "configs": {"baseline": {"s_per_frame": 2.0, "fps": 0.5, "stages_s": {"unet": 30.0}, "peak_mem_gib": 4.0}},
        "errors": {"ours.denoise": "Traceback ...\nRuntimeError: boom"}}}}
    md = bench.markdown_table(data)
    assert "| lr192x352 | baseline | 2.00 |" in md
    assert "ours.denoise: RuntimeError: boom" in md


def _tiny_unet():
    torch.manual_seed(0)
    unet = bench.load_uav()["UNetVideoModel"].from_config(bench.model_config("unet", tiny=True))
    return unet.eval().requires_grad_(False)


def test_eager_attention_matches_sdpa_and_is_restored():
    unet = _tiny_unet()
    g = torch.Generator().manual_seed(3)
    sample, lr = torch.randn((2, 4, 8, 8, 12), generator=g), torch.randn((2, 3, 8, 8, 12), generator=g)
    text = torch.randn((2, 77, 32), generator=g)
    labels = torch.tensor([120, 120])
    # give the zero-initialised temporal output projections weights so temporal attention counts
    for m in unet.modules():
        if type(m).__name__ == "TemporalAttention":
            torch.nn.init.normal_(m.to_out[0].weight, std=0.2)
    original = (baseline._transformer.Attention.forward, baseline._temporal.TemporalAttention.forward)
    with torch.no_grad():
        ref = unet(sample, 500, lr, encoder_hidden_states=text, class_labels=labels).sample
        with baseline.eager_attention():
            assert baseline._transformer.Attention.forward is not original[0]
            eager = unet(sample, 500, lr, encoder_hidden_states=text, class_labels=labels).sample
    assert (baseline._transformer.Attention.forward, baseline._temporal.TemporalAttention.forward) == original
    assert (eager - ref).abs().max() / ref.abs().max() < 1e-5


@pytest.mark.slow
def test_published_step_equals_library_loop():
    """The baseline's per-call loop and running blend give the library's batched result."""
    uav = bench.load_uav()
    unet = _tiny_unet()
    wl = bench.TINY_WORKLOADS["lr270x480"]
    settings = bench.Settings()
    inputs = bench.make_inputs(wl, torch.device("cpu"), 32, settings)
    plan = uav["official_segment_plan"](wl.frames, 8)
    assert len(plan.calls) == 3 and len(plan.windows) == 2  # the duplicated window is exercised
    sched = uav["OfficialDDIM"](bench.ddim_config())
    timesteps = [int(t) for t in sched.set_timesteps(30)]
    lr_in = torch.cat([inputs.noisy_lr] * 2)
    ours = published = inputs.x_t
    with torch.no_grad():
        for i in (0, 1):
            published = baseline.published_step(
                unet, sched, published, lr_in, inputs.text, index=i, timestep=timesteps[i], calls=plan.calls,
                noise_level=120, guidance_scale=6.0, propagation_steps=(1,), flows=inputs.flows)
        ours = uav["denoise"](unet, sched, ours, inputs.noisy_lr, inputs.text, noise_level=120, guidance_scale=6.0,
                              plan=plan, timesteps=timesteps[:2], propagation_steps=(1,), flows=inputs.flows,
                              window_batch=2)
    assert (published - ours).abs().max() / ours.abs().max() < 1e-4


def test_published_step_rejects_unguided_batches():
    with pytest.raises(ValueError, match="batch of 2"):
        baseline.published_step(None, None, torch.zeros(1, 4, 8, 4, 4), torch.zeros(1, 3, 8, 4, 4),
                                torch.zeros(1, 77, 32), index=0, timestep=1, calls=((0, 8),), noise_level=1,
                                guidance_scale=6.0)


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps-timed", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--workloads", "lr9x9"])
    with pytest.raises(SystemExit, match="need a GPU"):
        bench.main(["--device", "cpu", "--out", "unused"])


def test_memory_model_scales_with_the_clip():
    one = bench.memory_model(frames=1800)
    two = bench.memory_model(frames=3600)
    assert two["gpu_clip_state_peak_gib"] / one["gpu_clip_state_peak_gib"] == pytest.approx(2.0, rel=1e-3)
    assert one["largest_tile"] == [320, 384] and one["tiles"] == 8  # the published cut of 480x854
    # a minute of 480p does not fit a 24 GB card with the whole clip resident, which docs/performance.md explains
    assert one["gpu_peak_gib"] > 24 and 0 < one["max_frames_on_card"] < 1800
    fits = bench.memory_model(frames=one["max_frames_on_card"])
    assert fits["gpu_peak_gib"] <= 24.0 < bench.memory_model(frames=one["max_frames_on_card"] + 1)["gpu_peak_gib"]
    assert one["host_bytes"]["low_res_clip_fp32"] == 1800 * 3 * 480 * 854 * 4


def test_memory_summary_growth_per_frame():
    runs = [{"frames": 480, "size": 32, "rss_growth_mib": 40.0, "peak_rss_mib": 900.0},
            {"frames": 48, "size": 32, "rss_growth_mib": 4.0, "peak_rss_mib": 860.0}]
    s = memory.summarise(runs)
    assert [r["frames"] for r in s["runs"]] == [48, 480]
    assert s["growth_bytes_per_frame"] == pytest.approx(36.0 * 2**20 / 432)
    assert s["peak_rss_ratio"] == pytest.approx(900 / 860)
    assert math.isclose(s["low_res_state_bytes_per_frame"], 32 * 32 * 10 * 4)


@pytest.mark.slow
def test_readme_script_command_runs_from_any_folder(tmp_path):
    """``python benchmarks/bench.py ...`` (README, gpu_run.sh) imports the package from the checkout."""
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--memory-model"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames"] == 1800
