"""A run's predicted time, to compare the plans :mod:`uav.memory_plan` considers.

Only ratios are reported (a plan's time over the time of the same clip with unlimited
memory), so the model needs the *shape* of the costs, which the H200 measurements give
(``benchmarks/results/bench_h200.json``, bf16 U-Net, fp32 decoder, torch 2.11):

* one U-Net call costs ``a + b * pixels + FLOPs / R``: the guided (6 batch items) and
  unguided (3 items) steps of the same windows at 192x352 and 270x480 give the FLOP rate
  ``R`` (the difference of the two) and a per-call cost that does not shrink with the
  batch (about 0.27 of one window's FLOP time at both sizes; GroupNorm over a batch of two
  fills a fraction of the card). That per-call cost is what batching windows saves;
* a decode costs its FLOPs (counted on the traced networks, mid-block attention included,
  so spatial tiles make it cheaper per pixel and overlaps dearer) at the measured fp32 rate;
* moving weights costs their bytes over PCIe; block offload's copies overlap the compute
  of the block before, so a call only waits for what its compute does not cover.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from uav.components import build, registry_or_default
from uav.memory import NetworkCosts, Placement, tile_regions
from uav.sampling.decode import piece_starts
from uav.settings import UpscaleSettings

__all__ = ["DECODE_FLOPS_PER_S", "PCIE_BYTES_PER_S", "UNET_CALL_S", "UNET_FLOPS_PER_S", "decode_seconds", "predicted_seconds",
           "unet_seconds", "window_count"]

#: U-Net FLOP rate (H200, bf16): the guided/unguided step difference at both workloads
#: (2.07e14 at 192x352, 1.96e14 at 270x480)
UNET_FLOPS_PER_S = 2.0e14
#: the per-call cost ``(a, b)``: ``a + b * latent pixels`` seconds; at that rate the four
#: measured steps leave 0.12-0.15 s per call at 67.6 k pixels and 0.32-0.35 s at 129.6 k
UNET_CALL_S = (0.0, 2.3e-6)
#: decoder FLOP rate (H200, fp32): the published-loop decodes, 19.9 TFLOP per 192x352 frame
#: of vae_3d in 0.41 s (4.9e13) and 79.0 TFLOP per 270x480 frame of vae_video in 1.47 s (5.4e13)
DECODE_FLOPS_PER_S = 5.1e13
#: host <-> device copies (PCIe 4 x16 as measured by typical pinned copies)
PCIE_BYTES_PER_S = 25e9


def predicted_seconds(costs: NetworkCosts, s: UpscaleSettings, placement: Placement, *, height: int, width: int,
                      frames: int, te_bytes: int = 0, registry: Any = None) -> float:
    """Seconds of U-Net calls, decoding and weight moves of the whole run (a model: compare, do not quote)."""
    registry = registry_or_default(registry)
    swaps = 2 * (te_bytes if placement.text_encoder == "host" else 0)
    if placement.vae == "host":
        swaps += 2 * (costs.unet_bytes + costs.vae_bytes)
    return unet_seconds(costs, s, placement, height=height, width=width, frames=frames, registry=registry) + \
        decode_seconds(costs, s, height=height, width=width, frames=frames, registry=registry) + \
        swaps / PCIE_BYTES_PER_S


def unet_seconds(costs: NetworkCosts, s: UpscaleSettings, placement: Placement, *, height: int, width: int,
                 frames: int, registry: Any = None) -> float:
    """Seconds of every U-Net call of the run (with block offload: plus the copies compute does not cover)."""
    registry = registry_or_default(registry)
    unet_regions, _ = tile_regions(height, width, s, registry)
    windows = window_count(registry, s.segments, frames, s.window)
    groups = {s.window_batch: windows // s.window_batch, windows % s.window_batch: 1}
    cfg = 2 if s.do_classifier_free_guidance else 1
    window = min(s.window, frames)
    moved = sum(costs.unet_block_bytes) / PCIE_BYTES_PER_S if placement.unet == "blocks" else 0.0
    total = 0.0
    for h, w in unet_regions:
        for n, calls in groups.items():
            if n and calls:
                compute = UNET_CALL_S[0] + UNET_CALL_S[1] * h * w + \
                    costs.unet_flops_per_px * cfg * n * window * h * w / UNET_FLOPS_PER_S
                total += calls * (compute + max(0.0, moved - compute))
    return total * s.num_inference_steps


def decode_seconds(costs: NetworkCosts, s: UpscaleSettings, *, height: int, width: int, frames: int,
                   registry: Any = None) -> float:
    """Seconds of decoding the run's frames (spatial decode tiles: their overlaps decoded twice)."""
    _, decode_regions = tile_regions(height, width, s, registry_or_default(registry))
    flops = 0.0
    for h, w in decode_regions:
        if s.decode_tile and (h > s.decode_tile or w > s.decode_tile):
            flops += sum(costs.decode_flops(1, th, tw) for th, tw in _decode_tiles(h, w, s.decode_tile))
        else:
            flops += costs.decode_flops(1, h, w)
    # shared frames are decoded by both pieces that hold them
    decoded = frames if not s.decode_overlap else \
        sum(min(s.decode_chunk, frames - start) for start in piece_starts(frames, s.decode_chunk, s.decode_overlap))
    return flops * decoded / DECODE_FLOPS_PER_S


@functools.lru_cache(maxsize=1024)
def _decode_tiles(h: int, w: int, tile: int) -> list[tuple[int, int]]:
    from uav.sampling.tiling import feather_tile_plan

    plan = feather_tile_plan(h, w, tile_size=tile, overlap=min(8, tile - 1), scale=1)
    return [(t.region[1] - t.region[0], t.region[3] - t.region[2]) for t in plan]


@functools.lru_cache(maxsize=256)
def window_count(registry: Any, segments: str, frames: int, window: int) -> int:
    """Windows per step of a ``frames``-long clip by the ``segments`` strategy (the plan's
    weights are windows x frames: a long clip is sampled and scaled)."""
    sample = min(frames, 480)
    plan = build("segments", segments, registry).plan(sample, window)
    return max(1, math.ceil(len(plan.windows) * frames / sample))
