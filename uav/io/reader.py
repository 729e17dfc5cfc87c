"""Frame-accurate streaming video input on PyAV, plus image-sequence input.

A video is *probed* once by demuxing (not decoding) every packet of its video stream:
the sorted presentation timestamps give the true frame count, the exact rational frame
rate and whether the rate is variable, independent of what the container header claims.
Frames are then decoded on demand: :func:`iter_frames` seeks to the keyframe before the
requested start and decodes forward, identifying every decoded frame by its timestamp
so the first frame returned is exactly the one asked for.

Image sequences (a folder of PNG / TIFF / JPEG files, or a printf pattern such as
``frames/%05d.png``) are read with OpenCV, which keeps 16-bit samples. OpenEXR is not
supported: OpenCV disables its EXR codec by default and no other EXR reader is a
dependency.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .timecode import is_timecode, parse_timecode, timecode_to_frames

__all__ = [
    "VideoInputError",
    "VideoInfo",
    "probe",
    "iter_frames",
    "read_frames",
    "parse_frame_position",
    "color_tags",
    "IMAGE_EXTENSIONS",
    "VFR_MODES",
    "DEFAULT_SEQUENCE_FPS",
]

log = logging.getLogger(__name__)

#: extensions read as image-sequence frames
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: accepted values of ``vfr``: raise, convert to constant rate, or return every frame as stored
VFR_MODES = ("error", "cfr", "passthrough")
DEFAULT_SEQUENCE_FPS = Fraction(24)

# FFmpeg's names for the AVColor* enums (av_color_*_name), without "unknown"/"reserved":
# these are the strings reported in VideoInfo and accepted by the writer's ``color``.
COLOR_RANGE_NAMES = {1: "tv", 2: "pc"}
COLOR_SPACE_NAMES = {
    0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
    9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c", 14: "ictcp",
}
COLOR_PRIMARIES_NAMES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
    10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}
COLOR_TRC_NAMES = {
    1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
    10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
    16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}

# Frame rates a measured rate is snapped to when the timestamps agree with them.
_STANDARD_RATES = tuple(
    Fraction(r)
    for r in (
        "24000/1001", "24", "25", "30000/1001", "30", "48000/1001", "48", "50", "60000/1001", "60",
        "120000/1001", "120", "100", "15", "12", "12.5", "10", "8", "16", "18", "20", "72", "90", "96", "144", "240",
    )
)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file or image sequence.

    ``width``/``height`` are the display size, i.e. after the rotation metadata has been
    applied; every frame from :func:`iter_frames` has this size.
    """

    path: Path
    width: int
    height: int
    #: frames in the video stream, counted from its packets (not the header's claim)
    num_frames: int
    #: exact rate from the stream timestamps; for variable-rate input the nominal rate
    fps: Fraction
    variable_frame_rate: bool = False
    #: "HH:MM:SS:FF" (";FF" drop-frame) from the stream, tmcd track or container tags
    start_timecode: str | None = None
    has_audio: bool = False
    #: clockwise degrees (0/90/180/270) the stored frames are rotated by for display,
    #: the convention of the legacy ``rotate`` tag; already applied to returned frames
    rotation: int = 0
    color_range: str | None = None
    color_space: str | None = None
    color_primaries: str | None = None
    color_trc: str | None = None
    sample_aspect_ratio: Fraction | None = None
    #: sample depth of the returned frames: 8 (uint8) or 16 (uint16, also for 10/12-bit)
    bit_depth: int = 8
    is_image_sequence: bool = False
    #: frames :func:`iter_frames` yields with ``vfr="cfr"`` (equals ``num_frames`` for
    #: constant-rate input)
    num_frames_cfr: int | None = None
    codec: str | None = None
    pix_fmt: str | None = None
    #: seconds from the first frame's start to the last frame's end
    duration: float | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None


