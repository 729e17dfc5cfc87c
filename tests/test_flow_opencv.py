"""The weight-free flow estimators (``dis``, ``farneback``) selected by name."""

from __future__ import annotations

import math

import pytest
import torch

from uav.protocols import FlowEstimator
from uav.registry import Registry

SHIFT = (1.3, -0.6)  # (x, y) pixels per frame: sub-pixel in both axes
BORDER = 10  # pixels near the edges see content that enters/leaves the frame


def _texture(h: int, w: int, dx: float, dy: float) -> torch.Tensor:
    """A smooth random texture (sum of plane waves) sampled at ``(x - dx, y - dy)``,
    i.e. the content moved by ``(+dx, +dy)``; exact for sub-pixel shifts."""
    g = torch.Generator().manual_seed(7)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    img = torch.zeros(h, w, dtype=torch.float64)
    for _ in range(24):
        fx, fy = ((torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1) * 0.35).tolist()
        phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        img += torch.cos(fx * (xs - dx) + fy * (ys - dy) + phase)
    return img / img.abs().max()


def _moving_clip(h: int = 96, w: int = 128, frames: int = 3) -> torch.Tensor:
    clip = []
    for k in range(frames):
        gray = _texture(h, w, k * SHIFT[0], k * SHIFT[1])
        clip.append(torch.stack([gray, 0.8 * gray, 0.6 * gray]) * 0.9)
    return torch.stack(clip).float()  # (T, 3, H, W) in [-1, 1]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def _inner(flow: torch.Tensor) -> torch.Tensor:
    return flow[..., BORDER:-BORDER, BORDER:-BORDER]


def _endpoint_error(flow: torch.Tensor, expected: tuple[float, float]) -> torch.Tensor:
    return ((flow[:, 0] - expected[0]) ** 2 + (flow[:, 1] - expected[1]) ** 2).sqrt()


@pytest.mark.parametrize("name", ["dis", "farneback"])
def test_recovers_known_subpixel_shift(registry, name):
    estimator = registry.get("flow", name)
    assert isinstance(estimator, FlowEstimator)
    clip = _moving_clip()
    forward, backward = estimator(clip)
    assert forward.shape == backward.shape == (1, 2, 2, 96, 128)
    assert forward.dtype == torch.float32
    fwd_err = _endpoint_error(_inner(forward), SHIFT)
    bwd_err = _endpoint_error(_inner(backward), (-SHIFT[0], -SHIFT[1]))
    assert fwd_err.max() < 0.5 and bwd_err.max() < 0.5
    # Typical accuracy is far better than the bound (measured ~0.02-0.03 px).
    assert fwd_err.mean() < 0.1 and bwd_err.mean() < 0.1


def test_resized_flows_are_rescaled_per_axis(registry):
    estimator = registry.get("flow", "dis")
    clip = _moving_clip()
    # Half the width, same height: x halves, y does not.
    forward, backward = estimator(clip, size=(96, 64))
    assert forward.shape == (1, 2, 2, 96, 64)
    inner = forward[..., BORDER:-BORDER, BORDER // 2 : -BORDER // 2]
    assert _endpoint_error(inner, (SHIFT[0] / 2, SHIFT[1])).mean() < 0.1
    # Double both: vectors double.
    forward, _ = estimator(clip, size=(192, 256))
    inner = forward[..., 2 * BORDER : -2 * BORDER, 2 * BORDER : -2 * BORDER]
    assert _endpoint_error(inner, (2 * SHIFT[0], 2 * SHIFT[1])).mean() < 0.2


@pytest.mark.parametrize("name", ["dis", "farneback"])
def test_static_clip_has_zero_flow(registry, name):
    clip = _moving_clip(frames=1).repeat(3, 1, 1, 1)
    forward, backward = registry.get("flow", name)(clip)
    assert _inner(forward).abs().max() < 0.05 and _inner(backward).abs().max() < 0.05


@pytest.mark.parametrize(
    "frames, size, error, match",
    [
        (torch.zeros(1, 3, 16, 16), None, ValueError, "at least 2 frames"),
        (torch.zeros(2, 1, 16, 16), None, ValueError, r"shape \(T, 3, H, W\)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), None, TypeError, "float tensor"),
        ([[0.0]], None, TypeError, "torch.Tensor"),
        (torch.zeros(2, 3, 16, 16), (0, 8), ValueError, "size must be None or a pair"),
    ],
)
def test_bad_input_is_rejected_clearly(registry, frames, size, error, match):
    with pytest.raises(error, match=match):
        registry.get("flow", "dis")(frames, size=size)


def test_bad_options_are_rejected(registry):
    with pytest.raises(ValueError, match="preset must be one of"):
        registry.get("flow", "dis", preset="slow")
    with pytest.raises(ValueError, match="poly_n must be 5 or 7"):
        registry.get("flow", "farneback", poly_n=4)
