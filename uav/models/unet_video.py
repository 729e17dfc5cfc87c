"""``UNetVideoModel``: the SD x4 upscaler U-Net inflated to video (paper §3.2, SPEC §2).

Module and parameter names follow the released checkpoint (``unet/unet_video.bin``), so
``load_state_dict(official_state_dict, strict=True)`` works unchanged; the only keys
that need mapping are the 17 aliases of the shared RoPE table (see
:func:`uav.models.temporal.install_rope_alias_hooks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from uav.models.batching import active as saving_memory, per_item
from uav.models.layers import (LAYOUTS, Downsample3D, InflatedConv3d, ResnetBlock3D, Upsample3D, cat_channels,
                               check_video, group_norm)
from uav.models.temporal import ROPE_DIM, RotaryEmbedding, TemporalModule3D, install_rope_alias_hooks
from uav.models.transformer import CrossAttentionSpec, transformer_stack
from uav.models import MAX_NOISE_LEVEL

Tensor = torch.Tensor


@dataclass
class UNetVideoOutput(BaseOutput):
    """``sample``: the network output (v-prediction), ``(B, 4, T, H, W)``; ``deep_feature``: with
    ``keep_deep_feature``, the input of the last up block's last resnet (what step caching reuses)."""

    sample: Tensor
    deep_feature: Tensor | None = None


class _Block(nn.Module):
    """A down / up / mid block: resnets, optional transformers, optional resampler."""

    resnets: nn.ModuleList
    attentions: nn.ModuleList | None


class DownBlock3D(_Block):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        temb_channels: int,
        num_layers: int,
        groups: int,
        eps: float,
        add_downsample: bool,
        attention: CrossAttentionSpec | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, temb_channels=temb_channels,
                          groups=groups, eps=eps)
            for i in range(num_layers)
        )
        self.attentions = transformer_stack(out_channels, num_layers, groups, attention)
        self.downsamplers = nn.ModuleList([Downsample3D(out_channels, padding=1)]) if add_downsample else None

    def forward(self, x: Tensor, temb: Tensor, context: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context, inplace=True)  # the resnet's fresh output
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock3D(_Block):
    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        *,
        temb_channels: int,
        num_layers: int,
        groups: int,
        eps: float,
        add_upsample: bool,
        attention: CrossAttentionSpec | None = None,
    ) -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channel if i == 0 else out_channels
            resnets.append(ResnetBlock3D(resnet_in + skip_channels, out_channels, temb_channels=temb_channels,
                                         groups=groups, eps=eps))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = transformer_stack(out_channels, num_layers, groups, attention)
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None

    def forward(
        self, x: Tensor, skips: list[Tensor], temb: Tensor, context: Tensor, upsample_size: tuple[int, int, int] | None,
        start: int = 0, keep: list[Tensor] | None = None,
    ) -> Tensor:
        """Run resnets ``start`` onwards (``skips`` holds theirs, last used first); ``keep`` receives
        the input of the last resnet.

        In eager inference the block runs one batch item at a time (:func:`~uav.models.batching.per_item`):
        its transients, at the finest level the largest of a call, are then one item's.
        """
        if keep is None and x.shape[0] > 1 and saving_memory():
            # this block's skips, taken from the list as the batched form takes them
            mine = [skips.pop() for _ in range(start, len(self.resnets))][::-1]

            def one(x_i: Tensor, *rest: Tensor) -> Tensor:
                *item_skips, context_i, temb_i = rest
                return self._resnets(x_i, list(item_skips), temb_i, context_i, start, None)

            x = per_item(one, [x, *mine, context], temb)
            del mine  # the skips go before the upsampler's full-size output comes
            if self.upsamplers is None:
                return x
            return per_item(lambda x_i, temb_i: self.upsamplers[0](x_i, upsample_size), [x], temb)
        x = self._resnets(x, skips, temb, context, start, keep)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x

    def _resnets(self, x: Tensor, skips: list[Tensor], temb: Tensor, context: Tensor, start: int,
                 keep: list[Tensor] | None) -> Tensor:
        for i in range(start, len(self.resnets)):
            if keep is not None and i == len(self.resnets) - 1:
                keep.append(x)
            # the resnet reads x and the skip as one concatenation that is never made; the
            # skip is released when it returns (the list held its last reference)
            x = self.resnets[i](x, temb, skip=skips.pop())
            if self.attentions is not None:
                x = self.attentions[i](x, context, inplace=True)  # the resnet's fresh output
        return x


class UNetMidBlock3DCrossAttn(_Block):
    def __init__(
        self, channels: int, *, temb_channels: int, groups: int, eps: float, attention: CrossAttentionSpec
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(channels, channels, temb_channels=temb_channels, groups=groups, eps=eps) for _ in range(2)
        )
        self.attentions = transformer_stack(channels, 1, groups, attention)

    def forward(self, x: Tensor, temb: Tensor, context: Tensor) -> Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context, inplace=True)
        return self.resnets[1](x, temb)


