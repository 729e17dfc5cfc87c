"""Bytes the current whole-clip loop keeps for a clip (``bench.py --memory-model``), computed, not measured."""

from __future__ import annotations

from typing import Any

from benchmarks.clocks import GIB

__all__ = ["memory_model"]


def _clip_state(frames: int, th: int, tw: int, window: int, stride: int) -> dict[str, dict[str, int]]:
    """Clip-length GPU tensors of one tile (``th x tw`` latent pixels) of the current loop."""
    n = frames * th * tw
    calls = len(range(0, frames, stride)) if frames > window else 1
    cover = calls * min(window, frames) / frames  # window frames per clip frame
    one = n * 4 * 4  # one fp32 4-channel clip-length tensor
    alive = {  # held from the start of the tile to its end
        "initial_latents_fp32 (caller's copy)": one,
        "clean_low_res_fp32": n * 3 * 4,
        "noisy_low_res_fp32": n * 3 * 4,
        "cfg_low_res_fp16": n * 3 * 2 * 2,
        "flows_fp32 (forward + backward)": (frames - 1) * th * tw * 2 * 2 * 4,
        "latents_fp32": one,
        "cfg_latents_fp16": n * 4 * 2 * 2,
        "window_predictions_fp16": int(n * cover * 4 * 2 * 2),
    }
    merge = {"window_predictions_fp32_copies": int(n * cover * 4 * 2 * 4), "merged_v_fp32": 2 * one}
    step_end = {"merged_v_fp32 (kept by the CFG chunks)": 2 * one,
                "guided_v + x0 + two scheduler temporaries + next latents (fp32)": 5 * one}
    return {"alive": alive, "merge": merge, "step_end": step_end}


def _peak(state: dict[str, dict[str, int]]) -> int:
    base = sum(state["alive"].values())
    return base + max(sum(state["merge"].values()), sum(state["step_end"].values()))


def memory_model(frames: int = 1800, height: int = 480, width: int = 854, *, card_gib: float = 24.0,
                 activations_gib: float = 6.0, window: int = 8, stride: int = 6) -> dict[str, Any]:
    """Bytes the current whole-clip loop keeps for a clip, per tile on the GPU and on the host.

    Defaults: one minute of 854x480 at 30 fps (1800 frames) with the published settings
    (fp16 U-Net, fp32 VAE, guidance on, official windows, tiles as the published rule cuts
    480x854). Counts the tensors of ``uav.pipeline.generate`` and
    ``uav.sampling.loop.denoise`` that span the whole clip and are alive at once during
    the window merge or at the end of a step; the weights and the U-Net's per-window
    activations (``activations_gib``: the baseline's denoise working set in bench.json)
    come on top. ``max_frames_on_card`` is the longest clip whose peak fits ``card_gib``.
    """
    from uav.sampling.tiling import official_tile_plan

    tiles = official_tile_plan(height, width)
    areas = [((t.region[1] - t.region[0]) * (t.region[3] - t.region[2]), t.region) for t in tiles]
    r = max(areas)[1]
    th, tw = r[1] - r[0], r[3] - r[2]
    weights = {"unet_fp16": 691_036_436 * 2, "vae_3d_fp32": 55_325_927 * 4}
    fixed = sum(weights.values()) + activations_gib * GIB
    state = _clip_state(frames, th, tw, window, stride)
    peak_state = _peak(state)
    lo, hi = 0, 1
    while fixed + _peak(_clip_state(hi + 1, th, tw, window, stride)) <= card_gib * GIB and hi < 10**7:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # largest frame count whose peak fits the card
        mid = (lo + hi) // 2
        if fixed + _peak(_clip_state(mid + 1, th, tw, window, stride)) <= card_gib * GIB:
            lo = mid
        else:
            hi = mid
    max_frames = lo + 1 if fixed + _peak(_clip_state(lo + 1, th, tw, window, stride)) <= card_gib * GIB else 0
    hw = height * width
    host = {
        "low_res_clip_fp32": frames * hw * 3 * 4,
        "low_res_noise_fp32": frames * hw * 3 * 4,
        "initial_latents_fp32": frames * hw * 4 * 4,
        "flows_fp32": (frames - 1) * hw * 2 * 2 * 4,
        "finished_tile_latents_fp32": sum(frames * a * 16 for a, _ in areas),
    }
    clip_state = {**state["alive"], **{f"merge: {k}": v for k, v in state["merge"].items()},
                  **{f"step end: {k}": v for k, v in state["step_end"].items()}}
    return {
        "frames": frames, "low_res": [height, width], "tiles": len(tiles), "largest_tile": [th, tw],
        "gpu_weights_bytes": weights, "gpu_clip_state_bytes": clip_state,
        "gpu_clip_state_peak_gib": peak_state / GIB, "activations_gib": activations_gib,
        "gpu_peak_gib": (peak_state + fixed) / GIB, "gpu_bytes_per_frame": peak_state / frames,
        "card_gib": card_gib, "max_frames_on_card": max_frames,
        "host_bytes": host, "host_total_gib": sum(host.values()) / GIB,
    }
