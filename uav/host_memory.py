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
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from uav.sampling import store as _store
from uav.sampling.store import ClipStore
from uav.settings import UpscaleSettings

__all__ = ["STREAM_ABOVE_BYTES", "HostMemory", "host_memory", "stack_frames", "store_for", "stream_above"]

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
#: frames worked on at once when the state is streamed (chunks of the store, a window group)
STREAM_CHUNK_FRAMES = 2 * _store.CHUNK_FRAMES


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
    """Bytes of a run's clip-length state: the clip, its noise and initial latents, flows, the
    loop's buffers for the largest pipeline tile and the finished tiles' latents
    (``tile_area``: the summed area of the pipeline tiles, default one whole-frame tile)."""
    px = height * width
    tiles = tile_area or px
    flows = FLOW_BYTES if settings.propagation_steps else 0
    finished = 16 * tiles if tiles > px else 0  # 4 fp32 channels per tile pixel wait for the decode
    return frames * ((CLIP_BYTES + flows) * px + LOOP_BYTES * min(tiles, px) + finished)


def host_memory(settings: UpscaleSettings, *, height: int, width: int, frames: int, weights_bytes: int = 0,
                tile_area: int | None = None) -> HostMemory:
    """The :class:`HostMemory` of upscaling a ``frames``-long clip of ``width`` x ``height``
    low-res pixels; ``weights_bytes``: networks held in host memory (a CPU run's, or the
    host copies a memory plan keeps there)."""
    state = clip_state_bytes(settings, height=height, width=width, frames=frames, tile_area=tile_area)
    streamed = state > stream_above()
    # streamed: the chunks being worked on (the store's and a window group's), not the clip
    working = state / frames * min(frames, STREAM_CHUNK_FRAMES) if streamed else state
    peak = BASELINE_BYTES + weights_bytes + working
    return HostMemory(clip_state_gib=state / GIB, streamed=streamed, disk_gib=state / GIB if streamed else 0.0,
                      working_gib=working / GIB, baseline_gib=BASELINE_BYTES / GIB, peak_gib=peak / GIB)


def store_for(settings: UpscaleSettings, *, height: int, width: int, frames: int) -> ClipStore:
    """The :class:`ClipStore` of a run: streamed when its clip-length state exceeds :func:`stream_above`."""
    return ClipStore(streamed=clip_state_bytes(settings, height=height, width=width, frames=frames) > stream_above())


def stack_frames(frames: Iterable[Any], store: ClipStore) -> torch.Tensor:
    """:func:`uav.frames.frames_to_tensor` of ``frames`` (arrays ``(H, W, 3)``), converted a
    chunk at a time into ``store``: the whole clip never exists as one array in RAM."""
    from uav.frames import InputError, frames_to_tensor

    parts: list[torch.Tensor] = []
    batch: list[Any] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == _store.CHUNK_FRAMES:
            parts.append(_into(store, frames_to_tensor(np.stack(batch), "video")))
            batch = []
    if batch:
        parts.append(_into(store, frames_to_tensor(np.stack(batch), "video")))
    if not parts:
        raise InputError("video: the video has no frames")
    if len({p.shape[3:] for p in parts}) > 1:
        raise InputError("video: all frames must have one size")
    out = store.empty((1, 3, sum(p.shape[2] for p in parts)) + tuple(parts[0].shape[3:]))
    start = 0
    for part in parts:
        out[:, :, start:start + part.shape[2]] = part
        start += part.shape[2]
    return out


def _into(store: ClipStore, chunk: torch.Tensor) -> torch.Tensor:
    out = store.like(chunk)
    out.copy_(chunk)
    return out
