"""DPX frames: 10-bit (packed, method A) or 16-bit RGB, big-endian, through FFmpeg's
``dpx`` encoder and decoder (PyAV).

FFmpeg writes the DPX transfer and colorimetric fields from the frame's colour tags
where DPX has a code for them (BT.709, BT.601 525/625, linear) and reads them back;
others (BT.2020, PQ, HLG, sRGB) it stores as "unspecified video", which
:func:`dpx_header` reports as absent. DPX holds RGB, so a YUV matrix or a limited
range have nothing to describe.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .metadata import COLOR_PRIMARIES_NAMES, COLOR_TRC_NAMES, color_code

__all__ = ["DPX_PIX_FMTS", "dpx_header", "dpx_size", "encode_dpx", "read_dpx"]

#: pixel formats the writer offers: 10-bit packed and 16-bit RGB (big-endian, the DPX default)
DPX_PIX_FMTS = ("gbrp10be", "rgb48be", "gbrp10le", "rgb48le")
_MAGIC = {b"SDPX": ">", b"XPDS": "<"}


def _bits(pix_fmt: str) -> int:
    return 10 if pix_fmt.startswith("gbrp10") else 16


def encode_dpx(rgb: np.ndarray, pix_fmt: str, color: Mapping[str, str] | None = None,
               sample_aspect_ratio: Fraction | None = None) -> bytes:
    """One DPX file's bytes for an ``(H, W, 3)`` frame: float32 in [0, 1] or uint16.

    Float frames are quantised straight to the file's depth (``round(x * 1023)`` for
    10-bit), not through 16 bits, so a value survives to within half a code value.
    """
    import av

    height, width = rgb.shape[:2]
    top = (1 << _bits(pix_fmt)) - 1
    if rgb.dtype == np.uint16:
        data = rgb if top == 65535 else np.round(rgb.astype(np.float32) * (top / 65535.0)).astype(np.uint16)
    else:
        data = np.round(np.clip(rgb, 0.0, 1.0) * top).astype(np.uint16)
    native = "gbrp10le" if top == 1023 else "rgb48le"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format=native)
    if native != pix_fmt:
        frame = frame.reformat(format=pix_fmt)
    cc = av.CodecContext.create("dpx", "w")
    cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
    cc.time_base = Fraction(1, 24)
    for key in ("color_primaries", "color_trc"):
        value = (color or {}).get(key)
        if value:
            setattr(cc, key, color_code(key, value))
    if sample_aspect_ratio is not None:
        cc.sample_aspect_ratio = sample_aspect_ratio
    frame.pts = 0
    packets = cc.encode(frame) + cc.encode(None)
    return b"".join(bytes(p) for p in packets)


def _order(head: bytes, path: Path) -> str:
    order = _MAGIC.get(head[:4])
    if order is None:
        raise VideoInputError(path, "is not a DPX file (no SDPX magic number)", "the file is damaged or not a DPX")
    return order


def dpx_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image information header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(784)
    except OSError as exc:
        raise VideoInputError(path, f"cannot be read ({exc.strerror or exc})", "check the file") from None
    if len(head) < 780:
        raise VideoInputError(path, "is too short for a DPX header", "the file is truncated")
    width, height = struct.unpack(_order(head, path) + "II", head[772:780])
    return int(width), int(height)


def _decode(path: Path) -> Any:
    import av

    try:
        with av.open(str(path), mode="r", format="image2") as container:
            return next(container.decode(video=0))
    except (av.FFmpegError, StopIteration) as exc:
        if not path.is_file():
            raise VideoInputError(path, "image sequence frame is missing", "check the sequence's frame numbers") \
                from None
        raise VideoInputError(path, f"cannot be decoded as DPX ({exc})", "the file is damaged or not a DPX") from None


def read_dpx(path: Path) -> np.ndarray:
    """The frame as ``(H, W, 3)`` uint16 RGB (10- and 12-bit samples scaled to 16 bits)."""
    frame = _decode(path)
    return np.ascontiguousarray(frame.to_ndarray(format="rgb48le"))


def dpx_header(path: Path) -> dict[str, Any]:
    """What a DPX's header says: ``bits``, ``color`` (FFmpeg tag names FFmpeg reads back)
    and ``creator``."""
    frame = _decode(path)
    with open(path, "rb") as fh:
        head = fh.read(806)
    color = {}
    primaries = COLOR_PRIMARIES_NAMES.get(int(frame.color_primaries or 0))
    trc = COLOR_TRC_NAMES.get(int(frame.color_trc or 0))
    if primaries:
        color["color_primaries"] = primaries
    if trc:
        color["color_trc"] = trc
    return {"bits": head[803] if len(head) > 803 else None, "color": color,
            "creator": dict(frame.metadata).get("Creator")}
