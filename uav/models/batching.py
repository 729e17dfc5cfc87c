"""Less memory for the same work: batch items one at a time, tokens in chunks (issue 22).

Nothing in the U-Net couples the items of a batch (GroupNorm's statistics are per item,
attention and convolutions per item and frame), and the feed-forward and its LayerNorm
are per token. So, in eager inference, the blocks whose transients are largest run on
part of the batch at a time and write into the batch's output, with the numbers the
whole batch gives:

* :func:`per_item`: a block on one batch item at a time (the U-Net's up blocks and
  temporal modules, whose full-resolution intermediates dominate a call's peak); the
  transient of an item does not grow with the batch, so batching windows costs only the
  tensors that carry the batch from block to block;
* :func:`item_chunks`: one item's pixels in :data:`FF_CHUNKS` pieces (the transformers'
  per-pixel work: the cross and temporal attentions and the feed-forward, whose 8C-wide
  GEGLU projection then exists for one piece at a time).

Autograd (training) and compiled graphs take the batched forms: a compiled graph fuses
its own buffers, and an in-place write into a slice would cost it a copy of the base.

:func:`memory_saving` turns both off (the batched reference the tests compare with), and
the memory model (:mod:`uav.memory`) reads :func:`allocation_class` to tell the bytes of
one item from the bytes that carry the batch.
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch

from uav.models.layers import eager_inference, empty_clip, layout_of

Tensor = torch.Tensor

__all__ = ["ALIGN_ROWS", "FF_CHUNKS", "MIN_ROWS", "active", "allocation_class", "in_item", "item_chunks",
           "memory_saving", "per_item", "row_chunks", "write_back"]

#: pieces an item's pixels are cut into for the transformers' per-pixel work: the feed-forward
#: keeps 9C per token (its LayerNorm's C and the GEGLU projection's 8C; the product is written
#: into the projection), a quarter of an item at a time. More pieces save nothing at the peak
#: (the residual blocks' is larger) and cost trace time
FF_CHUNKS = 4

#: pieces of token rows start on multiples of this, and hold at least MIN_ROWS rows, so the blocks
#: a kernel cuts rows into fall where they fall for the whole (CPU flash attention: query blocks of
#: 256 rows from 768 on; a BLAS multiplies a handful of rows with other kernels). On the CPU the
#: pieces then give the whole's numbers bitwise; where an item's rows are not a multiple of a
#: BLAS block, its last rows can round differently (within 1e-6 relative, tests/test_memory_saving.py)
ALIGN_ROWS = 256
MIN_ROWS = 768

_ENABLED: ContextVar[bool] = ContextVar("uav_memory_saving", default=True)
_ITEM_DEPTH: ContextVar[int] = ContextVar("uav_item_depth", default=0)
_CARRIER: ContextVar[bool] = ContextVar("uav_item_carrier", default=False)


@contextlib.contextmanager
def _setting(var: ContextVar[Any], value: Any) -> Iterator[None]:
    """``var`` set to ``value`` while the block runs."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def memory_saving(enabled: bool) -> ContextManager[None]:
    """Run the blocks per item and the transformers' per-pixel work in pieces (``True``, the
    default) or on the whole batch at once (``False``: the reference the same-numbers tests
    compare with)."""
    return _setting(_ENABLED, enabled)


def active() -> bool:
    """Whether the memory-saving forms run: eager inference with :func:`memory_saving` on."""
    # the compiler's check first: a graph being traced never reads the context variable
    return eager_inference() and _ENABLED.get()


def in_item() -> bool:
    """Whether a block is running on one batch item inside :func:`per_item`."""
    return _ITEM_DEPTH.get() > 0


def allocation_class() -> str:
    """What a tensor made now is, for the memory model: ``"item"`` (one batch item's, gone before
    the next item starts), ``"carrier"`` (the batch's output, made while an item runs) or
    ``"batch"`` (outside any item)."""
    if _CARRIER.get():
        return "carrier"
    return "item" if _ITEM_DEPTH.get() > 0 else "batch"


def _one_item() -> ContextManager[None]:
    return _setting(_ITEM_DEPTH, _ITEM_DEPTH.get() + 1)


def per_item(fn: Callable[..., Tensor], inputs: Sequence[Tensor], temb: Tensor, *,
             into: Tensor | None = None) -> Tensor:
    """``fn(*inputs, temb)`` computed one batch item at a time, written into ``into`` (a new
    tensor in the layout the first item's result has when ``None``).

    ``inputs`` are ``(B, ...)`` clips (or batch-first tensors such as the text embeddings),
    ``temb`` the time embedding: one row, shared (with ``B`` rows the batch runs at once).
    ``fn`` may write its result into its first input's item (its return value is then that
    view, and nothing is copied). Everything ``fn`` makes for an item is gone before the
    next starts, which the memory model checks (:func:`allocation_class`).
    """
    batch = inputs[0].shape[0]
    if temb.shape[0] > 1:
        # items with their own time embedding (never in the sampling loop: a step's windows share
        # the timestep and noise level) run batched: one item's row would be folded into the
        # convolutions' bias (uav.models.layers.time_bias), which rounds differently
        return fn(*inputs, temb)
    out = into
    for i in range(batch):
        with _one_item():
            y = fn(*(t[i:i + 1] for t in inputs), temb)
            if out is None:
                out = _batch_like(y, batch)
            write_back(out[i:i + 1], y)
            del y
    assert out is not None
    return out


def _batch_like(y: Tensor, batch: int) -> Tensor:
    """An uninitialised ``batch``-item tensor shaped and laid out like the one-item ``y``
    (made outside the item's bookkeeping: it carries the batch)."""
    with _setting(_CARRIER, True):
        return empty_clip((batch, *y.shape[1:]), layout_of(y) or "ncdhw", dtype=y.dtype, device=y.device)


def write_back(target: Tensor, result: Tensor) -> None:
    """``target[...] = result``, unless ``result`` is already ``target`` (a block that wrote into
    its input hands back that very view)."""
    # the strides of size-1 dimensions are arbitrary: a view may carry others
    strides = [(n, st) for n, st in zip(target.shape, target.stride()) if n > 1]
    same = result.untyped_storage()._cdata == target.untyped_storage()._cdata and \
        result.storage_offset() == target.storage_offset() and result.shape == target.shape and \
        [(n, st) for n, st in zip(result.shape, result.stride()) if n > 1] == strides
    if not same:
        target.copy_(result)


def row_chunks(rows: int, chunks: int = FF_CHUNKS, unit: int = 1, min_rows: int = 1) -> list[slice]:
    """About ``chunks`` slices covering ``range(rows)`` in order: each a multiple of ``unit`` rows
    long and at least ``min_rows`` (but the last, which ends where ``rows`` does)."""
    size = max(-(-rows // chunks), min_rows, 1)
    size = -(-size // unit) * unit
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def item_chunks(batch: int, pixels: int, frames: int, chunks: int = FF_CHUNKS) -> Iterator[tuple[int, slice]]:
    """``(item, pixels)`` for every batch item and each of its :func:`row_chunks` of pixels, the
    caller's work on one piece counted as one item's (:func:`in_item`).

    A pixel is ``frames`` token rows; a piece starts on a multiple of :data:`ALIGN_ROWS` rows and
    holds at least :data:`MIN_ROWS`, so the kernels cut it into the blocks they cut the whole into.
    """
    unit = ALIGN_ROWS // math.gcd(frames, ALIGN_ROWS)
    for i in range(batch):
        for part in row_chunks(pixels, chunks, unit, -(-MIN_ROWS // frames)):
            with _one_item():
                yield i, part
