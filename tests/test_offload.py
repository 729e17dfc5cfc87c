"""Block-level offload of the U-Net (issue 22, item 2), proven on the CPU: the same output, and
only the running block and the one copied ahead are resident."""

from __future__ import annotations

import pytest
import torch

from uav.offload import BlockOffload, offload_blocks
from uav.sampling.recovery import Recovery
from uav.weights.tiny import tiny_unet


@pytest.fixture(scope="module")
def unet():
    return tiny_unet().eval().requires_grad_(False)


def _call(unet):
    g = torch.Generator().manual_seed(0)
    dtype = next(unet.parameters()).dtype
    x, lr = torch.randn(2, 4, 3, 16, 24, generator=g), torch.randn(2, 3, 3, 16, 24, generator=g)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    return unet(x.to(dtype), 500, lr.to(dtype), encoder_hidden_states=ctx.to(dtype),
                class_labels=torch.full((2,), 120)).sample


def test_the_offloaded_unet_gives_the_same_output(unet):
    with torch.no_grad():
        ref = _call(unet)
        with BlockOffload(unet, "cpu") as off:
            first, second = _call(unet), _call(unet)
        after = _call(unet)
    assert torch.equal(first, ref) and torch.equal(second, ref) and torch.equal(after, ref)
    assert off.resident_bytes == 0  # the block copied ahead for a next call was dropped on exit


def test_only_the_running_block_and_the_next_are_resident(unet):
    blocks = offload_blocks(unet)
    with torch.no_grad(), BlockOffload(unet, "cpu") as off:
        _call(unet)
        log = list(off.log)
    n = len(blocks)
    # call order: each block is made resident, the next one copied ahead, the block dropped
    expected = [("load", 0)]
    for i in range(n):
        expected.append(("prefetch", (i + 1) % n))
        expected.append(("drop", i))
    assert log == expected
    sizes = [p.nbytes for p in off.parts]
    assert off.peak_resident_bytes == max(sizes[i] + sizes[(i + 1) % n] for i in range(n))
    assert off.peak_resident_bytes < sum(sizes) / 3


def test_shared_tensors_stay_resident_and_everything_returns(unet):
    table = unet.temporal_rotary_emb.freqs
    with BlockOffload(unet, "cpu") as off:
        moved = {id(t) for p in off.parts for t in p.tensors}
        assert id(table) not in moved
        hooks = sum(len(m._forward_pre_hooks) for m in unet.modules())
        assert hooks == len(off.parts)
        # between calls the blocks' parameters are the pinned-or-plain host copies, not device copies
        assert all(t.data_ptr() == h.data_ptr() for p in off.parts for t, h in zip(p.tensors, p.host))
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in unet.modules()) == 0


def test_the_wider_copy_of_an_offloaded_unet_runs_resident(unet):
    with torch.no_grad(), BlockOffload(unet, "cpu"):
        wider = Recovery().wider(unet)
        assert sum(len(m._forward_pre_hooks) for m in wider.modules()) == 0
        out = _call(wider)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
