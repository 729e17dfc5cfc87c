"""Streaming video output on PyAV: H.264/H.265/ProRes files and PNG/TIFF sequences.

Every output is first written under a hidden temporary name next to its destination
(``.name.uavtmp-XXXXXXXX.mp4``, or a temporary folder for sequences) and renamed onto
the destination only when :meth:`VideoWriter.close` succeeds, so an interrupted render
never leaves a half-written file at the final path.

Audio from ``audio_source`` is cut to the rendered frame range of that source and
muxed alongside the frames as they are written. Compressed audio the output container
accepts is copied packet by packet (cut at packet boundaries, about 21 ms for AAC);
PCM audio, and audio the container cannot carry, is decoded, cut sample-exactly and
re-encoded (AAC in .mp4, PCM in .mov/.mkv/.wav).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .reader import (
    COLOR_PRIMARIES_NAMES,
    COLOR_RANGE_NAMES,
    COLOR_SPACE_NAMES,
    COLOR_TRC_NAMES,
    IMAGE_EXTENSIONS,
    _is_pattern,
    _scan,
    _VideoScan,
)
from .timecode import timecode_to_frames

__all__ = ["CodecSpec", "CODECS", "VideoWriter", "write_video", "SEQUENCE_AUDIO_NAME"]

log = logging.getLogger(__name__)

#: name of the sidecar WAV written into an image-sequence folder when it gets audio
SEQUENCE_AUDIO_NAME = "audio.wav"


@dataclass(frozen=True)
class CodecSpec:
    """One output format the writer knows."""

    name: str
    description: str
    #: "video" (a file written with PyAV) or "sequence" (a folder of images)
    kind: str
    #: FFmpeg encoder (video) or image extension (sequence)
    encoder: str
    #: pixel format used for 8-bit and for 16-bit input when ``pix_fmt`` is not given
    pix_fmt_8bit: str
    pix_fmt_16bit: str
    #: pixel formats a caller may ask for
    pix_fmts: tuple[str, ...]
    #: file suffixes this codec can be written to (video) / the sequence's extension
    suffixes: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)
    default_crf: int | None = None


CODECS: dict[str, CodecSpec] = {
    "h264": CodecSpec(
        "h264", "H.264 / AVC (libx264), 8- or 10-bit", "video", "libx264", "yuv420p", "yuv420p10le",
        ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"),
        (".mp4", ".mov", ".mkv"), {}, 18,
    ),
    "h265": CodecSpec(
        "h265", "H.265 / HEVC (libx265), 8- or 10-bit", "video", "libx265", "yuv420p", "yuv420p10le",
        ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"),
        (".mp4", ".mov", ".mkv"), {"x265-params": "log-level=error"}, 20,
    ),
    "prores_hq": CodecSpec(
        "prores_hq", "Apple ProRes 422 HQ (prores_ks), 10-bit 4:2:2", "video", "prores_ks", "yuv422p10le",
        "yuv422p10le", ("yuv422p10le",), (".mov", ".mkv"), {"profile": "3", "vendor": "apl0"},
    ),
    "prores_4444": CodecSpec(
        "prores_4444", "Apple ProRes 4444 (prores_ks), 10-bit 4:4:4", "video", "prores_ks", "yuv444p10le",
        "yuv444p10le", ("yuv444p10le", "yuva444p10le"), (".mov", ".mkv"), {"profile": "4", "vendor": "apl0"},
    ),
    "png": CodecSpec(
        "png", "PNG image sequence folder, 8- or 16-bit", "sequence", ".png", "rgb24", "rgb48",
        ("rgb24", "rgb48"), (".png",),
    ),
    "tiff": CodecSpec(
        "tiff", "16-bit TIFF image sequence folder", "sequence", ".tif", "rgb48", "rgb48", ("rgb48",),
        (".tif", ".tiff"),
    ),
}

_COLOR_KEYS = {
    "color_range": COLOR_RANGE_NAMES,
    "color_space": COLOR_SPACE_NAMES,
    "color_primaries": COLOR_PRIMARIES_NAMES,
    "color_trc": COLOR_TRC_NAMES,
}
# Untagged output is ambiguous to players, so YUV output is always tagged; BT.709
# limited range unless the caller carries the source's tags over.
_DEFAULT_COLOR = {"color_range": "tv", "color_space": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}
_SWS_MATRIX = {
    "bt709": "ITU709", "fcc": "FCC", "bt470bg": "ITU601", "smpte170m": "ITU601", "smpte240m": "SMPTE240M",
    "bt2020nc": "BT2020", "bt2020c": "BT2020",
}

# Audio codecs each container takes as a packet copy. PCM is absent on purpose: it is
# cheap to decode, and decoding lets the cut be sample-exact instead of packet-exact.
_COPYABLE_AUDIO = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mkv": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "vorbis", "dts", "truehd"},
    ".wav": set(),
}


def _known_codecs() -> str:
    return ", ".join(CODECS)


def _as_fps(fps: Any) -> Fraction:
    if isinstance(fps, bool) or isinstance(fps, float):
        raise TypeError(f"fps must be exact: pass a Fraction (e.g. Fraction(24000, 1001)), an int or a string "
                        f"like '24000/1001', got {type(fps).__name__} {fps!r}")
    try:
        value = Fraction(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive rational like 24 or '24000/1001', got {fps!r}") from None
    if value <= 0:
        raise ValueError(f"fps must be > 0, got {value}")
    return value


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return int(value)


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _output_path(path: str | Path, spec: CodecSpec) -> tuple[Path, str | None]:
    """``(destination, file name pattern)``: the file, or the folder plus ``%0Nd`` pattern."""
    text = os.fspath(path)
    p = Path(text)
    if spec.kind == "video":
        if p.suffix.lower() not in spec.suffixes:
            raise ValueError(f"{spec.name} output must end in {' or '.join(spec.suffixes)}, got {p.name!r}"
                             + (" (png/tiff write image-sequence folders)" if not p.suffix else ""))
        if p.is_dir():
            raise ValueError(f"output path {p} is an existing folder; give a file name such as {p / 'out.mp4'}")
        return p, None
    if re.search(r"%0?\d*d", p.name):
        if p.suffix.lower() not in spec.suffixes:
            raise ValueError(f"{spec.name} sequence pattern must end in {' or '.join(spec.suffixes)}, got {p.name!r}")
        return p.parent, p.name
    if p.suffix.lower() in spec.suffixes:
        raise ValueError(f"{spec.name} writes a folder of numbered images, not the single file {p.name!r}; pass a "
                         f"folder (e.g. {p.stem!r}) or a pattern like '{p.stem}/%06d{p.suffix}'")
    if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".avi", ".webm"):
        raise ValueError(f"codec {spec.name!r} writes an image-sequence folder, but the output {p.name!r} looks like a "
                         "video file; pass a folder (e.g. 'out_frames') or a pattern like 'out_frames/%06d.png'")
    return p, f"%06d{spec.encoder}"


class VideoWriter:
    """Write RGB frames to a video file or image-sequence folder, atomically.

    Use as a context manager: leaving the block normally closes the writer (renaming
    the output into place), leaving it with an exception aborts it (deleting the
    temporary output)::

        with VideoWriter("out.mp4", fps=info.fps, width=w, height=h, codec="h264",
                         timecode=info.start_timecode, audio_source=info.path,
                         color=color_tags(info)) as writer:
            for frame in frames:
                writer.write(frame)

    Args:
        path: output file (``.mp4``/``.mov``/``.mkv`` for video codecs) or, for
            ``png``/``tiff``, an output folder or a pattern like ``out/%06d.png``. An
            existing file is replaced; a sequence folder must not exist or be empty.
        fps: exact frame rate (``Fraction``, ``int`` or ``"24000/1001"``); the stream
            time base is ``1/fps`` so the rate reads back exactly.
        width, height: frame size in pixels.
        codec: one of :data:`CODECS`.
        pix_fmt: encoder pixel format, e.g. ``"yuv420p10le"`` for 10-bit H.264/H.265;
            default depends on ``codec`` and ``bit_depth``.
        crf: constant rate factor for H.264/H.265 (0-51, lower is better; default 18
            for H.264 and 20 for H.265). Not used by other codecs.
        timecode: start timecode ``"HH:MM:SS:FF"`` written as the mov/mp4 ``timecode``
            (a ``tmcd`` track) or the mkv ``TIMECODE`` tag. Ignored for sequences.
        audio_source: file whose first audio stream is muxed in; ``None``, a file
            without audio or an image sequence gives a silent output. For sequences it is written as
            ``audio.wav`` inside the folder.
        audio_start_frame, audio_end_frame: the source frame range ``[start, end)`` the
            output shows, in frames of ``audio_source``'s video (of this writer's
            ``fps`` if it is audio-only). ``audio_end_frame=None`` cuts the audio to
            the length of the frames written.
        color: colour tags ``color_range``/``color_space``/``color_primaries``/``color_trc``
            with FFmpeg names (as in :class:`~uav.io.reader.VideoInfo`); missing
            tags default to BT.709 limited range. ``color_space`` also picks the
            RGB-to-YUV matrix, so a round trip through the reader is colour-exact.
        sample_aspect_ratio: pixel aspect ratio to tag.
        bit_depth: 8 for ``uint8`` frames, 16 for ``uint16`` frames (full 16-bit scale).
        preset: libx264/libx265 speed preset (default ``"medium"``).
        start_number: number of the first image of a sequence.

    Raises:
        ValueError: unknown codec, unsuitable path or pixel format, an output folder
            that cannot be written, a bad timecode or unreadable ``audio_source``.
        TypeError: arguments of the wrong type.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: Fraction | int | str,
        width: int,
        height: int,
        codec: str = "h264",
        pix_fmt: str | None = None,
        crf: int | None = None,
        timecode: str | None = None,
        audio_source: str | Path | None = None,
        audio_start_frame: int = 0,
        audio_end_frame: int | None = None,
        color: dict[str, str | None] | None = None,
        sample_aspect_ratio: Fraction | None = None,
        bit_depth: int = 8,
        preset: str | None = None,
        start_number: int = 0,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; known codecs: {_known_codecs()}")
        self.spec = spec = CODECS[codec]
        self.fps = _as_fps(fps)
        self.width = _check_positive_int("width", width)
        self.height = _check_positive_int("height", height)
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 (uint8 frames) or 16 (uint16 frames), got {bit_depth!r}")
        self.bit_depth = bit_depth
        self._dtype = np.dtype(np.uint16 if bit_depth == 16 else np.uint8)
        self.pix_fmt = pix_fmt or (spec.pix_fmt_16bit if bit_depth == 16 else spec.pix_fmt_8bit)
        if self.pix_fmt not in spec.pix_fmts:
            raise ValueError(f"pix_fmt {self.pix_fmt!r} is not available for codec {codec!r}; "
                             f"choose one of {', '.join(spec.pix_fmts)}")
        if crf is not None:
            if spec.default_crf is None:
                raise ValueError(f"crf only applies to h264/h265, not codec {codec!r}")
            if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
                raise ValueError(f"crf must be an int from 0 (lossless) to 51, got {crf!r}")
        self.crf = crf
        if timecode is not None:
            timecode_to_frames(timecode, self.fps)  # validates, raising a clear ValueError
        self.timecode = timecode
        if not isinstance(audio_start_frame, (int, np.integer)) or audio_start_frame < 0:
            raise ValueError(f"audio_start_frame must be an int >= 0, got {audio_start_frame!r}")
        if audio_end_frame is not None and (not isinstance(audio_end_frame, (int, np.integer))
                                            or audio_end_frame <= audio_start_frame):
            raise ValueError(f"audio_end_frame must be an int > audio_start_frame ({audio_start_frame}), "
                             f"got {audio_end_frame!r}")
        self.color = self._resolve_color(color)
        if sample_aspect_ratio is not None:
            sample_aspect_ratio = Fraction(sample_aspect_ratio)
            if sample_aspect_ratio <= 0:
                raise ValueError(f"sample_aspect_ratio must be > 0, got {sample_aspect_ratio}")
        self.sample_aspect_ratio = sample_aspect_ratio
        if preset is not None and spec.default_crf is None:
            raise ValueError(f"preset only applies to h264/h265, not codec {codec!r}")
        if isinstance(start_number, bool) or not isinstance(start_number, (int, np.integer)) or start_number < 0:
            raise ValueError(f"start_number must be an int >= 0, got {start_number!r}")
        self._start_number = int(start_number)
        if "420" in self.pix_fmt and (self.width % 2 or self.height % 2):
            raise ValueError(f"{codec} with pix_fmt {self.pix_fmt} needs an even width and height, got "
                             f"{self.width}x{self.height}; crop/pad by one pixel or use a 4:4:4 pix_fmt")
        if "422" in self.pix_fmt and self.width % 2:
            raise ValueError(f"{codec} with pix_fmt {self.pix_fmt} needs an even width, got {self.width}")

        self.path, self._pattern = _output_path(path, spec)
        if timecode is not None and spec.kind == "sequence":
            log.info("%s: image sequences carry no timecode; %s is not stored", self.path, timecode)
        self.frames_written = 0
        self._closed = False
        self._container: Any = None
        self._stream: Any = None
        self._audio: _AudioCut | None = None
        self._audio_container: Any = None
        self._prepare_destination()
        self._finalizer = weakref.finalize(self, _remove, self._temp)
        try:
            if spec.kind == "video":
                self._open_video(preset)
            if audio_source is not None:
                self._open_audio(Path(audio_source), int(audio_start_frame),
                                 None if audio_end_frame is None else int(audio_end_frame))
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ setup

    def _resolve_color(self, color: dict[str, str | None] | None) -> dict[str, str]:
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
        if resolved["color_space"] not in _SWS_MATRIX:
            # RGB / YCgCo / ICtCp tags cannot describe YUV made with a standard matrix
            log.info("colour space %s cannot be written as YUV; tagging bt709", resolved["color_space"])
            resolved["color_space"] = "bt709"
        return resolved

    def _prepare_destination(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"output folder {parent} cannot be created ({exc.strerror or exc}); "
                             "choose a writable location") from None
        if not parent.is_dir():
            raise ValueError(f"output folder {parent} is not a folder; choose a writable location")
        token = secrets.token_hex(4)
        if self.spec.kind == "video":
            self._temp = parent / f".{self.path.stem}.uavtmp-{token}{self.path.suffix}"
            try:
                self._temp.open("xb").close()
            except OSError as exc:
                raise ValueError(f"output folder {parent} is not writable ({exc.strerror or exc}); "
                                 "choose a writable location") from None
        else:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise ValueError(f"output {self.path} already exists and is not an empty folder; remove it or "
                                 "choose another name (a sequence is written into its own folder)")
            self._temp = parent / f".{self.path.name}.uavtmp-{token}"
            try:
                self._temp.mkdir()
            except OSError as exc:
                raise ValueError(f"output folder {parent} is not writable ({exc.strerror or exc}); "
                                 "choose a writable location") from None

    def _open_video(self, preset: str | None) -> None:
        import av

        spec = self.spec
        try:
            container = av.open(str(self._temp), mode="w")
        except av.FFmpegError as exc:
            raise ValueError(f"cannot create {self.path.name} ({exc.strerror or exc})") from None
        self._container = container
        if self.timecode:
            container.metadata["timecode"] = self.timecode
        options = dict(spec.options)
        if spec.default_crf is not None:
            options["crf"] = str(self.crf if self.crf is not None else spec.default_crf)
            options["preset"] = preset or "medium"
        stream = container.add_stream(spec.encoder, rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
        tick = 1 / self.fps
        stream.codec_context.time_base = tick
        stream.time_base = tick
        cc = stream.codec_context
        cc.color_range = _code(COLOR_RANGE_NAMES, self.color["color_range"])
        cc.colorspace = _code(COLOR_SPACE_NAMES, self.color["color_space"])
        cc.color_primaries = _code(COLOR_PRIMARIES_NAMES, self.color["color_primaries"])
        cc.color_trc = _code(COLOR_TRC_NAMES, self.color["color_trc"])
        if self.sample_aspect_ratio is not None:
            cc.sample_aspect_ratio = self.sample_aspect_ratio
        if spec.name == "h265" and self.path.suffix.lower() in (".mp4", ".mov"):
            cc.codec_tag = "hvc1"  # the tag Apple players require for HEVC
        self._stream = stream

    def _open_audio(self, source: Path, start_frame: int, end_frame: int | None) -> None:
        import av

        if self.spec.kind == "video":
            container, suffix = self._container, self.path.suffix.lower()
        else:
            container, suffix = None, ".wav"
        cut = _AudioCut.open(source, start_frame, end_frame, self.fps)
        if cut is None:
            log.info("%s has no audio stream; writing %s without audio", source, self.path)
            return
        if container is None:
            try:
                container = av.open(str(self._temp / SEQUENCE_AUDIO_NAME), mode="w", format="wav")
            except av.FFmpegError as exc:
                cut.close()
                raise ValueError(f"cannot create {SEQUENCE_AUDIO_NAME} in {self._temp} ({exc.strerror or exc})") from None
            self._audio_container = container
        self._audio = cut
        cut.attach(container, suffix)

    # ------------------------------------------------------------------ writing

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(height, width, 3)`` RGB frame (``uint8``, or ``uint16`` when ``bit_depth=16``)."""
        if self._closed:
            raise ValueError(f"cannot write to {self.path}: the writer is already closed")
        array = np.asarray(frame)
        expected = (self.height, self.width, 3)
        if array.shape != expected or array.dtype != self._dtype:
            self.abort()  # a render that feeds wrong frames is broken; do not leave its partial output
            raise ValueError(f"frame {self.frames_written} must be {expected[0]}x{expected[1]}x3 {self._dtype}, got "
                             f"shape {array.shape} {array.dtype}"
                             + (" (pass bit_depth=16 to write uint16 frames)" if array.dtype == np.uint16 else ""))
        try:
            if self.spec.kind == "video":
                self._encode(np.ascontiguousarray(array))
            else:
                self._write_image(array)
            self.frames_written += 1
            if self._audio is not None:
                self._audio.pump(Fraction(self.frames_written) / self.fps)
        except BaseException:
            self.abort()
            raise

    def _encode(self, array: np.ndarray) -> None:
        import av

        rgb = av.VideoFrame.from_ndarray(array, format="rgb48le" if self.bit_depth == 16 else "rgb24")
        yuv = rgb.reformat(
            format=self.pix_fmt,
            dst_colorspace=_SWS_MATRIX[self.color["color_space"]],
            dst_color_range="JPEG" if self.color["color_range"] == "pc" else "MPEG",
        )
        yuv.color_range = _code(COLOR_RANGE_NAMES, self.color["color_range"])
        yuv.colorspace = _code(COLOR_SPACE_NAMES, self.color["color_space"])
        yuv.color_primaries = _code(COLOR_PRIMARIES_NAMES, self.color["color_primaries"])
        yuv.color_trc = _code(COLOR_TRC_NAMES, self.color["color_trc"])
        yuv.pts = self.frames_written
        yuv.time_base = 1 / self.fps
        for packet in self._stream.encode(yuv):
            self._container.mux(packet)

    def _write_image(self, array: np.ndarray) -> None:
        import cv2

        assert self._pattern is not None
        if self.spec.name == "tiff" and array.dtype == np.uint8:
            array = array.astype(np.uint16) * 257  # TIFF output is always 16-bit
        name = self._pattern % (self.frames_written + self._start_number)
        target = self._temp / name
        if not cv2.imwrite(str(target), np.ascontiguousarray(array[:, :, ::-1])):
            raise ValueError(f"could not write image {target}")

    # ------------------------------------------------------------------ finishing

    def close(self) -> Path:
        """Finish the output and move it to :attr:`path`; returns that path.

        Raises:
            ValueError: no frame was written (nothing is saved in that case).
        """
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; nothing was saved")
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            if self._audio is not None:
                self._audio.finish(Fraction(self.frames_written) / self.fps)
            if self._audio_container is not None:
                self._audio_container.close()
                self._audio_container = None
            if self._container is not None:
                self._container.close()
                self._container = None
            if self.spec.kind == "video":
                os.replace(self._temp, self.path)
            else:
                if self.path.is_dir() and not any(self.path.iterdir()):
                    self.path.rmdir()
                os.rename(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()
        if self._audio is not None:
            self._audio.close()
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary output; the destination is left untouched."""
        if self._closed:
            return
        self._closed = True
        for name in ("_container", "_audio_container"):
            container = getattr(self, name, None)
            if container is not None:
                try:
                    container.close()
                except Exception:  # the partial file is deleted next; its errors do not matter
                    pass
                setattr(self, name, None)
        if getattr(self, "_audio", None) is not None:
            self._audio.close()
        if hasattr(self, "_temp"):
            _remove(self._temp)
        if hasattr(self, "_finalizer"):
            self._finalizer.detach()


def _code(names: dict[int, str], value: str) -> int:
    for code, name in names.items():
        if name == value:
            return code
    raise ValueError(f"unknown colour tag {value!r}")


def write_video(path: str | Path, frames: Iterable[np.ndarray], **kwargs: Any) -> Path:
    """Write all ``frames`` with a :class:`VideoWriter` and return the output path.

    ``width``, ``height`` and ``bit_depth`` default to those of the first frame;
    ``fps`` is required. Other keyword arguments go to :class:`VideoWriter`.
    """
    if "fps" not in kwargs:
        raise TypeError("write_video() needs fps=, e.g. fps=Fraction(24000, 1001)")
    iterator = iter(frames)
    try:
        first = np.asarray(next(iterator))
    except StopIteration:
        raise ValueError(f"no frames to write to {path}; nothing was saved") from None
    if first.ndim != 3:
        raise ValueError(f"frames must be (height, width, 3) arrays, got shape {first.shape}")
    kwargs.setdefault("height", first.shape[0])
    kwargs.setdefault("width", first.shape[1])
    kwargs.setdefault("bit_depth", 16 if first.dtype == np.uint16 else 8)
    writer = VideoWriter(path, **kwargs)
    with writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return writer.path


# --------------------------------------------------------------------------- audio


class _AudioCut:
    """The part of a source's audio under a frame range, muxed into an output container."""

    def __init__(self, source: Path, container: Any, stream: Any, t0: Fraction, t1: Fraction | None) -> None:
        self.source = source
        self._src = container
        self._in = stream
        self.t0 = t0  # source seconds shown at output time 0
        self.t1 = t1  # source seconds where the cut ends, None: at the end of the video
        self._out: Any = None
        self._out_stream: Any = None
        self._copy = False
        self._packets: Iterator[Any] | None = None
        self._pending: Any = None
        # re-encode state
        self._frames: Iterator[Any] | None = None
        self._buffer = np.zeros((0, 0))
        self._buffer_start = 0  # output sample index of _buffer[:, 0]
        self._emitted = 0  # output samples sent to the encoder
        self._exhausted = False

    @classmethod
    def open(cls, source: Path, start_frame: int, end_frame: int | None, out_fps: Fraction) -> _AudioCut | None:
        import av

        if source.is_dir() or source.suffix.lower() in IMAGE_EXTENSIONS or _is_pattern(str(source)):
            return None  # an image sequence: there is no audio to carry over
        if not source.exists():
            raise ValueError(f"audio_source {source} does not exist")
        try:
            container = av.open(str(source), mode="r")
        except av.FFmpegError as exc:
            raise ValueError(f"audio_source {source} cannot be read ({exc.strerror or exc})") from None
        if not container.streams.audio:
            container.close()
            return None
        origin, rate = Fraction(0), out_fps
        if container.streams.video:
            try:
                scan = _scan(source, None)
            except VideoInputError as exc:
                container.close()
                raise ValueError(f"audio_source: {exc}") from None
            if isinstance(scan, _VideoScan):
                origin = scan.pts[0] * scan.time_base
                rate = scan.info.fps
        t0 = origin + Fraction(start_frame) / rate
        t1 = None if end_frame is None else origin + Fraction(end_frame) / rate
        return cls(source, container, container.streams.audio[0], t0, t1)

    def attach(self, out: Any, suffix: str) -> None:
        import av

        cc = self._in.codec_context
        self._out = out
        self._copy = cc.name in _COPYABLE_AUDIO.get(suffix, set())
        if self._copy:
            self._out_stream = out.add_stream_from_template(self._in)
            return
        if suffix == ".mp4":
            codec = "aac"
            if cc.sample_rate not in (av.Codec("aac", "w").audio_rates or ()):
                raise ValueError(f"audio_source {self.source}: {cc.sample_rate} Hz audio cannot be stored as AAC in "
                                 ".mp4; write a .mov or .mkv (PCM audio) instead")
        else:
            bits = cc.format.bytes * 8 if cc.format is not None else 16
            codec = "pcm_s16le" if bits <= 16 and not cc.format.name.startswith("flt") else "pcm_s24le"
        channels = len(cc.layout.channels)
        # Sources may carry an order-less layout ("2 channels") that encoders refuse;
        # the default layout for the channel count is what players assume anyway.
        self._layout = _DEFAULT_LAYOUTS.get(channels) or cc.layout.name
        stream = out.add_stream(codec, rate=cc.sample_rate)
        stream.layout = self._layout
        if codec == "aac":
            stream.codec_context.bit_rate = 96000 * max(1, channels)
        self._out_stream = stream
        self._encoder_format = stream.codec_context.codec.audio_formats[0].name
        self._frame_size = stream.codec_context.frame_size or 1024

    def _seek_near_start(self) -> None:
        # Start demuxing a little before the cut instead of at the top of a long file.
        if self.t0 > 1:
            target = int((self.t0 - 1) / self._in.time_base)
            self._src.seek(target, stream=self._in, backward=True)

    # -- packet copy -----------------------------------------------------------------

    def _copy_until(self, until: Fraction, final: bool) -> None:
        tb = self._in.time_base
        if self._packets is None:
            self._seek_near_start()
            self._packets = iter(self._src.demux(self._in))
        base = round(self.t0 / tb)
        end = None if self.t1 is None else self.t1 - self.t0
        limit = until if end is None else (min(until, end) if not final else end)
        while True:
            packet = self._pending
            self._pending = None
            if packet is None:
                packet = next(self._packets, None)
                if packet is None:
                    return
            if packet.size == 0 or packet.pts is None:
                continue
            start = packet.pts * tb - self.t0
            if start < -tb / 2:  # half a tick: timestamps are rounded to the time base
                continue  # before the cut (whole packets only, so the cut may start a packet late)
            if start >= limit:
                if end is None or start < end:
                    self._pending = packet
                return
            offset = packet.dts - packet.pts if packet.dts is not None else 0
            packet.pts = packet.pts - base
            packet.dts = packet.pts + offset
            packet.time_base = tb
            packet.stream = self._out_stream
            self._out.mux(packet)

    # -- decode, cut, re-encode -----------------------------------------------------------

    def _decoded(self) -> Iterator[tuple[int, np.ndarray]]:
        """Source audio as ``(output sample index, float64 (channels, n))`` chunks."""
        import av

        rate = self._in.codec_context.sample_rate
        self._seek_near_start()
        try:
            for frame in self._src.decode(self._in):
                if frame.pts is None:
                    continue
                start = round((frame.pts * frame.time_base - self.t0) * rate)
                yield start, _planar_float(frame)
        except av.FFmpegError as exc:
            log.warning("%s: audio decoding stopped early (%s)", self.source, exc)

    def _fill(self, needed: int) -> None:
        """Decode until the buffer covers output samples up to ``needed`` (or the source ends)."""
        if self._frames is None:
            self._frames = self._decoded()
            self._buffer = np.zeros((len(self._in.codec_context.layout.channels), 0))
        while not self._exhausted and self._buffer_start + self._buffer.shape[1] < needed:
            item = next(self._frames, None)
            if item is None:
                self._exhausted = True
                break
            start, samples = item
            end_of_buffer = self._buffer_start + self._buffer.shape[1]
            if start + samples.shape[1] <= end_of_buffer:
                continue  # entirely before the cut (or a repeat)
            if start < end_of_buffer:
                samples = samples[:, end_of_buffer - start:]
            elif start > end_of_buffer:  # a gap in the source audio: keep sync with silence
                samples = np.concatenate([np.zeros((samples.shape[0], start - end_of_buffer)), samples], axis=1)
            self._buffer = np.concatenate([self._buffer, samples], axis=1)

    def _encode_until(self, until: Fraction, final: bool) -> None:
        rate = self._in.codec_context.sample_rate
        stop = round(until * rate)
        if self.t1 is not None:
            total = round((self.t1 - self.t0) * rate)
            stop = total if final else min(stop, total)
        self._fill(stop)
        available = min(stop, self._buffer_start + self._buffer.shape[1])
        size = self._frame_size
        while self._emitted + size <= available or (final and self._emitted < available):
            count = min(size, available - self._emitted)
            offset = self._emitted - self._buffer_start
            self._send(self._buffer[:, offset:offset + count])
            self._emitted += count
        # drop what has been encoded
        drop = self._emitted - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[:, drop:]
            self._buffer_start = self._emitted
        if final:
            for packet in self._out_stream.encode(None):
                self._out.mux(packet)

    def _send(self, chunk: np.ndarray) -> None:
        import av

        fmt = self._encoder_format
        if fmt == "fltp":
            data = chunk.astype(np.float32)
        elif fmt == "s16":
            data = np.clip(np.round(chunk.T * 32768.0), -32768, 32767).astype(np.int16).reshape(1, -1)
        elif fmt == "s32":
            data = np.clip(np.round(chunk.T * 2147483648.0), -2147483648, 2147483647).astype(np.int32).reshape(1, -1)
        else:
            raise ValueError(f"unsupported audio encoder sample format {fmt}")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=self._layout)
        frame.sample_rate = self._in.codec_context.sample_rate
        frame.pts = self._emitted
        frame.time_base = Fraction(1, frame.sample_rate)
        for packet in self._out_stream.encode(frame):
            self._out.mux(packet)

    # -- driving ---------------------------------------------------------------------------

    def pump(self, until: Fraction) -> None:
        """Mux the audio that plays before output time ``until`` (seconds)."""
        if self._copy:
            self._copy_until(until, final=False)
        else:
            self._encode_until(until, final=False)

    def finish(self, video_duration: Fraction) -> None:
        """Mux the rest of the cut: to ``t1``, or to ``video_duration`` when open-ended."""
        if self._copy:
            self._copy_until(video_duration, final=True)
        else:
            self._encode_until(video_duration, final=True)

    def close(self) -> None:
        try:
            self._src.close()
        except Exception:  # closing a reader cannot lose data
            pass


_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _planar_float(frame: Any) -> np.ndarray:
    """An audio frame as float64 ``(channels, samples)`` in [-1, 1]."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    kind = frame.format.name.rstrip("p")
    if kind == "s16":
        return data.astype(np.float64) / 32768.0
    if kind == "s32":
        return data.astype(np.float64) / 2147483648.0
    if kind == "u8":
        return (data.astype(np.float64) - 128.0) / 128.0
    if kind == "s64":
        return data.astype(np.float64) / 9223372036854775808.0
    return data.astype(np.float64)
