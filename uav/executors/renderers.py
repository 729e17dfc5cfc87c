"""Renderers for generic jobs: :class:`UpscaleJobRenderer` runs :class:`uav.VideoUpscaler`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uav.executors.base import Job, Progress

__all__ = ["UpscaleJobRenderer"]


class UpscaleJobRenderer:
    """Loads a release once and upscales every job it is given.

    Build it where it runs (a worker calls its factory, e.g.
    ``functools.partial(UpscaleJobRenderer, weights)``), so the weights are read from
    a path every node can see and the model never travels through the driver.

    Args:
        weights: the release folder for :meth:`uav.VideoUpscaler.from_pretrained`.
        device: torch device (default: CUDA when present; a Ray actor sees only its
            own GPUs, so ``cuda`` is the one Ray gave it).
        dtype: U-Net/text-encoder dtype (``fp16``, ``bf16``, ``fp32``; default per device).
        vae: ``3d`` or ``video``.
        writer_options: :class:`uav.io.writer.VideoWriter` options for every output
            (``codec``, ``pix_fmt``, ``crf``, ``fps`` of an image sequence ...).
    """

    def __init__(self, weights: str | os.PathLike[str], *, device: str | None = None, dtype: str | None = None,
                 vae: str = "3d", writer_options: Mapping[str, Any] | None = None) -> None:
        from uav import VideoUpscaler

        self.weights = Path(weights)
        self.writer_options = dict(writer_options or {})
        self.upscaler = VideoUpscaler.from_pretrained(self.weights, device=device, dtype=dtype,
                                                      vae=vae)  # type: ignore[arg-type]

    def __call__(self, job: Job, progress: Progress | None = None) -> None:
        """Upscale ``job.source[start:end]`` with ``job.settings`` into ``job.output``."""
        from uav.executors.split import Part, render_part
        from uav.settings import UpscaleSettings

        settings = UpscaleSettings.from_dict(job.settings)
        done = [0]

        def callback(info: Mapping[str, Any]) -> None:
            # frames are final once decoded; tile 0 counts each decode chunk once
            if progress is not None and info.get("stage") == "decode" and info.get("tile", 0) == 0:
                done[0] += int(info.get("frames", 0))
                progress(min(done[0], job.frames), job.frames)

        if isinstance(job.payload, Part):
            render_part(self.upscaler, job, settings, callback)
            return
        self.upscaler.upscale(job.source, output=job.output, settings=settings, callback=callback,
                              writer_options=self.writer_options, start=job.start, end=job.end)
