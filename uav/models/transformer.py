"""The per-frame transformer of the video U-Net (SPEC §2.3): spatial self attention (or
text-only attention in the first blocks), cross attention to the prompt, temporal attention
over the frames, and a GEGLU feed-forward, behind a ``resblock_temporal`` 3D residual block.

Names follow the released checkpoint (``to_q``, ``to_out.0``, ``attn_temporal`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uav.models import fused
from uav.models.batching import active as saving_memory, item_chunks, write_back
from uav.models.layers import ResnetBlock3DCNN, add_, eager_inference, group_norm, linear_residual
from uav.models.temporal import RotaryEmbedding, TemporalAttention

Tensor = torch.Tensor


@dataclass(frozen=True)
class CrossAttentionSpec:
    """What the transformers of one U-Net block look like; blocks without one have none."""

    heads: int
    cross_attention_dim: int
    only_cross_attention: bool
    rotary: RotaryEmbedding


class Attention(nn.Module):
    """Multi-head attention with the SD naming (``to_q``, ``to_k``, ``to_v``, ``to_out.0``)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x: Tensor, context: Tensor | None = None, residual: Tensor | None = None,
                pending: list[Tensor] | None = None) -> Tensor:
        """Attention of ``x`` ``(B, N, C)`` to ``context`` (itself when ``None``), plus ``residual``
        (see :func:`~uav.models.layers.linear_residual`, which also says what ``pending`` is)."""
        return linear_residual(self.to_out[0], self.attend(x, context), residual, pending)

    def attend(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The heads' attention output ``(B, N, C)``, before the output projection."""
        context = x if context is None else context
        b, n_q, c = x.shape
        n = self.heads
        q = self.to_q(x).view(b, n_q, n, c // n).transpose(1, 2)
        k = self.to_k(context).view(b, context.shape[1], n, c // n).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], n, c // n).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n_q, c)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        if fused.usable(a, gate) and fused.guarded(fused.geglu_, a, gate) is not None:
            return a  # one kernel: a * gelu(gate) written into a
        if eager_inference():
            # both halves are views of the projection just made: gate and product in place
            return a.mul_(torch.ops.aten.gelu_(gate))
        return a * F.gelu(gate)  # compiled: one fused kernel (in place, it would copy the projection)


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x: Tensor, residual: Tensor | None = None, pending: list[Tensor] | None = None) -> Tensor:
        """``net(x)``, plus ``residual`` (see :func:`~uav.models.layers.linear_residual`)."""
        return linear_residual(self.net[2], self.net[1](self.net[0](x)), residual, pending)


class BasicTransformerBlock(nn.Module):
    """Spatial (or text-only) attention, cross attention, temporal attention, GEGLU FF (SPEC §2.3)."""

    def __init__(
        self, dim: int, heads: int, cross_attention_dim: int, only_cross_attention: bool, rotary: RotaryEmbedding
    ) -> None:
        super().__init__()
        self.only_cross_attention = only_cross_attention
        self.attn1 = Attention(dim, heads, cross_attention_dim if only_cross_attention else None)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, cross_attention_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn_temporal = TemporalAttention(dim, heads, rotary)
        self.norm_temporal = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor, num_frames: int | None = None,
                pending: list[Tensor] | None = None) -> Tensor:
        """``x``: tokens ``(B, H*W, T, C)``, contiguous (overwritten in inference); ``context``:
        ``(B, L, Cx)``.

        Tokens are kept pixel-major with the frames innermost: the temporal attention's
        sequences are then a view, and so are the cross attentions' (the text is the same
        for every frame, so they attend from all ``H*W*T`` rows of a clip at once). Only the
        spatial self attention (coarsest level) reads the tokens frame by frame.

        Everything after it works per pixel (a pixel's frames are one temporal sequence;
        the rest is per token), so in eager inference it runs on one item's pixels at a
        time, in :data:`~uav.models.batching.FF_CHUNKS` pieces written back into ``x``: the
        attention and feed-forward intermediates (the GEGLU projection is 8C wide) exist
        for one piece only.

        With ``pending`` (a list; the fused path, :mod:`uav.models.fused`) the output
        projections' biases are not added to the tokens but appended to it: each LayerNorm
        adds them on the fly, and the caller owes them to the tokens it is handed back.
        """
        b, hw, t, c = x.shape
        if not self.only_cross_attention:
            x = self._spatial(x, pending)
        if not saving_memory():
            return self._per_pixel(x, context, pending)
        owed = None if pending is None else list(pending)
        piece_pending = owed
        for i, rows in item_chunks(b, hw, t):
            piece = x[i:i + 1, rows]
            # every piece starts owing what the tokens owe and defers the same biases
            piece_pending = None if owed is None else list(owed)
            write_back(piece, self._per_pixel(piece, context[i:i + 1], piece_pending))
            del piece
        if pending is not None and piece_pending is not None:
            pending[:] = piece_pending  # the same biases for every piece (or none, after a fallback)
        return x

    def _spatial(self, x: Tensor, pending: list[Tensor] | None) -> Tensor:
        b, hw, t, c = x.shape
        flat = x.view(b, hw * t, c)
        frames = _layer_norm(self.norm1, flat, pending).view(b, hw, t, c).transpose(1, 2).reshape(b * t, hw, c)
        out = self.attn1(frames).view(b, t, hw, c).transpose(1, 2)
        return add_(x, out)

    def _per_pixel(self, x: Tensor, context: Tensor, pending: list[Tensor] | None) -> Tensor:
        """The cross attentions, the temporal attention and the feed-forward of the pixels of
        ``x`` ``(B, P, T, C)`` (contiguous; written into in inference)."""
        b, p, t, c = x.shape
        flat = x.view(b, p * t, c)
        if self.only_cross_attention:
            flat = self.attn1(_layer_norm(self.norm1, flat, pending), context, residual=flat, pending=pending)
        flat = self.attn2(_layer_norm(self.norm2, flat, pending), context, residual=flat, pending=pending)
        seqs = flat.view(b * p, t, c)
        flat = self.attn_temporal(_layer_norm(self.norm_temporal, seqs, pending), residual=seqs,
                                  pending=pending).view(b, p * t, c)
        flat = self.ff(_layer_norm(self.norm3, flat, pending), residual=flat, pending=pending)
        return flat.view(b, p, t, c)


def _layer_norm(norm: nn.LayerNorm, x: Tensor, pending: list[Tensor] | None) -> Tensor:
    """``norm(x + sum(pending))``: the biases still owed to ``x`` added inside the fused kernel,
    or, if it cannot run, to ``x`` itself (in place; ``pending`` is then emptied)."""
    if not pending:
        return norm(x)
    shift = torch.stack(pending).sum(0, dtype=torch.float32) if len(pending) > 1 else pending[0]
    y = fused.guarded(fused.layer_norm, x, shift, norm) if x.is_contiguous() else None
    if y is None:
        x.add_(shift.to(x.dtype))
        pending.clear()
        return norm(x)
    return y


class Transformer3DModel(nn.Module):
    """``resblock_temporal`` then a per-frame transformer whose residual is that block's output."""

    def __init__(
        self,
        channels: int,
        heads: int,
        *,
        cross_attention_dim: int,
        norm_num_groups: int,
        only_cross_attention: bool,
        rotary: RotaryEmbedding,
    ) -> None:
        super().__init__()
        self.resblock_temporal = ResnetBlock3DCNN(channels, kernel=3, groups=32)
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, cross_attention_dim, only_cross_attention, rotary)]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor, inplace: bool = False) -> Tensor:
        """The transformer on ``x`` ``(B, C, T, H, W)``; with ``inplace`` (``x`` is a tensor the caller
        made and does not read again, as a residual block's output in the U-Net) the temporal
        block writes its sum into ``x`` in eager inference instead of into a new tensor."""
        b, c, t, h, w = x.shape
        residual = self.resblock_temporal(x, inplace=inplace)
        del x
        # GroupNorm per frame, as published, writing the tokens' (B, H, W, T, C) order itself;
        # the tokens' permutation is a view, released once projected
        tokens = self.proj_in(group_norm(residual, self.norm, layout="tokens", per_frame=True)
                              .permute(0, 3, 4, 2, 1).reshape(b, h * w, t, c))
        # the fused path defers the blocks' output biases to proj_out's (see BasicTransformerBlock)
        pending: list[Tensor] | None = [] if fused.usable(tokens) and tokens.is_contiguous() else None
        for block in self.transformer_blocks:
            tokens = block(tokens, context, t, pending)
        out = _linear_owed(self.proj_out, tokens, pending).view(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return add_(residual, out)  # the resblock's fresh output, in the layout x came in


def _linear_owed(linear: nn.Linear, x: Tensor, pending: list[Tensor] | None) -> Tensor:
    """``linear(x + sum(pending))``, the owed biases folded into the layer's bias (W @ sum + b)."""
    if not pending:
        return linear(x)
    owed = torch.stack(pending).sum(0, dtype=torch.float32)
    bias = torch.addmv(linear.bias.float(), linear.weight.float(), owed)
    return F.linear(x, linear.weight, bias.to(x.dtype))


def transformer_stack(channels: int, num_layers: int, groups: int,
                      spec: CrossAttentionSpec | None) -> nn.ModuleList | None:
    """One Transformer3DModel per resnet of a cross-attention block (``None`` for plain blocks)."""
    if spec is None:
        return None
    return nn.ModuleList(
        Transformer3DModel(channels, spec.heads, cross_attention_dim=spec.cross_attention_dim, norm_num_groups=groups,
                           only_cross_attention=spec.only_cross_attention, rotary=spec.rotary)
        for _ in range(num_layers)
    )
