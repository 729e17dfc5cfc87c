"""Probing: what a video file or image sequence holds, learned once and cached.

A video is probed by demuxing (not decoding) every packet of its video stream: the
sorted presentation timestamps give the true frame count, the exact rational frame
rate and whether the rate is variable, independent of what the container header
claims. One frame is decoded to prove the codec works and to read rotation and colour.
An mp4/mov whose last box runs past the end of the file (a copy missing its last
bytes) is refused even when every frame still decodes.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .info import VideoInfo
from .paths import refuse_unreadable
from .metadata import (COLOR_PRIMARIES_NAMES, COLOR_RANGE_NAMES, COLOR_SPACE_NAMES, COLOR_TRC_NAMES, SWS_MATRIX,
                       tagged_timecode)
from .rates import cfr_map, select_rate
from .sequence import IMAGE_EXTENSIONS, SequenceScan, is_pattern, scan_sequence

__all__ = ["VideoScan", "probe", "scan", "open_input"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoScan:
    """A probed video file: its :class:`VideoInfo` plus what decoding and audio cutting need."""

    info: VideoInfo
    stream_index: int
    time_base: Fraction
    pts: tuple[int, ...]  # sorted presentation timestamps, one per frame
    last_duration: int  # duration of the last frame, in time_base ticks
    sws_colorspace: str
    sws_range: str


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
    return scan(path, fps).info


def scan(path: str | Path, fps: Fraction | int | str | None = None) -> VideoScan | SequenceScan:
    """:func:`probe` with what reading needs: the packet timestamps or the image files (cached)."""
    text = os.fspath(path)
    if is_pattern(text):
        return scan_sequence(text, fps)
    p = Path(text)
    if not p.exists():
        refuse_unreadable(p)  # a broken link says so
        if p.parent.is_dir() or not str(p.parent):
            raise VideoInputError(p, "no such file or folder", "check the path")
        raise VideoInputError(p, f"no such file or folder (folder {p.parent} does not exist either)", "check the path")
    refuse_unreadable(p)
    if p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS or p.suffix.lower() == ".exr":
        return scan_sequence(text, fps)
    stat = p.stat()
    return _cached_scan(p, str(p.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _cached_scan(path: Path, resolved: str, size: int, mtime_ns: int) -> VideoScan:
    """:func:`_scan_video`, remembered while the file (``resolved``, ``size``, ``mtime_ns``) is unchanged."""
    return _scan_video(path)


def open_input(path: Path) -> Any:
    """Open ``path`` with PyAV for reading; failures become one-line :class:`VideoInputError`."""
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


# ISO base media (mp4/mov) top-level box types; a file starting with one is walked box by box.
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof", b"styp", b"sidx"}


#: Matroska / WebM: the EBML header's and the Segment's element IDs
_EBML_ID = 0x1A45DFA3
_SEGMENT_ID = 0x18538067


def container_truncation(path: Path) -> str | None:
    """Why the container of ``path`` is cut short, or ``None`` when it is whole (or not
    mp4/mov/mkv/webm).

    FFmpeg reads an mp4/mov or a Matroska file whose last bytes are missing without a
    word (dropping the last frames, or none when the damage falls in a trailing box or
    index it does not need), so the top-level structure is walked: each box or element
    declares its size, and together they must reach the end of the file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head[:4] == _EBML_ID.to_bytes(4, "big"):
                return _matroska_truncation(fh, size)
            if len(head) < 8 or head[4:8] not in _ISO_BOXES:
                return None
            offset = 0
            while offset < size:
                fh.seek(offset)
                header = fh.read(16)
                if len(header) < 8:
                    return f"ends inside the header of a box at byte {offset} of {size}"
                box_size, kind = struct.unpack(">I4s", header[:8])
                if box_size == 1:
                    if len(header) < 16:
                        return f"ends inside the header of box {kind.decode('latin-1')!r} at byte {offset}"
                    box_size = struct.unpack(">Q", header[8:16])[0]
                elif box_size == 0:
                    return None  # the last box runs to the end of the file by definition
                if box_size < 8:
                    return None  # not a box structure we understand; leave the verdict to FFmpeg
                if offset + box_size > size:
                    missing = offset + box_size - size
                    return (f"is truncated: its {kind.decode('latin-1')!r} box ends {missing} byte"
                            f"{'s' if missing != 1 else ''} past the end of the file")
                offset += box_size
    except OSError:
        return None  # unreadable files are reported by the open that follows
    return None


