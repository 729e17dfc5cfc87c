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

import os

import numpy as np

from . import atomic
from .codecs import CodecSpec
from .provenance import provenance_json, sidecar_path
from .timecode import offset_timecode

__all__ = ["FRAME_DTYPES", "check_format_options", "integer_samples", "swap_in_folder", "write_finishing_frame",
           "write_sidecar"]

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

    ``timecode`` is the output's start timecode: every frame carries its own (EXR
    ``timeCode``, DPX television header) and the rate (``framesPerSecond``, DPX film and
    TV headers); EXR headers also hold the provenance record.
    """
    rgb_tags = {k: v for k, v in color.items() if k in ("color_primaries", "color_trc")}
    if spec.name == "exr":
        from .exr import DEFAULT_COMPRESSION, write_exr

        frame_tc = offset_timecode(timecode, index, fps) if timecode else None
        write_exr(target, _float_samples(array), compression=compression or DEFAULT_COMPRESSION,
                  half=pix_fmt == "rgbf16le", color=rgb_tags, fps=fps, timecode=frame_tc, provenance=provenance)
        return
    from .dpx import add_industry_header, encode_dpx

    samples = array.astype(np.uint16) * 257 if array.dtype == np.uint8 else array
    data = encode_dpx(samples, pix_fmt, rgb_tags, sample_aspect_ratio)
    frame_tc = offset_timecode(timecode, index, fps) if timecode else None
    version = (provenance or {}).get("uav_version")
    target.write_bytes(add_industry_header(data, fps=fps, timecode=frame_tc, name=target.name,
                                           creator=f"uav {version}" if version else "uav"))


def write_sidecar(spec: CodecSpec, temp: Path, path: Path, provenance: Mapping[str, Any] | None) -> Path | None:
    """The provenance as JSON: ``uav.json`` inside a sequence's temporary folder, or, for an
    .mxf, a tracked temporary beside it (returned: the caller renames it with the file)."""
    if provenance is None:
        return None
    text = provenance_json(provenance, indent=2) + "\n"
    if spec.kind == "sequence":
        (temp / sidecar_path(None).name).write_text(text)
        return None
    if path.suffix.lower() != ".mxf":
        return None  # mov/mp4/mkv hold it in their metadata
    side = atomic.temporary_path(sidecar_path(path))
    atomic.track(side)
    side.write_text(text)
    return side


def swap_in_folder(temp: Path, path: Path) -> None:
    """Rename the finished folder ``temp`` to ``path``; an old folder there (``replace``)
    is moved aside first and deleted after, so ``path`` is never half old, half new."""
    old = None
    if path.is_dir():
        if any(path.iterdir()):
            old = atomic.temporary_path(path, folder=True)
            os.rename(path, old)
        else:
            path.rmdir()
    os.rename(temp, path)
    if old is not None:
        atomic.remove(old)


def check_format_options(spec: CodecSpec, width: int, height: int, compression: str | None) -> str | None:
    """The checks of the finishing formats' own options: the smallest frame DNxHR takes,
    and EXR's ``compression`` (returned)."""
    if spec.min_size and (width < spec.min_size[0] or height < spec.min_size[1]):
        raise ValueError(f"{spec.name} needs frames of at least {spec.min_size[0]}x{spec.min_size[1]}, got "
                         f"{width}x{height}; choose another codec for small outputs")
    if compression is None:
        return None
    from .exr import COMPRESSIONS

    if spec.name != "exr":
        raise ValueError(f"compression only applies to exr, not codec {spec.name!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"exr compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    return compression
