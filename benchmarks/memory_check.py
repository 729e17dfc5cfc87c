#!/usr/bin/env python3
"""The memory model against a real device (issue 22, item 5): predicted vs measured peak GPU memory.

For each workload (``lr192x352`` with ``vae_3d``, ``lr270x480`` with ``vae_video``) the
real-size networks are built with random weights in the default path's dtypes (fp16
U-Net, fp32 VAE on CUDA), and the two things :mod:`uav.memory` predicts are run once each:
one U-Net call of the default path (both halves of guidance, 8 frames, one window) and one
decode piece (3 frames). ``measured_peak_gib`` is ``torch.cuda.max_memory_allocated`` over
both, weights included; ``error`` is predicted / measured - 1. ``two_windows`` does the same
for a call of two windows (what the 24 GiB plans choose), and ``saving_vs_batched`` compares
the default call's output with :mod:`uav.models.batching`'s forms on and off.

Then a smaller card is simulated (``torch.cuda.set_per_process_memory_fraction``): the
settings :mod:`uav.memory_plan` chooses for it are applied (placement and block offload
included) and their U-Net call and decode piece run under that cap; ``fits`` says whether
they did without running out of memory.

``--device cpu --tiny`` runs the same path on the tiny networks (nothing is measured: it
proves the script before a GPU session spends its minutes on it).

Usage::

    python benchmarks/memory_check.py [--device cuda] [--tiny] [--card-gib 12] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GIB = 2**30
#: (name, low-res height, width, decoder) as in benchmarks/workloads.py
WORKLOADS = (("lr192x352", 192, 352, "3d"), ("lr270x480", 270, 480, "video"))
TINY = (("lr192x352", 16, 24, "3d"), ("lr270x480", 18, 30, "video"))


def _configs(vae: str, tiny: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    if tiny:
        from uav.weights.tiny import TINY_UNET_CONFIG, TINY_VAE_CONFIG

        cfg = dict(TINY_VAE_CONFIG)
        if vae == "3d":
            cfg.update(up_block_types=["UpDecoderBlock3D"] * 3, condition_img=False)
        return dict(TINY_UNET_CONFIG), cfg
    folder = ROOT / "uav" / "weights" / "release_configs"
    return (json.loads((folder / "unet_video_config.json").read_text()),
            json.loads((folder / f"vae_{vae}_config.json").read_text()))


def _build(cls: Any, config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    with torch.device(device):
        model = cls.from_config(config)
    return model.to(dtype).eval().requires_grad_(False)


def _peak(device: torch.device, run: Callable[[], Any]) -> float | None:
    """GiB allocated at the peak of ``run()`` (weights included); ``None`` off CUDA."""
    if device.type != "cuda":
        run()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / GIB


def _unet_call(unet: torch.nn.Module, shape: Sequence[int], device: torch.device) -> Callable[[], Any]:
    b, _, t, h, w = shape
    dtype = next(unet.parameters()).dtype
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(b, 4, t, h, w, generator=g).to(device, dtype)
    cond = torch.randn(b, 3, t, h, w, generator=g).to(device, dtype)
    text = torch.randn(b, 77, unet.config.cross_attention_dim, generator=g).to(device, dtype)

    def run() -> Any:
        with torch.no_grad():
            return unet(sample, 500, cond, encoder_hidden_states=text, class_labels=torch.full((b,), 120)).sample

    return run


def _decode_piece(vae: torch.nn.Module, shape: Sequence[int], decode_tile: int | None) -> Callable[[], Any]:
    from uav.sampling.decode import decode_chunks

    _, _, t, h, w = shape
    g = torch.Generator().manual_seed(1)
    latents, low_res = torch.randn(1, 4, t, h, w, generator=g), torch.rand(1, 3, t, h, w, generator=g) * 2 - 1
    return lambda: next(decode_chunks(vae, latents, low_res, chunk=t, tile=decode_tile))


def check_default(name: str, h: int, w: int, vae_kind: str, device: torch.device, tiny: bool) -> dict[str, Any]:
    """Predicted vs measured peak of the default path's U-Net call and decode piece."""
    from uav.memory import estimate_memory
    from uav.models import AutoencoderKLVideo, UNetVideoModel
    from uav.settings import UpscaleSettings
    from uav.upscaler import default_dtypes

    unet_dtype, vae_dtype = default_dtypes(device)
    unet_cfg, vae_cfg = _configs(vae_kind, tiny)
    s = UpscaleSettings()
    e = estimate_memory(unet_cfg, vae_cfg, height=h, width=w, frames=16, settings=s, unet_dtype=unet_dtype,
                        vae_dtype=vae_dtype)
    unet = _build(UNetVideoModel, unet_cfg, device, unet_dtype)
    vae = _build(AutoencoderKLVideo, vae_cfg, device, vae_dtype)
    denoise = _peak(device, _unet_call(unet, e.shapes["unet"], device))
    decode = _peak(device, _decode_piece(vae, e.shapes["decode"], s.decode_tile))
    del vae
    two = _two_windows(unet, unet_cfg, vae_cfg, h, w, device, unet_dtype, vae_dtype)
    same = _saving_vs_batched(unet, e.shapes["unet"], device)
    del unet
    measured = None if denoise is None or decode is None else max(denoise, decode)
    return {"workload": name, "size": [h, w], "vae": vae_kind, "predicted_peak_gib": round(e.peak_gib, 3),
            "measured_peak_gib": None if measured is None else round(measured, 3),
            "error": None if measured is None else round(e.peak_gib / measured - 1, 4),
            "predicted": {"denoise_gib": round(e.denoise_gib + e.resident_gib["denoise"], 3),
                          "decode_gib": round(e.decode_gib + e.resident_gib["decode"], 3)},
            "measured": {"denoise_gib": denoise, "decode_gib": decode}, "shapes": e.shapes,
            "two_windows": two, "saving_vs_batched": same}


