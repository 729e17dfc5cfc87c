"""Tests for uav.sampling.tiling (SPEC §7.3)."""

from __future__ import annotations

import math

import pytest
import torch

from uav.protocols import Tile
from uav.sampling.tiling import blend_tiles, feather_tile_plan, official_tile_plan


def _spec_axis(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """SPEC §7.3 read literally, as core spans along one axis."""
    n = math.ceil(length / size)
    if (n - 1) * size + overlap >= length:
        n -= 1
    cores = [[x * size, min(x * size + size, length)] for x in range(max(n, 1))]
    cores[-1][1] = length  # the last core always runs to the edge
    return [tuple(c) for c in cores]


Box = tuple[int, int, int, int]


def _spec_tiles(height: int, width: int, size: int, overlap: int) -> list[tuple[Box, Box]]:
    """(padded region, core) per tile, rows outer."""
    out = []
    for cy0, cy1 in _spec_axis(height, size, overlap):
        for cx0, cx1 in _spec_axis(width, size, overlap):
            region = (
                max(cy0 - overlap, 0),
                min(cy1 + overlap, height),
                max(cx0 - overlap, 0),
                min(cx1 + overlap, width),
            )
            out.append((region, (cy0, cy1, cx0, cx1)))
    return out


def test_official_plan_400x600_by_hand():
    tiles = official_tile_plan(400, 600, tile_size=256, overlap=64, scale=4)
    # Rows: cores [0,256) [256,400); columns: [0,256) [256,512) [512,600).
    assert [t.region for t in tiles] == [
        (0, 320, 0, 320), (0, 320, 192, 576), (0, 320, 448, 600),
        (192, 400, 0, 320), (192, 400, 192, 576), (192, 400, 448, 600),
    ]  # fmt: skip
    w = tiles[4].weight  # the centre tile: core [256,400) x [256,512) inside region [192,400) x [192,576)
    assert w.shape == (208 * 4, 384 * 4)
    assert w[64 * 4 :, 64 * 4 : 320 * 4].eq(1).all()
    assert w.sum().item() == 144 * 4 * 256 * 4


def test_official_plan_no_end_pad():
    # 300 rows: ceil(300/256)=2 but 256+64 >= 300, so one row covers all; 560 columns: 512+64 >= 560 → 2 columns.
    tiles = official_tile_plan(300, 560, tile_size=256, overlap=64, scale=4)
    assert [t.region for t in tiles] == [(0, 300, 0, 320), (0, 300, 192, 560)]
    assert tiles[1].weight[:, 64 * 4 :].eq(1).all() and not tiles[1].weight[:, : 64 * 4].any()


@pytest.mark.parametrize(
    ("height", "width", "size", "overlap", "scale"),
    [
        (400, 600, 256, 64, 4),
        (384, 384, 256, 64, 4),
        (513, 770, 256, 64, 4),
        (90, 130, 32, 8, 2),
        (50, 700, 256, 64, 1),
        (20, 20, 8, 40, 3),
    ],
)
def test_official_plan_matches_spec_derivation(height, width, size, overlap, scale):
    tiles = official_tile_plan(height, width, tile_size=size, overlap=overlap, scale=scale)
    expected = _spec_tiles(height, width, size, overlap)
    assert [t.region for t in tiles] == [r for r, _ in expected]
    coverage = torch.zeros(height * scale, width * scale)
    for tile, (region, core) in zip(tiles, expected):
        y0, y1, x0, x1 = region
        assert isinstance(tile, Tile)
        assert tile.weight.shape == ((y1 - y0) * scale, (x1 - x0) * scale)
        assert set(tile.weight.unique().tolist()) <= {0.0, 1.0}
        full = torch.zeros(height * scale, width * scale)
        full[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = tile.weight
        core_mask = torch.zeros_like(full)
        core_mask[core[0] * scale : core[1] * scale, core[2] * scale : core[3] * scale] = 1
        assert torch.equal(full, core_mask)
        coverage += full
    assert coverage.eq(1).all()  # every output pixel pasted exactly once


@pytest.mark.parametrize("plan", [official_tile_plan, feather_tile_plan])
def test_blend_reproduces_a_known_image(plan):
    height, width, scale = 45, 70, 2
    image = torch.randn(2, 3, height * scale, width * scale, generator=torch.Generator().manual_seed(0))
    tiles = plan(height, width, tile_size=24, overlap=6, scale=scale)
    assert len(tiles) > 4
    boxes = [t.region for t in tiles]
    outputs = [image[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] for y0, y1, x0, x1 in boxes]
    merged = blend_tiles(outputs, tiles, height * scale, width * scale)
    if plan is official_tile_plan:
        assert torch.equal(merged, image)  # a hard paste is exact
    else:
        assert (merged - image).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("height", "width"), [(400, 600), (300, 560), (200, 200), (257, 1000)])
def test_feather_plan_constant_image_and_coverage(height, width):
    scale, size, overlap = 4, 256, 64
    tiles = feather_tile_plan(height, width, tile_size=size, overlap=overlap, scale=scale)
    total = torch.zeros(height * scale, width * scale)
    for t in tiles:
        y0, y1, x0, x1 = t.region
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert y1 - y0 == min(size, height) and x1 - x0 == min(size, width)
        assert (t.weight > 0).all()
        total[y0 * scale : y1 * scale, x0 * scale : x1 * scale] += t.weight
    assert (total > 0).all()
    outputs = [torch.full((1, 3, *t.weight.shape), 0.7) for t in tiles]
    merged = blend_tiles(outputs, tiles, height * scale, width * scale)
    assert (merged - 0.7).abs().max().item() <= 1e-5


def test_feather_plan_has_no_seams():
    """Each tile's normalised weight changes gradually, unlike the hard cut of the official plan."""
    height, width, scale = 400, 600, 4

    def max_step(tiles: list[Tile]) -> float:
        full = []
        for t in tiles:
            y0, y1, x0, x1 = t.region
            f = torch.zeros(height * scale, width * scale)
            f[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = t.weight
            full.append(f)
        norm = torch.stack(full) / torch.stack(full).sum(0)
        return max(norm.diff(dim=1).abs().max().item(), norm.diff(dim=2).abs().max().item())

    assert max_step(feather_tile_plan(height, width, tile_size=256, overlap=64, scale=scale)) < 0.01
    assert max_step(official_tile_plan(height, width, tile_size=256, overlap=64, scale=scale)) == 1.0


def test_feather_plan_overlaps():
    tiles = feather_tile_plan(400, 600, tile_size=256, overlap=64, scale=4)
    xs = sorted({(t.region[2], t.region[3]) for t in tiles})
    assert xs[0][0] == 0 and xs[-1][1] == 600
    assert all(a[1] - b[0] >= 64 for a, b in zip(xs, xs[1:]))
    single = feather_tile_plan(100, 120, tile_size=256, overlap=64, scale=4)
    assert len(single) == 1 and single[0].region == (0, 100, 0, 120) and single[0].weight.eq(1).all()


def test_errors():
    with pytest.raises(ValueError, match="overlap"):
        feather_tile_plan(100, 100, tile_size=32, overlap=32)
    with pytest.raises(ValueError, match="height"):
        official_tile_plan(0, 100)
    with pytest.raises(TypeError, match="tile_size"):
        official_tile_plan(100, 100, tile_size=25.5)
    tiles = official_tile_plan(40, 40, tile_size=16, overlap=4, scale=2)
    outs = [torch.zeros(3, *t.weight.shape) for t in tiles]
    with pytest.raises(ValueError, match="one output per tile"):
        blend_tiles(outs[:-1], tiles, 80, 80)
    with pytest.raises(ValueError, match=r"outputs\[0\]"):
        blend_tiles([torch.zeros(3, 5, 5)] + outs[1:], tiles, 80, 80)
    with pytest.raises(ValueError, match="outside"):
        blend_tiles(outs, tiles, 60, 80)
    with pytest.raises(ValueError, match="no positive tile weight"):
        blend_tiles(outs[:1], tiles[:1], 80, 80)
