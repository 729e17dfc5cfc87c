"""The Upscale-A-Video networks: the video U-Net and the video VAE."""

from uav.models.unet_video import UNetVideoModel, UNetVideoOutput
from uav.models.vae_video import AutoencoderKLVideo, DecoderOutput, EncoderOutput

__all__ = ["UNetVideoModel", "UNetVideoOutput", "AutoencoderKLVideo", "DecoderOutput", "EncoderOutput"]
