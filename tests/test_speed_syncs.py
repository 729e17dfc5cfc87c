"""Issue 21 item 2: no host sync in a denoising step or a decode piece of the default path.

Counted by a dispatch mode on the tiny networks on fake tensors on a fake CUDA device,
with the default path's pieces: fp16 U-Net under the NaN/inf policy, fp32 VAE, clip state
on the host.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dispatch import SyncCounter, fake_networks  # noqa: E402
from benchmarks.static import host_syncs  # noqa: E402
from benchmarks.workloads import TINY_WORKLOADS  # noqa: E402


def test_the_counter_sees_what_syncs():
    with fake_networks(torch.float16) as dev:
        x = torch.zeros(4, 4, device=dev)
        counter = SyncCounter()
        with counter:
            bool(torch.isfinite(x).all())  # a value read back
            x.nonzero()  # a data-dependent shape
            x.to("cpu")  # a blocking copy to the host
            torch.empty(4, 4).copy_(x, non_blocking=True)  # not blocking: not counted
    assert dict(counter.counts) == {"item": 1, "nonzero": 1, "device_to_host": 1}


@pytest.mark.parametrize("name", ["lr270x480"])
def test_a_step_and_a_decode_piece_never_sync(name):
    result = host_syncs(TINY_WORKLOADS[name], tiny=True)
    assert result["step"] == {} and result["decode_piece"] == {}, (result["step_where"], result["decode_where"])
    assert result["per_step"] == 0
