"""What :func:`uav.io.probe` learns about an input: :class:`VideoInfo`."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

__all__ = ["VideoInfo"]


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
    #: sample depth of the returned frames: 8 (uint8), 16 (uint16, also for 10/12-bit) or
    #: 32 (float32 in [0, 1]: EXR sequences)
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
    #: an image sequence's first frame number, from its first file's name (``shot.1001.exr`` -> 1001)
    first_frame_number: int | None = None
    #: whether the frames carry an alpha channel (:func:`uav.io.reader.iter_frames` reads it with ``alpha=True``)
    has_alpha: bool = False
