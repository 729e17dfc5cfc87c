"""``AutoencoderKLVideo``: the x4 VAE with the video (SFT-conditioned) decoder (paper §3.2, SPEC §3).

One class serves both released variants:

* ``vae_3d`` (``up_block_types = UpDecoderBlock3D``): the SD x4 VAE run frame-wise
  (frames still share GroupNorm statistics), no low-res conditioning;
* ``vae_video`` (``UpDecoderBlock3D_plus`` + ``condition_img``): every decoder resnet
  gains a 3x3x3 temporal residual and the low-res clip enters once, right after
  ``conv_in``, through an SFT layer scaled by ``w_lr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from uav.models.layers import (
    Downsample3D,
    InflatedConv3d,
    ResnetBlock3D,
    ResnetBlock3DPlus,
    Upsample3D,
    add_as,
    batch_to_frames,
    cat_channels,
    check_video,
    frames_to_batch,
    group_norm,
    to_layout,
)

Tensor = torch.Tensor


@dataclass
class EncoderOutput(BaseOutput):
    """``latent_dist``: the posterior (``.mean``, ``.logvar``, ``.std``, ``.mode()``, ``.sample()``)."""

    latent_dist: DiagonalGaussianDistribution


@dataclass
class DecoderOutput(BaseOutput):
    """``sample``: the decoded video ``(B, 3, T, 4h, 4w)``, not clamped."""

    sample: Tensor


class AttentionBlock(nn.Module):
    """Single-head self-attention over each frame's pixels, with the legacy diffusers names."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.proj_attn = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[2]
        # per-frame GroupNorm written as NHWC frames: the tokens below are a view of it
        frames = frames_to_batch(group_norm(x, self.group_norm, layout="channels_last", per_frame=True))
        bt, c, h, w = frames.shape
        tokens = frames.reshape(bt, c, h * w).transpose(1, 2)
        q, k, v = self.query(tokens), self.key(tokens), self.value(tokens)
        del tokens
        out = chunked_attention(q, k, v)
        del q, k, v
        out = self.proj_attn(out).transpose(1, 2).reshape(bt, c, h, w)
        return add_as(x, batch_to_frames(out, t), x)


#: score elements one attention chunk may hold (256 MiB of fp32) where no fused kernel runs
ATTENTION_SCORES = 2**26


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, *, max_scores: int = ATTENTION_SCORES) -> Tensor:
    """Single-head attention ``softmax(q kᵀ / √d) v`` over ``(N, L, d)`` tensors, its queries in
    chunks of at most ``max_scores / (N·L)`` rows.

    The decoder's heads are 512 wide, more than flash kernels take, so where no
    memory-efficient kernel runs (the math fallback: fp32 on some GPUs, MPS, older torch)
    the scores of a whole frame — ``(h·w)²`` floats, 18 GB for one 192x352 frame in fp32 —
    would be materialised. Each query row's softmax is its own, so chunking the rows
    changes nothing but the peak.
    """
    n, length = q.shape[0], k.shape[-2]
    rows = max(1, max_scores // max(1, n * length))
    if rows >= q.shape[-2]:
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    for start in range(0, q.shape[-2], rows):
        out[:, start:start + rows] = F.scaled_dot_product_attention(
            q[:, None, start:start + rows], k[:, None], v[:, None])[:, 0]
    return out


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, plus: bool) -> None:
        super().__init__()
        resnet = ResnetBlock3DPlus if plus else ResnetBlock3D
        self.attentions = nn.ModuleList([AttentionBlock(channels, groups)])
        self.resnets = nn.ModuleList(resnet(channels, channels, groups=groups) for _ in range(2))

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class _ResnetStack(nn.Module):
    """Residual blocks, then the block's resampler if it has one (``downsamplers`` / ``upsamplers``,
    the checkpoint's names)."""

    resampler = "downsamplers"

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        samplers = getattr(self, self.resampler)
        return x if samplers is None else samplers[0](x)


class DownEncoderBlock3D(_ResnetStack):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups=groups)
            for i in range(num_layers)
        )
        self.downsamplers = nn.ModuleList([Downsample3D(out_channels, padding=0)]) if add_downsample else None


