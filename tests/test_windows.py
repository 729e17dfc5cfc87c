"""Tests for uav.sampling.windows (SPEC §6 step 5, surprise 5)."""

from __future__ import annotations

import pytest
import torch

from uav.protocols import SegmentPlan
from uav.sampling.windows import merge_windows, official_segment_plan, uniform_segment_plan


def _running_blend(preds_by_window: dict[tuple[int, int], torch.Tensor], calls, num_frames: int) -> torch.Tensor:
    """The published merge, literally: store a frame's first prediction, then acc = 0.5·acc + 0.5·new."""
    some = next(iter(preds_by_window.values()))
    shape = list(some.shape)
    shape[2] = num_frames
    acc = torch.zeros(shape, dtype=some.dtype)
    seen = [False] * num_frames
    for s, e in calls:
        pred = preds_by_window[(s, e)]
        for f in range(s, e):
            new = pred[:, :, f - s]
            acc[:, :, f] = 0.5 * acc[:, :, f] + 0.5 * new if seen[f] else new
            seen[f] = True
    return acc


@pytest.mark.parametrize(
    ("num_frames", "calls"),
    [
        (1, [(0, 1)]),
        (8, [(0, 8)]),
        (11, [(0, 8), (3, 11)]),
        (13, [(0, 8), (5, 13), (5, 13)]),
        (20, [(0, 8), (6, 14), (12, 20), (12, 20)]),
    ],
)
def test_official_windows_per_spec(num_frames, calls):
    plan = official_segment_plan(num_frames)
    assert isinstance(plan, SegmentPlan)
    assert list(plan.calls) == calls
    assert list(plan.windows) == list(dict.fromkeys(calls))
    assert plan.weights.dtype == torch.float32
    assert plan.weights.shape == (len(plan.windows), num_frames)
    assert torch.allclose(plan.weights.sum(dim=0), torch.ones(num_frames), atol=1e-7)
    for k, (s, e) in enumerate(plan.windows):
        assert not plan.weights[k, :s].any() and not plan.weights[k, e:].any()


def test_official_t13_weights_are_quarter_three_quarters():
    plan = official_segment_plan(13)
    assert plan.weights[0, 5:8].tolist() == [0.25] * 3
    assert plan.weights[1, 5:8].tolist() == [0.75] * 3
    assert plan.weights[0, :5].tolist() == [1.0] * 5
    assert plan.weights[1, 8:].tolist() == [1.0] * 5


@pytest.mark.parametrize("num_frames", [1, 5, 8, 9, 11, 13, 14, 15, 20, 27, 33])
def test_merge_with_official_weights_equals_running_blend(num_frames):
    plan = official_segment_plan(num_frames)
    g = torch.Generator().manual_seed(num_frames)
    preds = [torch.randn(2, 4, e - s, 3, 5, generator=g) for s, e in plan.windows]
    merged = merge_windows(preds, plan, num_frames)
    expected = _running_blend(dict(zip(plan.windows, preds)), plan.calls, num_frames)
    assert merged.shape == (2, 4, num_frames, 3, 5)
    assert (merged - expected).abs().max().item() <= 1e-6


def test_merge_windows_other_frame_dim():
    plan = official_segment_plan(13)
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(e - s, 3, 4, 4, generator=g) for s, e in plan.windows]
    merged = merge_windows(preds, plan, 13, dim=0)
    reference = merge_windows([p.transpose(0, 1).unsqueeze(0) for p in preds], plan, 13, dim=2)
    assert torch.equal(merged, reference[0].transpose(0, 1))


@pytest.mark.parametrize("num_frames", [1, 8, 9, 13, 15, 20, 30, 64])
def test_uniform_plan_covers_without_duplicates(num_frames):
    window, overlap = 8, 2
    plan = uniform_segment_plan(num_frames, window=window, overlap=overlap)
    assert len(set(plan.windows)) == len(plan.windows)
    assert plan.calls == plan.windows
    assert plan.windows[0][0] == 0 and plan.windows[-1][1] == num_frames
    for (s0, e0), (s1, e1) in zip(plan.windows, plan.windows[1:]):
        assert e1 - s1 == window and s0 < s1
        assert e0 - s1 >= overlap
    w = plan.weights
    assert torch.allclose(w.sum(dim=0), torch.ones(num_frames), atol=1e-6)
    assert (w >= 0).all()
    for k, (s, e) in enumerate(plan.windows):
        assert not w[k, :s].any() and not w[k, e:].any() and (w[k, s:e] > 0).all()


def test_uniform_plan_is_feathered():
    plan = uniform_segment_plan(20, window=8, overlap=2)
    assert plan.windows == ((0, 8), (6, 14), (12, 20))
    # Linear hand-over across each 2-frame overlap, no hard switch.
    assert torch.allclose(plan.weights[0, 5:9], torch.tensor([1.0, 2 / 3, 1 / 3, 0.0]))
    assert torch.allclose(plan.weights[1, 5:9], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    # A constant prediction stays constant after merging.
    preds = [torch.full((1, 1, 8, 1, 1), 3.0) for _ in plan.windows]
    assert torch.allclose(merge_windows(preds, plan, 20), torch.full((1, 1, 20, 1, 1), 3.0))


def test_errors():
    with pytest.raises(ValueError, match="num_frames"):
        official_segment_plan(0)
    with pytest.raises(ValueError, match="stride"):
        official_segment_plan(20, window=8, stride=9)
    with pytest.raises(TypeError, match="window"):
        official_segment_plan(20, window=8.0)
    with pytest.raises(ValueError, match="overlap"):
        uniform_segment_plan(20, window=8, overlap=8)
    plan = official_segment_plan(13)
    with pytest.raises(ValueError, match="one prediction per window"):
        merge_windows([torch.zeros(1, 1, 8)], plan, 13)
    with pytest.raises(ValueError, match=r"preds\[1\]"):
        merge_windows([torch.zeros(1, 1, 8), torch.zeros(1, 1, 7)], plan, 13)
    with pytest.raises(ValueError, match="num_frames"):
        merge_windows([torch.zeros(1, 1, 8), torch.zeros(1, 1, 8)], plan, 14)
