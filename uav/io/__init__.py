"""Video and image-sequence input/output: the one I/O layer of uav.

Reading: :func:`probe` describes an input (exact rational fps from the stream
timestamps, packet-counted frames, variable-rate detection, rotation, timecode, colour
tags; truncated files refused), :func:`iter_frames` yields RGB frames of any
``[start, end)`` range, :func:`read_images` reads an explicit list of image files.
Writing: :class:`VideoWriter` writes to a hidden temporary name, carries timecode,
colour tags and the source's audio over (:func:`carry_over` says what a range of a
source takes along), and renames the result into place when it is complete
(:func:`atomic_output` gives other writers the same guarantee).

Modules: ``probing`` (what an input holds), ``reader`` (decoding frames), ``sequence``
(image sequences), ``rates`` (frame rates), ``timecode``, ``metadata`` (tags carried to
outputs), ``writer``, ``codecs`` (output formats), ``audio`` (cutting and muxing the
source's audio) and ``atomic`` (temporary names, cleanup of interrupted runs).
"""

from __future__ import annotations

from .atomic import atomic_output, clean_stale_temporaries
from .codecs import CODECS, CodecSpec
from .errors import VideoInputError, VideoOutputError
from .info import VideoInfo
from .metadata import carry_over, carry_timecode, color_tags
from .probing import probe
from .rates import parse_fps
from .reader import IMAGE_EXTENSIONS, VFR_MODES, iter_frames, parse_frame_position, read_frames
from .sequence import read_images
from .timecode import frames_to_timecode, offset_timecode, parse_timecode, timecode_to_frames
from .writer import SEQUENCE_AUDIO_NAME, VideoWriter, write_video

__all__ = [
    "VideoInputError",
    "VideoOutputError",
    "VideoInfo",
    "probe",
    "iter_frames",
    "read_frames",
    "read_images",
    "parse_frame_position",
    "parse_fps",
    "color_tags",
    "carry_over",
    "carry_timecode",
    "IMAGE_EXTENSIONS",
    "VFR_MODES",
    "VideoWriter",
    "write_video",
    "atomic_output",
    "clean_stale_temporaries",
    "CODECS",
    "CodecSpec",
    "SEQUENCE_AUDIO_NAME",
    "parse_timecode",
    "timecode_to_frames",
    "frames_to_timecode",
    "offset_timecode",
]
