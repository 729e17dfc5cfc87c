"""Training data: random clip windows of HQ videos, degraded on the fly into LQ/HQ pairs.

A run sees an endless stream of *global sample indices* ``g = 0, 1, 2, ...``. Index ``g``
falls in epoch ``g // N`` (``N`` windows in the folder), whose window order is a
permutation seeded by ``(seed, epoch)``; the crop position and the degradation of
sample ``g`` come from a generator seeded by ``(seed, g)``. So a sample is a pure function
of the run's seed and its index: worker processes, restarts and the number of GPUs
change nothing, and resuming only needs the position in the stream
(:class:`ResumableSampler`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from uav.train.config import SCALE, TrainConfigError

#: file suffixes read as videos (image sequences are folders of images)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf", ".mpg", ".mpeg", ".ts", ".y4m", ".gif")
#: files in the data folder that are never clips
_SIDECAR_EXTENSIONS = (".txt", ".json", ".csv", ".toml", ".md")


@dataclass(frozen=True)
class Clip:
    """One HQ clip of the data folder."""

    path: Path
    num_frames: int
    width: int
    height: int
    caption: str = ""


def load_captions(path: str | Path) -> dict[str, str]:
    """Read captions from one JSON object (``{"clip name": "caption"}``) or a CSV file with a
    ``clip`` (or ``file``/``path``) column and a ``caption`` (or ``text``/``prompt``) column.
    Keys are matched against a clip's file name, then its stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainConfigError(f"captions: cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrainConfigError(f"captions: {path} is not valid JSON: {exc}") from None
        if not isinstance(doc, Mapping) or not all(isinstance(v, str) for v in doc.values()):
            raise TrainConfigError(f"captions: {path} must hold one object mapping clip names to caption strings")
        return {str(k): v for k, v in doc.items()}
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows:
            return {}
        fields = {name.strip().lower(): name for name in rows[0]}
        key = next((fields[n] for n in ("clip", "file", "path") if n in fields), None)
        value = next((fields[n] for n in ("caption", "text", "prompt") if n in fields), None)
        if key is None or value is None:
            raise TrainConfigError(f"captions: {path} needs a header with a 'clip' and a 'caption' column, "
                                   f"got {list(rows[0])}")
        return {row[key].strip(): (row[value] or "").strip() for row in rows}
    raise TrainConfigError(f"captions: {path} must be a .json or .csv file")


def _is_sequence_folder(path: Path) -> bool:
    from uav.io import IMAGE_EXTENSIONS

    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def find_clips(folder: str | Path, *, frames: int, crop: int, captions: Mapping[str, str] | None = None) -> list[Clip]:
    """List the usable clips of ``folder`` (sorted by name), checking each one.

    Videos (any container PyAV reads, see :data:`VIDEO_EXTENSIONS`) and sub-folders of
    images are clips. Raises :class:`TrainConfigError` for an empty folder, a clip that
    cannot be read, one shorter than the window, or one smaller than the HQ crop.
    """
    from uav.io import IMAGE_EXTENSIONS, probe

    folder = Path(folder)
    if not folder.is_dir():
        raise TrainConfigError(f"data: {folder} is not a folder of clips")
    candidates = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        suffix = entry.suffix.lower()
        if entry.is_file() and suffix in VIDEO_EXTENSIONS:
            candidates.append(entry)
        elif entry.is_file() and suffix in IMAGE_EXTENSIONS:
            raise TrainConfigError(f"data: {entry} is a single image; put image sequences in one folder per clip")
        elif entry.is_dir() and _is_sequence_folder(entry):
            candidates.append(entry)
    if not candidates:
        raise TrainConfigError(f"data: no clips in {folder} (expected video files such as .mp4/.mov or folders "
                               "of images)")
    side = crop * SCALE
    clips = []
    for path in candidates:
        try:
            info = probe(path)
        except Exception as exc:  # the reader's message names the problem; say which clip
            raise TrainConfigError(f"data: cannot read clip {path.name}: {_one_line(exc)}") from None
        if info.num_frames < frames:
            raise TrainConfigError(f"data: clip {path.name} has {info.num_frames} frame(s), fewer than the window "
                                   f"of {frames} (lower --frames or remove the clip)")
        if info.width < side or info.height < side:
            raise TrainConfigError(f"data: clip {path.name} is {info.width}x{info.height}, smaller than the HQ crop "
                                   f"{side}x{side} (--crop {crop} is the low-res side; the HQ crop is x{SCALE})")
        clips.append(Clip(path, info.num_frames, info.width, info.height, _caption_for(path, captions)))
    return clips


def _caption_for(path: Path, captions: Mapping[str, str] | None) -> str:
    if captions is not None:
        for key in (path.name, path.stem):
            if key in captions:
                return captions[key]
    sidecar = path.with_suffix(".txt") if path.is_file() else path.parent / f"{path.name}.txt"
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip()
    return ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def clip_windows(clips: list[Clip], *, frames: int, stride: int) -> list[tuple[int, int]]:
    """``(clip index, first frame)`` of every window: starts ``0, stride, ...`` that fit in the clip."""
    return [(c, s) for c, clip in enumerate(clips) for s in range(0, clip.num_frames - frames + 1, stride)]