class _Identity(nn.Module):
    """Stands in for a temporal module at an index the config leaves out."""

    def forward(self, x: Tensor, temb: Tensor, inplace: bool = False) -> Tensor:
        return x


@dataclass(frozen=True)
class _PathSpec:
    """What every block of the U-Net's down and up paths shares."""

    temb: int
    groups: int
    eps: float
    layers: int
    cross_dim: int
    rotary: nn.Module
    temporal_types: tuple[str, ...]

    def attention(self, heads: int, cross_only: bool) -> CrossAttentionSpec:
        return CrossAttentionSpec(heads, self.cross_dim, cross_only, self.rotary)

    def temporal(self, channels: int, present: bool) -> nn.Module:
        return TemporalModule3D(channels, self.temb, self.temporal_types) if present else _Identity()

    def down_path(self, kinds: Sequence[str], channels: Sequence[int], heads: Sequence[int],
                  cross_only: Sequence[bool], temporal_idx: Sequence[int]) -> tuple[nn.ModuleList, nn.ModuleList]:
        blocks, temporal = nn.ModuleList(), nn.ModuleList()
        for i, (kind, in_ch, out_ch) in enumerate(zip(kinds, [channels[0], *channels], channels)):
            blocks.append(DownBlock3D(
                in_ch, out_ch, temb_channels=self.temb, num_layers=self.layers, groups=self.groups, eps=self.eps,
                add_downsample=i < len(channels) - 1,
                attention=self.attention(heads[i], cross_only[i]) if kind == "CrossAttnDownBlock3D" else None,
            ))
            temporal.append(self.temporal(out_ch, i in temporal_idx))
        return blocks, temporal

    def up_path(self, kinds: Sequence[str], channels: Sequence[int], heads: Sequence[int],
                cross_only: Sequence[bool], temporal_idx: Sequence[int]) -> tuple[nn.ModuleList, nn.ModuleList]:
        blocks, temporal = nn.ModuleList(), nn.ModuleList()
        rev_ch, rev_heads, rev_cross = list(reversed(channels)), list(reversed(heads)), list(reversed(cross_only))
        n_blocks = len(channels)
        for i, (kind, prev_ch, out_ch) in enumerate(zip(kinds, [rev_ch[0], *rev_ch], rev_ch)):
            in_ch = rev_ch[min(i + 1, n_blocks - 1)]
            blocks.append(UpBlock3D(
                in_ch, prev_ch, out_ch, temb_channels=self.temb, num_layers=self.layers + 1, groups=self.groups,
                eps=self.eps, add_upsample=i < n_blocks - 1,
                attention=self.attention(rev_heads[i], rev_cross[i]) if kind == "CrossAttnUpBlock3D" else None,
            ))
            temporal.append(self.temporal(out_ch, i in temporal_idx))
        return blocks, temporal