def color_tags(info: VideoInfo) -> dict[str, str]:
    """The colour tags of ``info`` that are set, as the writer's ``color`` argument wants them."""
    tags = {
        "color_range": info.color_range,
        "color_space": info.color_space,
        "color_primaries": info.color_primaries,
        "color_trc": info.color_trc,
    }
    return {k: v for k, v in tags.items() if v is not None}


# --------------------------------------------------------------------------- positions


def parse_frame_position(value: int | str | None, fps: Fraction, start_timecode: str | None) -> int | None:
    """Turn a user-facing frame position into a 0-based frame index.

    Args:
        value: ``None``; a frame index (``int`` or a digit string such as ``"120"``); or
            a timecode ``"HH:MM:SS:FF"`` / ``"HH:MM:SS;FF"``. A timecode is an
            absolute source timecode when the clip has one (``start_timecode``), so
            ``"01:00:01:00"`` in a clip starting at ``01:00:00:00`` is index ``fps``;
            without a start timecode it is relative to the first frame.
        fps: the clip's frame rate (sets the timecode's nominal rate).
        start_timecode: the clip's start timecode, or ``None``.

    Returns:
        The index, or ``None`` when ``value`` is ``None``.

    Raises:
        ValueError: malformed value, a negative index, or a timecode before the clip start.
        TypeError: a value that is neither ``int``, ``str`` nor ``None``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
        raise TypeError(f"frame position must be an int index or a 'HH:MM:SS:FF' timecode, got {type(value).__name__}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"frame index must be >= 0, got {int(value)}")
        return int(value)
    text = value.strip()
    if text.isdigit():
        return int(text)
    if not is_timecode(text):
        raise ValueError(f"frame position must be a frame index like '120' or a timecode like '01:00:05:12', got {value!r}")
    frames = timecode_to_frames(parse_timecode(text), fps)
    if start_timecode:
        origin = timecode_to_frames(parse_timecode(start_timecode), fps)
        if frames < origin:
            raise ValueError(f"timecode {text} is before the clip's start timecode {start_timecode}")
        frames -= origin
    return frames


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class _VideoScan:
    """Probe result for a video file plus what decoding needs."""

    info: VideoInfo
    stream_index: int
    time_base: Fraction
    pts: tuple[int, ...]  # sorted presentation timestamps, one per frame
    last_duration: int  # duration of the last frame, in time_base ticks
    sws_colorspace: str
    sws_range: str


@dataclass(frozen=True)
class _SequenceScan:
    info: VideoInfo
    files: tuple[Path, ...]


_CACHE_SIZE = 32
_cache: OrderedDict[tuple[Any, ...], _VideoScan | _SequenceScan] = OrderedDict()
_cache_lock = threading.Lock()


def probe(path: str | Path, *, fps: Fraction | int | str | None = None) -> VideoInfo:
    """Describe a video file, an image folder, a printf image pattern or a single image.

    Args:
        path: a video file; a folder of images (sorted naturally, so ``f2`` comes
            before ``f10``); a pattern like ``frames/%05d.png``; or one image file.
        fps: frame rate of an image sequence (default 24). Ignored for video files,
            whose rate comes from their timestamps.

    Raises:
        VideoInputError: the input is missing, unreadable, truncated, has no video
            frames, or is an image sequence with mixed sizes.
    """
    return _scan(path, fps).info


def _scan(path: str | Path, fps: Fraction | int | str | None) -> _VideoScan | _SequenceScan:
    text = os.fspath(path)
    if _is_pattern(text):
        return _scan_sequence(text, fps)
    p = Path(text)
    if not p.exists():
        if p.parent.is_dir() or not str(p.parent):
            raise VideoInputError(p, "no such file or folder", "check the path")
        raise VideoInputError(p, f"no such file or folder (folder {p.parent} does not exist either)", "check the path")
    if p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS or p.suffix.lower() == ".exr":
        return _scan_sequence(text, fps)
    stat = p.stat()
    key = ("video", str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    scan = _scan_video(p)
    with _cache_lock:
        _cache[key] = scan
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return scan


def _open_input(path: Path) -> Any:
    import av

    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, av.EOFError):
            raise VideoInputError(path, f"ends before its header or index is complete ({reason})",
                                  "the file is truncated or still being written; re-export or re-copy it") from None
        if isinstance(exc, av.InvalidDataError):
            raise VideoInputError(path, f"is not a video FFmpeg can read ({reason})",
                                  "check that it really is a video file (e.g. not a text file renamed to .mp4)") from None
        if isinstance(exc, av.PermissionError):
            raise VideoInputError(path, "cannot be read (permission denied)", "fix the file permissions") from None
        raise VideoInputError(path, f"cannot be opened as a video ({reason})", "check the file") from None
    except OSError as exc:
        raise VideoInputError(path, f"cannot be opened ({exc.strerror or exc})", "check the path") from None


def _tagged_timecode(container: Any, video_stream: Any) -> str | None:
    def lookup(metadata: Any) -> str | None:
        for key, value in dict(metadata).items():
            if key.lower() == "timecode" and isinstance(value, str) and is_timecode(value):
                return value.strip()
        return None

    candidates = [video_stream] + [s for s in container.streams if s.type == "data"]
    for stream in candidates:
        tc = lookup(stream.metadata)
        if tc:
            return tc
    return lookup(container.metadata)


def _bit_depth(pix_fmt: Any) -> int:
    import av

    try:
        fmt = pix_fmt if isinstance(pix_fmt, av.VideoFormat) else av.VideoFormat(pix_fmt)
        bits = max((c.bits for c in fmt.components), default=8)
    except (ValueError, TypeError):
        return 8
    return 16 if bits > 8 else 8


def _sws_colorspace(space: int, width: int, height: int) -> str:
    # swscale only knows a handful of YUV matrices; untagged video follows the common
    # player convention (BT.709 for HD, BT.601 below).
    mapping = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
    if space in mapping:
        return mapping[space]
    return "ITU709" if height >= 720 or width >= 1280 else "ITU601"


def _select_rate(times: np.ndarray, tick: float, declared: list[Fraction]) -> tuple[Fraction, bool]:
    """Pick the exact frame rate that explains ``times`` (seconds from the first frame).

    Returns ``(fps, variable)``. A rate *fits* when every timestamp lies within one
    tick (timestamp rounding) of its slot on a constant-rate grid. Preference among
    fitting rates: a declared container rate with a small denominator (snapped to a
    standard rate within 0.01 %), then standard rates nearest the mean rate, then the
    mean rate itself. Container rates alone are not trusted: muxers often store a
    rounded or averaged value. When nothing fits, the clip is still constant-rate if
    the best candidate keeps every frame within half a frame of its slot (jittery
    capture timestamps); otherwise it is variable-rate and the reported rate is the
    nominal rate of its typical frame interval.
    """
    n = len(times)
    declared = [Fraction(r) for r in declared if r and r > 0]
    if n < 2:
        return (declared[0] if declared else DEFAULT_SEQUENCE_FPS), False
    span = float(times[-1])
    if span <= 0:
        return (declared[0] if declared else DEFAULT_SEQUENCE_FPS), True
    index = np.arange(n, dtype=np.float64)
    mean_rate = (n - 1) / span

    def max_dev(rate: Fraction) -> float:
        return float(np.max(np.abs(times - index / float(rate))))

    def fits(rate: Fraction) -> bool:
        return max_dev(rate) <= min(tick * 1.0001 + 1e-9, 0.25 / float(rate))

    def standard_near(rate: float, tol: float) -> list[Fraction]:
        return [r for r in sorted(_STANDARD_RATES, key=lambda s: abs(float(s) - rate)) if abs(float(r) - rate) <= tol * rate]

    for rate in (r for r in declared if r.denominator <= 1001):
        if fits(rate):
            snapped = [s for s in standard_near(float(rate), 1e-4) if fits(s)]
            return (snapped[0] if snapped else rate), False
    mean_fraction = Fraction(n - 1) / Fraction(span).limit_denominator(10**9)
    candidates = standard_near(mean_rate, 0.01) + [mean_fraction.limit_denominator(1001), mean_fraction]
    for rate in candidates:
        if fits(rate):
            return rate, False
    best = min(candidates + declared, key=max_dev)
    if max_dev(best) <= 0.5 / float(best):
        return best, False
    deltas = np.diff(times)
    typical = float(np.median(deltas[deltas > 0])) if np.any(deltas > 0) else span / (n - 1)
    nominal = [r for r in declared if abs(float(r) * typical - 1) <= 0.02] + standard_near(1.0 / typical, 0.02)
    return (nominal[0] if nominal else Fraction(1.0 / typical).limit_denominator(1001)), True


def _cfr_map(times: np.ndarray, last_duration: float, fps: Fraction) -> np.ndarray:
    """Source frame index for each frame of the constant-rate version of a clip."""
    total = float(times[-1]) + last_duration
    count = max(1, int(round(total * float(fps))))
    targets = np.arange(count, dtype=np.float64) / float(fps)
    right = np.clip(np.searchsorted(times, targets, side="left"), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    # nearest timestamp, ties to the earlier frame
    choose_left = np.abs(targets - times[left]) <= np.abs(times[right] - targets)
    return np.where(choose_left, left, right)


def _scan_video(path: Path) -> _VideoScan:
    import av

    container = _open_input(path)
    try:
        videos = list(container.streams.video)
        if not videos:
            raise VideoInputError(path, "contains no video frames (no video stream)", "pass a video file or an image folder")
        stream = videos[0]
        time_base = stream.time_base
        if not time_base:
            raise VideoInputError(path, "has a video stream without a time base", "remux it into .mov/.mp4/.mkv")
        pts: list[int] = []
        durations: dict[int, int] = {}
        corrupt = False
        discarded = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.is_discard:
                    # edit lists hide these samples; they still count in the header's total
                    discarded += 1
                    continue
                if packet.is_corrupt:
                    corrupt = True
                    break
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue
                pts.append(ts)
                durations[ts] = packet.duration or 0
        except av.FFmpegError as exc:
            raise VideoInputError(path, f"is damaged after {len(pts)} video packets ({exc.strerror or exc})",
                                  "the file is truncated or corrupt; re-export or re-copy it") from None
        declared_frames = stream.frames or 0
        if corrupt or (declared_frames and len(pts) + discarded < declared_frames):
            raise VideoInputError(path, f"is truncated: its index lists {declared_frames} frames but only "
                                        f"{len(pts)} are complete", "re-export or re-copy the file")
        if not pts:
            raise VideoInputError(path, "contains no video frames", "pass a video with at least one frame")
        pts.sort()
        times = (np.asarray(pts, dtype=np.float64) - pts[0]) * float(time_base)
        declared = [r for r in (stream.average_rate, stream.guessed_rate) if r]
        fps, variable = _select_rate(times, float(time_base), declared)
        last_ticks = durations.get(pts[-1], 0)
        if last_ticks <= 0:
            last_ticks = int(round(1 / (fps * time_base))) or 1
        last_duration = float(last_ticks * time_base)
        num_cfr = len(_cfr_map(times, last_duration, fps)) if variable else len(pts)

        # Read the stream's tags before decoding: some decoders overwrite the context
        # with what the bitstream says, which may be "unspecified".
        cc = stream.codec_context
        stream_color = (int(cc.color_range or 0), int(cc.colorspace if cc.colorspace is not None else 2),
                        int(cc.color_primaries or 0), int(cc.color_trc or 0))
        codec_name = cc.name
        # Decode one frame: it proves the codec is usable and carries rotation/colour.
        container.seek(pts[0], stream=stream, backward=True)
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.FFmpegError as exc:
            raise VideoInputError(path, f"its first video frame cannot be decoded ({exc.strerror or exc})",
                                  "the file is corrupt or uses an unsupported codec") from None
        if first is None:
            raise VideoInputError(path, "contains no decodable video frames", "re-export the file")

        rotation = (-int(round(first.rotation or 0))) % 360
        if rotation % 90:
            log.warning("%s: rotation of %d degrees is not a multiple of 90; ignoring it", path, rotation)
            rotation = 0
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width

        def tag(stream_value: int, frame_value: int, names: dict[int, str]) -> str | None:
            return names.get(int(stream_value or 0)) or names.get(int(frame_value or 0))

        space_value = stream_color[1] if stream_color[1] in COLOR_SPACE_NAMES else int(first.colorspace or 2)
        range_value = stream_color[0] or int(first.color_range or 0)
        pix_fmt = first.format.name
        if pix_fmt.startswith("yuvj"):
            range_value = 2
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        audio = container.streams.audio[0] if container.streams.audio else None
        info = VideoInfo(
            path=path,
            width=width,
            height=height,
            num_frames=len(pts),
            fps=fps,
            variable_frame_rate=variable,
            start_timecode=_tagged_timecode(container, stream),
            has_audio=audio is not None,
            rotation=rotation,
            color_range=COLOR_RANGE_NAMES.get(range_value),
            color_space=COLOR_SPACE_NAMES.get(space_value),
            color_primaries=tag(stream_color[2], first.color_primaries, COLOR_PRIMARIES_NAMES),
            color_trc=tag(stream_color[3], first.color_trc, COLOR_TRC_NAMES),
            sample_aspect_ratio=Fraction(sar) if sar and sar > 0 else None,
            bit_depth=_bit_depth(first.format),
            is_image_sequence=False,
            num_frames_cfr=num_cfr,
            codec=codec_name,
            pix_fmt=pix_fmt,
            duration=float(times[-1]) + last_duration,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else None,
        )
        return _VideoScan(
            info=info,
            stream_index=stream.index,
            time_base=Fraction(time_base),
            pts=tuple(pts),
            last_duration=last_ticks,
            sws_colorspace=_sws_colorspace(space_value, first.width, first.height),
            sws_range="JPEG" if range_value == 2 else "MPEG",
        )
    finally:
        container.close()


# --------------------------------------------------------------------------- sequences


def _is_pattern(text: str) -> bool:
    return bool(re.search(r"%0?\d*d", Path(text).name))


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _list_sequence(text: str) -> tuple[Path, list[Path]]:
    p = Path(text)
    if _is_pattern(text):
        folder = p.parent
        if not folder.is_dir():
            raise VideoInputError(p, f"folder {folder} of the image pattern does not exist", "check the path")
        match = re.search(r"%(0?)(\d*)d", p.name)
        assert match is not None
        zero, width = match.group(1), match.group(2)
        digits = rf"\d{{{int(width)}}}" if zero and width else r"\d+"
        regex = re.compile(re.escape(p.name[: match.start()]) + f"({digits})" + re.escape(p.name[match.end():]) + "$")
        found = [(int(m.group(1)), f) for f in folder.iterdir() if f.is_file() and (m := regex.match(f.name))]
        files = [f for _, f in sorted(found)]
        if not files:
            raise VideoInputError(p, "no files match this image pattern", "check the folder and the %0Nd width")
        return folder, files
    if p.is_file():
        return p.parent, [p]
    images = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS + (".exr",)]
    if not images:
        raise VideoInputError(p, "folder contains no images", f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    kinds = sorted({f.suffix.lower().replace(".tiff", ".tif").replace(".jpeg", ".jpg") for f in images})
    if len(kinds) > 1:
        raise VideoInputError(p, f"folder mixes {' and '.join(kinds)} images",
                              "pass a pattern such as folder/%05d.png to pick one sequence")
    return p, sorted(images, key=lambda f: _natural_key(f.name))


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG or TIFF header without decoding; ``None`` if unknown."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return int(width), int(height)
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff_size(fh, "<" if head[:2] == b"II" else ">")
    except (OSError, struct.error):
        return None
    return None


def _tiff_size(fh: Any, endian: str) -> tuple[int, int] | None:
    fh.seek(4)
    (offset,) = struct.unpack(endian + "I", fh.read(4))
    fh.seek(offset)
    (count,) = struct.unpack(endian + "H", fh.read(2))
    values: dict[int, int] = {}
    for _ in range(count):
        tag, kind, _n, raw = struct.unpack(endian + "HHI4s", fh.read(12))
        if tag in (256, 257):
            values[tag] = struct.unpack(endian + ("H" if kind == 3 else "I"), raw[: 2 if kind == 3 else 4])[0]
    if 256 in values and 257 in values:
        return values[256], values[257]
    return None


def _read_image(path: Path) -> np.ndarray:
    """One sequence frame as HxWx3 RGB uint8/uint16."""
    import cv2

    if path.suffix.lower() == ".exr":
        raise VideoInputError(path, "OpenEXR images are not supported (no EXR reader is installed)",
                              "convert the sequence to 16-bit TIFF or PNG")
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise VideoInputError(path, "cannot be decoded as an image", "the file is damaged or not an image")
    if data.dtype not in (np.uint8, np.uint16):
        raise VideoInputError(path, f"has {data.dtype} samples; only 8- and 16-bit integer images are supported",
                              "convert it to 16-bit TIFF or PNG")
    if data.ndim == 2:
        data = np.repeat(data[:, :, None], 3, axis=2)
    elif data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    elif data.shape[2] == 4:
        data = cv2.cvtColor(data, cv2.COLOR_BGRA2RGB)
    else:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(data)


def _sequence_fps(fps: Fraction | int | str | None) -> Fraction:
    if fps is None:
        return DEFAULT_SEQUENCE_FPS
    if isinstance(fps, float):
        raise TypeError(f"fps must be exact: pass a Fraction, an int or a string like '24000/1001', got float {fps}")
    try:
        value = Fraction(fps)
    except (ValueError, TypeError):
        raise ValueError(f"fps must be a positive rational like 24 or '24000/1001', got {fps!r}") from None
    if value <= 0:
        raise ValueError(f"fps must be > 0, got {value}")
    return value


def _scan_sequence(text: str, fps: Fraction | int | str | None) -> _SequenceScan:
    rate = _sequence_fps(fps)
    folder, files = _list_sequence(text)
    first = _read_image(files[0])
    height, width = first.shape[:2]
    for f in files[1:]:
        size = _image_size(f)
        if size is None:
            image = _read_image(f)
            size = (image.shape[1], image.shape[0])
        if size != (width, height):
            raise VideoInputError(f, f"is {size[0]}x{size[1]} but the sequence's first image {files[0].name} is "
                                     f"{width}x{height}", "all images of a sequence must have the same size")
    info = VideoInfo(
        path=Path(text),
        width=width,
        height=height,
        num_frames=len(files),
        fps=rate,
        bit_depth=16 if first.dtype == np.uint16 else 8,
        is_image_sequence=True,
        num_frames_cfr=len(files),
        codec=files[0].suffix.lower().lstrip("."),
        pix_fmt="rgb48" if first.dtype == np.uint16 else "rgb24",
        duration=len(files) / float(rate),
    )
    return _SequenceScan(info=info, files=tuple(files))


# --------------------------------------------------------------------------- decoding


def _resolve_range(info: VideoInfo, start: int | str | None, end: int | str | None, total: int) -> tuple[int, int]:
    first = parse_frame_position(start, info.fps, info.start_timecode)
    stop = parse_frame_position(end, info.fps, info.start_timecode)
    first = 0 if first is None else first
    stop = total if stop is None else stop
    if first >= total:
        raise ValueError(f"start={start!r} is frame {first}, past the last frame of {info.path} ({total} frames)")
    if stop > total:
        raise ValueError(f"end={end!r} is frame {stop}, but {info.path} has only {total} frames (end is exclusive)")
    if stop <= first:
        raise ValueError(f"end={end!r} (frame {stop}) must be after start={start!r} (frame {first})")
    return first, stop


def iter_frames(
    path: str | Path,
    *,
    start: int | str | None = None,
    end: int | str | None = None,
    vfr: str = "error",
    fps: Fraction | int | str | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames ``[start, end)`` of a video or image sequence, exactly.

    Args:
        path: anything :func:`probe` accepts.
        start: first frame, as an index or timecode (see :func:`parse_frame_position`).
        end: frame after the last one (exclusive), as an index or timecode.
        vfr: what to do with variable-frame-rate video: ``"error"`` raises
            :class:`VideoInputError`; ``"cfr"`` converts to the constant rate
            ``probe(path).fps`` by repeating or dropping the nearest frames (indices
            then refer to the constant-rate clip of ``num_frames_cfr`` frames);
            ``"passthrough"`` returns every stored frame once, ignoring timing.
        fps: frame rate of an image sequence (default 24), which timecode positions use.

    Returns:
        An iterator of ``(H, W, 3)`` RGB arrays, ``uint8`` or ``uint16`` (sources over
        8 bits, full 16-bit scale), rotated upright. Arguments and the input are
        checked before the iterator is returned, so bad input fails at the call.
    """
    if vfr not in VFR_MODES:
        raise ValueError(f"vfr must be one of {', '.join(map(repr, VFR_MODES))}, got {vfr!r}")
    scan = _scan(path, fps)
    info = scan.info
    if isinstance(scan, _SequenceScan):
        first, stop = _resolve_range(info, start, end, len(scan.files))
        return _iter_sequence(scan, first, stop)
    if info.variable_frame_rate and vfr == "error":
        times = np.asarray(scan.pts, dtype=np.float64) * float(scan.time_base)
        deltas = np.diff(times)
        deltas = deltas[deltas > 0]
        slowest, fastest = (1 / deltas.max(), 1 / deltas.min()) if deltas.size else (0.0, 0.0)
        raise VideoInputError(
            info.path,
            f"has a variable frame rate (frame intervals span {slowest:.3g} to {fastest:.3g} fps)",
            f"pass vfr='cfr' to convert it to a constant {info.fps} fps ({info.num_frames_cfr} frames) "
            "or vfr='passthrough' to read every frame as stored",
        )
    if info.variable_frame_rate and vfr == "cfr":
        times = (np.asarray(scan.pts, dtype=np.float64) - scan.pts[0]) * float(scan.time_base)
        mapping = _cfr_map(times, float(scan.last_duration * scan.time_base), info.fps)
        first, stop = _resolve_range(info, start, end, len(mapping))
        sources = [int(i) for i in mapping[first:stop]]
    else:
        first, stop = _resolve_range(info, start, end, info.num_frames)
        sources = list(range(first, stop))
    return _iter_video(scan, sources)