def to_model_range(frames: np.ndarray) -> torch.Tensor:
    """uint8/uint16 ``(T, H, W, 3)`` -> float ``(3, T, H, W)`` in [-1, 1]."""
    scale = 65535.0 if frames.dtype == np.uint16 else 255.0
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / scale
    return (x * 2.0 - 1.0).permute(3, 0, 1, 2).contiguous()


class WindowDataset(Dataset):
    """Sample ``g`` of the stream: a random window, crop and degradation (see the module docstring).

    Items are dicts: ``hq`` ``(3, T, 4c, 4c)`` and ``lq`` ``(3, T, c, c)`` float in [-1, 1],
    ``caption`` (str), ``index`` (``g``) and ``key`` (clip, start, y, x: what identifies the
    HQ crop, e.g. for the latent cache).
    """

    def __init__(self, clips: list[Clip], *, frames: int, stride: int, crop: int, degradation: Any,
                 seed: int) -> None:
        self.clips = clips
        self.frames = frames
        self.crop = crop
        self.degradation = degradation
        self.seed = int(seed)
        self.windows = clip_windows(clips, frames=frames, stride=stride)
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, g: int) -> tuple[int, int]:
        """The ``(clip, start)`` window of global sample ``g``."""
        epoch, pos = divmod(int(g), len(self.windows))
        order = self._orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.windows))
            self._orders = {epoch: order}  # one epoch at a time is all a run touches
        return self.windows[int(order[pos])]

    def __getitem__(self, g: int) -> dict[str, Any]:
        from uav.eval.degrade import degrade_clip
        from uav.io import read_frames

        c, start = self.window(g)
        clip = self.clips[c]
        rng = np.random.default_rng([self.seed, 1, int(g)])
        side = self.crop * SCALE
        # crop offsets on the x4 grid keep LR pixels aligned with HQ 4x4 blocks
        y = int(rng.integers(0, (clip.height - side) // SCALE + 1)) * SCALE
        x = int(rng.integers(0, (clip.width - side) // SCALE + 1)) * SCALE
        frames = read_frames(clip.path, start=start, end=start + self.frames)
        hq = frames[:, y:y + side, x:x + side]
        if hq.dtype != np.uint8:
            hq = np.round(hq.astype(np.float32) / 65535.0 * 255.0).astype(np.uint8)
        lq = degrade_clip(hq, seed=int(rng.integers(0, 2**31 - 1)), config=self.degradation, scale=SCALE)
        return {
            "hq": to_model_range(hq),
            "lq": to_model_range(lq),
            "caption": clip.caption,
            "index": int(g),
            "key": f"{clip.path.name}:{start}:{y}:{x}:{self.frames}:{side}",
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of :class:`WindowDataset` items into a batch."""
    return {
        "hq": torch.stack([i["hq"] for i in items]),
        "lq": torch.stack([i["lq"] for i in items]),
        "caption": [i["caption"] for i in items],
        "index": torch.tensor([i["index"] for i in items]),
        "key": [i["key"] for i in items],
    }


class ResumableSampler(Sampler[int]):
    """Global sample indices ``start + rank, start + rank + world, ...`` without end.

    With ``batch_size`` B, micro-step ``k`` of every process together consumes the
    ``B * world`` indices after ``start + k * B * world``, so the data position after
    ``n`` micro-steps is ``start + n * B * world`` whatever the number of workers.
    """

    def __init__(self, start: int = 0, *, rank: int = 0, world: int = 1) -> None:
        self.start, self.rank, self.world = int(start), int(rank), int(world)

    def __iter__(self) -> Iterator[int]:
        g = self.start + self.rank
        while True:
            yield g
            g += self.world

    def __len__(self) -> int:  # an endless stream; DataLoader only needs a number
        return 2**62


def worker_init(_: int) -> None:
    """One intra-op thread per data worker: the decode and the degradation are per-sample work."""
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # cv2 is a dependency, but a worker must not die for a thread hint
        pass


def make_loader(dataset: WindowDataset, *, start: int, batch_size: int, num_workers: int, rank: int = 0,
                world: int = 1) -> torch.utils.data.DataLoader:
    """An endless loader of batches from data position ``start`` on.

    Workers are *spawned*: by the time the loader starts, the training process runs
    OpenMP, OpenCV and PyAV thread pools, and a forked child can inherit one of their
    locks held, then wait on it forever.
    """
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=ResumableSampler(start, rank=rank, world=world),
        num_workers=num_workers, collate_fn=collate, worker_init_fn=worker_init if num_workers else None,
        prefetch_factor=2 if num_workers else None, persistent_workers=False,
        multiprocessing_context="spawn" if num_workers else None,
    )