def _two_windows(unet: torch.nn.Module, unet_cfg: dict[str, Any], vae_cfg: dict[str, Any], h: int, w: int,
                 device: torch.device, unet_dtype: torch.dtype, vae_dtype: torch.dtype) -> dict[str, Any]:
    """Predicted vs measured U-Net call of two windows per call (4 items; the up path runs one item
    at a time, so it is less than twice one window): what the 24 GiB plans rely on."""
    from uav.memory import estimate_memory
    from uav.settings import UpscaleSettings

    e = estimate_memory(unet_cfg, vae_cfg, height=h, width=w, frames=16, settings=UpscaleSettings(window_batch=2),
                        unet_dtype=unet_dtype, vae_dtype=vae_dtype)
    predicted = e.denoise_gib + e.resident_gib["denoise"]
    measured = _peak(device, _unet_call(unet, e.shapes["unet"], device))
    return {"shape": e.shapes["unet"], "predicted_denoise_gib": round(predicted, 3),
            "measured_denoise_gib": None if measured is None else round(measured, 3),
            "error": None if measured is None else round(predicted / measured - 1, 4)}


def _saving_vs_batched(unet: torch.nn.Module, shape: Sequence[int], device: torch.device) -> dict[str, Any]:
    """The default call's output with the memory-saving forms (uav.models.batching) vs the batched
    forms: bitwise on the CPU; a GPU's libraries may pick other kernels for one item's shapes."""
    from uav.models.batching import memory_saving

    run = _unet_call(unet, shape, device)
    saving = run().float()
    with memory_saving(False):
        batched = run().float()
    diff = (saving - batched).abs().max().item()
    return {"max_abs": diff, "rel": diff / max(batched.abs().max().item(), 1e-30),
            "bitwise": bool(torch.equal(saving, batched))}


