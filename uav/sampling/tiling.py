"""Spatial tiling plans for large frames and the blend of per-tile outputs.

Implements SPEC §7.3 of the Upscale-A-Video reproduction notes (Zhou et al.,
CVPR 2024, official ``inference_upscale_a_video.py``): the published script tiles
frames with ``H·W >= 384²`` into ``tile_size`` cores, runs the whole pipeline on each
core padded by ``overlap`` LR pixels, and hard-pastes the core (×scale) into the
output, discarding the overlaps (surprise 14). :func:`official_tile_plan` expresses
that as :class:`~uav.protocols.Tile` weights (1 on the core, 0 on the padding);
:func:`feather_tile_plan` is a seam-free alternative whose weights ramp linearly
across the overlaps; :func:`blend_tiles` merges outputs of either plan.

Tiles are listed row-major (rows outer), the order the published script runs them
in; this matters because tiles share one random generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from uav.protocols import Tile, int_arg

Tensor = torch.Tensor

__all__ = ["official_tile_plan", "feather_tile_plan", "blend_tiles"]


def _check_plan_args(
    height: object, width: object, tile_size: object, overlap: object, scale: object
) -> tuple[int, int, int, int, int]:
    return (
        int_arg("height", height, 1),
        int_arg("width", width, 1),
        int_arg("tile_size", tile_size, 1),
        int_arg("overlap", overlap, 0),
        int_arg("scale", scale, 1),
    )


def _official_axis(length: int, tile_size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(core_start, core_end, pad_start, pad_end)`` along one axis (SPEC §7.3)."""
    n = math.ceil(length / tile_size)
    # "No end pad": if the last core would fit inside the previous tile's padding, drop it
    # and let the previous core run to the edge.
    if (n - 1) * tile_size + overlap >= length:
        n -= 1
    # The published rule yields 0 tiles when length <= overlap; one tile is the only sane reading.
    n = max(n, 1)
    spans = []
    for i in range(n):
        core_start = i * tile_size
        core_end = length if i == n - 1 else min(core_start + tile_size, length)
        spans.append((core_start, core_end, max(core_start - overlap, 0), min(core_end + overlap, length)))
    return spans


def official_tile_plan(
    height: int, width: int, *, tile_size: int = 256, overlap: int = 64, scale: int = 4
) -> list[Tile]:
    """The published hard-cut tiling (SPEC §7.3).

    Cores are ``tile_size`` squares on a grid from the top-left; if the last core along
    an axis would start within ``overlap`` of the edge it is merged into the previous
    one ("no end pad"). Each tile's ``region`` is its core padded by ``overlap`` (clipped
    to the frame); its weight is 1 on the core ×``scale`` and 0 on the padding, so
    :func:`blend_tiles` reproduces the published paste.
    """
    height, width, tile_size, overlap, scale = _check_plan_args(height, width, tile_size, overlap, scale)
    tiles = []
    for cy0, cy1, py0, py1 in _official_axis(height, tile_size, overlap):
        for cx0, cx1, px0, px1 in _official_axis(width, tile_size, overlap):
            weight = torch.zeros(((py1 - py0) * scale, (px1 - px0) * scale), dtype=torch.float32)
            weight[(cy0 - py0) * scale : (cy1 - py0) * scale, (cx0 - px0) * scale : (cx1 - px0) * scale] = 1.0
            tiles.append(Tile(region=(py0, py1, px0, px1), weight=weight))
    return tiles


def even_spans(length: int, tile_size: int, overlap: int) -> list[tuple[int, int]]:
    """The fewest ``[start, end)`` spans of ``tile_size`` that overlap by >= ``overlap``, evenly
    spread over ``length`` (one span when it fits): feathered tiles and uniform windows."""
    if length <= tile_size:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile_size - overlap))
    starts = [round(k * (length - tile_size) / (n - 1)) for k in range(n)]
    return [(s, s + tile_size) for s in starts]


def _ramp(start: int, end: int, length: int, ramp: int, scale: int) -> Tensor:
    """Weights along one output axis of a span: linear ramps of ``ramp`` output pixels at
    interior edges, flat 1 elsewhere; strictly positive (pixel centres, so never 0)."""
    size = (end - start) * scale
    pos = torch.arange(size, dtype=torch.float64) + 0.5
    w = torch.ones(size, dtype=torch.float64)
    if ramp > 0:
        if start > 0:
            w = torch.minimum(w, pos / ramp)
        if end < length:
            w = torch.minimum(w, (size - pos) / ramp)
    return w


