"""Chunked decoding of the final latents with the low-res clip as condition (SPEC §6 step 6).

The published pipeline decodes non-overlapping 3-frame chunks and clamps each; since
the decoder's GroupNorm and 3-D convolutions see only the chunk, the chunk size is part
of the numerics. Yielding chunk by chunk is also what keeps memory flat: the 4x frames
never exist all at once.
"""

from __future__ import annotations

from typing import Iterator

import torch

Tensor = torch.Tensor


def decode_chunks(
    vae: torch.nn.Module,
    latents: Tensor,
    low_res: Tensor,
    *,
    chunk: int = 3,
    w_lr: float = 1.0,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start_frame, frames)`` with ``frames`` ``(B, 3, t, 4h, 4w)`` in [-1, 1].

    Args:
        vae: an :class:`~uav.models.AutoencoderKLVideo`.
        latents: final latents ``(B, 4, T, h, w)`` (not yet divided by the scaling factor).
        low_res: the *clean* low-res clip ``(B, 3, T, h, w)`` in [-1, 1].
        chunk: frames per decoder call (clips of ``<= chunk`` frames decode in one call).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    vae_dtype = next(vae.parameters()).dtype
    # multiplication by the Python double 1/s, exactly as published
    inv_scale = 1.0 / vae.config.scaling_factor
    num_frames = latents.shape[2]
    for start in range(0, num_frames, chunk):
        end = min(start + chunk, num_frames)
        z = (latents[:, :, start:end] * inv_scale).to(vae_dtype)
        img = low_res[:, :, start:end].to(device=z.device, dtype=vae_dtype)
        with torch.no_grad():
            out = vae.decode(z, img, w_lr).sample
        yield start, out.float().clamp(-1.0, 1.0)