class UNetVideoModel(ModelMixin, ConfigMixin):
    """The Upscale-A-Video U-Net.

    ``forward(sample, timestep, low_res, encoder_hidden_states=..., class_labels=...)``
    takes the noisy latent ``(B, 4, T, h, w)`` and the noisy low-res clip
    ``(B, 3, T, h, w)`` (concatenated to 7 channels inside), a timestep (0-dim or
    ``(B,)``), text embeddings ``(B, L, cross_attention_dim)`` and the noise level as
    class label (``(B,)`` or ``(1,)``), and returns the v-prediction.
    """

    config_name = "unet_video_config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 7,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = ("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                                           "CrossAttnDownBlock3D"),
        up_block_types: Sequence[str] = ("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D",
                                         "UpBlock3D"),
        only_cross_attention: bool | Sequence[bool] = (True, True, True, False),
        block_out_channels: Sequence[int] = (256, 512, 512, 1024),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        attention_head_dim: int | Sequence[int] = 8,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = True,
        num_class_embeds: int | None = 1000,
        max_noise_level: int = MAX_NOISE_LEVEL,
        down_temporal_idx: Sequence[int] = (0, 1, 2),
        mid_temporal: bool = False,
        up_temporal_idx: Sequence[int] = (1, 2, 3),
        temporal_module_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        n_blocks = len(block_out_channels)
        _check_config(down_block_types, up_block_types, block_out_channels, act_fn, use_linear_projection,
                      dual_cross_attention, center_input_sample, downsample_padding, mid_block_scale_factor,
                      num_class_embeds)
        if isinstance(only_cross_attention, bool):
            only_cross_attention = [only_cross_attention] * n_blocks
        if isinstance(attention_head_dim, int):
            attention_head_dim = [attention_head_dim] * n_blocks
        attention_types = tuple((temporal_module_config or {}).get("attention_block_types", ("", "")))
        time_embed_dim = block_out_channels[0] * 4

        self.conv_in = InflatedConv3d(in_channels, block_out_channels[0], 3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
        self.class_embedding = nn.Embedding(num_class_embeds, time_embed_dim)
        self.temporal_rotary_emb = RotaryEmbedding(ROPE_DIM)
        spec = _PathSpec(time_embed_dim, norm_num_groups, norm_eps, layers_per_block, cross_attention_dim,
                         self.temporal_rotary_emb, attention_types)
        # built in this order (down, mid, up): a seeded random init stays the same
        self.down_blocks, self.down_temp_blocks = spec.down_path(down_block_types, block_out_channels,
                                                                 attention_head_dim, only_cross_attention,
                                                                 down_temporal_idx)
        self.mid_block = UNetMidBlock3DCrossAttn(
            block_out_channels[-1], temb_channels=time_embed_dim, groups=norm_num_groups, eps=norm_eps,
            attention=spec.attention(attention_head_dim[-1], False),
        )
        self.mid_temp_block = spec.temporal(block_out_channels[-1], bool(mid_temporal))
        self.up_blocks, self.up_temp_blocks = spec.up_path(up_block_types, block_out_channels, attention_head_dim,
                                                           only_cross_attention, up_temporal_idx)

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_out = InflatedConv3d(block_out_channels[0], out_channels, 3, padding=1)
        install_rope_alias_hooks(self)
        #: the memory order activations keep through the network (see :data:`uav.models.layers.LAYOUTS`)
        self.layout = "frames"

    def set_layout(self, layout: str) -> "UNetVideoModel":
        """Run the activations in ``layout``: ``"frames"`` (per-frame NCHW batches, the default, the
        published convolutions) or ``"channels_last"`` (NHWC frames; the per-frame convolution
        weights are stored to match). Same numbers; which is faster depends on the GPU."""
        if layout not in ("frames", "channels_last", "ncdhw"):
            raise ValueError(f"layout must be one of frames, channels_last, ncdhw; got {layout!r}")
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        for m in self.modules():
            if isinstance(m, InflatedConv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        self.layout = layout
        return self

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int | float,
        low_res: Tensor,
        encoder_hidden_states: Tensor | None = None,
        class_labels: Tensor | int | None = None,
        return_dict: bool = True,
        deep_feature: Tensor | None = None,
        keep_deep_feature: bool = False,
    ) -> UNetVideoOutput | tuple[Tensor, ...]:
        """The v-prediction; with ``deep_feature`` (a ``keep_deep_feature`` output of an earlier
        step, same batch), only the finest skip branch runs (DeepCache, arXiv 2312.00858): the
        input convolution, the last up block's last resnet on ``deep_feature`` and the input's
        features, the last temporal module and the output convolution."""
        self._check_inputs(sample, low_res, encoder_hidden_states)
        x = cat_channels([sample, low_res], self.layout if self.layout in LAYOUTS else None)
        emb = self._embedding(timestep, class_labels, x.shape[0], x.device)
        context = encoder_hidden_states
        h = self.conv_in(x)
        del x  # the 7-channel input is not read again
        kept: list[Tensor] = []
        if deep_feature is not None:
            last = self.up_blocks[-1]
            h = last(deep_feature, [h], emb, context, None, start=len(last.resnets) - 1)
            h = self.up_temp_blocks[-1](h, emb)
        else:
            h = self._full(h, emb, context, kept if keep_deep_feature else None)
        h = self.conv_out(group_norm(h, self.conv_norm_out, silu=True))
        feature = kept[0] if kept else None
        if not return_dict:
            return (h, feature) if keep_deep_feature else (h,)
        return UNetVideoOutput(sample=h, deep_feature=feature)

    def _full(self, h: Tensor, emb: Tensor, context: Tensor, keep: list[Tensor] | None) -> Tensor:
        skips: list[Tensor] = [h]
        for block, temp in zip(self.down_blocks, self.down_temp_blocks):
            h, block_skips = block(h, emb, context)
            skips.extend(block_skips)
            h = temp(h, emb)  # the skips keep the values from before the temporal module

        # each block's output is released as soon as the next block has made its own; a block's
        # fresh output (not a skip) is the temporal module's to write into
        h = self.mid_block(h, emb, context)
        h = self.mid_temp_block(h, emb, inplace=True)

        for i, (block, temp) in enumerate(zip(self.up_blocks, self.up_temp_blocks)):
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            # odd sizes: upsample to exactly the next skip's size instead of x2
            upsample_size = tuple(skips[-1].shape[2:]) if skips else None
            last = i == len(self.up_blocks) - 1
            h = block(h, block_skips, emb, context, upsample_size, keep=keep if last else None)
            h = temp(h, emb, inplace=True)
        return h

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, sample: Tensor, low_res: Tensor, context: Tensor | None) -> None:
        check_video("sample", sample, self.config.out_channels)
        check_video("low_res", low_res, self.config.in_channels - self.config.out_channels)
        if sample.shape[0] != low_res.shape[0] or sample.shape[2:] != low_res.shape[2:]:
            raise ValueError(
                "sample and low_res must share batch, frames and size: "
                f"got sample {tuple(sample.shape)} and low_res {tuple(low_res.shape)}"
            )
        if context is None:
            raise ValueError("encoder_hidden_states: the text embeddings are required (B, L, "
                             f"{self.config.cross_attention_dim})")
        if context.ndim != 3 or context.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(
                f"encoder_hidden_states: expected (B, L, {self.config.cross_attention_dim}), got {tuple(context.shape)}"
            )
        if context.shape[0] != sample.shape[0]:
            raise ValueError(
                f"encoder_hidden_states: batch {context.shape[0]} does not match sample batch {sample.shape[0]}"
            )

    def _embedding(self, timestep: Tensor | int | float, class_labels: Tensor | int | None, b: int,
                   device: torch.device) -> Tensor:
        """The time + noise-level embedding: one row when every batch item shares both (the
        blocks then fold it into their convolutions' bias), else ``b`` rows."""
        labels, uniform = self._noise_level_labels(class_labels, device)
        timesteps = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=device)
        rows = 1 if uniform and timesteps.numel() == 1 else b
        timesteps = timesteps.reshape(-1).to(device).expand(rows)
        labels = labels[:1] if rows == 1 else labels.expand(b)
        emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
        return emb + self.class_embedding(labels).to(self.dtype)

    def _noise_level_labels(self, class_labels: Tensor | int | None, device: torch.device) -> tuple[Tensor, bool]:
        """The labels on ``device`` and whether they are known to be one value (read on the host)."""
        if class_labels is None:
            raise ValueError("class_labels: the noise level is required (an int in [0, "
                             f"{self.config.max_noise_level}])")
        labels = class_labels if torch.is_tensor(class_labels) else torch.tensor([class_labels])
        # Labels given on the host are checked there, before they move: checking them on
        # the accelerator reads the values back, a device sync on every U-Net call (the
        # sampling loop hands them over on the host). Compiled graphs skip the check, and
        # so do fake tensors (the memory model), which carry no values.
        uniform = labels.numel() == 1
        if not torch.compiler.is_compiling() and not isinstance(labels, FakeTensor) and labels.device.type == "cpu":
            self._check_levels(labels)
            uniform = uniform or bool((labels == labels.reshape(-1)[0]).all())
        return labels.long().reshape(-1).to(device, non_blocking=True), uniform

    def _check_levels(self, labels: Tensor) -> None:
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise ValueError(f"class_labels: noise levels must be integers, got {labels.tolist()}")
        if labels.numel() and (labels.min() < 0 or labels.max() > self.config.max_noise_level):
            raise ValueError(
                f"class_labels: noise level must be in [0, {self.config.max_noise_level}], got {labels.tolist()}"
            )


