"""Host <-> accelerator copies that never make the host wait for the device (issue 21, items 2 and 4).

The clip-length state lives on the host when ``offload`` is on (the default on CUDA), and
one group of windows at a time visits the GPU. Copied naively, every window would cost
two host syncs: a blocking copy of its prediction back, and (from pageable memory) of its
inputs in. Here:

* inputs are staged in pinned host memory and copied on a side stream, one group ahead
  (:meth:`Transfers.to_device`), so the copy overlaps the previous group's U-Net call;
* results are copied into pinned host memory with ``non_blocking`` and an event
  (:meth:`Transfers.to_host`); the loop waits for group *k*'s event only after group
  *k+1* is queued, so the GPU always has work while the host merges;
* PyTorch's caching host allocator recycles the pinned blocks once their copies are done.

On the CPU, or with tensors already where they should be, every call is a no-op. Without
a usable CUDA runtime (the fake-tensor traces of ``benchmarks/static.py``) the same
operations run without pinning, streams or events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

Tensor = torch.Tensor

__all__ = ["Transfers", "Pending"]


@dataclass
class Pending:
    """Tensors on their way to the host; :meth:`wait` returns them once the copy is done."""

    tensors: tuple[Tensor | None, ...]
    event: Any = None

    def wait(self) -> tuple[Tensor | None, ...]:
        if self.event is not None:
            self.event.synchronize()  # this copy only: the device keeps the work queued after it
            self.event = None
        return self.tensors


class Transfers:
    """Pinned, non-blocking copies between the host and ``device`` for one run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self._side = torch.cuda.Stream(device) if self.cuda else None

    def _pinned(self, t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        return torch.empty(t.shape, dtype=dtype or t.dtype, pin_memory=self.cuda)

    def to_device(self, t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``t`` on the device in ``dtype``; a host tensor is staged pinned and copied on the
        side stream, and the current stream waits for that copy only."""
        dtype = dtype or t.dtype
        if t.device.type != "cpu" or self.device.type == "cpu":
            return t.to(device=self.device, dtype=dtype)
        staged = self._pinned(t, dtype).copy_(t)
        if self._side is None:
            return staged.to(self.device, non_blocking=True)
        main = torch.cuda.current_stream(self.device)
        # no wait for the main stream: the staged buffer was filled by the host, and the side
        # stream allocates from its own pool, so the copy can run under the queued U-Net call
        with torch.cuda.stream(self._side):
            out = staged.to(self.device, non_blocking=True)
        main.wait_stream(self._side)
        out.record_stream(main)  # allocated on the side stream, used on the main one
        return out

    def to_host(self, *tensors: Tensor | None) -> Pending:
        """Start copying device ``tensors`` (``None`` passes through) into pinned host memory;
        host tensors are handed on as they are."""
        out: list[Tensor | None] = []
        moved = False
        for t in tensors:
            if t is None or t.device.type == "cpu":
                out.append(t)
                continue
            out.append(self._pinned(t).copy_(t, non_blocking=True))
            moved = True
        event = None
        if moved and self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        return Pending(tuple(out), event)