def _matroska_truncation(fh: Any, size: int) -> str | None:
    """The EBML header, then the Segment: when the muxer finished the file it wrote the
    Segment's size, which must fit in the file (a live or unfinished file says "unknown")."""

    def vint(at: int, keep_marker: bool) -> tuple[int, int, bool] | None:
        fh.seek(at)
        first = fh.read(1)
        if not first or first[0] == 0:
            return None
        length = 9 - first[0].bit_length()
        rest = fh.read(length - 1)
        if len(rest) < length - 1:
            return None
        raw = int.from_bytes(first + rest, "big")
        value = raw if keep_marker else raw & ((1 << (7 * length)) - 1)
        unknown = not keep_marker and value == (1 << (7 * length)) - 1
        return value, at + length, unknown

    offset = 0
    for expected in (_EBML_ID, _SEGMENT_ID):
        element = vint(offset, keep_marker=True)
        length = None if element is None else vint(element[1], keep_marker=False)
        if element is None or length is None:
            return f"ends inside the header of an element at byte {offset} of {size}"
        if element[0] != expected:
            return None  # not the layout we know; leave the verdict to FFmpeg
        data_size, data_start, unknown = length
        if unknown:
            return None  # "unknown size": a stream or a file still being written
        end = data_start + data_size
        if end > size:
            missing = end - size
            name = "Segment" if expected == _SEGMENT_ID else "EBML header"
            return (f"is truncated: its {name} ends {missing} byte{'s' if missing != 1 else ''} "
                    "past the end of the file")
        offset = end
    return None


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
    return SWS_MATRIX.get(COLOR_SPACE_NAMES.get(space, ""), "ITU709" if height >= 720 or width >= 1280 else "ITU601")


def _first_frame(path: Path, index: int) -> Any:
    """The first decodable frame of stream ``index``, read from a fresh open of the file:
    formats without an index (MPEG-TS, raw streams) cannot seek back to their start."""
    import av

    container = open_input(path)
    try:
        for frame in container.decode(container.streams[index]):
            return frame
    except av.FFmpegError as exc:
        raise VideoInputError(path, f"its first video frame cannot be decoded ({exc.strerror or exc})",
                              "the file is corrupt or uses an unsupported codec") from None
    finally:
        container.close()
    raise VideoInputError(path, "contains no decodable video frames", "re-export the file")


def _scan_video(path: Path) -> VideoScan:
    truncated = container_truncation(path)
    if truncated is not None:
        raise VideoInputError(path, truncated, "the copy is incomplete or the export was interrupted; "
                                               "re-export or re-copy the file")
    container = open_input(path)
    try:
        stream = _video_stream(container, path)
        time_base = stream.time_base
        pts, durations = _packet_times(container, stream, path)
        times = (np.asarray(pts, dtype=np.float64) - pts[0]) * float(time_base)
        declared = [r for r in (stream.average_rate, stream.guessed_rate) if r]
        fps, variable = select_rate(times, float(time_base), declared)
        last_ticks = durations.get(pts[-1], 0)
        if last_ticks <= 0:
            last_ticks = int(round(1 / (fps * time_base))) or 1
        last_duration = float(last_ticks * time_base)
        # Read the stream's tags before decoding: some decoders overwrite the context
        # with what the bitstream says, which may be "unspecified".
        cc = stream.codec_context
        stream_color = (int(cc.color_range or 0), int(cc.colorspace if cc.colorspace is not None else 2),
                        int(cc.color_primaries or 0), int(cc.color_trc or 0))
        codec_name = cc.name
        # Decode one frame: it proves the codec is usable and carries rotation/colour.
        first = _first_frame(path, stream.index)
        space_value, range_value, colors = _frame_colors(stream_color, first)
        info = VideoInfo(
            path=path, **_oriented_size(first, path), num_frames=len(pts), fps=fps, variable_frame_rate=variable,
            start_timecode=tagged_timecode(container, stream), **colors,
            sample_aspect_ratio=_aspect(stream), bit_depth=_bit_depth(first.format), is_image_sequence=False,
            num_frames_cfr=len(cfr_map(times, last_duration, fps)) if variable else len(pts), codec=codec_name,
            pix_fmt=first.format.name, duration=float(times[-1]) + last_duration, **_audio_facts(container, path),
            has_alpha=any(getattr(c, "is_alpha", False) for c in first.format.components),
        )
        return VideoScan(info=info, stream_index=stream.index, time_base=Fraction(time_base), pts=tuple(pts),
                         last_duration=last_ticks, sws_colorspace=_sws_colorspace(space_value, first.width,
                                                                                  first.height),
                         sws_range="JPEG" if range_value == 2 else "MPEG")
    finally:
        container.close()