def _check_config(down_types, up_types, channels, act_fn, linear_proj, dual, center, pad, mid_scale, n_class) -> None:
    known_down = {"DownBlock3D", "CrossAttnDownBlock3D"}
    known_up = {"UpBlock3D", "CrossAttnUpBlock3D"}
    problems = []
    if any(t not in known_down for t in down_types):
        problems.append(f"down_block_types must be from {sorted(known_down)}, got {list(down_types)}")
    if any(t not in known_up for t in up_types):
        problems.append(f"up_block_types must be from {sorted(known_up)}, got {list(up_types)}")
    if not (len(down_types) == len(up_types) == len(channels)):
        problems.append("down_block_types, up_block_types and block_out_channels must have the same length")
    if act_fn != "silu":
        problems.append(f"act_fn must be 'silu', got {act_fn!r}")
    if not linear_proj:
        problems.append("use_linear_projection must be true (the released model uses Linear projections)")
    if dual:
        problems.append("dual_cross_attention is not supported")
    if center:
        problems.append("center_input_sample is not supported")
    if pad != 1:
        problems.append(f"downsample_padding must be 1, got {pad}")
    if float(mid_scale) != 1.0:
        problems.append(f"mid_block_scale_factor must be 1, got {mid_scale}")
    if not n_class:
        problems.append("num_class_embeds must be set: the noise level is a class label")
    if any(c % 32 for c in channels):
        problems.append(f"block_out_channels must be multiples of 32 (hard-coded GroupNorm(32)), got {list(channels)}")
    if problems:
        raise ValueError("unsupported UNetVideoModel config: " + "; ".join(problems))

