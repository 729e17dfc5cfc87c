"""What an output inherits from its source: timecode, colour tags, pixel aspect and audio.

The colour tag names are FFmpeg's (``av_color_*_name``); :class:`~uav.io.info.VideoInfo`
reports them and :class:`~uav.io.writer.VideoWriter` accepts them, so tags read from a
source can be written to an output unchanged. :func:`carry_over` is the one place
that decides what a render of frames ``[start, start + n)`` of a source takes with it.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

from .info import VideoInfo
from .timecode import is_timecode, offset_timecode, parse_timecode, timecode_to_frames

__all__ = [
    "COLOR_RANGE_NAMES",
    "COLOR_SPACE_NAMES",
    "COLOR_PRIMARIES_NAMES",
    "COLOR_TRC_NAMES",
    "color_tags",
    "tagged_timecode",
    "carry_timecode",
    "carry_over",
    "output_color",
    "tag_color",
    "SWS_MATRIX",
    "resolve_start_number",
]

log = logging.getLogger(__name__)

# FFmpeg's names for the AVColor* enums, without "unknown"/"reserved".
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


def color_tags(info: VideoInfo) -> dict[str, str]:
    """The colour tags of ``info`` that are set, as the writer's ``color`` argument wants them."""
    return {key: getattr(info, key) for key in _COLOR_KEYS if getattr(info, key) is not None}


def tagged_timecode(container: Any, video_stream: Any) -> str | None:
    """The start timecode a PyAV container declares: video stream, ``tmcd`` track, then container tags."""

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


def carry_timecode(start_timecode: str | None, offset: int, fps: Fraction | int) -> str | None:
    """The timecode of frame ``offset`` of a source starting at ``start_timecode``, or ``None``.

    Timecode is carried, never required: a source without one, one at a rate SMPTE
    timecode does not define (15 fps, 277/12 fps...) or with a label its rate cannot
    have gives ``None`` (logged), and the output is written without timecode.
    """
    if not start_timecode:
        return None
    try:
        return offset_timecode(start_timecode, offset, fps)
    except ValueError as exc:
        log.warning("the output gets no timecode: the source's %s cannot be carried (%s)", start_timecode, exc)
        return None


def carry_over(info: VideoInfo, start_frame: int, num_frames: int) -> dict[str, Any]:
    """Writer options that give a render of frames ``[start_frame, start_frame + num_frames)``
    of the source ``info`` that source's metadata.

    The result holds ``audio_source``/``audio_start_frame``/``audio_end_frame`` (the
    audio under those frames) when the source has audio, and for video files the
    range's own start ``timecode`` (when it has one that can be carried), the
    ``color`` tags and a non-square ``sample_aspect_ratio``. Pass it to
    :class:`~uav.io.writer.VideoWriter`; options a caller sets itself take precedence
    (``{**carry_over(...), **mine}``).
    """
    options: dict[str, Any] = {}
    if info.has_audio:
        options.update(audio_source=info.path, audio_start_frame=start_frame,
                       audio_end_frame=start_frame + num_frames)
    # an image sequence has tags and a timecode only when its headers carry them (EXR, DPX)
    timecode = carry_timecode(info.start_timecode, start_frame, info.fps)
    if timecode is not None:
        options["timecode"] = timecode
    tags = color_tags(info)
    if tags:
        options["color"] = tags
    if info.sample_aspect_ratio is not None and info.sample_aspect_ratio != 1:
        options["sample_aspect_ratio"] = info.sample_aspect_ratio
    return options


def resolve_start_number(value: int | str | None, info: VideoInfo | None, start_frame: int) -> int:
    """The number of a sequence output's first image for ``--start-number``.

    ``value`` is a number, ``"source"`` (the source's own number for the range's first
    frame: an image sequence's file number, a video's frame index) or ``"timecode"``
    (the range's start timecode counted in frames, so ``01:00:00:00`` at 24 fps is
    86400). ``None`` is 0.

    Raises:
        ValueError: a value of neither kind, or ``"timecode"`` for a source without one.
    """
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"start number must be >= 0, got {value}")
        return value
    if value == "source":
        first = info.first_frame_number if info is not None else None
        return (first or 0) + start_frame
    if value == "timecode":
        label = carry_timecode(info.start_timecode, start_frame, info.fps) if info is not None else None
        if label is None:
            raise ValueError("start number 'timecode': the source has no timecode; give a number or 'source'")
        return timecode_to_frames(parse_timecode(label), info.fps)  # type: ignore[union-attr]
    raise ValueError(f"start number must be a number, 'source' or 'timecode', got {value!r}")


# --------------------------------------------------------------------------- output tags

_COLOR_KEYS = {
    "color_range": COLOR_RANGE_NAMES,
    "color_space": COLOR_SPACE_NAMES,
    "color_primaries": COLOR_PRIMARIES_NAMES,
    "color_trc": COLOR_TRC_NAMES,
}
# Untagged output is ambiguous to players, so YUV output is always tagged; BT.709
# limited range unless the caller carries the source's tags over.
_DEFAULT_COLOR = {"color_range": "tv", "color_space": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}
#: swscale's RGB<->YUV matrix for each colour space YUV can be written in
SWS_MATRIX = {
    "bt709": "ITU709", "fcc": "FCC", "bt470bg": "ITU601", "smpte170m": "ITU601", "smpte240m": "SMPTE240M",
    "bt2020nc": "BT2020", "bt2020c": "BT2020",
}


def output_color(color: dict[str, str | None] | None) -> dict[str, str]:
    """All four colour tags an output is written with: ``color``'s, BT.709 limited range for the rest.

    Raises:
        ValueError: an unknown key or a value that is not an FFmpeg tag name.
    """
    given = dict(color or {})
    unknown = sorted(set(given) - set(_COLOR_KEYS))
    if unknown:
        raise ValueError(f"color has unknown keys {unknown}; expected some of {', '.join(_COLOR_KEYS)}")
    resolved: dict[str, str] = {}
    for key, names in _COLOR_KEYS.items():
        value = given.get(key)
        if value is None:
            value = _DEFAULT_COLOR[key]
        if value not in names.values():
            raise ValueError(f"color[{key!r}] = {value!r} is not an FFmpeg name; choose one of "
                             f"{', '.join(sorted(set(names.values())))}")
        resolved[key] = value
    if resolved["color_space"] not in SWS_MATRIX:
        # RGB / YCgCo / ICtCp tags cannot describe YUV made with a standard matrix
        log.info("colour space %s cannot be written as YUV; tagging bt709", resolved["color_space"])
        resolved["color_space"] = "bt709"
    return resolved


def tag_color(target: Any, color: dict[str, str]) -> None:
    """Set the colour tags ``color`` (FFmpeg names, keyed as in :data:`_COLOR_KEYS`) on a PyAV codec
    context or frame, which names the colour space ``colorspace``."""
    for key, name in color.items():
        code = next((code for code, value in _COLOR_KEYS[key].items() if value == name), None)
        if code is None:
            raise ValueError(f"unknown colour tag {name!r}")
        setattr(target, "colorspace" if key == "color_space" else key, code)
