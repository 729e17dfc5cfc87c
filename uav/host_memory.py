"""Host RAM of a run: what lives for the whole clip, where, and the peak it predicts.

The clip-length state (low-res clip, noise, initial and current latents, the loop's
per-step buffers, flows, finished tiles) grows with the clip. Up to
:data:`STREAM_ABOVE_BYTES` it lives in RAM; above, in memory-mapped files
(:class:`uav.sampling.store.ClipStore`) that the page cache holds as far as RAM allows,
so the RAM a run *needs* stops growing with the clip: only a window's worth of frames is
worked on at a time. ``UAV_STREAM_ABOVE`` (bytes; 0 = always) moves the threshold.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from uav.settings import UpscaleSettings

__all__ = ["STREAM_ABOVE_BYTES", "HostMemory", "host_memory", "stream_above"]

GIB = 2**30
#: clip-length state above this many bytes is memory-mapped instead of held in RAM
STREAM_ABOVE_BYTES = 2 * GIB
#: the process itself (Python, torch, codecs) before any clip state, measured on the CPU benchmark
BASELINE_BYTES = int(0.8 * GIB)
#: bytes per latent pixel and frame held for the whole clip: the clip (3 channels) and its
#: noise (3) and initial latents (4) in fp32
CLIP_BYTES = 4 * (3 + 3 + 4)
#: flows: forward and backward, 2 channels each, fp32
FLOW_BYTES = 4 * 2 * 2
#: the loop's clip-length buffers per step (current latents, the CFG merge accumulator, the
#: guided prediction, x0, the next latents, the noised clip), fp32
LOOP_BYTES = 4 * (4 + 8 + 4 + 4 + 4 + 3)
#: frames worked on at once when the state is streamed (a window group plus the merge)
STREAM_CHUNK_FRAMES = 32


def stream_above() -> int:
    """The threshold in bytes (``UAV_STREAM_ABOVE`` overrides :data:`STREAM_ABOVE_BYTES`)."""
    value = os.environ.get("UAV_STREAM_ABOVE", "").strip()
    return int(value) if value.isdigit() else STREAM_ABOVE_BYTES


@dataclass(frozen=True)
class HostMemory:
    """Predicted host memory of a run, in GiB."""

    clip_state_gib: float
    streamed: bool
    disk_gib: float
    working_gib: float
    baseline_gib: float
    peak_gib: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def clip_state_bytes(settings: UpscaleSettings, *, height: int, width: int, frames: int,
                     tile_area: int | None = None) -> int:
    """Bytes of the clip-length state of a run (``tile_area``: the summed area of its pipeline tiles)."""
    px = height * width
    tiles = tile_area or px
    flows = FLOW_BYTES * px if settings.propagation_steps else 0
    # finished tiles' latents wait while the others denoise (4 fp32 channels per tile pixel)
    return frames * ((CLIP_BYTES + flows) * px + LOOP_BYTES * max(tiles // max(1, _tiles(tiles, px)), px)
                     + (16 * tiles if tiles > px else 0))


def _tiles(tile_area: int, px: int) -> int:
    return max(1, round(tile_area / px))


def host_memory(settings: UpscaleSettings, *, height: int, width: int, frames: int, weights_bytes: int = 0,
                tile_area: int | None = None) -> HostMemory:
    """The :class:`HostMemory` of upscaling a ``frames``-long clip of ``width`` x ``height``
    low-res pixels; ``weights_bytes``: networks held in host memory (a CPU run's, or the
    host copies an offloading plan keeps)."""
    state = clip_state_bytes(settings, height=height, width=width, frames=frames, tile_area=tile_area)
    streamed = state > stream_above()
    if streamed:
        per_frame = state / frames
        working = per_frame * min(frames, STREAM_CHUNK_FRAMES)
    else:
        working = state
    peak = BASELINE_BYTES + weights_bytes + working
    return HostMemory(clip_state_gib=state / GIB, streamed=streamed, disk_gib=state / GIB if streamed else 0.0,
                      working_gib=working / GIB, baseline_gib=BASELINE_BYTES / GIB, peak_gib=peak / GIB)
