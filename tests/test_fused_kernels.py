"""Issue 21 item 3: the fused GroupNorm(+SiLU), GEGLU, RoPE and LayerNorm kernels of the eager
GPU path (uav.models.fused), checked without a GPU.

Triton's interpreter runs the very kernels a GPU compiles, on CPU tensors, in a process
started with ``TRITON_INTERPRET=1`` (``tests/fused_check.py``, once per module); the tests
read what it measured against the aten path the blocks run otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.dispatch import GlueBytes, count, fake_networks, fake_model  # noqa: E402
from uav.models import fused  # noqa: E402
from uav.models.unet_video import UNetVideoModel  # noqa: E402
from uav.weights.tiny import TINY_UNET_CONFIG  # noqa: E402

FUSED_OPS = {"frame_moments", "norm_act", "geglu_", "rope_", "layer_norm_shift"}


@pytest.fixture(scope="module")
def report() -> dict:
    """What ``tests/fused_check.py`` measured (about a minute: the interpreter is slow)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "fused_check.py")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["interpreting"]
    return result


@pytest.mark.slow
def test_group_norm_kernels_in_every_layout(report):
    for key, r in report["kernels"].items():
        if key.startswith("group_norm_cat/"):
            assert r < 1e-5, key  # a skip concatenation never made, fp32
            continue
        if key.endswith("float32"):
            assert r["exact"] < 1e-5 * r["scale"], key
            assert r["aten"] < 1e-5 * r["scale"], key
        else:  # fp16: one rounding of the normalised value, one of SiLU, as the aten path
            assert r["aten"] < 4e-3 * r["scale"], key
    assert len(report["kernels"]) == 4 * 2 * 2 + 4


@pytest.mark.slow
def test_unet_with_fused_kernels_equals_the_aten_path(report):
    for layout, r in report["unet"].items():
        assert r["max_abs"] <= 1e-5 * max(1.0, r["scale"]), layout
        assert set(r["ops"]) == FUSED_OPS, layout  # every kernel ran, in every layout


@pytest.mark.slow
def test_a_kernel_that_fails_to_build_falls_back_once(report):
    r = report["fallback"]
    assert r["max_abs"] == 0.0
    assert not r["usable_after"]
    assert len(r["warnings"]) == 1 and "simulated" in r["warnings"][0] and "aten path" in r["warnings"][0]


def test_the_cpu_path_does_not_use_the_kernels():
    x = torch.zeros(1, 8, 2, 4, 4)
    with torch.no_grad():
        assert not fused.usable(x)  # CPU tensors: aten (the interpreter only when a test forces it)
        with fused.forced():
            assert fused.usable(x) == (os.environ.get("TRITON_INTERPRET") == "1")
    assert not fused.usable(x.cuda() if torch.cuda.is_available() else x)  # autograd on: never


def test_fused_kernels_cut_the_glue_bytes_of_a_gpu_call(monkeypatch):
    """On fake CUDA tensors (as the static benchmark counts) the blocks take the fused
    operators, each one read of its input and one write; with them off the same call moves more."""
    def glue() -> GlueBytes:
        with fake_networks(torch.float16) as dev:
            unet = fake_model(UNetVideoModel, TINY_UNET_CONFIG, dev)
            x, lr, ctx = (torch.zeros(2, 4, 8, 16, 24, device=dev), torch.zeros(2, 3, 8, 16, 24, device=dev),
                          torch.zeros(2, 7, 32, device=dev))
            return count(GlueBytes, lambda: unet(x, torch.tensor(500), lr, encoder_hidden_states=ctx,
                                                 class_labels=120))

    on = glue()
    assert FUSED_OPS <= set(on.by_op)
    monkeypatch.setenv("UAV_FUSED_KERNELS", "0")
    off = glue()
    assert not FUSED_OPS & set(off.by_op)
    assert on.total < 0.8 * off.total
