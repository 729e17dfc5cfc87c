"""Fused glue kernels for the eager GPU path (issue 21, item 3): GroupNorm(+SiLU), GEGLU,
RoPE, and LayerNorm with owed biases.

Between its convolutions and matmuls the U-Net spends most of its memory traffic on
GroupNorm + SiLU, GEGLU's gate, RoPE and the transformer's bias adds. In eager PyTorch
each is several passes over the activation (statistics, scale-and-shift, SiLU; GELU,
product); here each is the fewest passes the maths allows, as Triton kernels behind
``torch.library`` custom operators:

* ``uav::frame_moments``: one read of a clip ``(B, C, T, H, W)`` in any of the library's
  layouts gives per batch item, channel and frame the fp32 mean and sum of squared
  deviations (block-wise moments merged with Chan et al.'s parallel formula), from which
  clip-wide, per-frame and concatenated-parts GroupNorm statistics are combined on tiny
  tensors;
* ``uav::norm_act``: one read and one write apply ``x * scale + shift`` (+ SiLU) into an
  output of any layout (the transformers' token order included);
* ``uav::geglu_``: ``a * gelu(gate)`` in place of ``a``, one read of each half;
* ``uav::rope_``: the interleaved rotary embedding of the rotated channels, in place, one pass;
* ``uav::layer_norm_shift``: LayerNorm of ``x + shift``, the biases the transformer's output
  projections still owe its tokens added as they are read (never stored; see
  :class:`~uav.models.transformer.BasicTransformerBlock`).

Rounding follows the aten path the blocks otherwise run: the normalised value is rounded
to the activation's dtype before SiLU, GELU's output before the product, so only the
statistics' summation order differs (fp32, well within fp16 noise).

They run where :func:`usable` says: CUDA tensors without autograd, outside
``torch.compile`` (inductor fuses the aten path itself), with Triton importable and
``UAV_FUSED_KERNELS`` not ``0``. A kernel that fails to build turns the fused path off for
the process with one warning. On fake tensors (the memory model, ``benchmarks.static``)
the operators' fake implementations stand in, so traces and byte counts see one operator
per fused pass. On a CPU the operators run Triton's interpreter, which is how the tests
check the kernels (:func:`forced`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

import torch

Tensor = torch.Tensor
log = logging.getLogger("uav")

__all__ = ["usable", "forced", "moments", "merge", "norm_act", "geglu_", "rope_", "layer_norm", "guarded"]

try:  # optional: without Triton the blocks run their aten path
    import triton
    import triton.language as tl
    from triton.language import constexpr  # the kernels' compile-time arguments (annotations, read as text)
except Exception:  # noqa: BLE001 - any import failure means no fused path
    triton = tl = None
    constexpr = int  # type: ignore[misc,assignment]


def _jit(fn: Any) -> Any:
    """``triton.jit(fn)`` (an interpreted kernel under ``TRITON_INTERPRET=1``), or ``fn`` without Triton."""
    return fn if triton is None else triton.jit(fn)


_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
_STATE = {"forced": False, "broken": False}


def usable(*tensors: Tensor) -> bool:
    """Whether the fused kernels run for these tensors (see the module docstring)."""
    if _STATE["broken"] or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return False
    if os.environ.get("UAV_FUSED_KERNELS", "1") == "0" or triton is None:
        return False
    devices = {"cuda", "cpu"} if _STATE["forced"] and _interpreting() else {"cuda"}
    return all(t.device.type in devices and t.dtype in _FLOATS and _pixels_flat(t) for t in tensors)


@contextlib.contextmanager
def forced() -> Iterator[None]:
    """Run the fused kernels on CPU tensors too, in Triton's interpreter (a process started with
    ``TRITON_INTERPRET=1``): how the tests check them without a GPU."""
    before = _STATE["forced"]
    _STATE["forced"] = True
    try:
        yield
    finally:
        _STATE["forced"] = before


def _interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1`` before it was imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _pixels_flat(t: Tensor) -> bool:
    """Whether a clip's height and width flatten to one stride (true in every library layout)."""
    return t.dim() != 5 or t.shape[3] == 1 or t.stride(3) == t.shape[4] * t.stride(4)


