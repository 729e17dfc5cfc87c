"""Chunked decoding of the final latents with the low-res clip as condition (SPEC §6 step 6).

The published pipeline decodes non-overlapping 3-frame chunks and clamps each; since
the decoder's GroupNorm and 3-D convolutions see only the chunk, the chunk size is part
of the numerics. Yielding chunk by chunk is also what keeps memory flat: the 4x frames
never exist all at once.
"""

from __future__ import annotations

from typing import Iterator

import torch

from uav.sampling.recovery import OUT_OF_MEMORY, Recovery

Tensor = torch.Tensor


def decode_chunks(
    vae: torch.nn.Module,
    latents: Tensor,
    low_res: Tensor,
    *,
    chunk: int = 3,
    w_lr: float = 1.0,
    tile: int | None = None,
    tile_overlap: int = 8,
    recovery: Recovery | None = None,
    overlap: int = 0,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start_frame, frames)`` with ``frames`` ``(B, 3, t, 4h, 4w)`` in [-1, 1].

    Args:
        vae: an :class:`~uav.models.AutoencoderKLVideo`.
        latents: final latents ``(B, 4, T, h, w)`` (not yet divided by the scaling factor),
            on any device: each chunk moves to the decoder's.
        low_res: the *clean* low-res clip ``(B, 3, T, h, w)`` in [-1, 1].
        chunk: frames per decoder call (clips of ``<= chunk`` frames decode in one call).
        tile: decode in overlapping spatial tiles of this many latent pixels, blended with
            feathered weights (``None``: whole frames, as published). The decoder's mid-block
            attention is quadratic in the frame's pixel count; tiles bound its time and
            memory (at the price of attention that sees only the tile).
        tile_overlap: overlap of neighbouring decode tiles, in latent pixels.
        recovery: a :class:`~uav.sampling.recovery.Recovery` whose ``decode_chunk`` and
            ``decode_tile`` replace ``chunk`` and ``tile`` inside each yielded chunk: out of
            memory shrinks them and decodes the rest of the chunk in smaller pieces (yielded
            chunks keep ``chunk``'s boundaries, so tiles decoded side by side stay aligned);
            an fp16 decoder's non-finite output is recomputed in bf16/fp32.
        overlap: frames neighbouring chunks share (``0``: chunks meet without one, as
            published). Shared frames are decoded by both chunks and cross-faded linearly, so
            the decoder's chunk-wide GroupNorm statistics and temporal convolutions leave no
            step between chunks; with spatial tiles (feathered), the decode is tiled in time
            and space without a seam. Each yield then holds ``chunk - overlap`` new frames.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if overlap:
        yield from _overlapped(vae, latents, low_res, chunk=chunk, overlap=overlap, w_lr=w_lr, tile=tile,
                               tile_overlap=tile_overlap, recovery=recovery)
        return
    num_frames = latents.shape[2]
    plan = _tile_plan(vae, *latents.shape[-2:], tile, tile_overlap)
    for start in range(0, num_frames, chunk):
        end = min(start + chunk, num_frames)
        if recovery is not None:
            yield start, _decode_recovering(vae, latents, low_res, start, end, w_lr, tile_overlap, recovery)
            continue
        yield start, _decode(vae, latents, low_res, start, end, w_lr, plan).clamp(-1.0, 1.0)


def _decode(vae: torch.nn.Module, latents: Tensor, low_res: Tensor, start: int, end: int, w_lr: float,
            plan: list | None) -> Tensor:
    """Frames ``[start, end)`` decoded in one call (or its spatial tiles), fp32, not clamped."""
    p = next(vae.parameters())
    # multiplication by the Python double 1/s, exactly as published
    z = (latents[:, :, start:end] * (1.0 / vae.config.scaling_factor)).to(device=p.device, dtype=p.dtype)
    img = low_res[:, :, start:end].to(device=z.device, dtype=p.dtype)
    with torch.no_grad():
        return vae.decode(z, img, w_lr).sample.float() if plan is None else _decode_tiled(vae, z, img, w_lr, plan)


def _tile_plan(vae: torch.nn.Module, h: int, w: int, tile: int | None, overlap: int) -> list | None:
    if tile is None or (h <= tile and w <= tile):
        return None
    from uav.sampling.tiling import feather_tile_plan

    scale = int(getattr(vae, "upscale_factor", 4))
    return feather_tile_plan(h, w, tile_size=tile, overlap=min(overlap, tile - 1), scale=scale)


def _decode_recovering(vae: torch.nn.Module, latents: Tensor, low_res: Tensor, start: int, end: int, w_lr: float,
                       tile_overlap: int, recovery: Recovery) -> Tensor:
    """Frames ``[start, end)`` decoded in pieces of the recovery's current chunk and tile."""
    h, w = latents.shape[-2:]
    parts: list[Tensor] = []
    s = start
    while s < end:
        e = min(s + recovery.decode_chunk, end)
        plan = _tile_plan(vae, h, w, recovery.decode_tile, tile_overlap)
        failed = False
        try:
            out = recovery.finite(lambda net: _decode(net, latents, low_res, s, e, w_lr, plan), vae,
                                  where="decoded frames", network="VAE decoder")
        except OUT_OF_MEMORY:
            failed = True
        if failed:
            recovery.shrink_decode(h, w)
            continue
        parts.append(out.clamp(-1.0, 1.0))
        s = e
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _decode_tiled(vae: torch.nn.Module, z: Tensor, img: Tensor, w_lr: float, plan: list) -> Tensor:
    """Decode overlapping spatial tiles and blend them by their feathered weights."""
    acc = None
    norm = None
    for tile in plan:
        y0, y1, x0, x1 = tile.region
        part = vae.decode(z[..., y0:y1, x0:x1], img[..., y0:y1, x0:x1], w_lr).sample.float()
        wgt = tile.weight.to(device=part.device, dtype=torch.float32)
        sy, sx = part.shape[-2] // (y1 - y0), part.shape[-1] // (x1 - x0)
        if acc is None:
            acc = torch.zeros(part.shape[:-2] + (z.shape[-2] * sy, z.shape[-1] * sx), device=part.device)
            norm = torch.zeros(acc.shape[-2:], device=part.device)
        acc[..., y0 * sy:y1 * sy, x0 * sx:x1 * sx] += part * wgt
        norm[y0 * sy:y1 * sy, x0 * sx:x1 * sx] += wgt
    return acc / norm


def piece_starts(num_frames: int, chunk: int, overlap: int = 0) -> list[int]:
    """First frames of the decode pieces: every ``chunk - overlap`` frames, the last piece still
    bringing a frame of its own."""
    if not 0 <= overlap < chunk:
        raise ValueError(f"overlap must be in [0, chunk={chunk}), got {overlap}")
    step = chunk - overlap
    return [s for s in range(0, num_frames, step) if s == 0 or s + overlap < num_frames]


def _overlapped(vae: torch.nn.Module, latents: Tensor, low_res: Tensor, *, chunk: int, overlap: int, w_lr: float,
                tile: int | None, tile_overlap: int, recovery: Recovery | None) -> Iterator[tuple[int, Tensor]]:
    """Pieces of ``chunk`` frames overlapping by ``overlap``, cross-faded where they overlap."""
    num_frames = latents.shape[2]
    tail: Tensor | None = None  # the previous piece's last ``overlap`` frames, not yet final
    starts = piece_starts(num_frames, chunk, overlap)
    for k, start in enumerate(starts):
        end = min(start + chunk, num_frames)
        _, out = next(decode_chunks(vae, latents[:, :, start:end], low_res[:, :, start:end], chunk=end - start,
                                    w_lr=w_lr, tile=tile, tile_overlap=tile_overlap, recovery=recovery))
        if tail is not None:
            n = tail.shape[2]
            # the newer piece's weight rises across the shared frames, never reaching 0 or 1
            ramp = torch.arange(1, n + 1, dtype=out.dtype, device=out.device).reshape(1, 1, n, 1, 1) / (n + 1)
            out[:, :, :n] = tail * (1 - ramp) + out[:, :, :n] * ramp
        last = k == len(starts) - 1
        keep = 0 if last else min(overlap, out.shape[2])
        tail = out[:, :, out.shape[2] - keep:] if keep else None
        if out.shape[2] > keep:
            yield start, out[:, :, :out.shape[2] - keep]
