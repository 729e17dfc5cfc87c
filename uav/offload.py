"""Block-level offload of the U-Net, for cards smaller than its weights plus one call.

The U-Net's large parts (each down/up block and its temporal module, the mid block and
its temporal module) wait in pinned host memory; the small ones (embeddings, the input
and output convolutions, tensors two parts share, such as the RoPE table) stay on the
device. A forward pre-hook makes a part resident just before it runs and starts copying
the *next* part on a side stream, so the copy overlaps the running part's compute; a
forward hook drops the part's device copy as soon as it has run. The device therefore
holds the small parts plus at most two blocks: the running one and the one in flight.

The arithmetic is the resident network's: the same parameter values, moved, never
recomputed or cast. On a device without streams (the CPU) the copies are synchronous
and "device" copies are separate tensors, which is how the tests count what is resident.

Cost: every U-Net call moves the offloaded bytes once over PCIe (about 1.2 GiB for the
released fp16 U-Net, ~50 ms at 25 GB/s), hidden behind the compute whenever a block's
compute takes longer than its copy (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["BlockOffload", "offload_blocks"]

Tensor = torch.Tensor


def offload_blocks(unet: nn.Module) -> list[nn.Module]:
    """The parts of ``unet`` block offload moves, in the order a forward pass runs them.

    For :class:`~uav.models.UNetVideoModel`: each down block and its temporal module, the
    mid block and its temporal module, each up block and its temporal module. For another
    network: its direct children, in registration order. Parts without parameters are left out.
    """
    if all(hasattr(unet, name) for name in ("down_blocks", "mid_block", "up_blocks")):
        order: list[nn.Module] = []
        for block, temp in zip(unet.down_blocks, getattr(unet, "down_temp_blocks", [None] * len(unet.down_blocks))):
            order += [block, temp]
        order += [unet.mid_block, getattr(unet, "mid_temp_block", None)]
        for block, temp in zip(unet.up_blocks, getattr(unet, "up_temp_blocks", [None] * len(unet.up_blocks))):
            order += [block, temp]
    else:
        order = list(unet.children())
    return [m for m in order if m is not None and any(True for _ in m.parameters())]


@dataclass
class _Part:
    """One offloaded part: its tensors (parameters and buffers it alone owns) and their host copies."""

    module: nn.Module
    tensors: list[Tensor]
    host: list[Tensor] = field(default_factory=list)
    device_copies: list[Tensor] | None = None
    ready: Any = None  # the side stream's event once a prefetch was issued

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


class BlockOffload:
    """Run ``unet`` with its large parts on the host between their turns (a context manager).

    Args:
        unet: the network, on ``device``.
        device: where it runs (default: the device of its first parameter).
        blocks: the parts to offload, in call order (default: :func:`offload_blocks`).

    Attributes:
        resident_bytes: bytes of offloaded parts now on the device.
        peak_resident_bytes: the most there ever were at once.
        log: ``("load" | "prefetch" | "drop", part index)`` in the order they happened.
    """

    def __init__(self, unet: nn.Module, device: torch.device | str | None = None, *,
                 blocks: list[nn.Module] | None = None) -> None:
        self.unet = unet
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.parts = [_Part(m, []) for m in (blocks if blocks is not None else offload_blocks(unet))]
        self.resident_bytes = 0
        self.peak_resident_bytes = 0
        self.log: list[tuple[str, int]] = []
        self._hooks: list[Any] = []
        self._cuda = self.device.type == "cuda"
        self._side = torch.cuda.Stream(self.device) if self._cuda else None

    # ------------------------------------------------------------------ install / remove
    def __enter__(self) -> "BlockOffload":
        self._own_tensors()
        for i, part in enumerate(self.parts):
            part.host = [self._host_copy(t) for t in part.tensors]
            for t, host in zip(part.tensors, part.host):
                t.data = host
            self._hooks.append(part.module.register_forward_pre_hook(lambda m, a, i=i: self._before(i)))
            self._hooks.append(part.module.register_forward_hook(lambda m, a, o, i=i: self._drop(i)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for i, part in enumerate(self.parts):
            self._drop(i, log=False)
            for t, host in zip(part.tensors, part.host):
                t.data = host.to(self.device)
            part.host = []
        if self._cuda:
            torch.cuda.current_stream(self.device).wait_stream(self._side)

    def release(self) -> None:
        """Drop the part copied ahead for the next call (before the device is needed for something else)."""
        for i in range(len(self.parts)):
            self._drop(i)

    def _own_tensors(self) -> None:
        """Each part moves the parameters and buffers only it holds; shared ones stay resident."""
        owners: dict[int, int] = {}
        members = [{id(t): t for t in (*p.module.parameters(), *p.module.buffers())} for p in self.parts]
        for tensors in members:
            for key in tensors:
                owners[key] = owners.get(key, 0) + 1
        names = {id(m): name for name, m in self.unet.named_modules()}
        prefixes = tuple(names.get(id(p.module), "\0") for p in self.parts)
        # every path to a module counts: a module shared with the rest of the network stays
        for name, module in self.unet.named_modules(remove_duplicate=False):
            if not any(name == pre or name.startswith(pre + ".") for pre in prefixes):
                for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                    owners[id(t)] = owners.get(id(t), 0) + 1
        for part, tensors in zip(self.parts, members):
            part.tensors = [t for key, t in tensors.items() if owners[key] == 1]

    def _host_copy(self, t: Tensor) -> Tensor:
        pinned = self._cuda and torch.cuda.is_available()
        host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pinned)
        host.copy_(t.data)
        return host

    # ------------------------------------------------------------------ the hooks
    def _before(self, i: int) -> None:
        part = self.parts[i]
        if part.device_copies is None:
            self._copy(i, "load")
        if self._cuda:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(part.ready)
            for copy in part.device_copies or ():
                copy.record_stream(main)  # the allocator must not reuse it while the main stream reads it
        for t, copy in zip(part.tensors, part.device_copies or ()):
            t.data = copy
        nxt = (i + 1) % len(self.parts)
        if nxt != i and self.parts[nxt].device_copies is None:
            self._copy(nxt, "prefetch")

    def _copy(self, i: int, event: str) -> None:
        part = self.parts[i]
        if self._side is not None:
            # the copy may start only once the main stream is done with what it overwrites
            self._side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side) if self._side is not None else contextlib.nullcontext():
            part.device_copies = [h.to(self.device, non_blocking=True, copy=True) for h in part.host]
            if self._cuda:
                part.ready = torch.cuda.Event()
                part.ready.record(self._side)
        self.resident_bytes += part.nbytes
        self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)
        self.log.append((event, i))

    def _drop(self, i: int, *, log: bool = True) -> None:
        part = self.parts[i]
        if part.device_copies is None:
            return
        for t, host in zip(part.tensors, part.host):
            t.data = host
        part.device_copies, part.ready = None, None
        self.resident_bytes -= part.nbytes
        if log:
            self.log.append(("drop", i))
