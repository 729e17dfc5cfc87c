"""Fine-tuning Upscale-A-Video on your own footage: the paper's two training stages.

* :func:`train_unet` (stage 1): the U-Net's temporal layers, v-prediction loss.
* :func:`train_vae` (stage 2): the video VAE decoder's temporal and SFT parts.

Both read a folder of HQ clips, degrade random windows on the fly, run under
``accelerate`` (one command for CPU, one GPU or DDP), write resumable checkpoints
and finish with a release folder that :meth:`uav.VideoUpscaler.from_pretrained` loads.
See ``docs/training.md``; the command line is ``uav train unet|vae``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uav.protocols import lazy_attributes
from uav.train.config import TrainConfig, TrainConfigError, load_degradation_config

if TYPE_CHECKING:  # pragma: no cover
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
    from uav.train.loop import train

    return train("unet", _config(config, fields))


def train_vae(config: TrainConfig | None = None, **fields: Any) -> TrainResult:
    """Stage 2: fine-tune the video VAE decoder's temporal and SFT parts (same arguments as :func:`train_unet`)."""
    from uav.train.loop import train

    return train("vae", _config(config, fields))


#: the training loop imports torch: loaded on first use, so that the command line's
#: ``--help`` (which reads :class:`TrainConfig`) does not pay for it
__getattr__ = lazy_attributes(__name__, {"TrainResult": "uav.train.loop", "train": "uav.train.loop"})
