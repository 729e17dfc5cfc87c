"""The Upscale-A-Video weights: the release folder and everything that reads or writes it.

* :mod:`uav.weights.release` — find a release folder, say what it holds, load its networks
  strictly (U-Net, both VAEs, schedulers, CLIP text encoder);
* :mod:`uav.weights.files` — weights files: read without running code, refuse non-float or
  non-finite tensors, write atomically;
* :mod:`uav.weights.checkpoint` — official checkpoint keys <-> our modules, strict loading;
* :mod:`uav.weights.convert` — write release folders, convert pickles to safetensors;
* :mod:`uav.weights.sd_x4` — the SD x4 upscaler's scheduler configs and its image U-Net
  inflated to video;
* :mod:`uav.weights.tiny` — the tiny random release of the tests and the self-check.

Everything public is importable from ``uav.weights`` directly.
"""

from uav.weights.checkpoint import CheckpointKeyError, load_official_state_dict
from uav.weights.convert import Conversion, convert_release, convert_to_safetensors, save_release
from uav.weights.files import ReleaseError, check_tensors, load_state_dict_file, save_state_dict
from uav.weights.release import (
    SELF_CHECK_NOTICE,
    TINY_RANDOM_MARKER,
    WEIGHTS_ENV,
    ReleaseFolder,
    default_weights_dirs,
    describe_folder,
    find_release,
    is_tiny_random,
    load_schedulers,
    load_text_encoder,
    load_unet,
    load_vae,
    locate_weights,
    self_check_announced,
)
from uav.weights.sd_x4 import SD_X4_DDIM_CONFIG, SD_X4_DDPM_CONFIG, load_image_unet
from uav.weights.tiny import SelfCheckClip, make_tiny_release, moving_pattern, self_check_clip, tiny_unet, tiny_vae

__all__ = [
    "CheckpointKeyError", "Conversion", "ReleaseError", "ReleaseFolder", "SD_X4_DDIM_CONFIG", "SD_X4_DDPM_CONFIG",
    "SELF_CHECK_NOTICE", "TINY_RANDOM_MARKER", "WEIGHTS_ENV", "check_tensors", "convert_release",
    "convert_to_safetensors", "default_weights_dirs", "describe_folder", "find_release", "is_tiny_random",
    "load_image_unet", "load_official_state_dict", "load_schedulers", "load_state_dict_file", "load_text_encoder",
    "load_unet", "load_vae", "locate_weights", "make_tiny_release", "moving_pattern", "save_release",
    "save_state_dict", "self_check_announced", "SelfCheckClip", "self_check_clip", "tiny_unet", "tiny_vae",
]