def read_frames(
    path: str | Path,
    *,
    start: int | str | None = None,
    end: int | str | None = None,
    vfr: str = "error",
    fps: Fraction | int | str | None = None,
) -> np.ndarray:
    """All frames ``[start, end)`` as one ``(T, H, W, 3)`` array (see :func:`iter_frames`)."""
    return np.stack(list(iter_frames(path, start=start, end=end, vfr=vfr, fps=fps)))


def _iter_sequence(scan: _SequenceScan, first: int, stop: int) -> Iterator[np.ndarray]:
    info = scan.info
    dtype = np.uint16 if info.bit_depth == 16 else np.uint8
    for f in scan.files[first:stop]:
        image = _read_image(f)
        if image.shape[:2] != (info.height, info.width):
            raise VideoInputError(f, f"is {image.shape[1]}x{image.shape[0]} but the sequence is "
                                     f"{info.width}x{info.height}", "all images of a sequence must have the same size")
        if image.dtype != dtype:
            raise VideoInputError(f, f"is {8 * image.dtype.itemsize}-bit but the sequence starts "
                                     f"{info.bit_depth}-bit", "all images of a sequence must have the same bit depth")
        yield image


def _to_array(frame: Any, scan: _VideoScan) -> np.ndarray:
    info = scan.info
    fmt = "rgb48le" if info.bit_depth == 16 else "rgb24"
    array = frame.to_ndarray(format=fmt, src_colorspace=scan.sws_colorspace, src_color_range=scan.sws_range)
    if info.rotation:
        # rotation is clockwise; np.rot90 turns counter-clockwise for positive k
        array = np.rot90(array, k=-(info.rotation // 90))
    return np.ascontiguousarray(array)


def _iter_video(scan: _VideoScan, sources: list[int]) -> Iterator[np.ndarray]:
    """Decode the source frames ``sources`` (non-decreasing indices, repeats allowed)."""
    import av

    info = scan.info
    index_of = {ts: i for i, ts in enumerate(scan.pts)}
    wanted_first, wanted_last = sources[0], sources[-1]
    repeats: dict[int, int] = {}
    for i in sources:
        repeats[i] = repeats.get(i, 0) + 1

    def decode_from(container: Any, stream: Any, seek_index: int) -> Iterator[tuple[int, Any]]:
        if seek_index > 0:
            container.seek(scan.pts[seek_index], stream=stream, backward=True)
        else:
            container.seek(scan.pts[0], stream=stream, backward=True)
        previous = -1
        for frame in container.decode(stream):
            ts = frame.pts if frame.pts is not None else frame.dts
            idx = index_of.get(ts) if ts is not None else None
            if idx is None:
                # a timestamp the probe did not see: place it after the previous frame
                idx = previous + 1 if previous >= 0 else bisect_left(scan.pts, ts if ts is not None else 0)
            previous = idx
            yield idx, frame

    def generate() -> Iterator[np.ndarray]:
        container = _open_input(info.path)
        try:
            stream = container.streams[scan.stream_index]
            stream.thread_type = "AUTO"
            # Seek, then check the first decoded frame is not past the target (open GOPs,
            # sparse indexes); back off further and finally decode from the start.
            attempts = [wanted_first, max(0, wanted_first - 32), max(0, wanted_first - 512), 0]
            frames: Iterator[tuple[int, Any]] | None = None
            pending: tuple[int, Any] | None = None
            for seek_index in dict.fromkeys(attempts):
                frames = decode_from(container, stream, seek_index)
                pending = next(frames, None)
                if pending is None or pending[0] <= wanted_first:
                    break
            assert frames is not None
            expected = wanted_first
            while pending is not None:
                idx, frame = pending
                if idx > wanted_last:
                    break
                if idx >= wanted_first:
                    if idx != expected and idx > expected:
                        raise VideoInputError(info.path, f"frame {expected} cannot be decoded (the decoder went from "
                                                         f"frame {expected - 1} to {idx})", "the file is damaged")
                    if idx == expected:
                        count = repeats.get(idx, 0)
                        if count:
                            array = _to_array(frame, scan)
                            for _ in range(count):
                                yield array if count == 1 else array.copy()
                        expected = idx + 1
                pending = next(frames, None)
            if expected <= wanted_last:
                raise VideoInputError(info.path, f"decoding stopped at frame {expected} of {info.num_frames}",
                                      "the file is truncated or damaged")
        except av.FFmpegError as exc:
            raise VideoInputError(info.path, f"decoding failed ({exc.strerror or exc})",
                                  "the file is damaged or uses an unsupported codec") from None
        finally:
            container.close()

    return generate()
