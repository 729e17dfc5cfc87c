"""Stage 2 (paper §3.3): fine-tune the video VAE decoder's temporal and SFT parts.

Trained: the decoder's 3-D residuals (``norm_3d``/``conv_3d`` of every
``ResnetBlock3DPlus``) and the whole low-res conditioning branch (``condition_in``,
``condition_fuse``: the SFT layer). The encoder, the quantisation convolutions and every
other decoder weight are frozen. When the starting point has no ``vae_video``, one is
inflated from ``vae_3d`` (:func:`~uav.train.starting_point.inflate_video_vae`).

The decoder decodes a posterior sample of the HQ window's latent with the degraded
low-res clip as its condition (as at inference, where the clip is the input video) and
is scored against the HQ window::

    loss = L1(out, hq) + perceptual_weight * perceptual(out, hq)

``perceptual`` is LPIPS (VGG) when the ``lpips`` package and its weights are available;
otherwise :func:`structure_loss`, a weight-free stand-in: ``1 - SSIM`` plus the L1 of
image gradients, at three scales. No adversarial term (it would need a discriminator
and its own tests).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from uav.models import AutoencoderKLVideo
from uav.train.config import TrainConfig
from uav.train.stage import TrainingStage
from uav.train.starting_point import StartingPoint, inflate_video_vae

Tensor = torch.Tensor
log = logging.getLogger("uav.train")


def is_decoder_temporal_or_sft(name: str) -> bool:
    """Whether a VAE parameter is one stage 2 trains (decoder 3-D residuals or the SFT branch)."""
    if not name.startswith("decoder."):
        return False
    return name.startswith(("decoder.condition_in.", "decoder.condition_fuse.")) or ".norm_3d." in name \
        or ".conv_3d." in name


class DecoderForTraining(nn.Module):
    """``forward(z, img) = vae.decode(z, img).sample``: the call accelerate's DDP wrapper sees."""

    def __init__(self, vae: AutoencoderKLVideo) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: Tensor, img: Tensor) -> Tensor:
        return self.vae.decode(z, img).sample


def _ssim(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """Mean SSIM of image batches in [0, 1] with a uniform window (differentiable)."""
    c1, c2 = 0.01**2, 0.03**2
    pad = window // 2

    def pool(x: Tensor) -> Tensor:
        return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), window, stride=1)

    mu_a, mu_b = pool(a), pool(b)
    var_a = pool(a * a) - mu_a**2
    var_b = pool(b * b) - mu_b**2
    cov = pool(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def structure_loss(output: Tensor, target: Tensor, scales: int = 3) -> Tensor:
    """The weight-free perceptual stand-in: ``(1 - SSIM) + L1(gradients)`` averaged over ``scales``
    dyadic scales, on frames ``(B, 3, T, H, W)`` in [-1, 1]."""
    a = (output.float().transpose(1, 2).flatten(0, 1) + 1) / 2
    b = (target.float().transpose(1, 2).flatten(0, 1) + 1) / 2
    total = output.new_zeros((), dtype=torch.float32)
    used = 0
    for _ in range(scales):
        if min(a.shape[-2:]) < 8:
            break
        grad = (F.l1_loss(a.diff(dim=-1), b.diff(dim=-1)) + F.l1_loss(a.diff(dim=-2), b.diff(dim=-2)))
        total = total + (1 - _ssim(a, b)) + grad
        used += 1
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return total / max(used, 1)


class PerceptualLoss(nn.Module):
    """LPIPS (VGG) when available, else :func:`structure_loss`; :attr:`kind` says which."""

    def __init__(self, use_lpips: bool = True) -> None:
        super().__init__()
        self.lpips: nn.Module | None = None
        self.kind = "structure"
        if use_lpips:
            try:
                import lpips  # optional: pip install lpips (downloads VGG weights once)

                self.lpips = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False)
                self.kind = "lpips"
            except Exception as exc:  # not installed or its weights unreachable: the documented fallback
                log.info("LPIPS unavailable (%s); using the structure loss", exc)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        if self.lpips is None:
            return structure_loss(output, target)
        a = output.float().transpose(1, 2).flatten(0, 1)
        b = target.float().transpose(1, 2).flatten(0, 1)
        return self.lpips(a, b).mean()


class VAEStage(TrainingStage):
    """Stage 2: the video decoder's temporal and SFT parts (see the module docstring)."""

    name = "vae"

    def __init__(self, start: StartingPoint, config: TrainConfig) -> None:
        super().__init__(start, config)
        video = start.vaes.get("video")
        self.inflated = video is None
        if video is None:
            video = inflate_video_vae(start.vaes["3d"])
        self.vae = video
        self.vae.train()
        self.trainer = DecoderForTraining(video)
        self.perceptual = PerceptualLoss()

    @property
    def module(self) -> nn.Module:
        return self.trainer

    def is_trainable(self, name: str) -> bool:
        return name.startswith("vae.") and is_decoder_temporal_or_sft(name[len("vae."):])

    def checkpoint_modules(self) -> Iterable[nn.Module]:
        d = self.vae.decoder
        return [*([d.condition_in, d.condition_fuse] if d.condition_img else []), d.mid_block, *d.up_blocks]

    def _frozen_models(self) -> list[nn.Module]:
        return [self.encoder_vae, self.perceptual]

    def loss(self, module: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> Tensor:
        hq = batch["hq"].to(self.device, torch.float32)
        lq = batch["lq"].to(self.device, torch.float32)
        z = self.sample_latents(batch, generator)
        out = module(z, lq)
        out = out.float()
        return F.l1_loss(out, hq) + self.config.perceptual_weight * self.perceptual(out, hq)

    def release_models(self, trained: nn.Module) -> tuple[Any, dict[str, Any]]:
        vaes = dict(self.start.vaes)
        vaes["video"] = trained.vae
        return self.start.unet, vaes
