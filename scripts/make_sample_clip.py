#!/usr/bin/env python
"""Generate a small deterministic sample clip: a moving textured pattern with a sine tone.

    python scripts/make_sample_clip.py sample.mp4 --frames 48 --width 160 --height 120 --fps 24000/1001

The same arguments always give the same pixels and samples (no randomness), so the
clip can back README demos and tests. The audio is a 440 Hz tone written to a temporary
WAV first and then muxed by :class:`uav.io.VideoWriter`, exactly as a real source's
audio would be.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from uav.io import CODECS, write_video


def sample_frame(index: int, num_frames: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of the pattern: drifting sine gratings, a scrolling checkerboard and a moving square."""
    t = index / max(num_frames, 1)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 128 + 100 * np.sin(2 * np.pi * (3 * x / width + t))
    green = 128 + 100 * np.sin(2 * np.pi * (2 * y / height - t))
    cell = max(2, min(width, height) // 12)
    blue = np.where(((x + 2 * index) // cell + y // cell) % 2 == 0, 200.0, 50.0)
    frame = np.stack([red, green, blue], axis=-1)
    side = max(2, min(width, height) // 5)
    left = int((width - side) * (0.5 + 0.45 * np.sin(2 * np.pi * t)))
    top = int((height - side) * (0.5 + 0.45 * np.cos(2 * np.pi * t)))
    frame[top:top + side, left:left + side] = 255.0
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def write_tone_wav(path: str | Path, seconds: float, *, sample_rate: int = 48000, frequency: float = 440.0,
                   channels: int = 2) -> Path:
    """Write a ``seconds`` long sine tone at -12 dBFS as 16-bit PCM WAV."""
    import av

    count = int(round(seconds * sample_rate))
    tone = 0.25 * np.sin(2 * np.pi * frequency * np.arange(count) / sample_rate)
    samples = np.round(np.repeat(tone[:, None], channels, axis=1) * 32767).astype(np.int16)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate)
        stream.layout = layout
        for start in range(0, count, 1024):
            chunk = samples[start:start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return Path(path)


def make_sample_clip(out: str | Path, *, frames: int = 48, width: int = 160, height: int = 120,
                     fps: Fraction | str | int = Fraction(24000, 1001), codec: str = "h264",
                     timecode: str | None = None, audio: bool = True) -> Path:
    """Write the sample clip to ``out`` and return its path."""
    rate = Fraction(fps)
    if frames <= 0:
        raise ValueError(f"frames must be > 0, got {frames}")
    with tempfile.TemporaryDirectory(prefix="uav-sample-") as tmp:
        audio_source = write_tone_wav(Path(tmp) / "tone.wav", frames / rate) if audio else None
        return write_video(
            out,
            (sample_frame(i, frames, width, height) for i in range(frames)),
            fps=rate,
            codec=codec,
            timecode=timecode,
            audio_source=audio_source,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output file (.mp4/.mov/.mkv) or folder for png/tiff")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--fps", default="24000/1001", help="exact rate, e.g. 24, 25 or 24000/1001")
    parser.add_argument("--codec", default="h264", choices=sorted(CODECS))
    parser.add_argument("--timecode", default=None, help="start timecode HH:MM:SS:FF")
    parser.add_argument("--no-audio", action="store_true", help="leave out the sine tone")
    args = parser.parse_args(argv)
    try:
        fps = Fraction(args.fps)
    except ValueError:
        parser.error(f"--fps must be a rational like 24 or 24000/1001, got {args.fps!r}")
    try:
        path = make_sample_clip(args.out, frames=args.frames, width=args.width, height=args.height, fps=fps,
                                codec=args.codec, timecode=args.timecode, audio=not args.no_audio)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
