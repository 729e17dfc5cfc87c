"""Frame-accurate streaming input: any ``[start, end)`` range of a video or image sequence.

:func:`probe` (from :mod:`uav.io.probing`) learns the frame timestamps once; frames
are then decoded on demand. :func:`iter_frames` seeks to the keyframe before the
requested start and decodes forward, identifying every decoded frame by its timestamp
so the first frame returned is exactly the one asked for. Image sequences are read by
:mod:`uav.io.sequence`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .info import VideoInfo
from .metadata import color_tags
from .probing import VideoScan, open_input, probe, scan
from .rates import DEFAULT_SEQUENCE_FPS, cfr_map
from .sequence import IMAGE_EXTENSIONS, SequenceScan, iter_sequence, iter_sequence_alpha
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

#: accepted values of ``vfr``: raise, convert to constant rate, or return every frame as stored
VFR_MODES = ("error", "cfr", "passthrough")

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
    alpha: bool = False,
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
        alpha: yield the frames' alpha planes ``(H, W)`` instead (fully opaque for an input
            without alpha; :attr:`VideoInfo.has_alpha` says which).

    Returns:
        An iterator of ``(H, W, 3)`` RGB arrays, ``uint8`` or ``uint16`` (sources over
        8 bits, full 16-bit scale), rotated upright. Arguments and the input are
        checked before the iterator is returned, so bad input fails at the call.
    """
    if vfr not in VFR_MODES:
        raise ValueError(f"vfr must be one of {', '.join(map(repr, VFR_MODES))}, got {vfr!r}")
    found = scan(path, fps)
    info = found.info
    if isinstance(found, SequenceScan):
        first, stop = _resolve_range(info, start, end, len(found.files))
        return (iter_sequence_alpha if alpha else iter_sequence)(found, first, stop)
    if info.variable_frame_rate and vfr == "error":
        times = np.asarray(found.pts, dtype=np.float64) * float(found.time_base)
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
        times = (np.asarray(found.pts, dtype=np.float64) - found.pts[0]) * float(found.time_base)
        mapping = cfr_map(times, float(found.last_duration * found.time_base), info.fps)
        first, stop = _resolve_range(info, start, end, len(mapping))
        sources = [int(i) for i in mapping[first:stop]]
    else:
        first, stop = _resolve_range(info, start, end, info.num_frames)
        sources = list(range(first, stop))
    return _iter_video(found, sources, alpha)


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


def _to_array(frame: Any, scan: VideoScan, alpha: bool = False) -> np.ndarray:
    info = scan.info
    if alpha:
        fmt = "rgba64le" if info.bit_depth == 16 else "rgba"
    else:
        fmt = "rgb48le" if info.bit_depth == 16 else "rgb24"
    array = frame.to_ndarray(format=fmt, src_colorspace=scan.sws_colorspace, src_color_range=scan.sws_range)
    if alpha:
        array = array[:, :, 3]
    if info.rotation:
        # rotation is clockwise; np.rot90 turns counter-clockwise for positive k
        array = np.rot90(array, k=-(info.rotation // 90))
    return np.ascontiguousarray(array)


def _iter_video(scan: VideoScan, sources: list[int], alpha: bool = False) -> Iterator[np.ndarray]:
    """Decode the source frames ``sources`` (non-decreasing indices, repeats allowed); with
    ``alpha``, their alpha planes instead of their RGB."""
    import av

    info = scan.info
    wanted_first, wanted_last = sources[0], sources[-1]
    repeats: dict[int, int] = {}
    for i in sources:
        repeats[i] = repeats.get(i, 0) + 1

    def generate() -> Iterator[np.ndarray]:
        opened: list[Any] = []
        try:
            frames, pending = _seek(scan, wanted_first, opened)
            expected = wanted_first
            while pending is not None:
                idx, frame = pending
                if idx > wanted_last:
                    break
                if idx >= wanted_first:
                    if idx > expected:
                        raise VideoInputError(info.path, f"frame {expected} cannot be decoded (the decoder went from "
                                                         f"frame {expected - 1} to {idx})", "the file is damaged")
                    if idx == expected:
                        count = repeats.get(idx, 0)
                        if count:
                            array = _to_array(frame, scan, alpha)
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
            for container in opened:
                container.close()

    return generate()


def _seek(scan: VideoScan, wanted_first: int, opened: list[Any]) -> tuple[Iterator[tuple[int, Any]],
                                                                          tuple[int, Any] | None]:
    """``(decoded (index, frame) pairs, the first of them)`` from at most ``wanted_first``.

    Seek, then check the first decoded frame is not past the target (open GOPs, sparse
    indexes); back off further and finally decode from the start. Containers opened are
    appended to ``opened`` (the caller closes them)."""
    index_of = {ts: i for i, ts in enumerate(scan.pts)}
    attempts = [wanted_first, max(0, wanted_first - 32), max(0, wanted_first - 512), 0]
    frames: Iterator[tuple[int, Any]] | None = None
    pending: tuple[int, Any] | None = None
    for seek_index in dict.fromkeys(attempts):
        if not opened or seek_index == 0:
            if opened:
                opened.pop().close()
            opened.append(open_input(scan.info.path))
            stream = opened[-1].streams[scan.stream_index]
            stream.thread_type = "AUTO"
        frames = _decode_from(scan, index_of, opened[-1], stream, seek_index)
        pending = next(frames, None)
        # nothing after the seek (a stream without an index) or past the target: back off
        if pending is not None and pending[0] <= wanted_first:
            break
    assert frames is not None
    return frames, pending


def _decode_from(scan: VideoScan, index_of: dict[int, int], container: Any, stream: Any,
                 seek_index: int) -> Iterator[tuple[int, Any]]:
    """``(source index, frame)`` pairs decoded from ``seek_index`` (a seek back to its keyframe)."""
    # from the first frame: no seek, the container is fresh (formats without an index,
    # such as MPEG-TS, cannot seek back to their start)
    if seek_index > 0:
        container.seek(scan.pts[seek_index], stream=stream, backward=True)
    previous = -1
    for frame in container.decode(stream):
        ts = frame.pts if frame.pts is not None else frame.dts
        idx = index_of.get(ts) if ts is not None else None
        if idx is None:
            # a timestamp the probe did not see: place it after the previous frame
            idx = previous + 1 if previous >= 0 else bisect_left(scan.pts, ts if ts is not None else 0)
        previous = idx
        yield idx, frame