class UpDecoderBlock3D(_ResnetStack):
    resampler = "upsamplers"

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_upsample: bool, plus: bool
    ) -> None:
        super().__init__()
        resnet = ResnetBlock3DPlus if plus else ResnetBlock3D
        self.resnets = nn.ModuleList(
            resnet(in_channels if i == 0 else out_channels, out_channels, groups=groups) for i in range(num_layers)
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None


class Encoder(nn.Module):
    def __init__(self, in_channels: int, latent_channels: int, channels: Sequence[int], layers: int, groups: int) -> None:
        super().__init__()
        self.conv_in = InflatedConv3d(in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock3D(in_ch, out_ch, layers, groups, i < len(channels) - 1)
            for i, (in_ch, out_ch) in enumerate(zip([channels[0], *channels], channels)))
        self.mid_block = MidBlock(channels[-1], groups, plus=False)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = InflatedConv3d(channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(group_norm(x, self.conv_norm_out, silu=True))


class SFTFusion(nn.Module):
    """Spatial feature transform of decoder features by the low-res clip's features (published
    ``Fuse_sft_block``): ``s + w * (s * scale(e) + shift(e))`` with ``e = shared([c, s])``."""

    def __init__(self, cond_channels: int, channels: int) -> None:
        super().__init__()
        # GroupNorm(32) here whatever the config says, as published
        self.shared = nn.Sequential(
            ResnetBlock3D(cond_channels + channels, channels, groups=32),
            ResnetBlock3D(channels, channels, groups=32),
        )
        self.scale = InflatedConv3d(channels, channels, 3, padding=1)
        self.shift = InflatedConv3d(channels, channels, 3, padding=1)

    def forward(self, cond: Tensor, x: Tensor, w: float | Tensor = 1.0) -> Tensor:
        e = self.shared(cat_channels([cond, x]))
        mod = torch.addcmul(self.shift(e), x, self.scale(e))  # x * scale(e) + shift(e) in one pass
        return torch.add(x, mod, alpha=w) if isinstance(w, (int, float)) else x + w * mod


class Decoder(nn.Module):
    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
        channels: Sequence[int],
        layers: int,
        groups: int,
        plus: bool,
        condition_img: bool,
        condition_channels: int,
    ) -> None:
        super().__init__()
        self.condition_img = condition_img
        self.conv_in = InflatedConv3d(latent_channels, channels[-1], 3, padding=1)
        if condition_img:
            self.condition_in = nn.Sequential(
                ResnetBlock3DPlus(3, condition_channels, groups=3, groups_out=32),
                ResnetBlock3DPlus(condition_channels, condition_channels, groups=32),
            )
            self.condition_fuse = SFTFusion(condition_channels, channels[-1])
        self.mid_block = MidBlock(channels[-1], groups, plus=plus)
        rev = list(reversed(channels))
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock3D(in_ch, out_ch, layers + 1, groups, i < len(rev) - 1, plus)
            for i, (in_ch, out_ch) in enumerate(zip([rev[0], *rev], rev)))
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=1e-6)
        self.conv_out = InflatedConv3d(channels[0], out_channels, 3, padding=1)

    def forward(self, z: Tensor, img: Tensor | None = None, w_lr: float | Tensor = 1.0) -> Tensor:
        # per-frame NCHW batches from here on (the inputs are small: 4 and 3 channels)
        x = self.conv_in(to_layout(z, "frames"))
        if self.condition_img:
            x = self.condition_fuse(self.condition_in(to_layout(img, "frames")), x, w_lr)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(group_norm(x, self.conv_norm_out, silu=True))


class AutoencoderKLVideo(ModelMixin, ConfigMixin):
    """The Upscale-A-Video VAE (both released decoders; see the module docstring).

    ``encode(x)`` returns ``.latent_dist`` (``mean``, ``logvar``…); ``decode(z, img, w_lr)``
    returns ``.sample``. ``z`` is the raw latent (the pipeline divides by
    ``scaling_factor`` before calling), ``img`` the clean low-res clip at latent
    resolution in [-1, 1] (used by the ``vae_video`` decoder only).
    """

    config_name = "vae_video_config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: Sequence[str] = ("DownEncoderBlock3D",) * 3,
        up_block_types: Sequence[str] = ("UpDecoderBlock3D_plus",) * 3,
        block_out_channels: Sequence[int] = (128, 256, 512),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 256,
        scaling_factor: float = 0.08333,
        condition_img: bool = False,
        condition_channels: int = 128,
        use_temporal_block: bool = False,  # accepted for config compatibility; no effect (SPEC §3, item 7)
    ) -> None:
        super().__init__()
        if set(down_block_types) != {"DownEncoderBlock3D"}:
            raise ValueError(f"down_block_types must all be 'DownEncoderBlock3D', got {list(down_block_types)}")
        kinds = set(up_block_types)
        if kinds not in ({"UpDecoderBlock3D"}, {"UpDecoderBlock3D_plus"}):
            raise ValueError(
                "up_block_types must all be 'UpDecoderBlock3D' (vae_3d) or all 'UpDecoderBlock3D_plus' (vae_video), "
                f"got {list(up_block_types)}"
            )
        if act_fn != "silu":
            raise ValueError(f"act_fn must be 'silu', got {act_fn!r}")
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")
        plus = kinds == {"UpDecoderBlock3D_plus"}
        self.encoder = Encoder(in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups)
        self.quant_conv = InflatedConv3d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = InflatedConv3d(latent_channels, latent_channels, 1)
        self.decoder = Decoder(latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups,
                               plus, condition_img, condition_channels)

    @property
    def is_conditioned(self) -> bool:
        """Whether the decoder uses the low-res clip (the ``vae_video`` variant)."""
        return bool(self.config.condition_img)

    @property
    def upscale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode(self, x: Tensor, return_dict: bool = True) -> EncoderOutput | tuple[DiagonalGaussianDistribution]:
        check_video("x", x, self.config.in_channels)
        posterior = DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))
        return EncoderOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(
        self, z: Tensor, img: Tensor | None = None, w_lr: float | Tensor = 1.0, return_dict: bool = True
    ) -> DecoderOutput | tuple[Tensor]:
        check_video("z", z, self.config.latent_channels)
        if self.is_conditioned:
            if img is None:
                raise ValueError("img: the vae_video decoder needs the low-res clip (B, 3, T, h, w) at latent size")
            check_video("img", img, 3)
            if img.shape[0] != z.shape[0] or img.shape[2:] != z.shape[2:]:
                raise ValueError(
                    f"img must match z in batch, frames and size: got img {tuple(img.shape)}, z {tuple(z.shape)}"
                )
            img = img.to(z.dtype)
        out = self.decoder(self.post_quant_conv(z), img, w_lr)
        return DecoderOutput(sample=out) if return_dict else (out,)

    def forward(self, x: Tensor, img: Tensor | None = None, w_lr: float = 1.0, sample_posterior: bool = False,
                generator: torch.Generator | None = None) -> DecoderOutput:
        post = self.encode(x).latent_dist
        z = post.sample(generator=generator) if sample_posterior else post.mode()
        return self.decode(z, img, w_lr)
