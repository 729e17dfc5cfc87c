"""Parity and behaviour tests for uav.sampling.propagation (SPEC §4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file

from uav.sampling.propagation import consistency_mask, flow_warp, propagate_latents, resize_flows

PARITY = Path(__file__).parent / "data" / "parity"


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(PARITY / "propagation_io.safetensors")


@pytest.fixture(scope="module")
def call_kwargs() -> dict:
    manifest = json.loads((PARITY / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["file"] == "propagation_io.safetensors")
    kwargs = dict(entry["call_kwargs"])
    assert kwargs.pop("interpolation") == "nearest"
    return kwargs


@pytest.mark.parametrize("case", ["case0", "case1"])
def test_matches_fixture(io, call_kwargs, case):
    out, mask_bwd, mask_fwd = propagate_latents(
        io[f"{case}.x"], io[f"{case}.flows_forward"], io[f"{case}.flows_backward"], return_masks=True, **call_kwargs
    )
    assert out.shape == io[f"{case}.out"].shape
    assert (out - io[f"{case}.out"]).abs().max().item() <= 1e-5
    assert torch.equal(mask_bwd, io[f"{case}.debug.mask_backward_pass"])
    assert torch.equal(mask_fwd, io[f"{case}.debug.mask_forward_pass"])
    # The fixture's flows are partly inconsistent, so propagation really changed things.
    assert 0.3 < mask_fwd.mean().item() < 0.95
    assert (out - io[f"{case}.x"]).abs().max().item() > 1e-2


def test_defaults_are_the_published_call(io):
    out = propagate_latents(io["case1.x"], io["case1.flows_forward"], io["case1.flows_backward"])
    assert (out - io["case1.out"]).abs().max().item() <= 1e-5


def test_single_frame_is_returned_unchanged():
    x = torch.randn(2, 4, 1, 5, 6)
    flows = torch.zeros(2, 2, 0, 5, 6)
    assert propagate_latents(x, flows, flows) is x
    out, mb, mf = propagate_latents(x, flows, flows, return_masks=True)
    assert out is x and mb.shape == (2, 1, 0, 5, 6) and mf.shape == (2, 1, 0, 5, 6)


def test_flow_warp_integer_shift_is_exact():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    flow = torch.zeros(2, 2, 4, 5)
    flow[:, 0] = 1.0  # sample one pixel to the right
    for mode in ("nearest", "bilinear"):
        out = flow_warp(x, flow, mode)
        assert torch.equal(out[..., :-1], x[..., 1:])
        assert torch.equal(out[..., -1], torch.zeros_like(out[..., -1]))  # zero padding
    flow = torch.zeros(2, 2, 4, 5)
    flow[:, 1] = -0.4  # rounds back to the same row with nearest
    assert torch.equal(flow_warp(x, flow, "nearest"), x)


def test_consistency_mask_rules():
    h, w = 6, 7
    ff = torch.zeros(1, 2, h, w)
    ff[:, 0] = 2.0
    fb = -ff
    mask = consistency_mask(ff, fb)
    # Consistent translation: valid except where the warp leaves the frame (zeros read back).
    assert mask.shape == (1, 1, h, w) and mask.dtype == torch.bool
    assert mask[..., : w - 2].all() and not mask[..., w - 2 :].any()
    # Inconsistent backward flow: |u + ṽ|² = 4 >= 1e-3·(4 + 0) + 0.05 → invalid everywhere.
    assert not consistency_mask(ff, torch.zeros_like(ff)).any()
    # Strictness of the threshold: zero flows give 0 < 0.05, but alpha2 = 0 gives 0 < 0 (False).
    zero = torch.zeros(1, 2, h, w)
    assert consistency_mask(zero, zero).all()
    assert not consistency_mask(zero, zero, alpha2=0.0).any()
    # 5-D input checks every flow pair at once and agrees with per-pair calls.
    g = torch.Generator().manual_seed(0)
    f5, o5 = (torch.randn(2, 2, 3, h, w, generator=g) * 0.2 for _ in range(2))
    m5 = consistency_mask(f5, o5)
    assert m5.shape == (2, 1, 3, h, w)
    for k in range(3):
        assert torch.equal(m5[:, :, k], consistency_mask(f5[:, :, k], o5[:, :, k]))


def test_zero_flow_copy_mode_spreads_the_last_frame():
    """Backward copy makes every frame x[T-1]; the forward pass then keeps it."""
    x = torch.randn(1, 4, 5, 6, 6)
    flows = torch.zeros(1, 2, 4, 6, 6)
    out = propagate_latents(x, flows, flows, mode="copy")
    assert torch.equal(out, x[:, :, -1:].expand_as(x))


def test_zero_flow_fuse_matches_the_recurrence_on_scalars():
    """With zero flows every pixel is valid and the chain is a scalar recurrence per pixel."""
    t = 4
    values = [1.0, 2.0, 4.0, 8.0]
    x = torch.tensor(values).view(1, 1, t, 1, 1).expand(1, 3, t, 2, 2).contiguous()
    flows = torch.zeros(1, 2, t - 1, 2, 2)
    b = values[:]
    for k in range(t - 2, -1, -1):
        b[k] = 0.5 * b[k + 1] + 0.5 * values[k]
    f = b[:]
    for k in range(1, t):
        f[k] = 0.5 * f[k - 1] + 0.5 * b[k]
    out = propagate_latents(x, flows, flows)
    assert torch.allclose(out, torch.tensor(f).view(1, 1, t, 1, 1).expand_as(x), atol=1e-6)


def test_shared_flows_broadcast_over_batch(io):
    x = io["case0.x"]
    ff, fb = io["case0.flows_forward"], io["case0.flows_backward"]
    x2 = torch.cat([x, x.flip(-1)])
    out = propagate_latents(x2, ff, fb)
    assert torch.equal(out[:1], propagate_latents(x, ff, fb))
    assert torch.equal(out[1:], propagate_latents(x.flip(-1), ff, fb))
    # Per-row flows give per-row results.
    out_rows = propagate_latents(x2, torch.cat([ff, ff]), torch.cat([fb, fb]))
    assert torch.equal(out_rows, out)


def test_half_precision_keeps_dtype_and_values(io):
    x = io["case0.x"]
    ff, fb = io["case0.flows_forward"], io["case0.flows_backward"]
    out = propagate_latents(x.half(), ff, fb)
    assert out.dtype == torch.float16
    ref = propagate_latents(x.half().float(), ff, fb)
    assert (out.float() - ref).abs().max().item() <= 1e-2


def test_resize_flows_area_and_scale():
    flows = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(1, 2, 1, 4, 6)
    out = resize_flows(flows, (2, 3))
    expected = flows.reshape(1, 2, 1, 2, 2, 3, 2).mean(dim=(4, 6)) * 0.5  # 2x2 area mean, s = 3/6
    assert torch.allclose(out, expected)
    assert resize_flows(flows, (4, 6)) is flows


def test_input_errors():
    x = torch.zeros(1, 4, 3, 4, 4)
    good = torch.zeros(1, 2, 2, 4, 4)
    with pytest.raises(ValueError, match="T-1 = 2"):
        propagate_latents(x, torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2, 3, 4, 4))
    with pytest.raises(ValueError, match="2 channels"):
        propagate_latents(x, torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        propagate_latents(x, good, torch.zeros(1, 2, 2, 4, 5))
    with pytest.raises(ValueError, match="5-D"):
        propagate_latents(x[0], good, good)
    with pytest.raises(ValueError, match="batch size"):
        propagate_latents(torch.zeros(2, 4, 3, 4, 4), torch.zeros(3, 2, 2, 4, 4), torch.zeros(3, 2, 2, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        propagate_latents(x, good, good, mode="mean")
    with pytest.raises(ValueError, match="flow"):
        flow_warp(torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 4, 4))
