"""Video building blocks shared by the U-Net and the VAE (SPEC §2.3, §3).

Every video tensor here is ``(B, C, T, H, W)``. "Inflated" layers are 2-D layers
applied frame by frame; GroupNorm is applied to the 5-D tensor on purpose, so its
statistics span the whole clip, as the published code does (SPEC §2.3, surprise 4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


#: whether inference (autograd off) reuses memory in the residual blocks; see :func:`published_structure`
_LEAN = [True]


@contextlib.contextmanager
def published_structure() -> Iterator[None]:
    """Run the residual blocks out of place, as published (same numbers, one more tensor alive):
    the structure the memory model's GPU calibration was measured with."""
    _LEAN[0] = False
    try:
        yield
    finally:
        _LEAN[0] = True


def _lean() -> bool:
    return _LEAN[0] and not torch.is_grad_enabled()


def _residual(x: Tensor, h: Tensor, lean: bool) -> Tensor:
    """``x + h``, into ``h``'s memory when that keeps the published sum's layout (the next
    GroupNorm's reduction order follows the layout)."""
    return h.add_(x) if lean and h.stride() == x.stride() else x + h


def frames_to_batch(x: Tensor) -> Tensor:
    """``(B, C, T, H, W)`` -> ``(B*T, C, H, W)``."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def batch_to_frames(x: Tensor, t: int) -> Tensor:
    """``(B*T, C, H, W)`` -> ``(B, C, T, H, W)``."""
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


class InflatedConv3d(nn.Conv2d):
    """A 2-D convolution applied to every frame of a video (4-D weight in checkpoints)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        t = x.shape[2]
        return batch_to_frames(super().forward(frames_to_batch(x)), t)


class Upsample3D(nn.Module):
    """Nearest x2 in height and width (or to an exact size), then a 3x3 per-frame conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, output_size: tuple[int, int, int] | None = None) -> Tensor:
        # nearest is a pure copy, so no upcast is needed for bf16 (the published code upcasts,
        # with identical results and a full fp32 temporary)
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

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        # without autograd, activations and the residual sum reuse their input's memory and
        # each intermediate is dropped as soon as the next exists (the same numbers; the
        # decoder's peak is in these blocks at full resolution)
        lean = _lean()
        h = self.conv1(F.silu(self.norm1(x), inplace=lean))
        if temb is not None and self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.norm2(h)
        h = self.conv2(F.silu(h, inplace=lean))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return _residual(x, h, lean)


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
        lean = _lean()
        h = self.conv_3d(F.silu(self.norm_3d(x), inplace=lean))
        return _residual(x, h, lean)


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

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if temb is not None and self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h
