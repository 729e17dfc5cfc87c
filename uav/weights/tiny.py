"""The tiny random release: random-weight networks in the official layout, and a clip to run them on.

No real weights can be downloaded everywhere uav is built and tested, so the test
suite, the self-check and the CPU benchmarks build these: every structural feature of
the released networks (the parity fixtures' tiny configs), random weights, a tiny CLIP
text encoder and a character-level tokenizer. The folder is marked
:data:`~uav.weights.release.TINY_RANDOM_MARKER`, so every load warns. Their output is
noise-like: they prove the plumbing, never the picture quality.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch

from uav.models import AutoencoderKLVideo, UNetVideoModel
from uav.weights.convert import save_release
from uav.weights.release import TINY_RANDOM_MARKER
from uav.weights.sd_x4 import SD_X4_DDIM_CONFIG, SD_X4_DDPM_CONFIG

#: the parity fixtures' tiny U-Net config (SPEC §9.1)
TINY_UNET_CONFIG: dict[str, Any] = {
    "attention_head_dim": [1, 1, 2, 1], "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32,
    "down_block_types": ["DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"],
    "up_block_types": ["CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"],
    "in_channels": 7, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 16, "norm_eps": 1e-5,
    "num_class_embeds": 1000, "only_cross_attention": [True, True, True, False], "use_linear_projection": True,
    "down_temporal_idx": [0, 1, 2, 3], "mid_temporal": True, "up_temporal_idx": [0, 1, 2, 3],
    "temporal_module_config": {"attention_block_types": ["", ""]},
}
#: the parity fixtures' tiny video-VAE config
TINY_VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": [32, 32, 64], "down_block_types": ["DownEncoderBlock3D"] * 3,
    "up_block_types": ["UpDecoderBlock3D_plus"] * 3, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 16, "scaling_factor": 0.08333, "condition_img": True,
    "condition_channels": 32, "use_temporal_block": True,
}
TINY_TEXT_DIM = 32


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every parameter like the parity fixtures do (SPEC §9.2), so zero-initialised
    layers (temporal outputs, SFT 3-D convs) are active too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name and name.endswith("weight") and p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                scale = 0.5 if "embedding" in name else fan_in**-0.5
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def tiny_unet(seed: int = 0) -> UNetVideoModel:
    """The tiny video U-Net with random weights."""
    return randomize_(UNetVideoModel.from_config(dict(TINY_UNET_CONFIG)), seed).eval()


def tiny_vae(variant: Literal["3d", "video"] = "video", seed: int = 1) -> AutoencoderKLVideo:
    """The tiny VAE (``"video"``: SFT-conditioned decoder; ``"3d"``: plain) with random weights."""
    cfg = dict(TINY_VAE_CONFIG)
    if variant == "3d":
        cfg.update(up_block_types=["UpDecoderBlock3D"] * 3, condition_img=False)
    return randomize_(AutoencoderKLVideo.from_config(cfg), seed).eval()


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (printable Latin-1 maps to itself)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    extra = 0
    out = []
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def _write_tiny_text(root: Path, seed: int) -> None:
    """A CLIP text encoder of width 32 and a character-level CLIP tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tok_dir = root / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16)
    tokenizer.save_pretrained(str(tok_dir))
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=TINY_TEXT_DIM, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                            pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(seed)
    CLIPTextModel(config).eval().save_pretrained(str(root / "text_encoder"))


def make_tiny_release(
    path: str | os.PathLike[str],
    *,
    fmt: Literal["bin", "safetensors"] = "safetensors",
    vae: tuple[str, ...] = ("3d", "video"),
    with_text: bool = True,
    seed: int = 0,
) -> Path:
    """Write a complete tiny release folder (official layout) and return its path."""
    from diffusers import DDIMScheduler, DDPMScheduler

    root = Path(path)
    save_release(
        root,
        unet=tiny_unet(seed),
        vae={v: tiny_vae(v, seed + 1) for v in vae},  # type: ignore[arg-type]
        fmt=fmt,
        scheduler=DDIMScheduler.from_config(SD_X4_DDIM_CONFIG),
        low_res_scheduler=DDPMScheduler.from_config(SD_X4_DDPM_CONFIG),
    )
    if with_text:
        _write_tiny_text(root, seed)
    (root / TINY_RANDOM_MARKER).write_text(
        "This folder holds tiny RANDOM-weight networks made by uav.weights.make_tiny_release for self-checks. "
        "Their output is not an upscale.\n"
    )
    return root


def moving_pattern(frames: int = 20, height: int = 24, width: int = 32, seed: int = 0) -> "Any":
    """A textured clip translating by one pixel per frame, uint8 ``(T, H, W, 3)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height + frames, width + frames, 3), dtype=np.uint8)
    base = (0.5 * base + 0.5 * np.roll(base, 1, axis=0)).astype(np.uint8)  # a little spatial correlation
    return np.stack([base[t:t + height, t:t + width] for t in range(frames)])
