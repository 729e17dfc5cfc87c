"""The Upscale-A-Video networks: the video U-Net and the video VAE.

The networks load lazily (``from uav.models import UNetVideoModel`` imports torch), so
that :data:`MAX_NOISE_LEVEL` can be read without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uav.protocols import lazy_attributes

#: the U-Net refuses noise levels above this: its class embedding covers ``0..max_noise_level``
#: (``max_noise_level`` of the release's ``unet/config.json``)
MAX_NOISE_LEVEL = 350

_LAZY = {
    "UNetVideoModel": "uav.models.unet_video",
    "UNetVideoOutput": "uav.models.unet_video",
    "AutoencoderKLVideo": "uav.models.vae_video",
    "DecoderOutput": "uav.models.vae_video",
    "EncoderOutput": "uav.models.vae_video",
}

__all__ = ["MAX_NOISE_LEVEL", "UNetVideoModel", "UNetVideoOutput", "AutoencoderKLVideo", "DecoderOutput",
           "EncoderOutput"]

if TYPE_CHECKING:  # pragma: no cover
    from uav.models.unet_video import UNetVideoModel, UNetVideoOutput
    from uav.models.vae_video import AutoencoderKLVideo, DecoderOutput, EncoderOutput


__getattr__ = lazy_attributes(__name__, _LAZY)
