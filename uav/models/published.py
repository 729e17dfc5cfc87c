"""The networks' published module structure, kept as a measuring reference (issue 21, item 3).

The library's modules were restructured to move fewer bytes outside the convolutions,
matmuls and attention (one clip-wide GroupNorm(+SiLU) function, copy-free frame/batch
views, in-place activations and residual adds without autograd, the time embedding
folded into the convolution bias, the transformer in one token layout). The numbers
are the same up to float rounding; this module keeps the *previous* forwards, verbatim
(those of Downsample3D and the U-Net's mid block are unchanged, and serve both),
so that the benchmark can measure both structures side by side:

* :func:`published_modules` swaps them in for as long as the block runs (every
  instance, restored on exit, even on error), the way :func:`benchmarks.baseline.eager_attention`
  swaps in explicit attention;
* ``benchmarks/static.py`` counts the glue bytes of one U-Net call under each, and
  ``tests/test_speed_structure.py`` checks that both give the same numbers.

Nothing here is a faster path: it is the older, slower structure. The library imports
it only for the memory model's ``published=True`` traces (:func:`uav.models.layers.published_structure`):
the GPU calibration measured this structure.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from uav.models import layers as _layers
from uav.models import temporal as _temporal
from uav.models import transformer as _transformer
from uav.models import unet_video as _unet
from uav.models import vae_video as _vae
from uav.models.layers import batch_to_frames, frames_to_batch  # the same reshapes (copies in this layout)

Tensor = torch.Tensor

__all__ = ["published_modules"]


# ---------------------------------------------------------------------------- layers.py
def _inflated_conv(self: Any, x: Tensor) -> Tensor:
    t = x.shape[2]
    return batch_to_frames(torch.nn.Conv2d.forward(self, frames_to_batch(x)), t)


def _upsample(self: Any, x: Tensor, output_size: tuple[int, int, int] | None = None) -> Tensor:
    if output_size is None:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
    else:
        x = F.interpolate(x, size=output_size, mode="nearest")
    return self.conv(x)


def _resnet(self: Any, x: Tensor, temb: Tensor | None = None) -> Tensor:
    h = self.conv1(F.silu(self.norm1(x)))
    if temb is not None and self.time_emb_proj is not None:
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
    h = self.conv2(F.silu(self.norm2(h)))
    if getattr(self, "conv_shortcut", None) is not None:  # ResnetBlock3DCNN has none
        x = self.conv_shortcut(x)
    return x + h


def _resnet_plus(self: Any, x: Tensor, temb: Tensor | None = None) -> Tensor:
    x = _resnet(self, x, temb)
    return x + self.conv_3d(F.silu(self.norm_3d(x)))


# ---------------------------------------------------------------------------- transformer.py
def _attention(self: Any, x: Tensor, context: Tensor | None = None) -> Tensor:
    return self.to_out[0](self.attend(x, context))  # the residual added by the caller


def _geglu(self: Any, x: Tensor) -> Tensor:
    a, gate = self.proj(x).chunk(2, dim=-1)
    return a * F.gelu(gate)


def _feed_forward(self: Any, x: Tensor) -> Tensor:
    for layer in self.net:
        x = layer(x)
    return x


def _basic_block(self: Any, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
    bt, hw, c = x.shape
    b = bt // num_frames

    def cross(attn: Any, h: Tensor) -> Tensor:
        return attn(h.reshape(b, num_frames * hw, c), context).reshape(bt, hw, c)

    h = self.norm1(x)
    x = x + (cross(self.attn1, h) if self.only_cross_attention else self.attn1(h))
    x = x + cross(self.attn2, self.norm2(x))
    xt = x.reshape(b, num_frames, hw, c).transpose(1, 2).reshape(b * hw, num_frames, c)
    xt = xt + self.attn_temporal(self.norm_temporal(xt))
    x = xt.reshape(b, hw, num_frames, c).transpose(1, 2).reshape(bt, hw, c)
    return x + self.ff(self.norm3(x))


def _transformer3d(self: Any, x: Tensor, context: Tensor, inplace: bool = False) -> Tensor:
    # inplace: the library's callers ask for it; the published structure always writes a new tensor
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


# ---------------------------------------------------------------------------- temporal.py
def _rotate(self: Any, x: Tensor) -> Tensor:
    t = x.shape[-2]
    pos = torch.arange(t, device=x.device, dtype=self.freqs.dtype)
    angles = pos[:, None] * self.freqs[None, :]
    angles = angles.repeat_interleave(2, dim=-1)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    rot, rest = x[..., : self.dim], x[..., self.dim :]
    pairs = rot.unflatten(-1, (-1, 2))
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((rot * cos + rotated_half * sin, rest), dim=-1)


def _project(self: Any, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s, t, _ = x.shape
    n, d = self.heads, self.head_dim
    q = self.to_q(x).view(s, t, n, d).transpose(1, 2) * (d**-0.5)
    k = self.to_k(x).view(s, t, n, d).transpose(1, 2)
    v = self.to_v(x).view(s, t, n, d).transpose(1, 2)
    if self.rotary_emb is not None:
        q = _rotate(self.rotary_emb, q)
        k = _rotate(self.rotary_emb, k)
    return q, k, v, self.time_rel_pos_bias(t, x.device).to(q.dtype)


def _temporal_attention(self: Any, x: Tensor) -> Tensor:
    s, t, c = x.shape
    q, k, v, bias = _project(self, x)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    out = out.transpose(1, 2).reshape(s, t, c)
    return self.to_out[0](out)


def _temporal_module(self: Any, x: Tensor, temb: Tensor) -> Tensor:
    h = self.resblocks_3d_temporal(x, temb)
    h = self.resblocks_3d_spatial(h, temb)
    return x + self.shift_conv(h)


# ---------------------------------------------------------------------------- unet_video.py
def _up_block(self: Any, x: Tensor, skips: list[Tensor], temb: Tensor, context: Tensor,
              upsample_size: tuple[int, int, int] | None) -> Tensor:
    for i, resnet in enumerate(self.resnets):
        x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
        if self.attentions is not None:
            x = self.attentions[i](x, context)
    if self.upsamplers is not None:
        x = self.upsamplers[0](x, upsample_size)
    return x


def _unet_forward(self: Any, sample: Tensor, timestep: Tensor | int | float, low_res: Tensor,
                  encoder_hidden_states: Tensor | None = None, class_labels: Tensor | int | None = None,
                  return_dict: bool = True) -> Any:
    self._check_inputs(sample, low_res, encoder_hidden_states)
    x = torch.cat([sample, low_res], dim=1)
    b = x.shape[0]
    timesteps = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=x.device)
    if timesteps.ndim == 0:
        timesteps = timesteps[None]
    timesteps = timesteps.to(x.device).expand(b)
    emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
    labels = self._noise_level_labels(class_labels, x.device)[0]  # the library's check, shared
    emb = emb + self.class_embedding(labels).to(self.dtype)
    context = encoder_hidden_states
    h = self.conv_in(x)
    skips: list[Tensor] = [h]
    for block, temp in zip(self.down_blocks, self.down_temp_blocks):
        h, block_skips = block(h, emb, context)
        skips.extend(block_skips)
        h = temp(h, emb)
    h = self.mid_temp_block(self.mid_block(h, emb, context), emb)
    for block, temp in zip(self.up_blocks, self.up_temp_blocks):
        n = len(block.resnets)
        block_skips, skips = skips[-n:], skips[:-n]
        upsample_size = tuple(skips[-1].shape[2:]) if skips else None
        h = temp(block(h, block_skips, emb, context, upsample_size), emb)
    h = self.conv_out(F.silu(self.conv_norm_out(h)))
    if not return_dict:
        return (h,)
    return _unet.UNetVideoOutput(sample=h)


# ---------------------------------------------------------------------------- vae_video.py
def _vae_attention(self: Any, x: Tensor) -> Tensor:
    t = x.shape[2]
    frames = frames_to_batch(x)
    bt, c, h, w = frames.shape
    tokens = self.group_norm(frames).reshape(bt, c, h * w).transpose(1, 2)
    q, k, v = self.query(tokens), self.key(tokens), self.value(tokens)
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    out = self.proj_attn(out).transpose(1, 2).reshape(bt, c, h, w)
    return batch_to_frames(out + frames, t)


def _sft(self: Any, cond: Tensor, x: Tensor, w: float | Tensor = 1.0) -> Tensor:
    e = self.shared(torch.cat([cond, x], dim=1))
    return x + w * (x * self.scale(e) + self.shift(e))


def _decoder(self: Any, z: Tensor, img: Tensor | None = None, w_lr: float | Tensor = 1.0) -> Tensor:
    x = self.conv_in(z)
    if self.condition_img:
        x = self.condition_fuse(self.condition_in(img), x, w_lr)
    x = self.mid_block(x)
    for block in self.up_blocks:
        x = block(x)
    return self.conv_out(F.silu(self.conv_norm_out(x)))


def _encoder(self: Any, x: Tensor) -> Tensor:
    x = self.conv_in(x)
    for block in self.down_blocks:
        x = block(x)
    x = self.mid_block(x)
    return self.conv_out(F.silu(self.conv_norm_out(x)))


#: (class, attribute, published function)
_PUBLISHED: tuple[tuple[type, str, Any], ...] = (
    (_layers.InflatedConv3d, "forward", _inflated_conv),
    (_layers.Upsample3D, "forward", _upsample),
    (_layers.ResnetBlock3D, "forward", _resnet),
    (_layers.ResnetBlock3DPlus, "forward", _resnet_plus),
    (_layers.ResnetBlock3DCNN, "forward", _resnet),
    (_transformer.Attention, "forward", _attention),
    (_transformer.GEGLU, "forward", _geglu),
    (_transformer.FeedForward, "forward", _feed_forward),
    (_transformer.BasicTransformerBlock, "forward", _basic_block),
    (_transformer.Transformer3DModel, "forward", _transformer3d),
    (_temporal.RotaryEmbedding, "rotate", _rotate),
    (_temporal.TemporalAttention, "project", _project),
    (_temporal.TemporalAttention, "forward", _temporal_attention),
    (_temporal.TemporalModule3D, "forward", _temporal_module),
    (_unet.UpBlock3D, "forward", _up_block),
    (_unet.UNetVideoModel, "forward", _unet_forward),
    (_vae.AttentionBlock, "forward", _vae_attention),
    (_vae.SFTFusion, "forward", _sft),
    (_vae.Decoder, "forward", _decoder),
    (_vae.Encoder, "forward", _encoder),
)


@contextlib.contextmanager
def published_modules() -> Iterator[None]:
    """Run every U-Net and VAE module with its published forward while the block runs.

    The parameters and module tree are the same (the checkpoint's names); only the
    order and shape of the glue operations differ. Restored on exit, even on error.
    """
    saved = [(cls, name, cls.__dict__.get(name, _MISSING)) for cls, name, _ in _PUBLISHED]
    try:
        for cls, name, fn in _PUBLISHED:
            setattr(cls, name, fn)
        yield
    finally:
        for cls, name, old in saved:
            if old is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, old)


_MISSING = object()
