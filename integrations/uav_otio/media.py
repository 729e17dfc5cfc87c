"""The media behind a clip: where its file is, what the file holds, and what cannot be used.

Split from :mod:`uav_otio.plan` (which re-exports its public names): URLs to paths
(Windows drive, UNC and ``/Volumes`` paths are another machine's, never joined to the
timeline's folder), probing through :func:`uav.io.probe`, and :class:`MediaSource`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import unquote, urlparse

import opentimelineio as otio

__all__ = ["UPSCALED_KEY", "MediaSource", "ProbeResult", "probe_media", "source_reference", "url_to_path"]

#: the media reference key the rendered media is linked under
UPSCALED_KEY = "uav_upscaled"

# --------------------------------------------------------------------------- #
# media
# --------------------------------------------------------------------------- #


def url_to_path(url: str, base_dir: str | Path | None = None) -> Path:
    """A media reference's ``target_url`` as a local path.

    Accepts ``file://`` URLs (percent-encoded or not, ``localhost`` host),
    plain absolute or relative paths (relative ones are resolved against
    ``base_dir``, normally the timeline file's folder) and Windows drive paths.

    Raises:
        ValueError: the URL has a non-file scheme (``http://`` ...).
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"expected a media URL or path, got {url!r}")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if parsed.netloc and parsed.netloc != "localhost":
            path = f"//{parsed.netloc}{path}"  # UNC share
        if re.match(r"^/[A-Za-z]:[/\\]", path):
            path = path[1:]  # file:///C:/x -> C:/x
        p = Path(path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"expected a local file URL or path, got {url!r} (scheme {parsed.scheme!r})")
    else:
        p = Path(url) if not PureWindowsPath(url).drive else Path(url.replace("\\", "/"))
    if not p.is_absolute() and base_dir is not None and not PureWindowsPath(str(p)).drive:
        # a drive path (C:/...) is absolute on the machine that wrote it, never relative to ours
        p = Path(base_dir) / p
    return p


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe_media` learns about a movie file."""

    rate: float  # ``fps`` as OpenTimelineIO's float rate
    start_frame: int  # the file's start timecode as a frame number at ``rate``
    frames: int  # counted from the video packets, not the header's claim
    width: int
    height: int
    has_audio: bool
    fps: Fraction = Fraction(0)  # the exact rate, from the stream timestamps
    variable_frame_rate: bool = False


def probe_media(path: str | Path) -> ProbeResult:
    """Frame rate, start timecode, frame count and size of a movie file (:func:`uav.io.probe`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file has no video stream, cannot be read or is truncated
            (:class:`uav.io.VideoInputError`, one line naming the file).
    """
    from uav.io import probe  # local: planning a timeline whose media all carry ranges reads no media
    from uav.io.timecode import timecode_rate_supported, timecode_to_frames

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"media file {str(p)!r} does not exist")
    info = probe(p)
    start = 0
    if info.start_timecode and timecode_rate_supported(info.fps):
        try:
            start = timecode_to_frames(info.start_timecode, info.fps)
        except ValueError:
            start = 0  # a label the rate cannot have: count from the first frame, as without timecode
    return ProbeResult(
        rate=float(info.fps),
        start_frame=start,
        frames=info.num_frames,
        width=info.width,
        height=info.height,
        has_audio=info.has_audio,
        fps=info.fps,
        variable_frame_rate=info.variable_frame_rate,
    )


@dataclass(frozen=True)
class MediaSource:
    """The media behind a clip: a movie file or an image sequence."""

    kind: str  # "file" or "image_sequence"
    path: Path  # the file, or the image sequence's folder
    rate: float
    available_start: int  # media frame number of the first frame
    available_end: int  # exclusive
    url: str  # the target URL as written in the timeline
    # image sequences only
    name_prefix: str = ""
    name_suffix: str = ""
    start_number: int = 0
    frame_step: int = 1
    zero_padding: int = 0
    #: files only: the end the timeline claims, when the file holds fewer frames (``available_end`` is the real one)
    declared_end: int | None = None
    variable_frame_rate: bool = False

    @property
    def identity(self) -> str:
        """A key equal for all references to the same media."""
        if self.kind == "image_sequence":
            return f"{self.path}/{self.name_prefix}#{self.name_suffix}"
        return str(self.path)

    @property
    def stem(self) -> str:
        """The media's name without extension (the sequence prefix for sequences)."""
        if self.kind == "image_sequence":
            stem = self.name_prefix.rstrip("._- ")
            return stem or self.path.name
        return self.path.stem

    @property
    def display(self) -> str:
        if self.kind == "image_sequence":
            pad = "#" * max(self.zero_padding, 1)
            return f"{self.name_prefix}{pad}{self.name_suffix}"
        return self.path.name

    def frame_path(self, index: int) -> Path:
        """The file of image ``index`` (0-based from the first available frame)."""
        if self.kind != "image_sequence":
            raise TypeError(f"frame_path is for image sequences, this media is a {self.kind}")
        number = self.start_number + index * self.frame_step
        digits = str(abs(number)).zfill(self.zero_padding)
        name = f"{self.name_prefix}{'-' if number < 0 else ''}{digits}{self.name_suffix}"
        return self.path / name

    def to_dict(self) -> dict[str, Any]:
        d = {
            "kind": self.kind,
            "path": str(self.path),
            "url": self.url,
            "rate": self.rate,
            "available_start": self.available_start,
            "available_end": self.available_end,
        }
        if self.kind == "image_sequence":
            d.update(
                name_prefix=self.name_prefix,
                name_suffix=self.name_suffix,
                start_number=self.start_number,
                frame_step=self.frame_step,
                zero_padding=self.zero_padding,
            )
        return d


def source_reference(clip: otio.schema.Clip) -> otio.core.MediaReference:
    """The clip's original media: the default-key reference when this timeline was
    already relinked by uav, else the active one."""
    refs = clip.media_references()
    if clip.active_media_reference_key == UPSCALED_KEY and otio.schema.Clip.DEFAULT_MEDIA_KEY in refs:
        return refs[otio.schema.Clip.DEFAULT_MEDIA_KEY]
    return clip.media_reference


class _Skip(Exception):
    """Internal: this clip cannot be rendered, for the reason given."""


def _media_source(ref: otio.core.MediaReference, base_dir: Path | None, probe: bool) -> MediaSource:
    if ref is None or isinstance(ref, otio.schema.MissingReference):
        raise _Skip("missing media reference")
    if isinstance(ref, otio.schema.GeneratorReference):
        kind = getattr(ref, "generator_kind", "") or "generator"
        raise _Skip(f"generator ({kind}), no media to upscale")
    if isinstance(ref, otio.schema.ImageSequenceReference):
        try:
            folder = url_to_path(ref.target_url_base or ".", base_dir)
        except ValueError as exc:
            raise _Skip(str(exc)) from None
        ar = ref.available_range
        rate = float(ref.rate or (ar.start_time.rate if ar else 0))
        if rate <= 0:
            raise _Skip("image sequence without a frame rate")
        if ar is not None:
            start = int(round(ar.start_time.value_rescaled_to(rate)))
            end = start + int(round(ar.duration.value_rescaled_to(rate)))
        else:
            start, end = 0, ref.number_of_images_in_sequence()
        src = MediaSource(
            kind="image_sequence",
            path=folder,
            rate=rate,
            available_start=start,
            available_end=end,
            url=ref.abstract_target_url("#"),
            name_prefix=ref.name_prefix,
            name_suffix=ref.name_suffix,
            start_number=int(ref.start_frame),
            frame_step=int(ref.frame_step),
            zero_padding=int(ref.frame_zero_padding),
        )
        if probe and not src.frame_path(0).is_file():
            raise _Skip(f"image sequence frames not found (first frame {str(src.frame_path(0))!r})")
        if end <= start:
            raise _Skip("image sequence has no frames in its available range")
        return src
    if isinstance(ref, otio.schema.ExternalReference):
        return _file_source(ref, base_dir, probe)
    raise _Skip(f"unsupported media reference type {type(ref).__name__}")


def _file_source(ref: otio.schema.ExternalReference, base_dir: Path | None, probe: bool) -> MediaSource:
    """A movie file: its range from the reference, checked against the file itself when
    probing (a file shorter than the timeline says keeps only the frames it holds, and
    the planner refuses a cut that uses the rest), or from the file alone."""
    try:
        path = url_to_path(ref.target_url, base_dir)
    except ValueError as exc:
        raise _Skip(str(exc)) from None
    ar = ref.available_range
    if probe and not path.is_file():
        raise _Skip(f"media file not found: {str(path)!r}")
    try:
        info = probe_media(path) if probe else None
    except (OSError, ValueError) as exc:
        raise _Skip(f"cannot read media: {exc}") from None
    declared_end = None
    if ar is not None:
        rate = float(ar.start_time.rate)
        start = int(round(ar.start_time.value_rescaled_to(rate)))
        end = start + int(round(ar.duration.value_rescaled_to(rate)))
        if info is not None and info.frames < end - start:
            declared_end, end = end, start + info.frames
    elif info is not None:
        rate, start, end = info.rate, info.start_frame, info.start_frame + info.frames
    else:
        raise _Skip("media reference has no available range and probing is off")
    if end <= start:
        raise _Skip("media has an empty available range")
    return MediaSource("file", path.resolve() if path.exists() else path, rate, start, end, ref.target_url,
                       declared_end=declared_end, variable_frame_rate=bool(info and info.variable_frame_rate))
