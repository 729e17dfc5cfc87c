"""``temporal-split``: an opt-in strategy that shares one long clip between workers.

The published method runs propagation and the window merge over the whole clip, so
splitting a clip changes the result; this strategy is never the default (a clip stays
on one worker). When asked for, a job longer than ``min_frames`` becomes parts of
``part_frames`` frames that overlap by ``overlap`` frames. Each part is rendered like
a clip of its own, except that its initial latents and augmentation noise are the
frames' slices of the *whole clip's* draws (same seed, same draw order), so the only
differences from the unsplit render are what the parts cannot see across a seam:
propagation's flow and the temporal layers' context. The parts' frames are then
merged by the window-merge rule (SPEC §6 step 5): a frame keeps the first part's
value and every later part that covers it is blended in ``0.5·acc + 0.5·new``; with
an overlap of at most half a part, that is the two parts' mean at each seam frame.

Parts are stored as uint8 ``.npy`` arrays in a hidden folder beside the output (named
after the job's range, settings and split, so a rerun reuses finished parts) and the
driver merges them into the output atomically, then removes them. The difference from
the unsplit render is measured in docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from uav.executors.base import PARTIAL_MARKS, Job

__all__ = ["PARTS_DIR", "Part", "TemporalSplit"]

#: the hidden folder (beside the outputs) that holds parts until they are merged
PARTS_DIR = ".uav-parts"


@dataclass(frozen=True)
class Part:
    """The payload of a part job: which slice of which whole job it renders."""

    parent: Job
    index: int
    count: int
    #: the part's first frame, counted from the parent's first frame
    offset: int


@dataclass(frozen=True)
class TemporalSplit:
    """Cut long jobs into overlapping temporal parts; merge the parts back.

    Args:
        part_frames: frames per part (the last one may be shorter, never below
            ``overlap + 1``).
        overlap: frames two neighbouring parts share (blended at the seam).
        min_frames: only jobs longer than this are split (default ``2 * part_frames``).
    """

    part_frames: int = 96
    overlap: int = 8
    min_frames: int | None = None

    name = "temporal-split"

    def __post_init__(self) -> None:
        if self.part_frames < 2:
            raise ValueError(f"part_frames must be >= 2, got {self.part_frames}")
        if not 0 <= self.overlap <= self.part_frames // 2:
            raise ValueError(f"overlap must be in [0, part_frames // 2 = {self.part_frames // 2}], got {self.overlap}")

    def ranges(self, frames: int) -> list[tuple[int, int]]:
        """The parts of a ``frames``-long job as ``[begin, end)`` offsets (one range when not split)."""
        limit = self.min_frames if self.min_frames is not None else 2 * self.part_frames
        if frames <= limit or frames <= self.part_frames:
            return [(0, frames)]
        stride = self.part_frames - self.overlap
        out: list[tuple[int, int]] = []
        begin = 0
        while True:
            end = min(frames, begin + self.part_frames)
            if frames - end <= self.overlap:  # the remainder would lie inside the seam: stretch this part
                end = frames
            out.append((begin, end))
            if end >= frames:
                return out
            begin += stride

    def split(self, jobs: Sequence[Job]) -> tuple[list[Job], dict[str, list[Job]]]:
        """``(jobs to render, {parent name: its part jobs})``.

        Unsplit jobs pass through; a split job is replaced by its parts whose stored
        arrays are not already there. Every part job carries a :class:`Part` payload.

        Raises:
            ValueError: a job to split has no fixed seed (its parts must share the draws).
        """
        out: list[Job] = []
        parts_of: dict[str, list[Job]] = {}
        for job in jobs:
            ranges = self.ranges(job.frames)
            if len(ranges) == 1:
                out.append(job)
                continue
            if job.settings.get("seed") is None:
                raise ValueError(f"{job.name}: temporal-split needs a fixed seed (the parts share the clip's noise)")
            folder = Path(job.output).parent / PARTS_DIR
            key = _key(job, ranges)
            stem = Path(job.output).name
            parts = []
            for k, (b, e) in enumerate(ranges):
                start = (job.start or 0) + b
                part = Job(name=f"{job.name}#part{k + 1}of{len(ranges)}", source=job.source,
                           output=folder / f"{stem}.{key}.part{k + 1:03d}of{len(ranges):03d}.npy", start=start,
                           end=start + (e - b), frames=e - b, settings=job.settings,
                           payload=Part(job, k, len(ranges), b))
                parts.append(part)
            parts_of[job.name] = parts
            out += [p for p in parts if not Path(p.output).is_file()]
        return out, parts_of

    def merge(self, parent: Job, parts: Sequence[Job], *, writer_options: Mapping[str, Any] | None = None,
              scale: int = 4) -> Path:
        """Blend the parts' frames at the seams and write ``parent.output`` atomically.

        The source's frame rate, timecode, colour tags and audio (for the rendered
        range) carry over as in an unsplit render. The parts are removed afterwards.
        """
        from uav.io.metadata import carry_over
        from uav.io.reader import probe
        from uav.io.writer import VideoWriter

        arrays = [np.load(p.output, mmap_mode="r") for p in parts]
        _, height, width, _ = arrays[0].shape
        options = dict(writer_options or {})
        info = probe(parent.source)
        fps = options.pop("fps", None) or info.fps or Fraction(24)
        first = parent.start or 0
        # the metadata an unsplit render of the range carries; the caller's options win
        options = {**carry_over(info, first, parent.frames), **options}
        from uav.io.alpha import alpha_planes, with_alpha
        from uav.io.codecs import CODECS

        spec = CODECS.get(options.get("codec", "h264"))
        alpha = None if spec is None else alpha_planes(info, first, parent.frames, spec, options.get("pix_fmt"),
                                                        width, height)
        with VideoWriter(parent.output, fps=Fraction(fps), width=width, height=height, alpha=alpha is not None,
                         **options) as writer:
            for frame in merge_frames(arrays, [p.payload.offset for p in parts], parent.frames):
                writer.write(with_alpha(frame, alpha))
        for p in parts:
            with contextlib.suppress(OSError):
                Path(p.output).unlink()
        with contextlib.suppress(OSError):
            Path(parts[0].output).parent.rmdir()  # only when no other job's parts are left
        return Path(parent.output)


def merge_frames(arrays: Sequence[np.ndarray], offsets: Sequence[int], frames: int):  # noqa: ANN201
    """Yield the merged uint8 frames: the first covering part's value, then ``0.5·acc + 0.5·new``."""
    for t in range(frames):
        acc: np.ndarray | None = None
        for arr, off in zip(arrays, offsets):
            if off <= t < off + len(arr):
                new = arr[t - off].astype(np.float32)
                acc = new if acc is None else 0.5 * acc + 0.5 * new
        if acc is None:
            raise ValueError(f"frame {t} is covered by no part")
        yield np.clip(np.rint(acc), 0, 255).astype(np.uint8)


