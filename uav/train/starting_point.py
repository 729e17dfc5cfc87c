"""Where a fine-tune starts (``--init``) and what it writes at the end (a release folder).

``--init`` is either

* a **release folder** in the official layout (``unet/``, ``vae/``, ``text_encoder/`` ...,
  e.g. the published weights or an earlier fine-tune), or
* the **image SD x4 upscaler** in the diffusers layout (``unet/config.json``,
  ``vae/config.json`` ...): its U-Net is inflated to video with new, identity temporal
  layers (:func:`uav.weights.load_image_unet`) and its VAE becomes ``vae_3d``.

A ``vae_video`` decoder that does not exist yet is *inflated* from ``vae_3d``
(:func:`inflate_video_vae`): every new part (3-D convolutions, SFT branch) starts as the
identity, so the inflated decoder decodes exactly like ``vae_3d`` before training.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from uav.models import AutoencoderKLVideo, UNetVideoModel
from uav.train.config import TrainConfigError

#: what a written release records about the run that produced it
PROVENANCE_FILE = "training.json"
_TINY_MARKER = "UAV_TINY_RANDOM_WEIGHTS"


@dataclass
class StartingPoint:
    """The networks, schedulers and text model a run starts from."""

    source: Path
    kind: str  # "release" or "sd-x4"
    unet: UNetVideoModel
    vaes: dict[str, AutoencoderKLVideo]
    scheduler: Any  # diffusers DDIMScheduler (v-prediction): the training noise table
    low_res_scheduler: Any  # diffusers DDPMScheduler: the low-res noise augmentation table
    tokenizer: Any
    text_encoder: Any
    #: folders/files copied verbatim into the written release (text model, RAFT weights)
    carry: dict[str, Path] = field(default_factory=dict)

    def latent_vae(self) -> AutoencoderKLVideo:
        """A VAE whose (shared, frozen) encoder turns HQ clips into latents."""
        return self.vaes.get("3d") or self.vaes["video"]


def load_starting_point(path: str | os.PathLike[str]) -> StartingPoint:
    """Load ``--init`` (see the module docstring). Raises :class:`TrainConfigError` when it is neither layout."""
    from uav import weights as release

    root = Path(path)
    rel = release.find_release(root)
    if rel.unet_weights is not None and rel.unet_config is not None:
        kind = "release"
        unet = release.load_unet(rel)
        vaes = {v: release.load_vae(rel, v) for v in ("3d", "video") if v in rel.vae_weights and v in rel.vae_configs}  # type: ignore[arg-type]
        if not vaes:
            raise TrainConfigError(f"init: {root} has no vae/vae_3d or vae/vae_video weights")
    elif (root / "unet" / "config.json").is_file():
        kind = "sd-x4"
        unet = release.load_image_unet(root)
        if not (root / "vae" / "config.json").is_file():
            raise TrainConfigError(f"init: {root} looks like the SD x4 upscaler but has no vae/config.json")
        vaes = {"3d": load_image_vae(root / "vae")}
    else:
        raise TrainConfigError(
            f"init: {root} is neither a release folder (unet/unet_video_config.json + weights) nor the image SD x4 "
            "upscaler (unet/config.json, diffusers layout)"
        )
    if rel.tokenizer is None or rel.text_encoder is None:
        raise TrainConfigError(f"init: {root} has no tokenizer/ and text_encoder/ (needed to encode the captions)")
    scheduler, low_res_scheduler = release.load_schedulers(rel)
    tokenizer, text_encoder = release.load_text_encoder(rel)
    carry = {"text_encoder": rel.text_encoder, "tokenizer": rel.tokenizer}
    if rel.raft_weights is not None:
        carry[f"propagator/{rel.raft_weights.name}"] = rel.raft_weights
    if (root / _TINY_MARKER).is_file():
        carry[_TINY_MARKER] = root / _TINY_MARKER
    return StartingPoint(root, kind, unet, vaes, scheduler, low_res_scheduler, tokenizer, text_encoder, carry)


def load_image_vae(folder: Path) -> AutoencoderKLVideo:
    """The SD x4 upscaler's image VAE (diffusers ``AutoencoderKL`` layout) as our ``vae_3d``."""
    from uav import weights as release
    from uav.weights import checkpoint as ckpt

    config = json.loads((folder / "config.json").read_text())
    ours = {
        "in_channels": config.get("in_channels", 3), "out_channels": config.get("out_channels", 3),
        "down_block_types": ["DownEncoderBlock3D"] * len(config["block_out_channels"]),
        "up_block_types": ["UpDecoderBlock3D"] * len(config["block_out_channels"]),
        "block_out_channels": list(config["block_out_channels"]), "layers_per_block": config.get("layers_per_block", 2),
        "latent_channels": config.get("latent_channels", 4), "norm_num_groups": config.get("norm_num_groups", 32),
        "scaling_factor": config.get("scaling_factor", 0.08333),
    }
    weights = next((folder / f"diffusion_pytorch_model{s}" for s in (".safetensors", ".bin")
                    if (folder / f"diffusion_pytorch_model{s}").is_file()), None)
    if weights is None:
        raise TrainConfigError(f"init: {folder} has no diffusion_pytorch_model.safetensors/.bin")
    model = AutoencoderKLVideo.from_config(ours)
    state = ckpt.legacy_vae_attention_names(release.load_state_dict_file(weights))
    ckpt.load_official_state_dict(model, state, source=str(weights))
    return model.eval().requires_grad_(False)