def _video_stream(container: Any, path: Path) -> Any:
    """The first video stream, refused in one line when it cannot be read."""
    videos = list(container.streams.video)
    if not videos:
        raise VideoInputError(path, "contains no video frames (no video stream)", "pass a video file or an image folder")
    stream = videos[0]
    if stream.codec_context is None:  # a damaged header names a codec FFmpeg does not know
        raise VideoInputError(path, "has a video stream whose codec cannot be read",
                              "the file is corrupt or uses an unsupported codec; re-export or re-copy it")
    if not stream.time_base:
        raise VideoInputError(path, "has a video stream without a time base", "remux it into .mov/.mp4/.mkv")
    return stream


def _packet_times(container: Any, stream: Any, path: Path) -> tuple[list[int], dict[int, int]]:
    """The sorted presentation times of the stream's complete packets and each one's
    duration (ticks); a truncated or corrupt stream is one error."""
    import av

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
    return pts, durations


def _oriented_size(first: Any, path: Path) -> dict[str, int]:
    """``width``, ``height`` (as displayed) and ``rotation`` of the first decoded frame."""
    rotation = (-int(round(first.rotation or 0))) % 360
    if rotation % 90:
        log.warning("%s: rotation of %d degrees is not a multiple of 90; ignoring it", path, rotation)
        rotation = 0
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    return {"width": width, "height": height, "rotation": rotation}


def _frame_colors(stream_color: tuple[int, int, int, int], first: Any) -> tuple[int, int, dict[str, Any]]:
    """``(colour space value, range value, the info's colour tags)``: the stream's tags, else the frame's."""

    def tag(stream_value: int, frame_value: int, names: dict[int, str]) -> str | None:
        return names.get(int(stream_value or 0)) or names.get(int(frame_value or 0))

    space_value = stream_color[1] if stream_color[1] in COLOR_SPACE_NAMES else int(first.colorspace or 2)
    range_value = stream_color[0] or int(first.color_range or 0)
    if first.format.name.startswith("yuvj"):
        range_value = 2
    return space_value, range_value, {
        "color_range": COLOR_RANGE_NAMES.get(range_value), "color_space": COLOR_SPACE_NAMES.get(space_value),
        "color_primaries": tag(stream_color[2], first.color_primaries, COLOR_PRIMARIES_NAMES),
        "color_trc": tag(stream_color[3], first.color_trc, COLOR_TRC_NAMES)}


def _aspect(stream: Any) -> Fraction | None:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else None


def _audio_facts(container: Any, path: Path) -> dict[str, Any]:
    """The info's audio fields; an audio stream whose codec cannot be read is dropped (a warning)."""
    audio = container.streams.audio[0] if container.streams.audio else None
    if audio is not None and audio.codec_context is None:
        log.warning("%s: its audio stream's codec cannot be read; the output gets no audio", path)
        audio = None
    cc = audio.codec_context if audio is not None else None
    return {"has_audio": audio is not None, "audio_codec": cc.name if cc is not None else None,
            "audio_sample_rate": None if cc is None else cc.sample_rate, "audio_channels": None if cc is None else cc.channels}