def _key(job: Job, ranges: Sequence[tuple[int, int]]) -> str:
    text = json.dumps({"source": str(job.source), "start": job.start, "end": job.end, "settings": dict(job.settings),
                       "ranges": list(ranges)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def render_part(upscaler: Any, job: Job, settings: Any, callback: Any) -> None:
    """Render a part job with ``upscaler`` and store its uint8 frames at ``job.output`` atomically.

    The initial latents and augmentation noise are drawn for the whole parent clip
    from the seed, in the published order, and sliced to the part's frames.
    """
    import torch

    part: Part = job.payload
    lr, _ = upscaler._load_video(job.source, start=job.start, end=job.end)
    lr = upscaler._maybe_downscale(lr, settings)
    _, _, n, h, w = lr.shape
    total = part.parent.frames
    generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))
    noise = torch.randn((1, 3, total, h, w), generator=generator)[:, :, part.offset:part.offset + n].clone()
    latents = torch.randn((1, 4, total, h, w), generator=generator)[:, :, part.offset:part.offset + n].clone()
    frames = upscaler.upscale(lr, settings=settings, callback=callback, latents=latents, low_res_noise=noise,
                              output_type="np")
    out = Path(job.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}{PARTIAL_MARKS[1]}-{os.getpid()}{out.suffix}")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, frames)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
