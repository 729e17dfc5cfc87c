"""Checks of the fused GPU kernels (uav.models.fused) run by Triton's interpreter on the CPU.

Run in its own process with ``TRITON_INTERPRET=1`` (Triton reads it when imported) by
``tests/test_fused_kernels.py``; prints one JSON object of measured differences.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uav.models import fused  # noqa: E402
from uav.models.layers import LAYOUTS, group_norm, group_norm_cat, to_layout  # noqa: E402
from uav.weights.tiny import tiny_unet  # noqa: E402


class FusedOps(TorchDispatchMode):
    """How often each ``uav::`` operator ran."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "uav":
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def kernels() -> dict:
    g = torch.Generator().manual_seed(0)
    out: dict = {}
    norm = torch.nn.GroupNorm(4, 16, eps=1e-6)
    torch.nn.init.normal_(norm.weight, generator=g)
    torch.nn.init.normal_(norm.bias, generator=g)
    x64 = torch.randn(2, 16, 3, 5, 7, generator=g, dtype=torch.float64) * 3 + 1
    skip = torch.randn(2, 8, 3, 5, 7, generator=g, dtype=torch.float64)
    cat_norm = torch.nn.GroupNorm(4, 24, eps=1e-6).double()
    for layout in LAYOUTS:
        for per_frame in (False, True):
            ref = F.silu(F.group_norm(x64.transpose(1, 2).reshape(6, 16, 5, 7), 4, norm.weight.double(),
                                      norm.bias.double(), 1e-6).view(2, 3, 16, 5, 7).transpose(1, 2)
                         if per_frame else F.group_norm(x64, 4, norm.weight.double(), norm.bias.double(), 1e-6))
            for dtype in (torch.float32, torch.float16):
                x = to_layout(x64.to(dtype), layout)
                n = copy.deepcopy(norm).to(dtype)
                with torch.no_grad():
                    aten = group_norm(x, n, silu=True, per_frame=per_frame)
                    with fused.forced():
                        y = group_norm(x, n, silu=True, per_frame=per_frame, layout="tokens")
                key = f"group_norm/{layout}/{'frame' if per_frame else 'clip'}/{str(dtype)[6:]}"
                out[key] = {"exact": err(y, ref), "aten": err(y, aten), "scale": float(ref.abs().max())}
        parts = [to_layout(x64[:, :16].float(), layout), to_layout(skip.float(), layout)]
        with torch.no_grad(), fused.forced():
            y = group_norm_cat(parts, copy.deepcopy(cat_norm).float(), silu=True)
            out[f"group_norm_cat/{layout}"] = err(y, F.silu(cat_norm(torch.cat([x64[:, :16], skip], 1))))
    return out


def unet() -> dict:
    g = torch.Generator().manual_seed(0)
    # one batch item of 3 frames: the interpreter runs every program instance in Python
    x, lr, ctx = torch.randn(1, 4, 3, 12, 20, generator=g), torch.randn(1, 3, 3, 12, 20, generator=g), \
        torch.randn(1, 7, 32, generator=g)
    model = tiny_unet().eval()
    result: dict = {}
    for layout in ("frames",):  # the default; kernels() covers every layout
        model.set_layout(layout)

        def call() -> torch.Tensor:
            return model(x, torch.tensor(500), lr, encoder_hidden_states=ctx, class_labels=torch.full((1,), 120)).sample

        with torch.no_grad():
            aten = call()
            ops = FusedOps()
            with fused.forced(), ops:
                y = call()
        result[layout] = {"max_abs": err(y, aten), "scale": float(aten.abs().max()), "ops": dict(ops.ops)}
    return result


def fallback() -> dict:
    """A kernel that fails to build: one warning, the aten path, the same numbers."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logging.getLogger("uav").addHandler(handler)
    norm = torch.nn.GroupNorm(2, 8)
    x = torch.randn(1, 8, 2, 4, 4)
    real = fused._norm_act_kernel

    class Broken:
        def __getitem__(self, grid):
            raise RuntimeError("ptxas fatal: simulated")

    fused._norm_act_kernel = Broken()
    try:
        with torch.no_grad():
            aten = group_norm(x, norm, silu=True)
            with fused.forced():
                y = group_norm(x, norm, silu=True)
                still = fused.usable(x)
    finally:
        fused._norm_act_kernel = real
        fused._STATE["broken"] = False
    return {"max_abs": err(y, aten), "warnings": records, "usable_after": still}


def main() -> None:
    report = {"interpreting": fused._interpreting(), "kernels": kernels(), "unet": unet(), "fallback": fallback()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
