"""Streaming video output on PyAV: H.264/H.265/ProRes/DNxHR files and PNG/TIFF/EXR/DPX sequences.

Every output is first written under a hidden temporary name next to its destination
(see :mod:`uav.io.atomic`) and renamed onto the destination only when
:meth:`VideoWriter.close` succeeds, so an interrupted render never leaves a
half-written file at the final path; a full disk or another write error removes the
temporary and raises one :class:`~uav.io.errors.VideoOutputError`. Audio from the
source is cut to the rendered frames and muxed alongside them (:mod:`uav.io.audio`);
formats are described in :mod:`uav.io.codecs`. A provenance record (:mod:`uav.io.provenance`)
goes into the container's metadata, the EXR headers, or a JSON sidecar.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic
from .audio import AudioCut
from .codecs import CODECS, CodecSpec, alpha_pix_fmt, known_codecs, open_encoder, output_path
from .errors import VideoOutputError
from . import frame_files as files
from .metadata import SWS_MATRIX, output_color, tag_color
from .provenance import PROVENANCE_KEY, provenance_json, sidecar_path
from .rates import parse_fps
from .timecode import parse_timecode, timecode_rate_supported, timecode_to_frames

__all__ = ["CodecSpec", "CODECS", "VideoWriter", "write_video", "SEQUENCE_AUDIO_NAME"]

log = logging.getLogger(__name__)

#: name of the sidecar WAV written into an image-sequence folder when it gets audio
SEQUENCE_AUDIO_NAME = "audio.wav"
#: a decode time this many ticks before its presentation time is garbage, not reordering
_DTS_SLACK = 2**31


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return int(value)


class VideoWriter:
    """Write RGB frames to a video file or image-sequence folder, atomically.

    Use as a context manager: leaving the block normally closes the writer (renaming
    the output into place), leaving it with an exception aborts it (deleting the
    temporary output)::

        with VideoWriter("out.mp4", fps=info.fps, width=w, height=h, codec="h264",
                         **carry_over(info, 0, info.num_frames)) as writer:
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
            (a ``tmcd`` track) or the mkv ``TIMECODE`` tag. Ignored for sequences,
            and (with a warning) at rates SMPTE timecode does not define.
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
        bit_depth: 8 for ``uint8`` frames, 16 for ``uint16`` frames (full 16-bit scale),
            32 for ``float32`` frames in [0, 1] (kept float by EXR, quantised once to
            the output's depth by every other format).
        preset: libx264/libx265 speed preset (default ``"medium"``).
        start_number: number of the first image of a sequence.
        compression: EXR compression, ``piz`` (default), ``zip``, ``dwaa`` or ``none``.
        provenance: a JSON record of how the frames were made: the ``uav`` tag of a
            mov/mp4/mkv, every EXR header, ``uav.json`` in a sequence, ``<file>.uav.json``
            beside an .mxf (its muxer takes no free tags).
        replace: replace an existing sequence folder (once the new one is complete).
        alpha: frames are ``(height, width, 4)`` RGBA and the alpha is kept: ``prores_4444``
            (``yuva444p10le``), ``png`` and ``tiff`` hold it; other codecs refuse.

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
        compression: str | None = None,
        provenance: dict[str, Any] | None = None,
        replace: bool = False,
        alpha: bool = False,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; known codecs: {known_codecs()}")
        self.spec = spec = CODECS[codec]
        self.alpha = bool(alpha)
        self.fps = parse_fps(fps)
        self.width = _check_positive_int("width", width)
        self.height = _check_positive_int("height", height)
        self.bit_depth, self.pix_fmt = bit_depth, _pixel_format(spec, codec, pix_fmt, bit_depth, self.alpha)
        self._dtype = files.FRAME_DTYPES[bit_depth]
        _check_encoder_options(spec, codec, crf, preset)
        self.crf = crf
        self.compression = files.check_format_options(spec, self.width, self.height, compression)
        self.provenance = provenance
        self.timecode = _usable_timecode(timecode, self.fps, path)
        _check_audio_range(audio_start_frame, audio_end_frame)
        self.color = output_color(color)
        if sample_aspect_ratio is not None:
            sample_aspect_ratio = Fraction(sample_aspect_ratio)
            if sample_aspect_ratio <= 0:
                raise ValueError(f"sample_aspect_ratio must be > 0, got {sample_aspect_ratio}")
        self.sample_aspect_ratio = sample_aspect_ratio
        if isinstance(start_number, bool) or not isinstance(start_number, (int, np.integer)) or start_number < 0:
            raise ValueError(f"start_number must be an int >= 0, got {start_number!r}")
        self._start_number = int(start_number)
        _check_chroma_size(codec, self.pix_fmt, self.width, self.height)
        self.path, self._pattern = output_path(path, spec)
        if self.color["color_range"] == "pc" and not spec.says_full_range(self.path.suffix):
            # a full-range picture read as limited would look washed out: convert it instead
            log.warning("%s: %s in %s cannot say 'full range'; writing limited range", self.path, codec,
                        self.path.suffix)
            self.color["color_range"] = "tv"
        if self.timecode is not None and spec.kind == "sequence" and spec.name not in ("exr", "dpx"):
            log.info("%s: image sequences carry no timecode; %s is not stored", self.path, self.timecode)
        self.frames_written = 0
        self._closed = False
        self._container: Any = None
        self._stream: Any = None
        self._last_dts: int | None = None
        self._audio: AudioCut | None = None
        self._audio_container: Any = None
        self._sidecar: Path | None = None
        self._replace = bool(replace)
        self._prepare_destination()
        self._finalizer = weakref.finalize(self, _discard, self._temp)
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

    def _prepare_destination(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"output folder {parent} cannot be created ({exc.strerror or exc}); "
                             "choose a writable location") from None
        if not parent.is_dir():
            raise ValueError(f"output folder {parent} is not a folder; choose a writable location")
        atomic.clean_stale_temporaries(parent)
        video = self.spec.kind == "video"
        if not video and self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())) and not (
                self._replace and self.path.is_dir()):
            raise ValueError(f"output {self.path} already exists and is not an empty folder; remove it or "
                             "choose another name (a sequence is written into its own folder)")
        self._temp = atomic.temporary_path(self.path, folder=not video)
        try:
            if video:
                self._temp.open("xb").close()
            else:
                self._temp.mkdir()
        except OSError as exc:
            raise ValueError(f"output folder {parent} is not writable ({exc.strerror or exc}); "
                             "choose a writable location") from None
        atomic.track(self._temp)

    def _open_video(self, preset: str | None) -> None:
        import av

        spec = self.spec
        try:
            free_tags = self.provenance is not None and self.path.suffix.lower() in (".mov", ".mp4")
            container = av.open(str(self._temp), mode="w",  # mov/mp4 drop free tags unless told
                                options={"movflags": "use_metadata_tags"} if free_tags else None)
        except av.FFmpegError as exc:
            raise ValueError(f"cannot create {self.path.name} ({exc.strerror or exc})") from None
        self._container = container
        if self.timecode:
            container.metadata["timecode"] = self.timecode
        if self.provenance is not None and self.path.suffix.lower() != ".mxf":
            container.metadata[PROVENANCE_KEY] = provenance_json(self.provenance)
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
        tag_color(cc, self.color)
        if self.sample_aspect_ratio is not None:
            cc.sample_aspect_ratio = self.sample_aspect_ratio
        if spec.name == "h265" and self.path.suffix.lower() in (".mp4", ".mov"):
            cc.codec_tag = "hvc1"  # the tag Apple players require for HEVC
        self._stream = stream
        # opened now: a size or setting the encoder refuses fails before any frame is rendered
        open_encoder(cc, spec, f"{self.width}x{self.height} {self.pix_fmt}")

    def _open_audio(self, source: Path, start_frame: int, end_frame: int | None) -> None:
        import av

        if self.spec.kind == "video":
            container, suffix = self._container, self.path.suffix.lower()
        else:
            container, suffix = None, ".wav"
        cut = AudioCut.open(source, start_frame, end_frame, self.fps)
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
        """Append one ``(height, width, 3)`` RGB frame (``uint8``, or ``uint16`` when ``bit_depth=16``).

        Raises:
            ValueError: a frame of the wrong size or dtype (the output is abandoned).
            VideoOutputError: the frame could not be written (e.g. disk full); the
                temporary output is removed and nothing is saved.
        """
        if self._closed:
            raise ValueError(f"cannot write to {self.path}: the writer is already closed")
        array = np.asarray(frame)
        expected = (self.height, self.width, 4 if self.alpha else 3)
        if array.shape != expected or array.dtype != self._dtype:
            self.abort()  # a render that feeds wrong frames is broken; do not leave its partial output
            raise ValueError(f"frame {self.frames_written} must be {expected[0]}x{expected[1]}x{expected[2]} "
                             f"{self._dtype}, got "
                             f"shape {array.shape} {array.dtype}"
                             + (" (pass bit_depth=16 to write uint16 frames)" if array.dtype == np.uint16 else ""))
        try:
            if self.spec.kind == "video":
                self._encode(np.ascontiguousarray(files.integer_samples(array, self.spec.bits(self.pix_fmt))))
            elif self.spec.name in ("exr", "dpx"):
                self._write_finishing(array)
            else:
                self._write_image(files.integer_samples(array, self.spec.bits(self.pix_fmt)))
            self.frames_written += 1
            if self._audio is not None:
                self._audio.pump(Fraction(self.frames_written) / self.fps)
        except OSError as exc:  # disk full, folder removed, I/O error: PyAV raises OSError subclasses
            raise self._failed(exc) from None
        except BaseException:
            self.abort()
            raise

    def _encode(self, array: np.ndarray) -> None:
        import av

        if self.alpha:
            fmt = "rgba64le" if array.dtype == np.uint16 else "rgba"
        else:
            fmt = "rgb48le" if array.dtype == np.uint16 else "rgb24"
        rgb = av.VideoFrame.from_ndarray(array, format=fmt)
        yuv = rgb.reformat(
            format=self.pix_fmt,
            dst_colorspace=SWS_MATRIX[self.color["color_space"]],
            dst_color_range="JPEG" if self.color["color_range"] == "pc" else "MPEG",
        )
        tag_color(yuv, self.color)
        yuv.pts = self.frames_written
        yuv.time_base = 1 / self.fps
        for packet in self._stream.encode(yuv):
            self._mux_video(packet)

    def _mux_video(self, packet: Any) -> None:
        # libx265 sometimes stamps a two-frame encode with a decode time 2**54 ticks before
        # its presentation time (measured: 2 runs in 10; never at 1, 3, 4, 5 or 24 frames),
        # which the mov muxer refuses ("pts/dts pair unsupported"). A dts that far off is no
        # timestamp: the packet gets the next one that keeps decode order and dts <= pts.
        if packet.pts is not None and packet.dts is not None and packet.dts < packet.pts - _DTS_SLACK:
            floor = self._last_dts + 1 if self._last_dts is not None else packet.pts
            packet.dts = min(packet.pts, max(floor, packet.pts - _DTS_SLACK))
        if packet.dts is not None:
            self._last_dts = packet.dts
        self._container.mux(packet)

    def _write_finishing(self, array: np.ndarray) -> None:
        assert self._pattern is not None
        name = self._pattern % (self.frames_written + self._start_number)
        files.write_finishing_frame(self.spec, self.pix_fmt, self._temp / name, array, index=self.frames_written,
                              color=self.color, fps=self.fps, timecode=self.timecode, compression=self.compression,
                              provenance=self.provenance, sample_aspect_ratio=self.sample_aspect_ratio)

    def _write_image(self, array: np.ndarray) -> None:
        import cv2

        assert self._pattern is not None
        if self.spec.name == "tiff" and array.dtype == np.uint8:
            array = array.astype(np.uint16) * 257  # TIFF output is always 16-bit
        name = self._pattern % (self.frames_written + self._start_number)
        target = self._temp / name
        bgr = array[:, :, [2, 1, 0, 3]] if self.alpha else array[:, :, ::-1]
        if not cv2.imwrite(str(target), np.ascontiguousarray(bgr)):
            # OpenCV only says "no"; the folder exists (we made it), so the disk refused
            raise VideoOutputError(self.path, f"image {name} could not be written (disk full or not writable?)")

    # ------------------------------------------------------------------ finishing

    def close(self) -> Path:
        """Finish the output and move it to :attr:`path`; returns that path.

        Raises:
            ValueError: no frame was written (nothing is saved in that case).
            VideoOutputError: the output could not be finished (e.g. disk full); the
                temporary is removed and the destination left as it was.
        """
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; nothing was saved")
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._mux_video(packet)
            if self._audio is not None:
                self._audio.finish(Fraction(self.frames_written) / self.fps)
            if self._audio_container is not None:
                self._audio_container.close()
                self._audio_container = None
            if self._container is not None:
                self._container.close()
                self._container = None
            self._sidecar = files.write_sidecar(self.spec, self._temp, self.path, self.provenance)
            if self.spec.kind == "video":
                if self._sidecar is not None:
                    os.replace(self._sidecar, sidecar_path(self.path))
                os.replace(self._temp, self.path)
            else:
                files.swap_in_folder(self._temp, self.path)
        except OSError as exc:
            raise self._failed(exc) from None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()
        atomic.untrack(self._temp)
        if self._audio is not None:
            self._audio.close()
        return self.path

    def _failed(self, exc: OSError) -> VideoOutputError:
        """Abort, and ``exc`` as one :class:`VideoOutputError`, naming the temporary when it could not
        be removed (a folder made read-only mid-write): the user must know what is left behind."""
        self._abort(report=False)
        if not isinstance(exc, VideoOutputError):
            reason = (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")
            exc = VideoOutputError(self.path, f"cannot be written ({reason[0].lower() + reason[1:]})", exc.errno)
        leftover = getattr(self, "_leftover", None)
        if leftover is None:
            return exc
        return VideoOutputError(exc.path, exc.problem, exc.errno, leftover=leftover[0], leftover_reason=leftover[1])

    def abort(self) -> None:
        """Stop writing and delete the temporary output; the destination is left untouched.
        A temporary that cannot be removed is logged as a warning naming it."""
        self._abort(report=True)

    def _abort(self, *, report: bool) -> None:
        if self._closed:
            return
        self._closed = True
        # every attribute exists: __init__ sets them all before anything can abort
        for container in (self._container, self._audio_container):
            if container is not None:
                try:
                    container.close()
                except Exception:  # the partial file is deleted next; its errors do not matter
                    pass
        self._container = self._audio_container = None
        if self._audio is not None:
            self._audio.close()
        if self._sidecar is not None:
            _discard(self._sidecar)
        reason = _discard(self._temp)
        if reason is not None:
            self._leftover = (self._temp, reason)
            if report:
                log.warning("%s: the temporary %s could not be removed (%s); delete it by hand", self.path,
                            self._temp, reason)
        self._finalizer.detach()


def write_video(path: str | Path, frames: Iterable[np.ndarray], **kwargs: Any) -> Path:
    """Write all ``frames`` with a :class:`VideoWriter` and return the output path.

    ``width``, ``height`` and ``bit_depth`` default to those of the first frame (uint8: 8,
    uint16: 16, float32: 32);
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
    kwargs.setdefault("bit_depth", {np.dtype(np.uint16): 16, np.dtype(np.float32): 32}.get(first.dtype, 8))
    writer = VideoWriter(path, **kwargs)
    with writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return writer.path


def _discard(temp: Path) -> str | None:
    atomic.untrack(temp)
    return atomic.remove(temp)


def _pixel_format(spec: Any, codec: str, pix_fmt: str | None, bit_depth: int, alpha: bool) -> str:
    """The encoder's pixel format: the one asked for (with alpha: one that keeps it) or the
    codec's default for ``bit_depth``."""
    if alpha:
        pix_fmt = alpha_pix_fmt(spec, pix_fmt, bit_depth)
    if bit_depth not in files.FRAME_DTYPES:
        raise ValueError(f"bit_depth must be 8 (uint8 frames), 16 (uint16 frames) or 32 (float32 frames), "
                         f"got {bit_depth!r}")
    fmt = pix_fmt or (spec.pix_fmt_16bit if bit_depth >= 16 else spec.pix_fmt_8bit)
    if fmt not in spec.pix_fmts:
        raise ValueError(f"pix_fmt {fmt!r} is not available for codec {codec!r}; "
                         f"choose one of {', '.join(spec.pix_fmts)}")
    return fmt


def _check_encoder_options(spec: Any, codec: str, crf: Any, preset: str | None) -> None:
    if crf is not None:
        if spec.default_crf is None:
            raise ValueError(f"crf only applies to h264/h265, not codec {codec!r}")
        if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an int from 0 (lossless) to 51, got {crf!r}")
    if preset is not None and spec.default_crf is None:
        raise ValueError(f"preset only applies to h264/h265, not codec {codec!r}")


def _usable_timecode(timecode: str | None, fps: Fraction, path: Any) -> str | None:
    """``timecode`` checked at ``fps``; ``None`` (a warning) at a rate SMPTE timecode does not define."""
    if timecode is None:
        return None
    parse_timecode(timecode)  # a malformed string is the caller's error
    if timecode_rate_supported(fps):
        timecode_to_frames(timecode, fps)  # validates the label at this rate
        return timecode
    # timecode is carried, never required: a rate SMPTE timecode does not define gets an
    # output without it, not a failed render
    log.warning("%s: SMPTE timecode is not defined at %s fps; writing it without the timecode %s", path, fps,
                timecode)
    return None


def _check_audio_range(start: Any, end: Any) -> None:
    if not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"audio_start_frame must be an int >= 0, got {start!r}")
    if end is not None and (not isinstance(end, (int, np.integer)) or end <= start):
        raise ValueError(f"audio_end_frame must be an int > audio_start_frame ({start}), got {end!r}")


def _check_chroma_size(codec: str, pix_fmt: str, width: int, height: int) -> None:
    if "420" in pix_fmt and (width % 2 or height % 2):
        raise ValueError(f"{codec} with pix_fmt {pix_fmt} needs an even width and height, got "
                         f"{width}x{height}; crop/pad by one pixel or use a 4:4:4 pix_fmt")
    if "422" in pix_fmt and width % 2:
        raise ValueError(f"{codec} with pix_fmt {pix_fmt} needs an even width, got {width}")
