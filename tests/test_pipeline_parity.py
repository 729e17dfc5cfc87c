"""End-to-end sampling parity with the published pipeline (tests/data/parity/pipeline_io)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import PARITY, load_parity, rel_err
from uav import VideoUpscaler

CASES = {0: dict(num_inference_steps=5, guidance_scale=6.0, noise_level=120, propagation_steps=(1, 3)),
         1: dict(num_inference_steps=3, guidance_scale=3.0, noise_level=20, propagation_steps=(0, 2))}


@pytest.fixture(scope="module")
def upscaler(tiny_unet, tiny_vae):
    from diffusers import DDIMScheduler, DDPMScheduler

    return VideoUpscaler.from_components(
        unet=tiny_unet, vae=tiny_vae,
        scheduler=DDIMScheduler.from_config(json.loads((PARITY / "scheduler_config_ddim_x4.json").read_text())),
        low_res_scheduler=DDPMScheduler.from_config(
            json.loads((PARITY / "low_res_scheduler_config_ddpm_x4.json").read_text())),
    )


@pytest.fixture(scope="module")
def pipeline_io():
    return load_parity("pipeline_io.safetensors")


def _run(upscaler, io, case, trace=None):
    p = f"case{case}."
    return upscaler.upscale(
        io[p + "image"], output_type="pt", prompt_embeds=io[p + "prompt_embeds"],
        negative_prompt_embeds=io[p + "negative_prompt_embeds"], latents=io[p + "latents"],
        low_res_noise=io[p + "lowres_noise"], flows=(io[p + "flows_forward"], io[p + "flows_backward"]),
        w_lr=1.0, trace=trace, **CASES[case])


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.slow
def test_pipeline_output_matches_published(upscaler, pipeline_io, case):
    trace: dict = {}
    out = _run(upscaler, pipeline_io, case, trace)
    p = f"case{case}."
    assert out.shape == pipeline_io[p + "out_images"].shape
    # per-step trace first, so a divergence names its step
    for i in range(CASES[case]["num_inference_steps"]):
        assert int(trace[f"step{i}_timestep"]) == int(pipeline_io[p + f"trace.step{i}_timestep"])
        for name in ("latents_in", "noise_pred_guided", "x0", "x0_used", "latents_out"):
            err = rel_err(trace[f"step{i}_{name}"], pipeline_io[p + f"trace.step{i}_{name}"])
            assert err <= 1e-3, (i, name, err)
    lat_err = rel_err(trace[f"step{CASES[case]['num_inference_steps'] - 1}_latents_out"],
                      pipeline_io[p + "out_latents"])
    img_err = rel_err(out, pipeline_io[p + "out_images"])
    print(f"pipeline case{case}: latents rel err {lat_err:.3g}, images rel err {img_err:.3g}")
    assert lat_err <= 1e-3
    assert img_err <= 1e-3