# ------------------------------------------------------------------------------------------------ kernels
@_jit
def _moments_kernel(x_ptr, mean_ptr, m2_ptr, C, T, HW, span, sxb, sxc, sxt, sxp,
                    BC: constexpr, BP: constexpr):
    bt = tl.program_id(0).to(tl.int64)  # 64-bit offsets: a batch of windows passes 2**31 elements
    cb = tl.program_id(1)
    s = tl.program_id(2)
    b = bt // T
    t = bt % T
    c = (cb * BC + tl.arange(0, BC)).to(tl.int64)
    cm = c < C
    base = x_ptr + b * sxb + t * sxt + c[:, None] * sxc
    start = s * span
    n = tl.zeros([BC], dtype=tl.float32)
    mean = tl.zeros([BC], dtype=tl.float32)
    m2 = tl.zeros([BC], dtype=tl.float32)
    for off in range(0, span, BP):
        p = (start + off + tl.arange(0, BP)).to(tl.int64)
        pm = (p < HW) & (p < start + span)
        mask = cm[:, None] & pm[None, :]
        v = tl.load(base + p[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
        nb = tl.sum(pm.to(tl.float32), axis=0)
        bmean = tl.sum(v, axis=1) / tl.maximum(nb, 1.0)
        d = tl.where(mask, v - bmean[:, None], 0.0)
        bm2 = tl.sum(d * d, axis=1)
        tot = n + nb
        delta = bmean - mean
        w = nb / tl.maximum(tot, 1.0)
        mean = mean + delta * w
        m2 = m2 + bm2 + delta * delta * n * w
        n = tot
    S = tl.num_programs(2)
    out = ((b * C + c) * T + t) * S + s
    tl.store(mean_ptr + out, mean, mask=cm)
    tl.store(m2_ptr + out, m2, mask=cm)


@_jit
def _norm_act_kernel(x_ptr, scale_ptr, shift_ptr, y_ptr, C, T, HW, sxb, sxc, sxt, sxp, syb, syc, syt, syp,
                     PER_FRAME: constexpr, SILU: constexpr, BC: constexpr,
                     BP: constexpr):
    # pixel tiles on the grid's first axis, the only one not limited to 65535 programs
    p = (tl.program_id(0) * BP + tl.arange(0, BP)).to(tl.int64)
    c = (tl.program_id(1) * BC + tl.arange(0, BC)).to(tl.int64)
    bt = tl.program_id(2).to(tl.int64)
    b = bt // T
    t = bt % T
    cm = c < C
    mask = cm[:, None] & (p < HW)[None, :]
    v = tl.load(x_ptr + b * sxb + t * sxt + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0.0)
    if PER_FRAME:  # scale and shift are (B, C, T), else (B, C, 1)
        k = (b * C + c) * T + t
    else:
        k = b * C + c
    a = tl.load(scale_ptr + k, mask=cm, other=0.0)
    z = tl.load(shift_ptr + k, mask=cm, other=0.0)
    y = (v.to(tl.float32) * a[:, None] + z[:, None]).to(v.dtype)
    if SILU:
        f = y.to(tl.float32)
        y = (f / (1.0 + tl.exp(-f))).to(v.dtype)
    tl.store(y_ptr + b * syb + t * syt + c[:, None] * syc + p[None, :] * syp, y, mask=mask)


@_jit
def _geglu_kernel(a_ptr, g_ptr, D, sa, sg, BD: constexpr):
    row = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    m = d < D
    a = tl.load(a_ptr + row * sa + d, mask=m, other=0.0)
    g = tl.load(g_ptr + row * sg + d, mask=m, other=0.0).to(tl.float32)
    gelu = (0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476))).to(a.dtype)
    tl.store(a_ptr + row * sa + d, (a.to(tl.float32) * gelu.to(tl.float32)).to(a.dtype), mask=m)


def _tiles(x: Tensor) -> tuple[int, int]:
    """Tile sizes (channels, pixels): wide along whichever of the two is contiguous in memory."""
    if x.dim() == 5 and x.stride(1) == 1 and x.shape[1] > 1:
        return 32, 32
    return 4, 256


def _on(x: Tensor) -> Any:
    """The device a kernel launches on is the current one: make it ``x``'s (``cuda:1`` ...)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _clip_strides(x: Tensor) -> tuple[int, int, int, int]:
    """Strides of a clip's batch, channel, frame and flattened-pixel axes."""
    return x.stride(0), x.stride(1), x.stride(2), x.stride(4)


