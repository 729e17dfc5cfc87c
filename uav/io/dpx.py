"""DPX frames: 10-bit (packed, method A) or 16-bit RGB, big-endian, through FFmpeg's
``dpx`` encoder and decoder (PyAV).

FFmpeg writes the DPX transfer and colorimetric fields from the frame's colour tags
where DPX has a code for them (BT.709, BT.601 525/625, linear) and reads them back;
others (BT.2020, PQ, HLG, sRGB) it stores as "unspecified video", which
:func:`dpx_header` reports as absent. DPX holds RGB, so a YUV matrix or a limited
range have nothing to describe.

FFmpeg writes the generic header only (1664 bytes); :func:`add_industry_header`
inserts the film and television headers after it, so each frame carries its frame
rate and SMPTE timecode (and uav as its creator) where conform tools look for them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .metadata import COLOR_PRIMARIES_NAMES, COLOR_TRC_NAMES, tag_color

__all__ = ["DPX_PIX_FMTS", "add_industry_header", "dpx_header", "dpx_size", "encode_dpx", "read_dpx"]

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
    tag_color(cc, {key: value for key, value in (color or {}).items()
                   if key in ("color_primaries", "color_trc") and value})
    if sample_aspect_ratio is not None:
        cc.sample_aspect_ratio = sample_aspect_ratio
    frame.pts = 0
    packets = cc.encode(frame) + cc.encode(None)
    return b"".join(bytes(p) for p in packets)


_GENERIC = 1664  # file + image + orientation headers: what FFmpeg writes
_INDUSTRY = 384  # film (256) + television (128) headers


def _bcd(label: str) -> int:
    digits = label.replace(";", ":").replace(":", "")
    return int(digits, 16)  # "01000005" read as hex is the BCD word 0x01000005


def add_industry_header(data: bytes, *, fps: Fraction | None, timecode: str | None, name: str,
                        creator: str) -> bytes:
    """``data`` (a DPX FFmpeg wrote) with film and TV headers holding ``fps`` and ``timecode``.

    Undefined numbers are all ones, undefined text NUL, as the DPX standard asks. The image data moves back
    by 384 bytes and every offset that points at it is updated.
    """
    order = _MAGIC[data[:4]]
    offset = struct.unpack(order + "I", data[4:8])[0]
    if offset != _GENERIC or struct.unpack(order + "I", data[28:32])[0] not in (0, 0xFFFFFFFF):
        return data  # not the layout this knows: leave the file as FFmpeg made it
    head = bytearray(data[:_GENERIC])
    industry = bytearray(b"\xff" * _INDUSTRY)
    for first, stop in ((1664, 1712), (1732, 1920), (1972, 2048)):  # text and reserved fields: NUL
        industry[first - _GENERIC:stop - _GENERIC] = bytes(stop - first)
    rate = struct.pack(order + "f", float(fps)) if fps else b"\xff" * 4
    industry[1724 - _GENERIC:1728 - _GENERIC] = rate  # film: frame rate
    industry[1940 - _GENERIC:1944 - _GENERIC] = rate  # television: temporal sampling rate
    if timecode:
        industry[1920 - _GENERIC:1924 - _GENERIC] = struct.pack(order + "I", _bcd(timecode))
        industry[1924 - _GENERIC:1928 - _GENERIC] = struct.pack(order + "I", 0)  # user bits
    start = _GENERIC + _INDUSTRY
    struct.pack_into(order + "I", head, 4, start)  # offset to the image data
    struct.pack_into(order + "I", head, 16, len(data) + _INDUSTRY)  # file size
    struct.pack_into(order + "I", head, 28, _INDUSTRY)  # industry header size
    struct.pack_into(order + "I", head, 808, start)  # element 1's data offset
    head[36:136] = name.encode("ascii", "replace")[:99].ljust(100, b"\0")  # file name
    head[160:260] = creator.encode("ascii", "replace")[:99].ljust(100, b"\0")
    return bytes(head) + bytes(industry) + data[_GENERIC:]


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
    names = {"color_primaries": COLOR_PRIMARIES_NAMES.get(int(frame.color_primaries or 0)),
             "color_trc": COLOR_TRC_NAMES.get(int(frame.color_trc or 0))}
    color = {key: name for key, name in names.items() if name}
    tags = dict(frame.metadata)
    return {"bits": head[803] if len(head) > 803 else None, "color": color, "creator": tags.get("Creator"),
            "timecode": tags.get("timecode"), "fps": _rate(path)}


def _rate(path: Path) -> Fraction | None:
    """The TV header's frame rate (then the film header's), as the exact rate it stands for."""
    with open(path, "rb") as fh:
        head = fh.read(1944)
    if len(head) < 1944:
        return None
    order = _MAGIC.get(head[:4], ">")
    for at in (1940, 1724):
        raw = head[at:at + 4]
        value = struct.unpack(order + "f", raw)[0]
        if raw != b"\xff" * 4 and 0 < value < 1000:
            for exact in (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001)):
                if abs(value - float(exact)) < 1e-3:
                    return exact  # a float field cannot hold NTSC rates exactly
            return Fraction(str(round(value, 3)))
    return None
