"""One frame of an image sequence in the finishing formats (EXR, DPX), and the sample
conversions the writer makes between the frames it is given and what a format stores.

Float frames (the pipeline's own precision) are quantised once, straight to the
output's depth: ``round(x * 1023)`` for 10-bit DPX, ``round(x * 65535)`` for 16-bit,
half floats for EXR; never through 8 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .codecs import CodecSpec
from .timecode import offset_timecode

__all__ = ["FRAME_DTYPES", "integer_samples", "write_finishing_frame"]

#: the frame dtype the writer takes for each ``bit_depth``
FRAME_DTYPES = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16), 32: np.dtype(np.float32)}


def integer_samples(array: np.ndarray, bits: int) -> np.ndarray:
    """``array`` as uint8 (``bits == 8``) or uint16 (anything deeper), rounded from floats in [0, 1]."""
    if array.dtype == np.float32:
        if bits <= 8:
            return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.round(np.clip(array, 0.0, 1.0) * 65535.0).astype(np.uint16)
    if bits > 8 and array.dtype == np.uint8:
        return array.astype(np.uint16) * 257
    return array


def _float_samples(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return array


def write_finishing_frame(spec: CodecSpec, pix_fmt: str, target: Path, array: np.ndarray, *, index: int,
                          color: Mapping[str, str], fps: Fraction, timecode: str | None, compression: str | None,
                          provenance: Mapping[str, Any] | None,
                          sample_aspect_ratio: Fraction | None = None) -> None:
    """Write frame ``index`` (0-based in this output) to ``target`` as EXR or DPX.

    ``timecode`` is the output's start timecode: EXR frames carry their own
    (``timeCode``), with ``framesPerSecond`` and the provenance record.
    """
    rgb_tags = {k: v for k, v in color.items() if k in ("color_primaries", "color_trc")}
    if spec.name == "exr":
        from .exr import DEFAULT_COMPRESSION, write_exr

        frame_tc = offset_timecode(timecode, index, fps) if timecode else None
        write_exr(target, _float_samples(array), compression=compression or DEFAULT_COMPRESSION,
                  half=pix_fmt == "rgbf16le", color=rgb_tags, fps=fps, timecode=frame_tc, provenance=provenance)
        return
    from .dpx import encode_dpx

    samples = array.astype(np.uint16) * 257 if array.dtype == np.uint8 else array
    target.write_bytes(encode_dpx(samples, pix_fmt, rgb_tags, sample_aspect_ratio))
