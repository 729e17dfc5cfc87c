"""Video building blocks shared by the U-Net and the VAE (SPEC §2.3, §3).

Every video tensor here is ``(B, C, T, H, W)``. "Inflated" layers are 2-D layers
applied frame by frame; GroupNorm is applied to the 5-D tensor on purpose, so its
statistics span the whole clip, as the published code does (SPEC §2.3, surprise 4).

The numbers are the published ones; the *glue* around the convolutions is not (issue
21). A clip tensor may sit in memory in one of several :data:`LAYOUTS` (the logical
shape is always ``(B, C, T, H, W)``), and every block keeps the layout it is given, so
frames <-> batch reshapes are views and no activation is copied to change its order:

* :func:`group_norm` is the one clip-wide GroupNorm(+SiLU) every block uses: fp32
  statistics over a view of the activation, the normalisation written straight into
  the layout the next operation wants;
* without autograd (inference), activations and residual adds run in place on the
  tensors a block just made, the time embedding is folded into the convolution's bias
  when every batch row shares it, and 1x1 convolutions add their residual inside the
  matmul.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uav.models import fused

Tensor = torch.Tensor


@contextlib.contextmanager
def published_structure() -> Iterator[None]:
    """Run the blocks with the published forwards (out of place, copying glue; same numbers
    up to float rounding): the structure the memory model's GPU calibration was measured with
    (:mod:`uav.models.published`)."""
    from uav.models.published import published_modules

    with published_modules():
        yield

#: memory orders of a logical ``(B, C, T, H, W)`` tensor: the dimensions from outermost to innermost.
#: ``frames`` is what per-frame 2-D convolutions produce (``(B*T, C, H, W)`` NCHW batches), and the
#: U-Net's default; ``channels_last`` is NHWC frames; ``tokens`` is the transformers' ``(B, H, W, T, C)``.
LAYOUTS: dict[str, tuple[int, ...]] = {
    "ncdhw": (0, 1, 2, 3, 4),
    "frames": (0, 2, 1, 3, 4),
    "channels_last": (0, 2, 3, 4, 1),
    "tokens": (0, 3, 4, 2, 1),
}


def layout_of(x: Tensor) -> str | None:
    """The :data:`LAYOUTS` name ``x`` is dense in (``None``: none of them)."""
    for name, order in LAYOUTS.items():
        if x.permute(order).is_contiguous():
            return name
    return None


def empty_clip(shape: Sequence[int], layout: str, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised ``(B, C, T, H, W)`` tensor stored in ``layout``."""
    order = LAYOUTS[layout]
    phys = torch.empty([shape[i] for i in order], dtype=dtype, device=device)
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return phys.permute(inverse)


def to_layout(x: Tensor, layout: str) -> Tensor:
    """``x`` stored in ``layout`` (itself when it already is)."""
    if x.permute(LAYOUTS[layout]).is_contiguous():
        return x
    out = empty_clip(x.shape, layout, dtype=x.dtype, device=x.device)
    return out.copy_(x)


def cat_channels(parts: Sequence[Tensor], layout: str | None = None) -> Tensor:
    """``torch.cat(parts, dim=1)`` stored in ``layout`` (default: the first part's), so a
    concatenation does not change the layout the blocks run in."""
    first = parts[0]
    layout = layout or layout_of(first) or "ncdhw"
    bounds = _channel_bounds(parts)
    out = empty_clip((first.shape[0], bounds[-1], *first.shape[2:]), layout, dtype=first.dtype, device=first.device)
    for p, a, b in zip(parts, bounds, bounds[1:]):
        out[:, a:b].copy_(p)
    return out


def check_video(name: str, t: Tensor, channels: int) -> None:
    """Raise ``ValueError`` unless ``t`` is a 5-D ``(B, C, T, H, W)`` tensor with ``channels`` channels."""
    if not torch.is_tensor(t) or t.ndim != 5:
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"{name}: expected a 5-D tensor (B, C, T, H, W), got {got}")
    if t.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got {t.shape[1]} (shape {tuple(t.shape)})")


def inference() -> bool:
    """Whether autograd is off, so a block may overwrite the tensors it made itself."""
    return not torch.is_grad_enabled()


