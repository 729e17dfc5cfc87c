"""The tiny random release: random-weight networks in the official layout, and a clip to run them on.

No real weights can be downloaded everywhere uav is built and tested, so the test
suite, the self-check and the CPU benchmarks build these: every structural feature of
the released networks at the smallest sizes they allow, random weights, a tiny CLIP
text encoder and a character-level tokenizer. The folder is marked
:data:`~uav.weights.release.TINY_RANDOM_MARKER`, so every load warns. Their output is
noise-like: they prove the plumbing, never the picture quality.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from uav.models import AutoencoderKLVideo, UNetVideoModel
from uav.weights.convert import save_release
from uav.weights.release import TINY_RANDOM_MARKER
from uav.weights.sd_x4 import SD_X4_DDIM_CONFIG, SD_X4_DDPM_CONFIG

#: The tiny U-Net: every block type, temporal module and attention kind of the released config,
#: with the parity fixtures' widths (SPEC §9.1; the temporal layers need GroupNorm(32) and RoPE
#: over 32 channels per head) but one layer per block instead of two, which halves its cost on a
#: CPU. (32 channels at the two coarsest levels would be cheaper still, but GroupNorm over single
#: channels of a few pixels makes the random network chaotic: tiny float differences explode.)
TINY_UNET_CONFIG: dict[str, Any] = {
    "attention_head_dim": [1, 1, 2, 1], "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32,
    "down_block_types": ["DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"],
    "up_block_types": ["CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"],
    "in_channels": 7, "out_channels": 4, "layers_per_block": 1, "norm_num_groups": 16, "norm_eps": 1e-5,
    "num_class_embeds": 1000, "only_cross_attention": [True, True, True, False], "use_linear_projection": True,
    "down_temporal_idx": [0, 1, 2, 3], "mid_temporal": True, "up_temporal_idx": [0, 1, 2, 3],
    "temporal_module_config": {"attention_block_types": ["", ""]},
}
#: The tiny video VAE: both decoders' structure (x4, SFT condition, temporal residuals) with 8
#: channels at the output size, where a decoder spends most of its time.
TINY_VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": [8, 16, 32], "down_block_types": ["DownEncoderBlock3D"] * 3,
    "up_block_types": ["UpDecoderBlock3D_plus"] * 3, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "layers_per_block": 1, "norm_num_groups": 8, "scaling_factor": 0.08333, "condition_img": True,
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
    stand_ins = iter(range(256, 512))  # the bytes left out, in order, get the next free code points
    return [chr(b) if b in keep else chr(next(stand_ins)) for b in range(256)]


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


# ---------------------------------------------------------------------------- the self-check's input
#: the self-check's budget of low-res pixels x frames (24 frames of 64x48, the demo clip): one to
#: two minutes of one CPU core at the default 30 steps with the tiny networks (docs/quickstart.md)
SELF_CHECK_PIXEL_FRAMES = 24 * 64 * 48
#: the self-check's longest low-res side, in pixels (larger frames are area-downscaled to it)
SELF_CHECK_MAX_SIDE = 96


@dataclass(frozen=True)
class SelfCheckClip:
    """What the self-check runs on when a clip exceeds its budget (see :func:`self_check_clip`)."""

    frames: Any
    """uint8 (or uint16) ``(T, H, W, 3)``: the first frames of the range, downscaled."""
    writer_options: dict[str, Any]
    """``fps``, ``audio_source``/``audio_start_frame``/``audio_end_frame`` and ``timecode`` of the range."""
    note: str
    """One line for the screen: what was cut and why."""


def self_check_clip(source: str | os.PathLike[str], *, start: int | str | None = None,
                    end: int | str | None = None, fps: Any = None) -> SelfCheckClip | None:
    """The part of a clip a self-check runs on, or ``None`` when the whole range fits the budget.

    Random networks prove the installation (reading, flow, denoising, decoding, writing), not
    the picture, so a self-check need not pay for a large clip: frames larger than
    :data:`SELF_CHECK_MAX_SIDE` are area-downscaled to it, then only the first frames that fit
    :data:`SELF_CHECK_PIXEL_FRAMES` are kept (at least one). Audio and timecode of the kept
    range are carried over through the returned writer options.
    """
    import cv2
    import numpy as np

    from uav.io import offset_timecode, parse_frame_position, probe, read_frames

    info = probe(source, fps=fps)
    rate = info.fps
    first = parse_frame_position(start, rate, info.start_timecode) or 0
    stop = parse_frame_position(end, rate, info.start_timecode)
    stop = info.num_frames if stop is None else stop
    side = max(info.width, info.height)
    scale = min(1.0, SELF_CHECK_MAX_SIDE / side)
    width, height = max(1, round(info.width * scale)), max(1, round(info.height * scale))
    count = max(1, min(stop - first, SELF_CHECK_PIXEL_FRAMES // (width * height)))
    if scale == 1.0 and count >= stop - first:
        return None
    frames = read_frames(source, start=first, end=first + count, fps=fps)
    if scale < 1.0:
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    options: dict[str, Any] = {"fps": rate}
    if info.has_audio and not info.is_image_sequence:
        options.update(audio_source=str(source), audio_start_frame=first, audio_end_frame=first + count)
    if info.start_timecode and not info.is_image_sequence:
        options["timecode"] = offset_timecode(info.start_timecode, first, rate)
    frames_said = f"all {count} frames" if count >= stop - first else \
        f"frames {first}-{first + count - 1} of {first}-{stop - 1}"
    size_said = f"{width}x{height} (downscaled from {info.width}x{info.height})" if scale < 1.0 else \
        f"{width}x{height}"
    note = f"self-check on a small input (random networks prove the install, not the picture): {frames_said} at " \
           f"{size_said}"
    return SelfCheckClip(frames=frames, writer_options=options, note=note)
