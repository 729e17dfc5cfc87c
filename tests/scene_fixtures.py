"""A clip with hard cuts at known frames, built from real-looking segments of different content.

Segment 1 is the sample clip of ``scripts/make_sample_clip.py`` (drifting gratings, a
scrolling checkerboard, a moving square); the others are generated scenes of other
content: a textured pan, a sunset-like gradient with a moving disc, a brick wall with
a slow zoom. Each has motion within it (so a detector must not fire on motion) and a
hard cut to the next. The clip carries a start timecode, BT.709 tags and a 440 Hz tone.
"""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: frames per segment of the default test clip: cuts at 20, 38 and 60
SEGMENTS = (20, 18, 22, 16)
WIDTH, HEIGHT = 64, 48
FPS = Fraction(24)
TIMECODE = "01:00:00:00"


def _sample_module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("make_sample_clip", ROOT / "scripts" / "make_sample_clip.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_sample_clip", module)
    spec.loader.exec_module(module)
    return module


def pan(frames: int, width: int, height: int, seed: int = 1) -> np.ndarray:
    """A smooth random texture panning right two pixels a frame."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width + 2 * frames, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 2.0)
    return np.stack([base[:, 2 * t:2 * t + width] for t in range(frames)])


def sunset(frames: int, width: int, height: int) -> np.ndarray:
    """A warm vertical gradient with a bright disc sinking."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = []
    for t in range(frames):
        sky = np.stack([200 - 80 * y / height, 100 + 40 * y / height, 60 + 120 * (1 - y / height)], axis=-1)
        cy, cx = height * (0.3 + 0.4 * t / frames), width * 0.6
        disc = ((y - cy) ** 2 + (x - cx) ** 2) < (height / 6) ** 2
        sky[disc] = (255, 230, 150)
        out.append(np.clip(sky, 0, 255).astype(np.uint8))
    return np.stack(out)


def bricks(frames: int, width: int, height: int) -> np.ndarray:
    """A brick wall, slowly zooming in."""
    import cv2

    big = np.full((height * 2, width * 2, 3), (150, 60, 40), np.uint8)
    for row in range(0, height * 2, 8):
        big[row:row + 1] = (200, 200, 190)
        shift = 0 if (row // 8) % 2 else 8
        for col in range(shift, width * 2, 16):
            big[row:row + 8, col:col + 1] = (200, 200, 190)
    out = []
    for t in range(frames):
        zoom = 1.0 + 0.3 * t / frames
        w, h = int(width * 2 / zoom / 1.5), int(height * 2 / zoom / 1.5)
        crop = big[:h, :w]
        out.append(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def scene_frames(segments: tuple[int, ...] = SEGMENTS, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """All the clip's frames, ``(sum(segments), H, W, 3)`` uint8."""
    sample = _sample_module()
    makers = [lambda n: np.stack([sample.sample_frame(i, n, width, height) for i in range(n)]),
              lambda n: pan(n, width, height), lambda n: sunset(n, width, height), lambda n: bricks(n, width, height)]
    return np.concatenate([makers[k % len(makers)](n) for k, n in enumerate(segments)])


def cuts_of(segments: tuple[int, ...] = SEGMENTS) -> list[int]:
    return list(np.cumsum(segments)[:-1])


def make_cut_clip(path: Path, *, segments: tuple[int, ...] = SEGMENTS, width: int = WIDTH, height: int = HEIGHT,
                  fps: Fraction = FPS, timecode: str | None = TIMECODE, audio: bool = True,
                  codec: str = "h264") -> Path:
    """Write the clip (near-lossless H.264, so detection sees the content, not the codec)."""
    import tempfile

    from uav.io import write_video

    frames = scene_frames(segments, width, height)
    with tempfile.TemporaryDirectory(prefix="uav-scenes-") as tmp:
        tone = _sample_module().write_tone_wav(Path(tmp) / "tone.wav", len(frames) / fps) if audio else None
        return write_video(path, iter(frames), fps=fps, codec=codec, crf=4 if codec in ("h264", "h265") else None,
                           timecode=timecode, audio_source=tone)