def feather_tile_plan(
    height: int, width: int, *, tile_size: int = 256, overlap: int = 64, scale: int = 4
) -> list[Tile]:
    """Overlapping ``tile_size`` tiles with separable feathered weights (no seams).

    Uses the fewest tiles per axis whose neighbours overlap by at least ``overlap``
    LR pixels, spread evenly over the frame (a frame no larger than ``tile_size`` is
    one tile). Each tile's weight ramps linearly from near 0 to 1 over ``overlap·scale``
    output pixels at edges shared with a neighbour and is 1 at the frame border, so
    weights are strictly positive everywhere and the blend is continuous.

    Raises:
        ValueError: ``overlap >= tile_size`` or non-positive sizes.
    """
    height, width, tile_size, overlap, scale = _check_plan_args(height, width, tile_size, overlap, scale)
    if overlap >= tile_size:
        raise ValueError(f"overlap must be smaller than tile_size ({tile_size}), got {overlap}")
    ramp = overlap * scale
    tiles = []
    for y0, y1 in even_spans(height, tile_size, overlap):
        wy = _ramp(y0, y1, height, ramp, scale)
        for x0, x1 in even_spans(width, tile_size, overlap):
            wx = _ramp(x0, x1, width, ramp, scale)
            tiles.append(Tile(region=(y0, y1, x0, x1), weight=torch.outer(wy, wx).to(torch.float32)))
    return tiles


def blend_tiles(outputs: Sequence[Tensor], tiles: Sequence[Tile], out_height: int, out_width: int) -> Tensor:
    """Merge per-tile outputs as ``Σ w_i·out_i / Σ w_i``.

    Args:
        outputs: ``outputs[i]`` is ``(..., h_i·scale, w_i·scale)`` for ``tiles[i]``'s
            region; the leading dimensions must agree.
        tiles: the plan; each tile's ``weight`` fixes its output size and the scale.
        out_height, out_width: the full output size (the LR size ×scale).

    Returns:
        ``(..., out_height, out_width)`` in the outputs' dtype and device.

    Raises:
        ValueError: mismatched counts or shapes, tiles outside the output, or output
            pixels that no tile gives a positive weight.
    """
    out_height = int_arg("out_height", out_height, 1)
    out_width = int_arg("out_width", out_width, 1)
    if len(outputs) != len(tiles):
        raise ValueError(f"expected one output per tile ({len(tiles)}), got {len(outputs)}")
    if not outputs:
        raise ValueError("outputs must not be empty")
    lead = tuple(outputs[0].shape[:-2])
    ref = outputs[0]
    acc = torch.zeros(lead + (out_height, out_width), dtype=ref.dtype, device=ref.device)
    total = torch.zeros((out_height, out_width), dtype=ref.dtype, device=ref.device)
    for i, (out, tile) in enumerate(zip(outputs, tiles)):
        y0, y1, x0, x1 = tile.region
        wh, ww = tile.weight.shape
        if y1 <= y0 or x1 <= x0 or wh % (y1 - y0) or ww % (x1 - x0) or wh // (y1 - y0) != ww // (x1 - x0):
            raise ValueError(f"tiles[{i}]: weight shape {(wh, ww)} is not region {tile.region} times one integer scale")
        scale = wh // (y1 - y0)
        if tuple(out.shape) != lead + (wh, ww):
            raise ValueError(
                f"outputs[{i}] must have shape {lead + (wh, ww)} for tile region {tile.region}, "
                f"got {tuple(out.shape)}"
            )
        oy0, ox0 = y0 * scale, x0 * scale
        if y0 < 0 or x0 < 0 or oy0 + wh > out_height or ox0 + ww > out_width:
            raise ValueError(
                f"tiles[{i}] region {tile.region} ×{scale} falls outside the {out_height}x{out_width} output"
            )
        weight = tile.weight.to(device=ref.device, dtype=ref.dtype)
        acc[..., oy0 : oy0 + wh, ox0 : ox0 + ww] += out * weight
        total[oy0 : oy0 + wh, ox0 : ox0 + ww] += weight
    if not bool((total > 0).all()):
        missing = int((total <= 0).sum())
        raise ValueError(f"{missing} output pixels get no positive tile weight; the plan does not cover the output")
    return acc / total
