"""The temporal layers that inflate the SD x4 upscaler to video (paper §3.2, SPEC §2.4-2.5).

* :class:`TemporalAttention` — attention across frames at every spatial position,
  with partial interleaved RoPE (first 32 channels of each head) and a T5-style
  relative position bias.
* :class:`TemporalModule3D` — the 3D-CNN residual modules after each U-Net block
  (the released config gives them no attention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from uav.models import fused
from uav.models.batching import active as saving_memory, per_item
from uav.models.layers import (InflatedConv3d, ResnetBlock3D, ResnetBlock3DCNN, eager_inference, linear_residual,
                               pointwise_conv)

Tensor = torch.Tensor

#: channels of each head that RoPE rotates (the published RotaryEmbedding(32))
ROPE_DIM = 32


def rope_frequencies(dim: int = ROPE_DIM, theta: float = 10000.0) -> Tensor:
    """The RoPE table ``1 / theta^(2k/dim)`` for ``k < dim/2`` (float32)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))


class RotaryEmbedding(nn.Module):
    """Interleaved rotary position embedding over the frame axis.

    The table is a non-persistent buffer; the U-Net maps the checkpoint's 17 aliases
    of it (one shared parameter in the published code) with :func:`install_rope_alias_hooks`.
    """

    def __init__(self, dim: int = ROPE_DIM) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("freqs", rope_frequencies(dim), persistent=False)

    def rotate(self, x: Tensor) -> Tensor:
        """Rotate the first ``dim`` channels of every head of ``x`` ``(S, T, heads, d)`` by frame
        position; in eager inference ``x`` (a projection the caller just made) is rotated in place."""
        t = x.shape[1]
        pos = torch.arange(t, device=x.device, dtype=self.freqs.dtype)
        angles = pos[:, None] * self.freqs[None, :]  # (T, dim/2), float32 as published
        cos, sin = angles.cos().to(x.dtype)[:, None], angles.sin().to(x.dtype)[:, None]
        # interleaved pairs (u, v) -> (u cos - v sin, v cos + u sin): the published "rotate half"
        if x.is_contiguous() and fused.usable(x) and fused.guarded(fused.rope_, x, angles.cos(), angles.sin()) is not None:
            return x
        u, v = x[..., 0:self.dim:2], x[..., 1:self.dim:2]
        if eager_inference():  # compiled, the out-of-place form below is one fused kernel
            u_sin = u * sin
            u.mul_(cos).addcmul_(v, sin, value=-1)
            v.mul_(cos).add_(u_sin)
            return x
        # out of place (autograd, compiled graphs): one element-wise expression over the whole
        # head, cos 1 and sin 0 past the first ``dim`` channels, so no concatenation is copied
        d = x.shape[-1]
        keep = angles.new_zeros(t, d - self.dim)
        cos_full = torch.cat((angles.cos().repeat_interleave(2, dim=-1), keep + 1), dim=-1).to(x.dtype)[:, None]
        sin_full = torch.cat((angles.sin().repeat_interleave(2, dim=-1), keep), dim=-1).to(x.dtype)[:, None]
        sign = torch.tensor([-1.0, 1.0], device=x.device, dtype=x.dtype)
        half = (x.unflatten(-1, (-1, 2)).flip(-1) * sign).flatten(-2)  # pairs (u, v) -> (-v, u)
        return x * cos_full + half * sin_full