def eager_inference() -> bool:
    """Inference outside ``torch.compile``: the only place ``out=`` arguments with strides of
    our choosing and in-place updates of views are used (a compiled graph picks its own
    layouts and fuses the writes; an in-place update of a view costs it a copy of the base)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def group_norm(x: Tensor, norm: nn.GroupNorm, *, silu: bool = False, layout: str | None = None,
               per_frame: bool = False) -> Tensor:
    """``silu(norm(x))`` (or ``norm(x)``) of a clip ``x`` ``(B, C, T, H, W)``, written in ``layout``.

    The statistics are those of ``nn.GroupNorm`` on the 5-D tensor (per batch item and
    group, over channels, frames and pixels; SPEC §2.3) or, with ``per_frame``, on its
    ``(B*T, C, H, W)`` frames. They are computed in fp32 over a view of ``x`` whatever its
    layout, with no ``.contiguous()`` copy, and the output is written once, in ``layout``
    (default: ``x``'s own), so a convolution or a transformer that wants another order gets
    it without a second copy.
    """
    target = layout or layout_of(x) or "ncdhw"
    if fused.usable(x):
        y = _fused_group_norm([x], norm, silu, target, per_frame)
        if y is not None:
            return y
    if target == "ncdhw" and x.is_contiguous() and not per_frame:
        y = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)  # fp32 statistics inside
    else:
        scale, shift = _group_norm_affine(x, norm, per_frame)
        if eager_inference():
            # x * scale + shift in fp32 per element, rounded once into y (as native GroupNorm does)
            y = torch.addcmul(shift, x, scale, out=empty_clip(x.shape, target, dtype=x.dtype, device=x.device))
        else:  # autograd and compiled graphs take no strided out=; the layout is only a speed matter
            y = torch.addcmul(shift, x, scale).to(x.dtype)
    if silu:
        y = F.silu(y, inplace=True) if inference() else F.silu(y)
    return y


def _group_norm_affine(x: Tensor, norm: nn.GroupNorm, per_frame: bool) -> tuple[Tensor, Tensor]:
    """fp32 ``scale`` and ``shift`` with ``norm(x) == x * scale + shift`` (the form native GroupNorm
    kernels apply too), ``(B, C, 1, 1, 1)`` or, per frame, ``(B, C, T, 1, 1)``."""
    b, c, t = x.shape[:3]
    groups = norm.num_groups
    xg = x.unflatten(1, (groups, c // groups))  # (B, G, C/G, T, H, W): a view in every layout
    mean, var = _moments(xg, (2, 4, 5) if per_frame else (2, 3, 4, 5))
    shape = (1, groups, c // groups, 1, 1, 1)
    scale = (var + norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight.float().view(shape)
    shift = -mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias.float().view(shape)
    frames = t if per_frame else 1
    return (scale.expand(b, groups, c // groups, frames, 1, 1).reshape(b, c, frames, 1, 1),
            shift.expand(b, groups, c // groups, frames, 1, 1).reshape(b, c, frames, 1, 1))


def group_norm_cat(parts: Sequence[Tensor], norm: nn.GroupNorm, *, silu: bool = False,
                   layout: str | None = None) -> Tensor:
    """``group_norm(torch.cat(parts, dim=1), norm, silu=silu)`` without the concatenation.

    The U-Net's up path normalises a skip concatenation: the groups' statistics are combined
    from each part's per-channel moments (a group may straddle two parts), and each part is
    normalised straight into its channels of the output, written in ``layout`` (default: the
    first part's), so the concatenated activation is never copied.
    """
    if len(parts) == 1:
        return group_norm(parts[0], norm, silu=silu, layout=layout)
    target = layout or layout_of(parts[0]) or "ncdhw"
    if fused.usable(*parts):
        y = _fused_group_norm(parts, norm, silu, target, False)
        if y is not None:
            return y
    scale, shift = _group_norm_affine_parts(parts, norm)
    bounds = _channel_bounds(parts)
    if not eager_inference():  # one fused kernel per part in a compiled graph, writing the output
        normed = [torch.addcmul(shift[:, a:b], p, scale[:, a:b]).to(p.dtype)
                  for p, a, b in zip(parts, bounds, bounds[1:])]
        return torch.cat([F.silu(n) if silu else n for n in normed], dim=1)
    shape = (parts[0].shape[0], bounds[-1], *parts[0].shape[2:])
    y = empty_clip(shape, target, dtype=parts[0].dtype, device=parts[0].device)
    for p, a, b in zip(parts, bounds, bounds[1:]):
        torch.addcmul(shift[:, a:b], p, scale[:, a:b], out=y[:, a:b])
    return F.silu(y, inplace=True) if silu else y


def _fused_group_norm(parts: Sequence[Tensor], norm: nn.GroupNorm, silu: bool, layout: str,
                      per_frame: bool) -> Tensor | None:
    """:func:`group_norm_cat` in two fused passes (:mod:`uav.models.fused`): one read of each part
    for its moments, one read and one write to normalise it into its channels of the output
    (``None`` if the kernels cannot run)."""
    first = parts[0]
    bounds = _channel_bounds(parts)
    y = empty_clip((first.shape[0], bounds[-1], *first.shape[2:]), layout, dtype=first.dtype, device=first.device)
    if not fused.usable(y):
        return None

    def run() -> Tensor:
        moments = [fused.moments(p, per_frame=per_frame) for p in parts]
        scale, shift = _group_affine(*(torch.cat(m, dim=1) for m in zip(*moments)), norm)
        for p, a, b in zip(parts, bounds, bounds[1:]):
            fused.norm_act(p, scale[:, a:b], shift[:, a:b], silu, y[:, a:b])
        return y

    return fused.guarded(run)


def _group_affine(mean: Tensor, m2: Tensor, n: Tensor, norm: nn.GroupNorm) -> tuple[Tensor, Tensor]:
    """``scale``, ``shift`` ``(B, C, F)`` of ``norm`` from per-channel moments ``(B, C, F)``: means,
    sums of squared deviations and counts, merged per group (Chan et al.), in their dtype."""
    b, c, f = mean.shape
    groups = norm.num_groups
    split = (b, groups, c // groups, f)
    mean, m2, n = fused.merge(mean.view(split), m2.view(split), n.view(split), dim=2)
    scale = (m2 / n + norm.eps).rsqrt().expand(split).reshape(b, c, f)
    if norm.weight is not None:
        scale = scale * norm.weight.to(scale.dtype)[:, None]
    shift = -mean.expand(split).reshape(b, c, f) * scale
    if norm.bias is not None:
        shift = shift + norm.bias.to(shift.dtype)[:, None]
    return scale, shift


def _channel_bounds(parts: Sequence[Tensor]) -> list[int]:
    """Where each part's channels start in the parts' concatenation, then where the last ends."""
    return list(itertools.accumulate((p.shape[1] for p in parts), initial=0))


def _moments(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """The mean and (biased) variance of ``x`` over ``dims`` (kept, size 1), fp32 (fp64 for fp64
    input), read from ``x`` in whatever layout it is."""
    if x.dtype in (torch.float32, torch.float64):
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        return mean, var
    # half inputs: sums accumulated and returned in fp32, still without an fp32 copy of x
    n = math.prod(x.shape[d] for d in dims)
    mean = x.sum(dim=dims, dtype=torch.float32, keepdim=True) / n
    var = torch.linalg.vector_norm(x, 2, dim=dims, dtype=torch.float32, keepdim=True).square() / n
    return mean, (var - mean.square()).clamp_min(0)


def _group_norm_affine_parts(parts: Sequence[Tensor], norm: nn.GroupNorm) -> tuple[Tensor, Tensor]:
    """fp32 ``scale`` and ``shift`` ``(B, C, 1, 1, 1)`` of ``norm`` on the channel concatenation of
    ``parts``: the group moments combined from the channels' (every channel counts once: each
    covers the same frames and pixels)."""
    moments = [_moments(p, (2, 3, 4)) for p in parts]
    mean = torch.cat([m for m, _ in moments], dim=1).flatten(2)
    var = torch.cat([v for _, v in moments], dim=1).flatten(2)
    scale, shift = _group_affine(mean, var, torch.ones_like(mean), norm)
    return scale[..., None, None], shift[..., None, None]


def frames_to_batch(x: Tensor) -> Tensor:
    """``(B, C, T, H, W)`` -> ``(B*T, C, H, W)`` (a view in the ``frames`` / ``channels_last`` layouts)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def batch_to_frames(x: Tensor, t: int) -> Tensor:
    """``(B*T, C, H, W)`` -> ``(B, C, T, H, W)`` (always a view)."""
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


def _frames_view(x: Tensor) -> Tensor | None:
    """``x`` as ``(B*T, C, H, W)`` NCHW or NHWC frames without a copy, or ``None``."""
    b, c, t, h, w = x.shape
    if b > 1 and x.stride(0) != t * x.stride(2):
        return None
    frames = x.transpose(1, 2).reshape(b * t, c, h, w)
    if frames.is_contiguous() or frames.is_contiguous(memory_format=torch.channels_last):
        return frames
    return None


def conv3d_layout(x: Tensor) -> str:
    """The layout a 3-D convolution reads without copying, for a block running in ``x``'s."""
    return "channels_last" if layout_of(x) == "channels_last" else "ncdhw"


class InflatedConv3d(nn.Conv2d):
    """A 2-D convolution applied to every frame of a video (4-D weight in checkpoints)."""

    def forward(self, x: Tensor, bias: Tensor | None = None,  # type: ignore[override]
                weight: Tensor | None = None) -> Tensor:
        """Convolve every frame; ``bias`` replaces the layer's own (a time embedding folded in),
        and ``weight`` its weight (some of its input channels).

        Frames stored frame-major (``frames``, ``channels_last``) are convolved as a view;
        an ``ncdhw`` clip as a 3-D convolution with a depth-1 kernel, which reads it in place.
        """
        bias = self.bias if bias is None else bias
        weight = self.weight if weight is None else weight
        frames = _frames_view(x)
        if frames is not None:
            out = F.conv2d(frames, weight, bias, self.stride, self.padding, self.dilation, self.groups)
            return batch_to_frames(out, x.shape[2])
        if x.is_contiguous():
            return F.conv3d(x, weight[:, :, None], bias, (1, *self.stride), (0, *self.padding),
                            (1, *self.dilation), self.groups)
        return batch_to_frames(F.conv2d(frames_to_batch(x), weight, bias, self.stride, self.padding,
                                        self.dilation, self.groups), x.shape[2])


def pointwise_conv(conv: InflatedConv3d, x: Tensor | Sequence[Tensor], residual: Tensor, *, bias: bool = True,
                   inplace: bool = True) -> Tensor:
    """``residual + conv(x)`` for a 1x1 per-frame convolution (``bias=False``: without its bias);
    ``x`` may be a list of parts, the convolution's input being their channel concatenation.

    In inference on frame-major layouts the convolution is a matmul over the channels
    that starts from ``residual`` (so the residual add costs no pass of its own), one
    matmul per part with its columns of the weight (the concatenation is never made),
    written into ``residual`` when ``inplace`` (it must then be a tensor the caller made) or
    into a new tensor in its layout; elsewhere it is the convolution and an add.
    """
    parts = [x] if isinstance(x, Tensor) else list(x)
    if not (inference() and all(_matmul_layout(p, residual) for p in parts)):
        return _pointwise_conv_add(conv, parts, residual, bias)
    # a compiled graph takes the matmuls out of place (in place on views, it would copy their bases)
    eager = eager_inference()
    bounds, out = _channel_bounds(parts), residual
    for i, (part, a, b) in enumerate(zip(parts, bounds, bounds[1:])):
        out = _accumulate_matmul(out, conv.weight[:, a:b, 0, 0], part, inplace=eager and (inplace or i > 0))
    if bias and conv.bias is not None:
        b = conv.bias.view(1, -1, 1, 1, 1)
        out = out.add_(b) if eager else out + b
    return out


def _pointwise_conv_add(conv: InflatedConv3d, parts: Sequence[Tensor], residual: Tensor, bias: bool) -> Tensor:
    """``residual + conv(cat(parts))`` out of place (autograd; layouts a matmul cannot accumulate
    into), one convolution per part with its input channels of the weight: no concatenation."""
    bounds, out = _channel_bounds(parts), residual
    for i, (part, a, b) in enumerate(zip(parts, bounds, bounds[1:])):
        # the layer's bias once (or never); a None bias would mean the layer's own
        part_bias = conv.bias if (i == 0 and bias) or conv.bias is None else torch.zeros_like(conv.bias)
        out = out + conv(part, part_bias, conv.weight[:, a:b])
    return out


def _matmul_layout(x: Tensor, residual: Tensor) -> str | None:
    """How ``w @ x`` can accumulate into ``residual`` as one matmul: ``ncdhw`` (both contiguous),
    ``frames`` / ``channels_last`` (both NCHW / NHWC frames), or ``None``."""
    if x.is_contiguous() and residual.is_contiguous():
        return "ncdhw"
    frames, res = _frames_view(x), _frames_view(residual)
    if frames is None or res is None:
        return None
    for layout, fmt in (("frames", torch.contiguous_format), ("channels_last", torch.channels_last)):
        if frames.is_contiguous(memory_format=fmt) and res.is_contiguous(memory_format=fmt):
            return layout
    return None


def _accumulate_matmul(acc: Tensor, w: Tensor, x: Tensor, *, inplace: bool) -> Tensor:
    """``acc + w @ x`` over the channels of ``(B, C, T, H, W)`` clips (``w``: ``(C_out, C_in)``), in
    ``acc``'s layout; written into ``acc`` when ``inplace``."""
    layout = _matmul_layout(x, acc)
    if layout == "ncdhw":  # one matmul per batch item
        b, c = x.shape[:2]
        a, ws, xs = acc.view(b, w.shape[0], -1), w.expand(b, -1, -1), x.view(b, c, -1)
        return (a.baddbmm_(ws, xs) if inplace else torch.baddbmm(a, ws, xs)).view(acc.shape)
    frames, res = _frames_view(x), _frames_view(acc)
    assert frames is not None and res is not None
    bt, c, h, wd = frames.shape
    if layout == "frames":  # one (C_out x C_in) @ (C_in x HW) per frame
        a, ws, xs = res.view(bt, -1, h * wd), w.expand(bt, -1, -1), frames.view(bt, c, h * wd)
        out = (a.baddbmm_(ws, xs) if inplace else torch.baddbmm(a, ws, xs)).view(bt, -1, h, wd)
    else:  # NHWC frames: one matmul over every pixel
        cout = w.shape[0]
        a, xs = res.permute(0, 2, 3, 1).reshape(-1, cout), frames.permute(0, 2, 3, 1).reshape(-1, c)
        out = (a.addmm_(xs, w.t()) if inplace else torch.addmm(a, xs, w.t())).view(bt, h, wd, cout).permute(0, 3, 1, 2)
    return batch_to_frames(out, x.shape[2])


def linear_residual(linear: nn.Linear, x: Tensor, residual: Tensor | None,
                    pending: list[Tensor] | None = None) -> Tensor:
    """``residual + linear(x)`` (``linear(x)`` without a residual), shaped like ``residual``.

    In inference the residual is accumulated inside the matmul (``residual`` is updated
    in place: it must be a contiguous tensor the caller made), so the add costs no pass.
    With ``pending`` (a list) the layer's bias is not added but appended to it: the caller
    adds it later where that costs no pass of its own (:mod:`uav.models.fused`).
    """
    if residual is None:
        return linear(x)
    if not inference():
        return residual + linear(x).view(residual.shape)
    flat = residual.view(-1, residual.shape[-1])
    flat.addmm_(x.reshape(-1, x.shape[-1]), linear.weight.t())
    if linear.bias is not None:
        if pending is None:
            flat.add_(linear.bias)
        else:
            pending.append(linear.bias)
    return residual


def add_(out: Tensor, other: Tensor) -> Tensor:
    """``out + other``; in inference written into ``out`` (a tensor the caller just made)."""
    return out.add_(other) if inference() else out + other


def add_as(like: Tensor, fresh: Tensor, other: Tensor) -> Tensor:
    """``fresh + other`` stored in ``like``'s layout (``fresh``, a tensor the caller made, may be
    overwritten), so a block hands on the layout it was given."""
    if not inference():
        return fresh + other
    if fresh.stride() == like.stride():
        return fresh.add_(other)
    if torch.compiler.is_compiling():
        return fresh + other
    return torch.add(fresh, other, out=torch.empty_like(like))


class Upsample3D(nn.Module):
    """Nearest x2 in height and width (or to an exact size), then a 3x3 per-frame conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, output_size: tuple[int, int, int] | None = None) -> Tensor:
        # nearest is a pure copy, so no upcast is needed for bf16 (the published code upcasts,
        # with identical results and a full fp32 temporary)
        frames = _frames_view(x)
        if frames is not None:
            # frame by frame: the same source pixels as the 3-D resize, in the layout x came in
            size = None if output_size is None else tuple(output_size[1:])
            up = F.interpolate(frames, size=size, scale_factor=None if size else 2.0, mode="nearest")
            return self.conv(batch_to_frames(up, x.shape[2]))
        if output_size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=output_size, mode="nearest")
        return self.conv(x)


class Downsample3D(nn.Module):
    """Stride-2 3x3 per-frame conv. ``padding=0`` means the VAE's asymmetric
    (right +1, bottom +1) zero pad, as in the SD VAE."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.conv = InflatedConv3d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0)
        return self.conv(x)


def time_bias(conv: nn.Module, proj: nn.Module | None, temb: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """``(bias, temb_add)`` for ``conv(h) + proj(silu(temb))``: when every batch row shares the
    embedding (one row), it is folded into the convolution's bias and nothing is left to add."""
    if temb is None or proj is None:
        return None, None
    t = proj(F.silu(temb))
    if t.shape[0] == 1 and conv.bias is not None:
        return conv.bias + t[0], None
    return None, t[:, :, None, None, None]


class ResnetBlock3D(nn.Module):
    """Per-frame 3x3 residual block with clip-wide GroupNorm (SPEC §2.3)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        temb_channels: int | None = None,
        groups: int = 32,
        groups_out: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        groups_out = groups_out or groups
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = InflatedConv3d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = nn.GroupNorm(groups_out, out_channels, eps=eps)
        self.conv2 = InflatedConv3d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = (
            InflatedConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor, temb: Tensor | None = None, skip: Tensor | None = None) -> Tensor:
        """The block on ``x`` or, with ``skip``, on ``torch.cat([x, skip], dim=1)`` (the U-Net's up
        path), which is never made: the norm and the 1x1 shortcut read the two parts."""
        parts = [x] if skip is None else [x, skip]
        bias, temb_add = time_bias(self.conv1, self.time_emb_proj, temb)
        h = self.conv1(group_norm_cat(parts, self.norm1, silu=True), bias)
        if temb_add is not None:
            h = add_(h, temb_add)
        h = group_norm(h, self.norm2, silu=True)
        if self.conv_shortcut is None:
            return add_(self.conv2(h), x if skip is None else cat_channels(parts))
        if self.conv_shortcut.bias is not None and self.conv2.bias is not None:
            # the 1x1 shortcut accumulates onto conv2's output, its bias folded into conv2's
            out = self.conv2(h, self.conv2.bias + self.conv_shortcut.bias)
            return pointwise_conv(self.conv_shortcut, parts, out, bias=False)
        return pointwise_conv(self.conv_shortcut, parts, self.conv2(h))


class ResnetBlock3DPlus(ResnetBlock3D):
    """ResnetBlock3D followed by a zero-initialised 3x3x3 temporal residual (SPEC §3, item 6)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        groups: int = 32,
        groups_out: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(in_channels, out_channels, groups=groups, groups_out=groups_out, eps=eps)
        out_channels = out_channels or in_channels
        self.norm_3d = nn.GroupNorm(groups_out or groups, out_channels, eps=eps)
        self.conv_3d = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_3d.weight)
        nn.init.zeros_(self.conv_3d.bias)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        x = super().forward(x, temb)
        h = self.conv_3d(group_norm(x, self.norm_3d, silu=True, layout=conv3d_layout(x)))
        return add_(x, h)


class ResnetBlock3DCNN(nn.Module):
    """Temporal-only residual block: Conv3d (k,1,1) then Conv3d (3,1,1) (SPEC §2.3).

    ``conv2`` is (3,1,1) even when ``kernel`` is 5, as published (surprise 8).
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel: int = 3,
        temb_channels: int | None = None,
        groups: int = 32,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels, eps=eps)
        self.conv1 = nn.Conv3d(channels, channels, (kernel, 1, 1), padding=((kernel - 1) // 2, 0, 0))
        self.time_emb_proj = nn.Linear(temb_channels, channels) if temb_channels else None
        self.norm2 = nn.GroupNorm(groups, channels, eps=eps)
        self.conv2 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: Tensor, temb: Tensor | None = None, inplace: bool = False) -> Tensor:
        """The block on ``x``; with ``inplace`` (``x`` is a tensor the caller made and does not
        read again) the sum is written into ``x`` in eager inference."""
        layout = conv3d_layout(x)
        bias, temb_add = time_bias(self.conv1, self.time_emb_proj, temb)
        h = self.conv1._conv_forward(group_norm(x, self.norm1, silu=True, layout=layout), self.conv1.weight,
                                     self.conv1.bias if bias is None else bias)
        if temb_add is not None:
            h = add_(h, temb_add)
        normed = group_norm(h, self.norm2, silu=True, layout=layout)
        del h  # released before conv2 makes its output
        h = self.conv2(normed)
        del normed
        if inplace and eager_inference():
            return torch.add(h, x, out=x)  # conv2's output + x, as add_as sums them
        return add_as(x, h, x)
