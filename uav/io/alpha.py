"""Alpha channels carried from a source to an output that holds them.

The network upscales RGB only. A source with alpha (a PNG/TIFF sequence with
transparency, ProRes 4444 with alpha) keeps it in outputs that hold alpha
(``prores_4444``, ``png``, ``tiff``): each alpha plane is enlarged on its own with a
plain bicubic resize (alpha is a matte, not a picture: nothing to hallucinate) and
written beside the upscaled RGB. An output without alpha (H.264, H.265, ProRes 422)
drops it with one warning that says which codec keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from .codecs import CodecSpec

__all__ = ["alpha_planes", "resize_alpha", "with_alpha"]

log = logging.getLogger("uav")


def resize_alpha(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """``plane`` (uint8 or uint16) resized bicubically to ``width`` x ``height``, as uint8."""
    import cv2

    out = cv2.resize(plane, (width, height), interpolation=cv2.INTER_CUBIC)  # saturates, no overshoot
    if out.dtype == np.uint16:
        out = ((out.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return out


def alpha_planes(video: Any, start: int, frames: int, spec: CodecSpec, pix_fmt: str | None, width: int,
                 height: int) -> Iterator[np.ndarray] | None:
    """The upscaled alpha planes of frames ``[start, start + frames)`` of the source
    ``video`` (a :class:`~uav.io.info.VideoInfo`), or ``None`` when it has no alpha or the
    output (``spec`` with ``pix_fmt``) cannot hold it (then a warning says so)."""
    if video is None or not getattr(video, "has_alpha", False):
        return None
    if not spec.keeps_alpha(pix_fmt):
        log.warning("%s has an alpha channel; %s output cannot hold it, so it is dropped (--codec prores_4444, png "
                    "or tiff keep it)", video.path, spec.name if pix_fmt is None else f"{spec.name} {pix_fmt}")
        return None
    from .reader import iter_frames

    planes = iter_frames(video.path, start=start, end=start + frames, alpha=True)
    return (resize_alpha(p, width, height) for p in planes)


def with_alpha(rgb: np.ndarray, alpha: Iterator[np.ndarray] | None) -> np.ndarray:
    """``rgb`` with the next alpha plane appended (``rgb`` itself when there is no alpha)."""
    if alpha is None:
        return rgb
    plane = next(alpha)  # uint8
    if rgb.dtype == np.float32:  # deep outputs are written from float frames in [0, 1]
        plane = plane.astype(np.float32) / 255.0
    elif rgb.dtype == np.uint16:
        plane = plane.astype(np.uint16) * 257
    return np.concatenate([rgb, plane[:, :, None]], axis=2)
