"""What both fine-tuning stages share: the trained-parameter split, the frozen VAE encoder,
the latent cache and the per-step random draws.

A stage names the module the optimizer sees (:attr:`TrainingStage.module`, the one
accelerate wraps), which of its parameters train, and the loss of one batch. Every
random number of a loss comes from the ``generator`` the loop passes in, seeded by
(run seed, step, micro-step, rank), so a step's loss is reproducible after a resume.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from uav.train.config import TrainConfig
from uav.train.starting_point import StartingPoint

Tensor = torch.Tensor


class TrainingStage(ABC):
    """Base of :class:`~uav.train.unet_stage.UNetStage` and :class:`~uav.train.vae_stage.VAEStage`."""

    #: ``"unet"`` or ``"vae"``; recorded in checkpoints so a run cannot resume the other stage
    name: str = ""

    def __init__(self, start: StartingPoint, config: TrainConfig) -> None:
        self.start = start
        self.config = config
        self.device = torch.device("cpu")
        self.encoder_vae = start.latent_vae()
        self.encoder_vae.eval().requires_grad_(False)
        self._cache_dir = (config.output / "latent_cache") if config.cache_latents else None

    # ------------------------------------------------------------------ to override
    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The module accelerate prepares; its trainable parameters are :meth:`trainable_parameters`."""

    @abstractmethod
    def is_trainable(self, name: str) -> bool:
        """Whether parameter ``name`` of :attr:`module` trains."""

    @abstractmethod
    def checkpoint_modules(self) -> Iterable[nn.Module]:
        """The blocks whose activations gradient checkpointing recomputes."""

    @abstractmethod
    def loss(self, module: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> Tensor:
        """The scalar loss of one batch (``module`` is :attr:`module`, possibly wrapped)."""

    @abstractmethod
    def release_models(self, trained: nn.Module) -> tuple[Any, dict[str, Any]]:
        """``(unet, {variant: vae})`` to write as the release, given the unwrapped trained module."""

    # ------------------------------------------------------------------ shared
    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Mark only the trained parameters as requiring gradients; return them by name."""
        out = []
        for name, p in self.module.named_parameters():
            train = self.is_trainable(name)
            p.requires_grad_(train)
            if train:
                out.append((name, p))
        if not out:
            raise ValueError(f"{self.name} stage: the starting model has no trainable parameters")
        return out

    def to(self, device: torch.device) -> None:
        """Move every network the stage uses (trained or frozen) to ``device``."""
        self.device = device
        for model in self._frozen_models():
            model.to(device)

    def _frozen_models(self) -> list[nn.Module]:
        return [self.encoder_vae]

    @torch.no_grad()
    def posterior(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of the frozen encoder's posterior of ``batch["hq"]`` (cached on disk when asked)."""
        means, stds = [], []
        for i, key in enumerate(batch["key"]):
            cached = self._cache_read(key)
            if cached is None:
                hq = batch["hq"][i:i + 1].to(self.device, torch.float32)
                dist = self.encoder_vae.encode(hq).latent_dist
                cached = (dist.mean.float().cpu(), dist.std.float().cpu())
                self._cache_write(key, cached)
            means.append(cached[0])
            stds.append(cached[1])
        return torch.cat(means).to(self.device), torch.cat(stds).to(self.device)

    def sample_latents(self, batch: dict[str, Any], generator: torch.Generator) -> Tensor:
        """A posterior sample of the HQ latents (raw, not multiplied by the scaling factor)."""
        mean, std = self.posterior(batch)
        return mean + std * torch.randn(mean.shape, generator=generator).to(self.device)

    def _cache_path(self, key: str) -> Path | None:
        if self._cache_dir is None:
            return None
        digest = hashlib.sha1(f"{self.start.source}|{key}".encode()).hexdigest()
        return self._cache_dir / f"{digest}.safetensors"

    def _cache_read(self, key: str) -> tuple[Tensor, Tensor] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
            return t["mean"], t["std"]
        except Exception:  # a torn cache file (killed mid-write): recompute and rewrite it
            return None

    def _cache_write(self, key: str, value: tuple[Tensor, Tensor]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        import os
        import tempfile

        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        save_file({"mean": value[0].contiguous(), "std": value[1].contiguous()}, tmp)
        os.replace(tmp, path)


def enable_gradient_checkpointing(modules: Iterable[nn.Module]) -> int:
    """Recompute each module's activations in the backward pass instead of storing them.

    The models do not implement diffusers' checkpointing hooks, so the modules' ``forward``
    is wrapped (non-reentrant :func:`torch.utils.checkpoint.checkpoint`, which supports
    keyword arguments and frozen inputs). Returns the number of wrapped modules.
    """
    from torch.utils.checkpoint import checkpoint

    count = 0
    for module in modules:
        original = module.forward

        def run(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            # the U-Net's up blocks pop their skip list; the recomputation needs it whole again
            return _original(*[list(a) if isinstance(a, list) else a for a in args], **kwargs)

        def forward(*args: Any, _original: Any = original, _run: Any = run, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                return checkpoint(_run, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        module.forward = forward  # type: ignore[method-assign]
        count += 1
    return count