def is_video_decoder_new_key(key: str) -> bool:
    """Whether a ``vae_video`` key is one of the parts ``vae_3d`` lacks (3-D residuals, SFT branch)."""
    return key.startswith(("decoder.condition_in.", "decoder.condition_fuse.")) or ".norm_3d." in key \
        or ".conv_3d." in key


def inflate_video_vae(vae_3d: AutoencoderKLVideo) -> AutoencoderKLVideo:
    """A ``vae_video`` built around ``vae_3d``'s weights, decoding exactly like it until trained.

    The new 3-D convolutions are zero-initialised by construction; the SFT ``scale`` and
    ``shift`` convolutions are zeroed here, so the SFT residual is zero too.
    """
    config = {k: v for k, v in dict(vae_3d.config).items() if not k.startswith("_")}
    # the condition branch's GroupNorms use 32 groups (as published), so its width is a multiple of 32
    width = int(config["block_out_channels"][0])
    config.update(up_block_types=["UpDecoderBlock3D_plus"] * len(config["block_out_channels"]), condition_img=True,
                  condition_channels=-(-width // 32) * 32)
    video = AutoencoderKLVideo.from_config(config)
    missing, unexpected = video.load_state_dict(vae_3d.state_dict(), strict=False)
    stray = [k for k in missing if not is_video_decoder_new_key(k)]
    if stray or unexpected:
        raise TrainConfigError(f"init: vae_3d does not fit the video decoder: missing {stray[:3]}, "
                               f"unexpected {list(unexpected)[:3]}")
    with torch.no_grad():
        for conv in (video.decoder.condition_fuse.scale, video.decoder.condition_fuse.shift):
            conv.weight.zero_()
            conv.bias.zero_()
    return video.eval().requires_grad_(False)


def write_release(path: str | os.PathLike[str], start: StartingPoint, *, unet: UNetVideoModel,
                  vaes: Mapping[str, AutoencoderKLVideo], provenance: Mapping[str, Any]) -> Path:
    """Write a complete release folder (official layout) atomically: built beside ``path``, then renamed.

    The text model (and RAFT weights, when the starting point had them) are copied from
    the starting point; :data:`PROVENANCE_FILE` records the run.
    """
    from uav import weights as release

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        release.save_release(tmp, unet=unet, vae=dict(vaes), scheduler=start.scheduler,
                             low_res_scheduler=start.low_res_scheduler)
        for name, src in start.carry.items():
            dst = tmp / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(dict(provenance), indent=1, default=str))
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
