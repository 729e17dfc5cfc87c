"""Stage 1 (paper §3.3): train the U-Net's temporal layers, spatial layers frozen.

Trained: the 3-D residual modules after each block (``*_temp_blocks``), the temporal
residual block in front of each transformer (``resblock_temporal``) and the temporal
attention with its norm (``attn_temporal``, ``norm_temporal``) — exactly the keys the
image SD x4 upscaler lacks (:func:`uav.weights.checkpoint.is_temporal_key`). The RoPE table
is a constant buffer and never trains.

Loss: v-prediction MSE. For HQ latents ``z0`` (frozen VAE, times the scaling factor),
timestep ``t ~ U{0..999}`` and ``eps ~ N(0, I)``::

    x_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps          v = sqrt(a_t) eps - sqrt(1 - a_t) z0

and the U-Net sees ``x_t`` with the degraded low-res clip concatenated, itself noised at
a random level ``l ~ U{0..max_noise_level}`` with the low-res DDPM table (noise-level
augmentation, ``l`` is also the class label); captions are replaced by the empty prompt
with probability ``prompt_dropout`` so classifier-free guidance keeps working.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from uav.weights.checkpoint import ROPE_KEY, is_temporal_key
from uav.train.config import TrainConfig
from uav.train.stage import TrainingStage
from uav.train.starting_point import StartingPoint

Tensor = torch.Tensor


def is_temporal_parameter(name: str) -> bool:
    """Whether a U-Net parameter belongs to the temporal layers that stage 1 trains."""
    return is_temporal_key(name) and name != ROPE_KEY


class UNetStage(TrainingStage):
    """Stage 1: temporal layers of the U-Net (see the module docstring)."""

    name = "unet"

    def __init__(self, start: StartingPoint, config: TrainConfig) -> None:
        super().__init__(start, config)
        self.unet = start.unet
        self.unet.train()
        self.alphas = start.scheduler.alphas_cumprod.float()
        self.low_res_alphas = start.low_res_scheduler.alphas_cumprod.float()
        self.num_train_timesteps = int(start.scheduler.config.num_train_timesteps)
        self.scaling_factor = float(self.encoder_vae.config.scaling_factor)
        self._text_cache: dict[str, Tensor] = {}

    @property
    def module(self) -> nn.Module:
        return self.unet

    def is_trainable(self, name: str) -> bool:
        return is_temporal_parameter(name)

    def checkpoint_modules(self) -> Iterable[nn.Module]:
        u = self.unet
        return [*u.down_blocks, *u.down_temp_blocks, u.mid_block, u.mid_temp_block, *u.up_blocks, *u.up_temp_blocks]

    def _frozen_models(self) -> list[nn.Module]:
        return [self.encoder_vae, self.start.text_encoder]

    @torch.no_grad()
    def embed(self, captions: list[str]) -> Tensor:
        """CLIP ``last_hidden_state`` of each caption (max-length padding, as at inference), cached."""
        out = []
        for text in captions:
            if text not in self._text_cache:
                tok, enc = self.start.tokenizer, self.start.text_encoder
                ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                          return_tensors="pt").input_ids
                self._text_cache[text] = enc(ids.to(self.device))[0].float()
            out.append(self._text_cache[text])
        return torch.cat(out)

    def loss(self, module: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> Tensor:
        lq = batch["lq"].to(self.device, torch.float32)
        b = lq.shape[0]
        # draw order is part of reproducibility: latents, t, eps, level, lr noise, dropout
        z0 = self.sample_latents(batch, generator) * self.scaling_factor
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=generator)
        eps = torch.randn(z0.shape, generator=generator).to(self.device)
        levels = torch.randint(0, self.config.max_noise_level + 1, (b,), generator=generator)
        lr_noise = torch.randn(lq.shape, generator=generator).to(self.device)
        drop = torch.rand(b, generator=generator) < self.config.prompt_dropout
        captions = ["" if d else c for d, c in zip(drop.tolist(), batch["caption"])]

        a = self.alphas[t].to(self.device).view(b, 1, 1, 1, 1)
        x_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
        target = a.sqrt() * eps - (1 - a).sqrt() * z0
        al = self.low_res_alphas[levels].to(self.device).view(b, 1, 1, 1, 1)
        low_res = al.sqrt() * lq + (1 - al).sqrt() * lr_noise
        context = self.embed(captions)
        pred = module(x_t, t.to(self.device), low_res, encoder_hidden_states=context,
                      class_labels=levels.to(self.device)).sample
        return F.mse_loss(pred.float(), target.float())

    def release_models(self, trained: nn.Module) -> tuple[Any, dict[str, Any]]:
        return trained, dict(self.start.vaes)