def relative_position_bucket(
    relative_position: Tensor, num_buckets: int = 32, max_distance: int = 32
) -> Tensor:
    """T5-style bidirectional buckets for ``relative_position = key - query`` (SPEC §2.4)."""
    n = -relative_position
    num_buckets //= 2
    ret = (n < 0).long() * num_buckets
    n = n.abs()
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + (
        torch.log(n.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    val_if_large = torch.minimum(val_if_large, torch.full_like(val_if_large, num_buckets - 1))
    return ret + torch.where(is_small, n, val_if_large)


class RelativePositionBias(nn.Module):
    """Learned per-head bias of the frame offset between query and key."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 32) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, num_frames: int, device: torch.device) -> Tensor:
        pos = torch.arange(num_frames, dtype=torch.long, device=device)
        rel = pos[None, :] - pos[:, None]
        bucket = relative_position_bucket(rel, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(bucket).permute(2, 0, 1)  # (heads, T, T)


class TemporalAttention(nn.Module):
    """Self-attention along the frame axis (SPEC §2.4). Input ``(S, T, C)``."""

    def __init__(self, dim: int, heads: int, rotary: RotaryEmbedding | None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"channels ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = dim // heads
        if rotary is not None and self.head_dim < rotary.dim:
            raise ValueError(f"head size {self.head_dim} is smaller than the RoPE width {rotary.dim}")
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        nn.init.zeros_(self.to_out[0].weight)
        self.time_rel_pos_bias = RelativePositionBias(heads)
        # The table is shared with the U-Net's `temporal_rotary_emb`; keep it out of this
        # module's children so it is registered (and moved between devices) exactly once.
        self._rotary = [rotary]

    @property
    def rotary_emb(self) -> RotaryEmbedding | None:
        return self._rotary[0]

    def forward(self, x: Tensor, residual: Tensor | None = None, pending: list[Tensor] | None = None) -> Tensor:
        """Attention over the frames of ``x`` ``(S, T, C)``, plus ``residual`` (in inference
        accumulated in place, see :func:`uav.models.layers.linear_residual`)."""
        s, t, c = x.shape
        n, d = self.heads, self.head_dim
        q, k, v = (proj(x).view(s, t, n, d) for proj in (self.to_q, self.to_k, self.to_v))
        if self.rotary_emb is not None:
            q, k = self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)
        bias = self.time_rel_pos_bias(t, x.device).to(q.dtype)  # broadcasts over S
        # the published 1/sqrt(d) scaling of q (before RoPE, which is linear) as SDPA's scale
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=bias, scale=d**-0.5)
        out = out.transpose(1, 2).reshape(s, t, c)
        return linear_residual(self.to_out[0], out, residual, pending)


class TemporalModule3D(nn.Module):
    """``x + shift_conv(ResnetBlock3D(ResnetBlock3DCNN_k5(x, emb), emb))`` (SPEC §2.5).

    Both residual blocks use GroupNorm(32, 1e-6) whatever the config says, as published.
    """

    def __init__(self, channels: int, temb_channels: int, attention_block_types: tuple[str, ...] = ("", "")) -> None:
        super().__init__()
        if any(attention_block_types):
            raise ValueError(
                "temporal_module_config.attention_block_types must be ['', ''] (the released config); "
                f"got {list(attention_block_types)}"
            )
        self.resblocks_3d_temporal = ResnetBlock3DCNN(channels, kernel=5, temb_channels=temb_channels, groups=32)
        self.resblocks_3d_spatial = ResnetBlock3D(channels, channels, temb_channels=temb_channels, groups=32)
        self.shift_conv = InflatedConv3d(channels, channels, 1)
        nn.init.zeros_(self.shift_conv.weight)
        nn.init.zeros_(self.shift_conv.bias)

    def forward(self, x: Tensor, temb: Tensor, inplace: bool = False) -> Tensor:
        """The module on ``x``; with ``inplace`` (``x`` is a tensor the caller made and does not read
        again) the result is written into ``x`` in eager inference.

        In eager inference it runs one batch item at a time (:func:`~uav.models.batching.per_item`):
        its residual blocks' intermediates are then one item's, while ``x`` carries the batch.
        """
        if x.shape[0] > 1 and saving_memory():
            return per_item(lambda x_i, temb_i: self._forward(x_i, temb_i, inplace), [x], temb,
                            into=x if inplace else None)
        return self._forward(x, temb, inplace)

    def _forward(self, x: Tensor, temb: Tensor, inplace: bool) -> Tensor:
        h = self.resblocks_3d_temporal(x, temb)
        h = self.resblocks_3d_spatial(h, temb)
        # the 1x1 conv's matmul starts from x (the residual): a new tensor where x is also a U-Net skip
        return pointwise_conv(self.shift_conv, h, x, inplace=inplace)


# ---------------------------------------------------------------------------- checkpoint aliases
#: the U-Net's own key of the shared RoPE table
ROPE_KEY = "temporal_rotary_emb.freqs"
_ROPE_ALIAS_SUFFIX = ".rotary_emb.freqs"


def rope_alias_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of the shared RoPE table (17 for the released config)."""
    keys = [ROPE_KEY]
    keys += [name + _ROPE_ALIAS_SUFFIX for name, m in model.named_modules() if isinstance(m, TemporalAttention)]
    return keys


def install_rope_alias_hooks(model: nn.Module) -> None:
    """Make ``model.state_dict()`` / ``load_state_dict`` speak the official RoPE keys.

    The published U-Net registers ONE ``RotaryEmbedding`` parameter under 17 keys
    (``temporal_rotary_emb.freqs`` and 16 ``*.attn_temporal.rotary_emb.freqs``). The table
    is held once, as a buffer; these hooks consume the 17 keys on load and emit them on
    save, so strict loading and the official key set both hold.
    """
    alias_keys = rope_alias_keys(model)

    def add_aliases(module: nn.Module, state_dict: dict, prefix: str, local_metadata: object) -> None:
        table = module.temporal_rotary_emb.freqs.detach()
        for key in alias_keys:
            # separate tensors: safetensors refuses to save tensors that share memory
            state_dict[prefix + key] = table.clone()

    def consume_aliases(
        module: nn.Module, state_dict: dict, prefix: str, local_metadata: object, strict: bool,
        missing_keys: list, unexpected_keys: list, error_msgs: list,
    ) -> None:
        buffer = module.temporal_rotary_emb.freqs
        found = None
        for key in alias_keys:
            value = state_dict.pop(prefix + key, None)
            if value is None:
                missing_keys.append(prefix + key)
                continue
            if tuple(value.shape) != tuple(buffer.shape):
                error_msgs.append(
                    f"size mismatch for {prefix + key}: expected {tuple(buffer.shape)}, got {tuple(value.shape)}"
                )
                continue
            found = value if found is None else found
        if found is not None:
            with torch.no_grad():
                buffer.copy_(found.to(buffer.dtype))

    model.register_state_dict_post_hook(add_aliases)
    model.register_load_state_dict_pre_hook(consume_aliases)
