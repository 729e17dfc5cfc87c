"""Where a run's clip-length tensors live: in RAM, or in memory-mapped files.

A streamed store (:class:`ClipStore` with ``streamed=True``) backs each tensor with a
file in a temporary folder, mapped shared and unlinked at once: the kernel keeps in RAM
what fits and writes back the rest, the file's blocks are freed with the tensor, and
nothing is left on disk whatever happens to the process. The code that fills and reads
such tensors works on a chunk of frames at a time (:func:`frame_chunks`), so the RAM a
long clip needs no longer grows with its length.

Noise drawn into a store chunk by chunk is the noise ``torch.randn(shape, generator=g)``
draws (:meth:`ClipStore.randn`): the CPU generator fills uniforms in order and turns them
into normals sixteen at a time, so chunks of a multiple of sixteen elements continue
the same stream.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Iterator

import torch

Tensor = torch.Tensor

__all__ = ["ClipStore", "frame_chunks", "state_folder", "CHUNK_FRAMES"]

#: frames a streamed pass works on at once
CHUNK_FRAMES = 16
#: the CPU generator's normal draws come in blocks of this many values
_NORMAL_BLOCK = 16
#: elements drawn at once into a streamed tensor (a multiple of the block)
_PIECE = _NORMAL_BLOCK * 2**20


def frame_chunks(num_frames: int, size: int | None = None) -> Iterator[tuple[int, int]]:
    """``[start, end)`` ranges of at most ``size`` (default :data:`CHUNK_FRAMES`) frames covering ``num_frames``."""
    size = size or CHUNK_FRAMES
    for start in range(0, num_frames, size):
        yield start, min(start + size, num_frames)


def state_folder() -> str:
    """Where streamed state goes: ``$UAV_STATE_DIR``, else ``~/.cache/uav/state`` (a disk: the
    system's temporary folder is often a RAM file system, which would defeat the purpose)."""
    folder = os.environ.get("UAV_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "uav", "state")
    os.makedirs(folder, exist_ok=True)
    return folder


class ClipStore:
    """Allocates the clip-length tensors of one run (RAM unless ``streamed``).

    Args:
        streamed: back tensors with memory-mapped files instead of RAM.
        folder: where the (immediately unlinked) files go; default: :func:`state_folder`.
    """

    def __init__(self, streamed: bool = False, folder: str | os.PathLike[str] | None = None) -> None:
        self.streamed = streamed
        self.folder = os.fspath(folder) if folder is not None else state_folder() if streamed else None
        #: bytes handed out as mapped files (the disk a run needs at most)
        self.mapped_bytes = 0

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """An uninitialised tensor (a mapped file reads as zeros)."""
        if not self.streamed:
            return torch.empty(shape, dtype=dtype)
        numel = math.prod(shape)
        fd, path = tempfile.mkstemp(prefix="uav-clip-", suffix=".bin", dir=self.folder)
        try:
            os.ftruncate(fd, max(1, numel) * torch.empty((), dtype=dtype).element_size())
            flat = torch.from_file(path, shared=True, size=numel, dtype=dtype)
        finally:
            os.close(fd)
            os.unlink(path)  # the mapping stays; the blocks go when the tensor does
        self.mapped_bytes += flat.untyped_storage().nbytes()
        return flat.view(shape)

    def zeros(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        if not self.streamed:
            return torch.zeros(shape, dtype=dtype)
        return self.empty(shape, dtype)  # a fresh sparse file is zeros

    def randn(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """``torch.randn(shape, generator=generator)``, drawn a bounded piece at a time when streamed."""
        if not self.streamed:
            return torch.randn(shape, generator=generator)
        out = self.empty(shape)
        flat = out.view(-1)
        total = flat.numel()
        step = _PIECE
        start = 0
        # every piece but the last is a whole number of blocks; the last holds the
        # remainder, whose final block the generator redraws exactly as for the whole
        while total - start > step + _NORMAL_BLOCK:
            flat[start:start + step] = torch.randn(step, generator=generator)
            start += step
        flat[start:] = torch.randn(total - start, generator=generator)
        return out

    def like(self, t: Tensor) -> Tensor:
        return self.empty(tuple(t.shape), t.dtype)
