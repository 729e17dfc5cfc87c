"""A memory model of one training step, computed on the ``meta`` device (no weights, no compute).

The networks are built from a release config on ``meta`` and one forward pass of the
stage runs with a saved-tensor hook that adds up what autograd keeps for the backward
pass. That is the activation memory of the step; weights, gradients, AdamW moments and
the EMA follow from the parameter counts. Run ``python -m uav.train.memory`` for the
real-size table in ``docs/training.md``.

The activation figure is an upper bound for GPUs: on ``meta`` attention runs the math
path, which keeps its attention matrix, where flash / memory-efficient attention keep
only their inputs; views of one storage are counted once per view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

GIB = 2**30
#: bytes per trained parameter besides the weight itself: fp32 gradient, AdamW's two moments, the EMA copy
_PER_TRAINED = 4 * 4


def _blocks(stage: str, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    if stage == "unet":
        return ([(f"down_blocks.{i}", b) for i, b in enumerate(model.down_blocks)]
                + [(f"down_temp_blocks.{i}", b) for i, b in enumerate(model.down_temp_blocks)]
                + [("mid_block", model.mid_block), ("mid_temp_block", model.mid_temp_block)]
                + [(f"up_blocks.{i}", b) for i, b in enumerate(model.up_blocks)]
                + [(f"up_temp_blocks.{i}", b) for i, b in enumerate(model.up_temp_blocks)])
    d = model.decoder
    extra = [("condition_in", d.condition_in), ("condition_fuse", d.condition_fuse)] if d.condition_img else []
    return extra + [("mid_block", d.mid_block)] + [(f"up_blocks.{i}", b) for i, b in enumerate(d.up_blocks)]


def step_memory(stage: str, config: Mapping[str, Any], *, crop: int, frames: int = 8, batch: int = 1,
                text_tokens: int = 77) -> dict[str, Any]:
    """Memory of one training step of ``stage`` (``"unet"`` or ``"vae"``) for a model ``config``.

    Returns GiB figures: ``activations`` (saved for backward, fp32), ``activations_checkpointed``
    (with ``--gradient-checkpointing``: what stays outside the checkpointed blocks plus the
    largest block, recomputed during backward), ``weights`` (fp32), ``optimizer_and_ema``
    (gradients, AdamW moments and EMA of the trained parameters), the parameter counts, and
    the two activation figures in bytes under ``bytes``.
    """
    from uav.models import AutoencoderKLVideo, UNetVideoModel
    from uav.train.unet_stage import is_temporal_parameter
    from uav.train.vae_stage import is_decoder_temporal_or_sft

    with torch.device("meta"):
        model = UNetVideoModel.from_config(dict(config)) if stage == "unet" else \
            AutoencoderKLVideo.from_config(dict(config))
    trainable = is_temporal_parameter if stage == "unet" else is_decoder_temporal_or_sft
    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name))
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)

    state: dict[str, Any] = {"total": 0, "current": None, "by_block": {}}

    def pack(t: torch.Tensor) -> torch.Tensor:
        size = t.numel() * t.element_size()
        state["total"] += size
        if state["current"] is not None:
            state["by_block"][state["current"]] = state["by_block"].get(state["current"], 0) + size
        return t

    handles = []
    for name, block in _blocks(stage, model):
        handles.append(block.register_forward_pre_hook(lambda m, a, name=name: state.__setitem__("current", name)))
        handles.append(block.register_forward_hook(lambda m, a, o: state.__setitem__("current", None)))
    try:
        meta = {"device": "meta"}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if stage == "unet":
                model(torch.randn(batch, 4, frames, crop, crop, **meta), torch.tensor([500] * batch, **meta),
                      torch.randn(batch, 3, frames, crop, crop, **meta),
                      encoder_hidden_states=torch.randn(batch, text_tokens, model.config.cross_attention_dim, **meta),
                      class_labels=torch.tensor([20] * batch, **meta))
            else:
                model.decode(torch.randn(batch, 4, frames, crop, crop, **meta),
                             torch.randn(batch, 3, frames, crop, crop, **meta))
    finally:
        for h in handles:
            h.remove()
    inside = sum(state["by_block"].values())
    largest = max(state["by_block"], key=state["by_block"].get)
    return {
        "stage": stage, "crop": crop, "frames": frames, "batch": batch,
        "parameters": total, "trained_parameters": trained,
        "weights": round(total * 4 / GIB, 2),
        "optimizer_and_ema": round(trained * _PER_TRAINED / GIB, 2),
        "activations": round(state["total"] / GIB, 2),
        "activations_checkpointed": round((state["total"] - inside + state["by_block"][largest]) / GIB, 2),
        "largest_block": largest,
        "bytes": {"activations": state["total"],
                  "activations_checkpointed": state["total"] - inside + state["by_block"][largest]},
    }


def main() -> None:
    """Print the real-size table (release configs from ``tests/data/parity/release_configs``)."""
    import sys

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/data/parity/release_configs")
    unet = json.loads((folder / "unet_video_config.json").read_text())
    vae = json.loads((folder / "vae_video_config.json").read_text())
    rows = [step_memory("unet", unet, crop=c) for c in (64, 128, 256)]
    rows += [step_memory("vae", vae, crop=c) for c in (32, 64, 128)]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
