"""Fine-tuning Upscale-A-Video on your own footage: the paper's two training stages.

* :func:`train_unet` (stage 1): the U-Net's temporal layers, v-prediction loss.
* :func:`train_vae` (stage 2): the video VAE decoder's temporal and SFT parts.

Both read a folder of HQ clips, degrade random windows on the fly, run under
``accelerate`` (one command for CPU, one GPU or DDP), write resumable checkpoints
and finish with a release folder that :meth:`uav.VideoUpscaler.from_pretrained` loads.
See ``docs/training.md``; the command line is ``uav train unet|vae``.
"""

from __future__ import annotations

from typing import Any

from uav.train.config import TrainConfig, TrainConfigError, load_degradation_config
from uav.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainConfigError", "TrainResult", "train", "train_unet", "train_vae",
           "load_degradation_config"]


def _config(config: TrainConfig | None, fields: dict[str, Any]) -> TrainConfig:
    if config is None:
        return TrainConfig(**fields)
    return config.replace(**fields) if fields else config


def train_unet(config: TrainConfig | None = None, **fields: Any) -> TrainResult:
    """Stage 1: train the U-Net's temporal layers. Pass a :class:`TrainConfig` and/or its fields
    (``data=``, ``output=``, ``init=`` are required)."""
    return train("unet", _config(config, fields))


def train_vae(config: TrainConfig | None = None, **fields: Any) -> TrainResult:
    """Stage 2: fine-tune the video VAE decoder's temporal and SFT parts (same arguments as :func:`train_unet`)."""
    return train("vae", _config(config, fields))