@_jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, rows, T, sr, D, HALF: constexpr, HEADS: constexpr, BR: constexpr,
                 BJ: constexpr):
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    j = tl.arange(0, BJ)  # (head, pair) of the rotated channels
    jm = j < HEADS * HALF
    k = j % HALF
    mask = (r < rows)[:, None] & jm[None, :]
    t = r % T
    u_ptr = x_ptr + r[:, None] * sr + (j // HALF * D + 2 * k)[None, :]
    u = tl.load(u_ptr, mask=mask, other=0.0)
    v = tl.load(u_ptr + 1, mask=mask, other=0.0)
    cos = tl.load(cos_ptr + t[:, None] * HALF + k[None, :], mask=mask, other=0.0).to(u.dtype).to(tl.float32)
    sin = tl.load(sin_ptr + t[:, None] * HALF + k[None, :], mask=mask, other=0.0).to(u.dtype).to(tl.float32)
    uf = u.to(tl.float32)
    vf = v.to(tl.float32)
    # the aten path's roundings: u cos, then - v sin; v cos, then + (u sin)
    u_new = ((uf * cos).to(u.dtype).to(tl.float32) - vf * sin).to(u.dtype)
    v_new = ((vf * cos).to(u.dtype).to(tl.float32) + (uf * sin).to(u.dtype).to(tl.float32)).to(u.dtype)
    tl.store(u_ptr, u_new, mask=mask)
    tl.store(u_ptr + 1, v_new, mask=mask)


@_jit
def _layer_norm_kernel(x_ptr, shift_ptr, w_ptr, b_ptr, y_ptr, rows, C, eps, BR: constexpr, BC: constexpr):
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    c = tl.arange(0, BC)
    cm = c < C
    mask = (r < rows)[:, None] & cm[None, :]
    v = tl.load(x_ptr + r[:, None] * C + c[None, :], mask=mask, other=0.0)
    f = v.to(tl.float32) + tl.load(shift_ptr + c, mask=cm, other=0.0)[None, :]
    mean = tl.sum(tl.where(mask, f, 0.0), axis=1) / C
    d = tl.where(mask, f - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / C + eps)
    w = tl.load(w_ptr + c, mask=cm, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=cm, other=0.0).to(tl.float32)
    tl.store(y_ptr + r[:, None] * C + c[None, :], (d * rstd[:, None] * w[None, :] + b[None, :]).to(v.dtype), mask=mask)


# ------------------------------------------------------------------------------------------------ operators
@torch.library.custom_op("uav::frame_moments", mutates_args=())
def frame_moments(x: Tensor, splits: int) -> tuple[Tensor, Tensor]:
    """Per ``(b, c, t)`` and split of the pixels: fp32 mean and sum of squared deviations, ``(B, C, T, S)``."""
    b, c, t, h, w = x.shape
    mean = x.new_empty((b, c, t, splits), dtype=torch.float32)
    m2 = torch.empty_like(mean)
    bc, bp = _tiles(x)
    span = -(-(h * w) // splits)
    grid = (b * t, -(-c // bc), splits)
    with _on(x):
        _moments_kernel[grid](x, mean, m2, c, t, h * w, span, *_clip_strides(x), BC=bc, BP=bp)
    return mean, m2


@frame_moments.register_fake
def _(x: Tensor, splits: int) -> tuple[Tensor, Tensor]:
    b, c, t = x.shape[:3]
    mean = x.new_empty((b, c, t, splits), dtype=torch.float32)
    return mean, torch.empty_like(mean)


@torch.library.custom_op("uav::norm_act", mutates_args=("out",))
def _norm_act(x: Tensor, scale: Tensor, shift: Tensor, silu: bool, out: Tensor) -> None:
    b, c, t, h, w = x.shape
    bc, bp = _tiles(out)
    grid = (-(-(h * w) // bp), -(-c // bc), b * t)
    per_frame = scale.shape[2] > 1
    with _on(x):
        _norm_act_kernel[grid](x, scale, shift, out, c, t, h * w, *_clip_strides(x), *_clip_strides(out),
                               PER_FRAME=per_frame, SILU=silu, BC=bc, BP=bp)


@_norm_act.register_fake
def _(x: Tensor, scale: Tensor, shift: Tensor, silu: bool, out: Tensor) -> None:
    return None


@torch.library.custom_op("uav::geglu_", mutates_args=("a",))
def _geglu(a: Tensor, gate: Tensor) -> None:
    d = a.shape[-1]
    rows = a.numel() // d
    with _on(a):
        _geglu_kernel[(rows, -(-d // 1024))](a, gate, d, a.stride(-2), gate.stride(-2), BD=1024)


@_geglu.register_fake
def _(a: Tensor, gate: Tensor) -> None:
    return None


@torch.library.custom_op("uav::rope_", mutates_args=("x",))
def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    s, t, heads, dim = x.shape  # x: the rotated channels of every head, a view of whole rows
    half = dim // 2
    rows = s * t
    bj = triton.next_power_of_2(heads * half)
    br = max(1, 4096 // bj)
    with _on(x):
        _rope_kernel[(-(-rows // br),)](x, cos, sin, rows, t, x.stride(1), x.stride(2), HALF=half, HEADS=heads,
                                        BR=br, BJ=bj)


@_rope.register_fake
def _(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    return None


@torch.library.custom_op("uav::layer_norm_shift", mutates_args=())
def layer_norm_shift(x: Tensor, shift: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dimension of ``x + shift`` (``shift`` fp32, added in fp32)."""
    c = x.shape[-1]
    rows = x.numel() // c
    y = torch.empty_like(x)
    bc = triton.next_power_of_2(c)
    br = max(1, 4096 // bc)
    with _on(x):
        _layer_norm_kernel[(-(-rows // br),)](x, shift, weight, bias, y, rows, c, eps, BR=br, BC=bc)
    return y


@layer_norm_shift.register_fake
def _(x: Tensor, shift: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return torch.empty_like(x)


# ------------------------------------------------------------------------------------------------ callers
def rope_(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Interleaved RoPE of the first ``dim = 2 * cos.shape[1]`` channels of every head of ``x``
    ``(S, T, heads, d)`` (a contiguous projection), in place; ``cos``/``sin`` fp32 ``(T, dim/2)``.
    The operator is handed only those channels (a view), which is all it reads and writes."""
    _rope(x[..., :2 * cos.shape[1]], cos.contiguous(), sin.contiguous())
    return x


def layer_norm(x: Tensor, shift: Tensor, norm: torch.nn.LayerNorm) -> Tensor:
    """``norm(x + shift)`` for a contiguous ``x``, the sum made in fp32 inside the kernel (never stored)."""
    return layer_norm_shift(x, shift.float().contiguous(), norm.weight, norm.bias, norm.eps)


def _splits(x: Tensor) -> int:
    """Pixel splits per (frame, channel tile): enough programs to fill a large GPU."""
    b, c, t, h, w = x.shape
    bc, bp = _tiles(x)
    programs = b * t * -(-c // bc)
    return max(1, min(-(-2048 // programs), -(-(h * w) // bp)))


def moments(x: Tensor, *, per_frame: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """fp32 ``(mean, m2, count)`` of a clip per batch item and channel (``(B, C, 1)``) or, with
    ``per_frame``, per frame too (``(B, C, T)``); ``m2`` is the sum of squared deviations."""
    splits = _splits(x)
    mean, m2 = frame_moments(x, splits)
    h, w = x.shape[3:]
    span = -(-(h * w) // splits)
    # the splits' pixel counts, made on the device (a host tensor would be a copy per call)
    counts = (h * w - span * torch.arange(splits, device=x.device, dtype=torch.float32)).clamp(0, span)
    mean, m2, n = (m.squeeze(3) for m in merge(mean, m2, counts.expand_as(mean), dim=3))
    if not per_frame:
        mean, m2, n = merge(mean, m2, n, dim=2)
    return mean, m2, n


def merge(mean: Tensor, m2: Tensor, n: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Moments of the union of the parts along ``dim`` (Chan et al.), kept as a size-1 dim."""
    total = n.sum(dim, keepdim=True)
    joint = (mean * n).sum(dim, keepdim=True) / total.clamp_min(1)
    m2 = m2.sum(dim, keepdim=True) + (n * (mean - joint).square()).sum(dim, keepdim=True)
    return joint, m2, total


def norm_act(x: Tensor, scale: Tensor, shift: Tensor, silu: bool, out: Tensor) -> Tensor:
    """``out = x * scale + shift`` (then SiLU), ``scale``/``shift`` fp32 ``(B, C, 1|T)``; returns ``out``."""
    _norm_act(x, scale.contiguous(), shift.contiguous(), silu, out=out)
    return out


def geglu_(a: Tensor, gate: Tensor) -> Tensor:
    """``a * gelu(gate)`` written into ``a`` (``a``, ``gate``: row-major halves of one projection)."""
    _geglu(a, gate)
    return a


def guarded(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or ``None`` (and the fused path off from now on) if a kernel fails to build."""
    if _STATE["broken"]:
        return None
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - a compiler or driver failure of Triton: fall back once
        if isinstance(err, (torch.cuda.OutOfMemoryError, KeyboardInterrupt)):
            raise
        _STATE["broken"] = True
        log.warning("fused GroupNorm/GEGLU kernels unavailable (%s: %s); using the aten path", type(err).__name__, err)
        return None
