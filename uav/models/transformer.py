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

from uav.models.layers import ResnetBlock3DCNN, batch_to_frames, frames_to_batch
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

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        b, n_q, c = x.shape
        n = self.heads
        q = self.to_q(x).view(b, n_q, n, c // n).transpose(1, 2)
        k = self.to_k(context).view(b, context.shape[1], n, c // n).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], n, c // n).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(b, n_q, c))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


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

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
        # x: (B*T, HW, C); context: (B, L, Cx). The text is the same for every frame of a
        # clip, so cross attention runs on (B, T*HW) query rows instead of repeating it T times.
        bt, hw, c = x.shape
        b = bt // num_frames

        def cross(attn: Attention, h: Tensor) -> Tensor:
            return attn(h.reshape(b, num_frames * hw, c), context).reshape(bt, hw, c)

        h = self.norm1(x)
        x = x + (cross(self.attn1, h) if self.only_cross_attention else self.attn1(h))
        x = x + cross(self.attn2, self.norm2(x))
        # temporal attention: one sequence over the frames per (batch, position)
        xt = x.reshape(b, num_frames, hw, c).transpose(1, 2).reshape(b * hw, num_frames, c)
        xt = xt + self.attn_temporal(self.norm_temporal(xt))
        x = xt.reshape(b, hw, num_frames, c).transpose(1, 2).reshape(bt, hw, c)
        return x + self.ff(self.norm3(x))


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

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        residual = self.resblock_temporal(x)
        frames = frames_to_batch(residual)
        tokens = self.norm(frames).permute(0, 2, 3, 1).reshape(b * t, h * w, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context, t)
        tokens = self.proj_out(tokens)
        out = tokens.reshape(b * t, h, w, c).permute(0, 3, 1, 2) + frames
        return batch_to_frames(out, t)


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
