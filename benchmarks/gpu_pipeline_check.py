"""GPU correctness checks of the whole pipeline (run by benchmarks/gpu_run.sh on a CUDA machine).

1. The parity fixtures on CUDA in fp32: module and end-to-end errors against the published outputs.
2. The pipeline with fp16 and bf16 U-Nets and an fp32 / bf16 VAE on a tiny random release:
   finite output of the right shape, and the distance to the fp32 result.
3. The fused Triton kernels (uav.models.fused) against the aten path they replace
   (``UAV_FUSED_KERNELS=0``), fp32 and fp16, and whether they ran (1 already runs with them).

Writes ``gpu_pipeline_check.json`` into the output folder. Needs no av / opentimelineio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
PARITY = ROOT / "tests" / "data" / "parity"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max()).item()


def parity_on(device: str) -> dict:
    from diffusers import DDIMScheduler, DDPMScheduler
    from safetensors.torch import load_file

    from uav import VideoUpscaler
    from uav.models import AutoencoderKLVideo, UNetVideoModel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    unet = UNetVideoModel.from_config(json.loads((PARITY / "unet_video_tiny_config.json").read_text()))
    unet.load_state_dict(load_file(str(PARITY / "unet_weights.safetensors")))
    vae = AutoencoderKLVideo.from_config(json.loads((PARITY / "vae_video_tiny_config.json").read_text()))
    vae.load_state_dict(load_file(str(PARITY / "vae_weights.safetensors")))
    unet.to(device).eval()
    vae.to(device).eval()
    out: dict = {}
    io = load_file(str(PARITY / "unet_io.safetensors"))
    with torch.no_grad():
        for c in (0, 1):
            p = f"case{c}."
            got = unet(io[p + "sample"].to(device), io[p + "timestep"].to(device), io[p + "low_res"].to(device),
                       encoder_hidden_states=io[p + "encoder_hidden_states"].to(device),
                       class_labels=io[p + "class_labels"].to(device)).sample
            out[f"unet_case{c}"] = rel(got, io[p + "out"])
    up = VideoUpscaler.from_components(
        unet=unet, vae=vae,
        scheduler=DDIMScheduler.from_config(json.loads((PARITY / "scheduler_config_ddim_x4.json").read_text())),
        low_res_scheduler=DDPMScheduler.from_config(
            json.loads((PARITY / "low_res_scheduler_config_ddpm_x4.json").read_text())))
    io = load_file(str(PARITY / "pipeline_io.safetensors"))
    cases = {0: dict(num_inference_steps=5, guidance_scale=6.0, noise_level=120, propagation_steps=(1, 3)),
             1: dict(num_inference_steps=3, guidance_scale=3.0, noise_level=20, propagation_steps=(0, 2))}
    for c, kw in cases.items():
        p = f"case{c}."
        got = up.upscale(io[p + "image"], output_type="pt", prompt_embeds=io[p + "prompt_embeds"].to(device),
                         negative_prompt_embeds=io[p + "negative_prompt_embeds"].to(device),
                         latents=io[p + "latents"], low_res_noise=io[p + "lowres_noise"],
                         flows=(io[p + "flows_forward"], io[p + "flows_backward"]), **kw)
        out[f"pipeline_case{c}"] = rel(got, io[p + "out_images"])
    return out


def _timed_upscales(device: str, runs: list[tuple[str, dict, dict]]) -> dict:
    """``{key: (output, seconds)}`` of the tiny release upscaling one clip per run
    ``(key, from_pretrained options, environment)``, in order."""
    import os

    from uav import VideoUpscaler
    from uav.weights import make_tiny_release, moving_pattern

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tiny_release(Path(tmp) / "rel")
        clip = moving_pattern(frames=16, height=32, width=48)
        for key, options, env in runs:
            up = VideoUpscaler.from_pretrained(root, device=device, vae="video", **options)
            os.environ.update(env)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            got = up.upscale(clip, prompt="a test", num_inference_steps=4, propagation_steps=(2, 3),
                             color_fix="wavelet", seed=0, output_type="pt")
            torch.cuda.synchronize()
            out[key] = (got, round(time.perf_counter() - t0, 3))
            for name in env:
                os.environ.pop(name)
    return out


def dtypes_on(device: str) -> dict:
    runs = [(f"unet_{d}_vae_{v}", {"dtype": d, "vae_dtype": v}, {})
            for d, v in (("fp32", "fp32"), ("fp16", "fp32"), ("bf16", "bf16"))]
    outs = _timed_upscales(device, runs)
    ref = outs["unet_fp32_vae_fp32"][0]
    results: dict = {}
    for key, (out, secs) in outs.items():
        results[key] = {"shape": list(out.shape), "finite": bool(torch.isfinite(out).all()), "seconds": secs}
        if out is not ref:
            results[key]["max_abs_diff_vs_fp32"] = (out - ref).abs().max().item()
    return results


def fused_on(device: str) -> dict:
    """The fused kernels (first run: their build included) against the aten path they replace."""
    from uav.models import fused

    runs = [(f"{d}/{mode}", {"dtype": d}, {"UAV_FUSED_KERNELS": mode}) for d in ("fp32", "fp16") for mode in "10"]
    outs = _timed_upscales(device, runs)
    return {d: {"fused_vs_aten_max_abs": (outs[f"{d}/1"][0] - outs[f"{d}/0"][0]).abs().max().item(),
                "fused_kernels_ran": not fused._STATE["broken"],
                "seconds_fused_aten": [outs[f"{d}/1"][1], outs[f"{d}/0"][1]]} for d in ("fp32", "fp16")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__}
    report["parity_fp32"] = parity_on(args.device)
    (out_dir / "gpu_pipeline_check.json").write_text(json.dumps(report, indent=1))
    report["dtypes"] = dtypes_on(args.device)
    (out_dir / "gpu_pipeline_check.json").write_text(json.dumps(report, indent=1))
    report["fused"] = fused_on(args.device)
    (out_dir / "gpu_pipeline_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
