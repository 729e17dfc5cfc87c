"""Video and image-sequence input/output.

Reading (:mod:`uav.io.reader`) is frame-accurate and streaming: :func:`probe` describes
an input (exact rational fps from the stream timestamps, variable-rate detection,
rotation, timecode, colour tags), :func:`iter_frames` yields RGB frames of any
``[start, end)`` range. Writing (:mod:`uav.io.writer`) goes through
:class:`VideoWriter`, which writes to a temporary name, carries timecode, colour tags
and the source's audio over, and renames the result into place when it is complete.
"""

from __future__ import annotations

from .errors import VideoInputError
from .reader import (
    IMAGE_EXTENSIONS,
    VFR_MODES,
    VideoInfo,
    color_tags,
    iter_frames,
    parse_frame_position,
    probe,
    read_frames,
)
from .timecode import frames_to_timecode, offset_timecode, parse_timecode, timecode_to_frames
from .writer import CODECS, SEQUENCE_AUDIO_NAME, CodecSpec, VideoWriter, write_video

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
    "VideoWriter",
    "write_video",
    "CODECS",
    "CodecSpec",
    "SEQUENCE_AUDIO_NAME",
    "parse_timecode",
    "timecode_to_frames",
    "frames_to_timecode",
    "offset_timecode",
]
