"""The Stable Diffusion x4 upscaler: its scheduler configs and its image U-Net inflated to video.

Upscale-A-Video starts from ``stabilityai/stable-diffusion-x4-upscaler``: the release copies
its DDIM and DDPM scheduler configs (SPEC §5.1), which serve as defaults when a release
folder lacks ``scheduler/`` or ``low_res_scheduler/``, and :func:`load_image_unet` loads the
image-only U-Net into the video U-Net with new temporal layers that start as the identity.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from uav.models import UNetVideoModel
from uav.weights import checkpoint as ckpt
from uav.weights.files import ReleaseError, find_weights_file, load_state_dict_file

Tensor = torch.Tensor

#: the SD x4 upscaler scheduler configs (SPEC §5.1)
SD_X4_DDIM_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler", "beta_end": 0.02, "beta_schedule": "scaled_linear", "beta_start": 0.0001,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None,
}
SD_X4_DDPM_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "scaled_linear", "beta_start": 0.0001,
    "clip_sample": True, "num_train_timesteps": 1000, "prediction_type": "epsilon", "trained_betas": None,
    "variance_type": "fixed_small",
}


def read_config(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a :class:`ReleaseError` naming the file."""
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ReleaseError(f"config {path} holds a JSON {type(config).__name__}, expected an object")
    return config


def load_image_unet(source: str | os.PathLike[str] | Mapping[str, Tensor], config: Mapping[str, Any] | None = None,
                    **video_config: Any) -> UNetVideoModel:
    """Load the image-only SD x4 upscaler U-Net (diffusers layout) into a video U-Net.

    ``source`` is the model folder (``unet/`` of ``stabilityai/stable-diffusion-x4-upscaler``, holding
    ``config.json`` and ``diffusion_pytorch_model.{safetensors,bin}``), a hub id (when online), or a
    state dict together with its ``config``. The temporal layers are new and start as the identity,
    so a single-frame clip gives exactly the image model's output.
    """
    if isinstance(source, Mapping):
        if config is None:
            raise ValueError("config: the image U-Net's config dict is required with a state dict")
        state = dict(source)
    else:
        folder = Path(source)
        if not folder.exists():
            folder = _hub_snapshot(str(source), "unet")
        if (folder / "unet").is_dir():
            folder = folder / "unet"
        cfg_path = folder / "config.json"
        if config is None:
            config = read_config(cfg_path)
        weights = find_weights_file(folder, "diffusion_pytorch_model")
        if weights is None:
            raise ReleaseError(f"{folder}: no diffusion_pytorch_model.safetensors/.bin")
        state = load_state_dict_file(weights)
    video_cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    for key in ("attention_head_dim", "block_out_channels", "down_block_types", "up_block_types",
                "only_cross_attention"):
        if key in video_cfg and video_cfg[key] is not None and not isinstance(video_cfg[key], (int, bool)):
            video_cfg[key] = list(video_cfg[key])
    video_cfg["down_block_types"] = [t.replace("2D", "3D") for t in video_cfg["down_block_types"]]
    video_cfg["up_block_types"] = [t.replace("2D", "3D") for t in video_cfg["up_block_types"]]
    video_cfg.setdefault("down_temporal_idx", [0, 1, 2, 3])
    video_cfg.setdefault("mid_temporal", True)
    video_cfg.setdefault("up_temporal_idx", [0, 1, 2, 3])
    video_cfg.setdefault("temporal_module_config", {"attention_block_types": ["", ""]})
    video_cfg.update(video_config)
    if video_cfg.get("num_attention_heads") is not None:
        video_cfg["attention_head_dim"] = video_cfg["num_attention_heads"]
    accepted = set(inspect.signature(UNetVideoModel.__init__).parameters) - {"self"}
    model = UNetVideoModel.from_config({k: v for k, v in video_cfg.items() if k in accepted})
    ckpt.init_temporal_as_new(model)
    own = model.state_dict()
    spatial = {k for k in own if not ckpt.is_temporal_key(k) and not k.endswith(".rotary_emb.freqs")}
    missing = sorted(spatial - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ckpt.CheckpointKeyError(
            f"image U-Net does not fit the video U-Net's spatial part: {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}"
        )
    bad = [f"{k}: {tuple(own[k].shape)} vs {tuple(v.shape)}" for k, v in state.items() if own[k].shape != v.shape]
    if bad:
        raise ValueError("image U-Net shapes do not fit: " + "; ".join(bad[:5]))
    model.load_state_dict(state, strict=False)
    model.eval().requires_grad_(False)
    return model


def _hub_snapshot(repo_id: str, subfolder: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=[f"{subfolder}/*"]))
    except Exception as exc:
        raise ReleaseError(
            f"{repo_id!r} is neither a local folder nor reachable on the hub ({type(exc).__name__}: {exc}). "
            "Download it where you have network access and pass the folder."
        ) from exc