def check_card(card_gib: float, h: int, w: int, vae_kind: str, device: torch.device, tiny: bool) -> dict[str, Any]:
    """The settings chosen for a ``card_gib`` card, run under that cap."""
    from uav.memory_plan import Budget, plan_for_configs
    from uav.models import AutoencoderKLVideo, UNetVideoModel
    from uav.offload import BlockOffload
    from uav.settings import UpscaleSettings
    from uav.upscaler import default_dtypes

    unet_dtype, vae_dtype = default_dtypes(device)
    unet_cfg, vae_cfg = _configs(vae_kind, tiny)
    plan = plan_for_configs(unet_cfg, vae_cfg, height=h, width=w, frames=16, settings=UpscaleSettings(),
                            budget=Budget(card_gib, f"simulated {card_gib:g} GiB"), unet_dtype=unet_dtype,
                            vae_dtype=vae_dtype)
    assert plan.estimate is not None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gib * GIB / total), device)
    where = plan.placement
    unet = _build(UNetVideoModel, unet_cfg, device, unet_dtype)
    vae = _build(AutoencoderKLVideo, vae_cfg, device if where.vae == "device" else torch.device("cpu"), vae_dtype)
    result: dict[str, Any] = {"card_gib": card_gib, "size": [h, w], "vae": vae_kind, "chosen": plan.chosen,
                              "changed": list(plan.changed), "predicted_peak_gib": round(plan.estimate.peak_gib, 3),
                              "plan": plan.describe()}
    try:
        offload = BlockOffload(unet, device) if where.unet == "blocks" else contextlib.nullcontext()
        with offload:
            denoise = _peak(device, _unet_call(unet, plan.estimate.shapes["unet"], device))
            if where.vae == "host":
                if isinstance(offload, BlockOffload):
                    offload.release()
                unet.to("cpu")
                vae.to(device)
            decode = _peak(device, _decode_piece(vae, plan.estimate.shapes["decode"], plan.settings.decode_tile))
        result["fits"] = True
        result["measured_peak_gib"] = None if denoise is None else round(max(denoise, decode or 0.0), 3)
    except torch.OutOfMemoryError as exc:
        result["fits"], result["error"] = False, str(exc).splitlines()[0]
    finally:
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    if result.get("measured_peak_gib"):
        result["error_vs_prediction"] = round(plan.estimate.peak_gib / result["measured_peak_gib"] - 1, 4)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="the tiny test networks (a CPU check of the script)")
    p.add_argument("--card-gib", type=float, default=None,
                   help="the simulated card (default 12 GiB; a tiny run sizes it to the tiny networks)")
    p.add_argument("--out", default=str(HERE / "results" / "local"))
    args = p.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # casting random networks: nothing to warn about
    device = torch.device(args.device)
    started = time.perf_counter()
    cases = TINY if args.tiny else WORKLOADS
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "tiny": args.tiny, "workloads": {}}
    for name, h, w, vae in cases:
        report["workloads"][name] = check_default(name, h, w, vae, device, args.tiny)
        print(json.dumps(report["workloads"][name]), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    card = args.card_gib if args.card_gib is not None else (0.05 if args.tiny else 12.0)
    _, h, w, vae = cases[1]
    report["simulated"] = check_card(card, h, w, vae, device, args.tiny)
    print(json.dumps(report["simulated"]), flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "memory_check.md").write_text(_markdown(report))
    return 0 if report["simulated"].get("fits") else 1


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Memory model check on {report['device']} (torch {report['torch']})", "",
             "| workload | predicted peak GiB | measured peak GiB | error |", "|---|---:|---:|---:|"]
    for name, r in report["workloads"].items():
        lines.append(f"| {name} | {r['predicted_peak_gib']} | {r['measured_peak_gib']} | {r['error']} |")
    lines += ["", "| workload | two windows: predicted U-Net GiB | measured | error | saving vs batched forms |",
              "|---|---:|---:|---:|---|"]
    for name, r in report["workloads"].items():
        two, same = r["two_windows"], r["saving_vs_batched"]
        verdict = "bitwise" if same["bitwise"] else f"max abs diff {same['max_abs']:.3g} (rel {same['rel']:.3g})"
        lines.append(f"| {name} | {two['predicted_denoise_gib']} | {two['measured_denoise_gib']} | {two['error']} | "
                     f"{verdict} |")
    sim = report["simulated"]
    lines += ["", f"Simulated {sim['card_gib']:g} GiB card ({sim['size'][0]}x{sim['size'][1]}): {sim['plan']}; "
                  f"fits: {sim['fits']}, measured {sim.get('measured_peak_gib')} GiB", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "plugins"))
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    sys.exit(main())
