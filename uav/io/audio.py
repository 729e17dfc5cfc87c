"""The audio under a rendered frame range, carried from a source into an output.

Audio from a source is cut to the frames ``[start, end)`` an output shows and muxed
alongside the frames as they are written. Compressed audio the output container
accepts is copied packet by packet (cut at packet boundaries, about 21 ms for AAC);
PCM audio, and audio the container cannot carry, is decoded, cut sample-exactly and
re-encoded (AAC in .mp4, PCM in .mov/.mkv/.wav). Decoded audio is converted to the
encoder's sample format by :class:`av.AudioResampler` and buffered in an
:class:`av.AudioFifo` until the encoder's frame size is reached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .probing import VideoScan, scan
from .sequence import IMAGE_EXTENSIONS, is_pattern

__all__ = ["AudioCut", "COPYABLE_AUDIO"]

log = logging.getLogger(__name__)

#: audio codecs each container takes as a packet copy. PCM is absent on purpose: it is
#: cheap to decode, and decoding lets the cut be sample-exact instead of packet-exact.
COPYABLE_AUDIO = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mkv": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "vorbis", "dts", "truehd"},
    ".wav": set(),
}

_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class AudioCut:
    """The part of a source's audio under a frame range, muxed into an output container.

    Made by :meth:`open`, given its output by :meth:`attach`, then driven by the
    writer: :meth:`pump` after every video frame, :meth:`finish` at the end.
    """

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
        # re-encode state: decoded samples wait in the FIFO; output sample indices count from 0
        self._frames: Iterator[tuple[int, Any]] | None = None
        self._fifo: Any = None
        self._resampler: Any = None
        self._emitted = 0  # output samples sent to the encoder
        self._exhausted = False

    @classmethod
    def open(cls, source: Path, start_frame: int, end_frame: int | None, out_fps: Fraction) -> AudioCut | None:
        """The cut of ``source``'s first audio stream under its video frames ``[start_frame, end_frame)``.

        Frames count at the source's video rate (``out_fps`` for an audio-only source).
        ``None`` when the source has no audio (image sequences have none).

        Raises:
            ValueError: the source is missing or unreadable.
        """
        import av

        if source.is_dir() or source.suffix.lower() in IMAGE_EXTENSIONS or is_pattern(str(source)):
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
                found = scan(source)
            except VideoInputError as exc:
                container.close()
                raise ValueError(f"audio_source: {exc}") from None
            if isinstance(found, VideoScan):
                origin = found.pts[0] * found.time_base
                rate = found.info.fps
        t0 = origin + Fraction(start_frame) / rate
        t1 = None if end_frame is None else origin + Fraction(end_frame) / rate
        return cls(source, container, container.streams.audio[0], t0, t1)

    def attach(self, out: Any, suffix: str) -> None:
        """Add the audio stream to ``out``, an output container whose file ends in ``suffix``."""
        import av

        cc = self._in.codec_context
        self._out = out
        self._copy = cc.name in COPYABLE_AUDIO.get(suffix, set())
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
        layout = _DEFAULT_LAYOUTS.get(channels) or cc.layout.name
        stream = out.add_stream(codec, rate=cc.sample_rate)
        stream.layout = layout
        if codec == "aac":
            stream.codec_context.bit_rate = 96000 * max(1, channels)
        self._out_stream = stream
        self._rate = cc.sample_rate
        self._frame_size = stream.codec_context.frame_size or 1024
        self._resampler = av.AudioResampler(format=stream.codec_context.codec.audio_formats[0].name,
                                            layout=layout, rate=cc.sample_rate)
        self._fifo = av.AudioFifo()

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

    def _decoded(self) -> Iterator[tuple[int, Any]]:
        """Source audio in the encoder's format, as ``(output sample index, frame)``."""
        import av

        self._seek_near_start()
        try:
            for frame in self._src.decode(self._in):
                if frame.pts is None:
                    continue
                start = round((frame.pts * frame.time_base - self.t0) * self._rate)
                frame.pts = None  # the resampler and FIFO would check continuity; the cut does that below
                for converted in self._resampler.resample(frame):
                    yield start, converted
                    start += converted.samples
        except av.FFmpegError as exc:
            log.warning("%s: audio decoding stopped early (%s)", self.source, exc)

    def _fill(self, needed: int) -> None:
        """Decode until the FIFO holds output samples up to ``needed`` (or the source ends)."""
        if self._frames is None:
            self._frames = self._decoded()
        while not self._exhausted and self._emitted + self._fifo.samples < needed:
            item = next(self._frames, None)
            if item is None:
                self._exhausted = True
                break
            start, frame = item
            buffered_end = self._emitted + self._fifo.samples
            if start + frame.samples <= buffered_end:
                continue  # entirely before the cut (or a repeat)
            if start < buffered_end:
                frame = _drop_head(frame, buffered_end - start)
            elif start > buffered_end:  # a gap in the source audio: keep sync with silence
                self._fifo.write(_silence_like(frame, start - buffered_end))
            self._fifo.write(frame)

    def _encode_until(self, until: Fraction, final: bool) -> None:
        stop = round(until * self._rate)
        if self.t1 is not None:
            total = round((self.t1 - self.t0) * self._rate)
            stop = total if final else min(stop, total)
        self._fill(stop)
        available = min(stop, self._emitted + self._fifo.samples)
        size = self._frame_size
        while self._emitted + size <= available or (final and self._emitted < available):
            count = min(size, available - self._emitted)
            frame = self._fifo.read(count)
            frame.pts = self._emitted
            frame.sample_rate = self._rate
            frame.time_base = Fraction(1, self._rate)
            for packet in self._out_stream.encode(frame):
                self._out.mux(packet)
            self._emitted += count
        if final:
            for packet in self._out_stream.encode(None):
                self._out.mux(packet)

    # -- driving ---------------------------------------------------------------------------

    def pump(self, until: Fraction) -> None:
        """Mux the audio that plays before output time ``until`` (seconds)."""
        (self._copy_until if self._copy else self._encode_until)(until, final=False)

    def finish(self, video_duration: Fraction) -> None:
        """Mux the rest of the cut: to ``t1``, or to ``video_duration`` when open-ended."""
        (self._copy_until if self._copy else self._encode_until)(video_duration, final=True)

    def close(self) -> None:
        """Close the source (the output container belongs to the writer)."""
        try:
            self._src.close()
        except Exception:  # closing a reader cannot lose data
            pass


def _rebuild(frame: Any, data: np.ndarray) -> Any:
    import av

    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


def _drop_head(frame: Any, count: int) -> Any:
    """``frame`` without its first ``count`` samples."""
    channels = 1 if frame.format.is_planar else len(frame.layout.channels)  # packed: samples interleaved
    return _rebuild(frame, frame.to_ndarray()[:, count * channels:])


def _silence_like(frame: Any, count: int) -> Any:
    """``count`` samples of silence in ``frame``'s format and layout."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    shape = (channels, count) if frame.format.is_planar else (1, count * channels)
    # unsigned 8-bit audio is centred on 128, every other format on 0
    fill = 128 if data.dtype == np.uint8 else 0
    return _rebuild(frame, np.full(shape, fill, dtype=data.dtype))
