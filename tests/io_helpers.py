"""Builders of tiny test clips for the uav.io tests, written with PyAV directly.

The reader tests must not depend on the writer under test, so these helpers mux their
own clips. Every frame encodes its index as five black/white bands (bit 4 on the left),
which survives lossy compression and lets a test check which frame it got back.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 64, 48
BITS = 5


def index_frame(index: int, width: int = WIDTH, height: int = HEIGHT, dtype: type = np.uint8) -> np.ndarray:
    """An RGB frame whose five vertical bands spell ``index`` in binary; a red corner marks top-left."""
    frame = np.zeros((height, width, 3), dtype=np.float64)
    band = width // BITS
    for bit in range(BITS):
        if (index >> (BITS - 1 - bit)) & 1:
            frame[:, bit * band:(bit + 1) * band] = 1.0
    frame[: height // 4, : width // 4] = (1.0, 0.0, 0.0)  # orientation marker
    if dtype == np.uint16:
        return np.round(frame * 65535).astype(np.uint16)
    return np.round(frame * 255).astype(np.uint8)


def decode_index(frame: np.ndarray) -> int:
    """The index spelled by :func:`index_frame` (read from the lower half, away from the marker)."""
    height, width = frame.shape[:2]
    band = width // BITS
    scale = 65535.0 if frame.dtype == np.uint16 else 255.0
    value = 0
    for bit in range(BITS):
        patch = frame[height // 2:, bit * band + band // 4:(bit + 1) * band - band // 4]
        value = value * 2 + int(patch.mean() / scale > 0.5)
    return value


def frame_level(index: int) -> int:
    """PCM sample value used throughout the audio of source frame ``index``."""
    return 500 * (index % 60) - 15000


def make_clip(
    path: Path,
    *,
    num_frames: int = 24,
    fps: Fraction = Fraction(24),
    encoder: str = "libx264",
    pix_fmt: str = "yuv420p",
    timestamps: list[int] | None = None,
    time_base: Fraction | None = None,
    timecode: str | None = None,
    rotation: int | None = None,
    audio: str | None = None,
    sample_rate: int = 48000,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    color: bool = True,
    sar: Fraction | None = None,
) -> Path:
    """Mux an index-band clip.

    ``timestamps`` (in ``time_base`` ticks) makes a variable-rate clip. ``audio`` is an
    encoder name (``"aac"``, ``"pcm_s16le"``); its samples hold ``frame_level(k)``
    during source frame ``k`` and it lasts as long as the video. ``rotation`` is the
    counter-clockwise display rotation PyAV writes as a display matrix.
    """
    tb = time_base or 1 / fps
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        if timecode:
            container.metadata["timecode"] = timecode
        stream = container.add_stream(encoder, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        stream.codec_context.time_base = tb
        stream.time_base = tb
        if color:
            cc = stream.codec_context
            cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1, 1
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio_stream = None
        if audio:
            audio_stream = container.add_stream(audio, rate=sample_rate)
            audio_stream.layout = "mono"
        bit_depth16 = "10" in pix_fmt
        for i in range(num_frames):
            rgb = index_frame(i, dtype=np.uint16 if bit_depth16 else np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if bit_depth16 else "rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
            frame.pts = timestamps[i] if timestamps is not None else i
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _write_levels(container, audio_stream, num_frames, fps, sample_rate)
    return path


def _write_levels(container: av.container.OutputContainer, stream: av.AudioStream, num_frames: int,
                  fps: Fraction, sample_rate: int) -> None:
    total = int(round(num_frames / fps * sample_rate))
    frame_of_sample = (np.arange(total, dtype=np.int64) * fps.numerator) // (sample_rate * fps.denominator)
    samples = np.array([frame_level(int(k)) for k in frame_of_sample], dtype=np.int16)
    fmt = stream.codec_context.codec.audio_formats[0].name
    size = stream.codec_context.frame_size or 1024
    for start in range(0, total, size):
        chunk = samples[start:start + size]
        if fmt == "fltp":
            data = (chunk.astype(np.float32) / 32768.0)[None, :]
        else:
            data = chunk[None, :]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def read_audio(path: Path) -> tuple[np.ndarray, int, str]:
    """The first audio stream of ``path`` as float64 samples (channel 0), its rate and codec name."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            channels = len(frame.layout.channels)
            if not frame.format.is_planar:
                data = data.reshape(-1, channels).T
            chunks.append(data[0].astype(np.float64))
        samples = np.concatenate(chunks) if chunks else np.zeros(0)
        return samples, stream.codec_context.sample_rate, stream.codec_context.name


def audio_duration(path: Path) -> float:
    """Seconds of audio in ``path``'s first audio stream, from its packets."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        total = 0
        for packet in container.demux(stream):
            if packet.size:
                total += packet.duration or 0
        return float(total * stream.time_base)
