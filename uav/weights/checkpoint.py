"""Checkpoint key names: the official layout <-> our modules (SPEC §1).

Our module tree uses the released names, so nearly every key maps to itself. What
needs care:

* **RoPE aliases.** The published U-Net registers ONE ``RotaryEmbedding`` parameter
  under 17 keys; the U-Net itself speaks them
  (:func:`uav.models.temporal.install_rope_alias_hooks`), so they need nothing here.
* **VAE attention names.** The released VAE uses the diffusers-0.16 names
  (``group_norm``, ``query``, ``key``, ``value``, ``proj_attn``). Newer diffusers
  checkpoints use ``to_q``/``to_k``/``to_v``/``to_out.0``; :func:`legacy_vae_attention_names`
  maps those to ours so either loads.
* **Image-only SD x4 U-Net.** :func:`init_temporal_as_new` zeroes the residual
  outputs of every temporal layer, so a video U-Net loaded from the image model
  reproduces it exactly for single-frame clips.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import torch
from torch import nn

from uav.models.temporal import ROPE_KEY

Tensor = torch.Tensor

# ---------------------------------------------------------------------------- VAE names
_NEW_TO_LEGACY_ATTN = {
    "to_q": "query",
    "to_k": "key",
    "to_v": "value",
    "to_out.0": "proj_attn",
}
_VAE_ATTN = re.compile(r"^(?P<head>(?:encoder|decoder)\.mid_block\.attentions\.\d+\.)(?P<name>to_q|to_k|to_v|to_out\.0)\.")


def legacy_vae_attention_names(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename newer diffusers VAE attention keys to the released (legacy) names.

    Keys already in the legacy form pass through. Newer checkpoints may store the
    projections as 1x1 convolutions' 4-D weights; those are squeezed to Linear shape.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = _VAE_ATTN.match(key)
        if m:
            new = m.group("head") + _NEW_TO_LEGACY_ATTN[m.group("name")] + key[m.end() - 1 :]
            if value.ndim == 4 and value.shape[-2:] == (1, 1):
                value = value[:, :, 0, 0]
            out[new] = value
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------- strict loading
class CheckpointKeyError(KeyError):
    """A checkpoint whose keys do not fit the model, with the first offenders named."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def load_official_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str = "checkpoint",
                             strict: bool = True) -> None:
    """``load_state_dict`` with an error that lists what is missing/unexpected/mis-shaped.

    Raises:
        CheckpointKeyError: keys do not match (strict) — the message names the first few.
        ValueError: shapes do not match.
    """
    own = model.state_dict()
    shape_errors = [
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(v.shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(own[k].shape) != tuple(v.shape)
    ]
    if shape_errors:
        raise ValueError(
            f"{source}: {len(shape_errors)} tensor(s) have the wrong shape for this model config, e.g. "
            + "; ".join(shape_errors[:5])
        )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if strict and (missing or unexpected):
        raise CheckpointKeyError(
            f"{source} does not fit {type(model).__name__}: {len(missing)} missing key(s) "
            f"{_first(missing)} and {len(unexpected)} unexpected key(s) {_first(unexpected)}. "
            "Check that the config matches the weights (e.g. vae_3d vs vae_video)."
        )
    model.load_state_dict(dict(state_dict), strict=strict)


def _first(keys: Iterable[str], n: int = 5) -> str:
    keys = list(keys)
    return f"[{', '.join(keys[:n])}{', ...' if len(keys) > n else ''}]"


# ---------------------------------------------------------------------------- image -> video
def init_temporal_as_new(unet: nn.Module) -> None:
    """Zero the output layer of every temporal residual branch of a video U-Net.

    After this, each temporal layer is the identity, so loading the image-only SD x4
    upscaler's weights into the rest gives a video U-Net that matches it per frame.
    """
    from uav.models.layers import ResnetBlock3DCNN
    from uav.models.temporal import TemporalAttention, TemporalModule3D

    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, TemporalModule3D):
                module.shift_conv.weight.zero_()
                module.shift_conv.bias.zero_()
            elif isinstance(module, TemporalAttention):
                module.to_out[0].weight.zero_()
                module.to_out[0].bias.zero_()
            elif isinstance(module, ResnetBlock3DCNN) and not _inside_temporal_module(unet, module):
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()


def _inside_temporal_module(root: nn.Module, target: nn.Module) -> bool:
    from uav.models.temporal import TemporalModule3D

    return any(isinstance(m, TemporalModule3D) and any(sub is target for sub in m.modules()) for m in root.modules())


def is_temporal_key(key: str) -> bool:
    """Whether a video U-Net key belongs to the layers the image model lacks."""
    return (
        key.startswith(("down_temp_blocks.", "up_temp_blocks.", "mid_temp_block."))
        or ".resblock_temporal." in key
        or ".attn_temporal." in key
        or ".norm_temporal." in key
        or key == ROPE_KEY
    )
