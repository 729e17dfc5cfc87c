"""Real-looking test clips: natural image statistics, camera motion, downscaled like real footage.

No photographs ship with the test suite (and none can be downloaded), so these clips are
built from what makes footage hard for a pipeline: a 1/f amplitude spectrum (the
statistics of natural images: terrain, foliage, clouds), colour maps of real scenes,
sub-pixel camera pans and area downscaling from a larger frame, plus the sample clip
of ``scripts/make_sample_clip.py``. The same arguments always give the same pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_sample_clip import sample_frame  # noqa: E402

#: the scenes :func:`natural_clip` draws
SCENES = ("sample", "terrain", "sky")


def fractal_noise(height: int, width: int, seed: int, beta: float = 2.0) -> np.ndarray:
    """A ``(height, width)`` field in [0, 1] whose power spectrum falls as ``1 / f**beta``."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    spectrum = (rng.standard_normal(radius.shape) + 1j * rng.standard_normal(radius.shape)) / radius ** (beta / 2)
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(height, width))
    return (field - field.min()) / (field.max() - field.min())


def _terrain(size: tuple[int, int], seed: int) -> np.ndarray:
    """An aerial landscape: water, sand, grass, rock and snow over a fractal height map."""
    h, w = size
    height = fractal_noise(h, w, seed)
    detail = fractal_noise(h, w, seed + 100, beta=1.2)
    # the land's share of each colour, as on a map: a third water, little snow
    stops = np.quantile(height, [0.0, 0.30, 0.36, 0.70, 0.90, 1.0])
    colours = np.array([[20, 50, 120], [60, 110, 170], [200, 190, 140], [60, 130, 50], [110, 100, 90],
                        [245, 245, 250]], dtype=np.float64)
    rgb = np.stack([np.interp(height, stops, colours[:, c]) for c in range(3)], axis=-1)
    return rgb * (0.8 + 0.4 * detail[..., None])


def _sky(size: tuple[int, int], seed: int) -> np.ndarray:
    """Clouds over a blue gradient above a dark, wooded ridge line."""
    h, w = size
    y = np.linspace(0, 1, h)[:, None, None]
    sky = np.array([70, 120, 200]) * (1 - y) + np.array([170, 200, 235]) * y
    clouds = np.clip((fractal_noise(h, w, seed, beta=2.4) - 0.45) * 3, 0, 1)[..., None]
    rgb = sky * (1 - clouds) + 245 * clouds
    ridge = 0.65 * h + 0.2 * h * (fractal_noise(1, w, seed + 7, beta=2.0)[0] - 0.5)
    trees = fractal_noise(h, w, seed + 9, beta=1.0)[..., None]
    below = (np.arange(h)[:, None] > ridge[None, :])[..., None]
    return np.where(below, np.array([25, 55, 30]) * (0.6 + 0.8 * trees), rgb)


def _area_downscale(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def natural_clip(scene: str, *, frames: int = 8, width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """``(frames, height, width, 3)`` uint8: ``scene`` filmed at 5x the size with a slow
    diagonal pan, then area-downscaled (as a camera's or an editor's scaler would)."""
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    big_w, big_h = 5 * width, 5 * height
    if scene == "sample":
        shots = [sample_frame(k, frames, big_w, big_h).astype(np.float64) for k in range(frames)]
    else:
        world = (_terrain if scene == "terrain" else _sky)((big_h + 4 * frames, big_w + 7 * frames), seed)
        shots = [world[3 * k: 3 * k + big_h, 5 * k: 5 * k + big_w] for k in range(frames)]
    out = [_area_downscale(np.clip(np.round(s), 0, 255).astype(np.uint8), width, height) for s in shots]
    return np.stack(out)


def write_natural_clips(folder: Path, *, frames: int = 8, width: int = 64, height: int = 48) -> list[Path]:
    """One H.264 ``.mp4`` per scene in ``folder`` (24 fps); returns their paths."""
    from uav.io import write_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, scene in enumerate(SCENES):
        path = folder / f"{scene}.mp4"
        write_video(path, natural_clip(scene, frames=frames, width=width, height=height, seed=k), fps=24)
        paths.append(path)
    return paths
