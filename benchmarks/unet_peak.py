#!/usr/bin/env python3
"""Issue 22's 24 GiB target: the traced peak of one U-Net call, step by step, and the plans it gives.

On the CPU, nothing allocated: the release U-Net config (fp16) is built on fake tensors and one
call of 2 x 8 frames at 64x64 latents is traced by the memory model's tracker (``uav.memory``),
first with the batched forms (``uav.models.batching.memory_saving(False)``), then adding the
memory-saving forms one at a time (the transformers' per-pixel pieces, the temporal modules per
batch item, the up blocks per batch item). Each step reports bytes per batch item x frame x latent
pixel at 2 and 4 batch items (one and two guided windows) and the calibrated GiB of one call at both
clips' tile shapes (854x480: the published 320x384 tile; 480x270: 270x480), then the settings the
planner chooses for a minute of each clip on 24, 16, 12 and 8 GiB (``uav doctor --memory``'s).

Usage::

    python -m benchmarks.unet_peak [--json benchmarks/results/unet_peak_cpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch

import uav
from uav import UpscaleSettings
from uav.memory import GIB, UNET_CALIBRATION, _unet_call, traced_working_set
from uav.memory_plan import Budget, plan_for_configs
from uav.models import UNetVideoModel
from uav.models.batching import memory_saving

RELEASE = Path(uav.__file__).parent / "weights" / "release_configs"
TILES = {"854x480": (320, 384), "480x270": (270, 480)}
#: the text encoder a run keeps (OpenCLIP-H, fp16), as the docs' table counts it
TEXT_ENCODER_PARAMS = 340_000_000


def _config(name: str) -> dict[str, Any]:
    return json.loads((RELEASE / name).read_text())


@contextlib.contextmanager
def _only(kept: set[str]) -> Iterator[None]:
    """The saving forms on in the modules named (``transformer``, ``temporal``, ``unet_video``)."""
    from uav.models import temporal, transformer, unet_video

    modules = {"transformer": transformer, "temporal": temporal, "unet_video": unet_video}
    saved = {name: m.saving_memory for name, m in modules.items()}
    try:
        for name, m in modules.items():
            if name not in kept:
                m.saving_memory = lambda: False
        yield
    finally:
        for name, m in modules.items():
            m.saving_memory = saved[name]


def _per_px(batch: int) -> float:
    call = _unet_call(batch, 8, 64, 64, torch.float16)
    return traced_working_set(UNetVideoModel, _config("unet_video_config.json"), torch.float16, call)[1] / \
        (batch * 8 * 64 * 64)


def steps() -> list[dict[str, Any]]:
    """The traced bytes per item x frame x pixel as each saving form is added."""
    out = []
    stages = [("batched forms", None), ("+ transformer per-pixel pieces", {"transformer"}),
              ("+ temporal modules per item", {"transformer", "temporal"}),
              ("+ up blocks per item (all saving forms)", {"transformer", "temporal", "unet_video"})]
    for name, kept in stages:
        ctx = memory_saving(False) if kept is None else _only(kept)
        with ctx:
            per = {b: _per_px(b) for b in (2, 4)}
        row: dict[str, Any] = {"step": name, "bytes_per_item_frame_px": {str(b): round(v, 1) for b, v in per.items()}}
        for clip, (h, w) in TILES.items():
            row[f"one_window_gib_{clip}"] = round(per[2] * 2 * 8 * h * w * UNET_CALIBRATION / GIB, 2)
            row[f"two_windows_gib_{clip}"] = round(per[4] * 4 * 8 * h * w * UNET_CALIBRATION / GIB, 2)
        out.append(row)
        print(json.dumps(row))
    return out


def plans() -> list[dict[str, Any]]:
    """What ``uav doctor --memory CLIP --card-gib N`` chooses for a minute (1440 frames) of each clip."""
    rows = []
    for clip in TILES:
        width, height = (int(v) for v in clip.split("x"))
        for card in (24, 16, 12, 8):
            plan = plan_for_configs(_config("unet_video_config.json"), _config("vae_3d_config.json"), height=height,
                                    width=width, frames=1440, settings=UpscaleSettings(), budget=Budget(card, "bench"),
                                    text_encoder_params=TEXT_ENCODER_PARAMS)
            est = plan.estimate
            assert est is not None
            row = {"clip": clip, "card_gib": card, "fits": plan.fits, "peak_gib": round(est.peak_gib, 2),
                   "limit_gib": round(0.9 * card, 2), "stage": est.peak_stage,
                   "throughput_cost": round(plan.throughput_cost or 0.0, 4),
                   "changed": {k: plan.chosen[k] for k in plan.changed}, "unet_shape": est.shapes["unet"]}
            rows.append(row)
            print(json.dumps(row))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    result = {"unet_config": "release unet_video_config.json, fp16, traced at 2 x 8 frames of 64x64 latents",
              "calibration": UNET_CALIBRATION, "steps": steps(), "plans": plans()}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
