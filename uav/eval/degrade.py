"""Reproducible synthetic degradations that turn high-quality clips into LQ/HQ pairs.

The pipeline follows the second-order design of Real-ESRGAN / RealBasicVSR
(blur, resize, noise, JPEG, then a second round plus video-codec compression and
a final resize with an optional sinc filter), with two properties the published
data pipelines lack:

* **Bit-reproducible.** Everything random comes from one
  ``numpy.random.Generator(seed)``; OpenCV and PyAV (single-threaded encoding) are
  deterministic, so the same clip, seed and config give identical bytes.
* **Temporally constant parameters.** Every per-clip parameter (kernel, scales,
  noise level, JPEG quality, codec, bitrate) is drawn once per clip, as
  RealBasicVSR does; only the noise *realisation* changes from frame to frame.

Order of operations (all on floats in ``[0, 1]``)::

    first stage:  blur -> random resize -> noise -> JPEG
    second stage: blur (with probability) -> random resize -> noise -> JPEG
    final:        in random order { video codec, resize to H/scale x W/scale (+ sinc) }

The defaults mirror RealBasicVSR's ranges, scaled for small clips: smaller blur
kernels, and a codec bitrate given per pixel (so a 64x64 clip is compressed about
as hard as RealBasicVSR's training crops were).
"""


from __future__ import annotations

import io
import math
from typing import Any

import av
import cv2
import numpy as np
import torch

from uav.eval import degrade_config
from uav.eval.degrade_config import (  # noqa: F401 - the config types are re-exported (__all__)
    INTERPOLATIONS,
    KERNEL_TYPES,
    BlurConfig,
    DegradationConfig,
    DegradationParams,
    KernelParams,
    NoiseConfig,
    ResizeConfig,
    StageConfig,
    StageParams,
    sample_params,
)

# The recipe's names are part of this module's interface: callers build a config and
# read sampled parameters without knowing the recipe lives in its own file.
__all__ = [*degrade_config.__all__, "apply_degradation", "degrade_clip", "make_pair", "blur_kernel"]

_INTERPOLATIONS = dict(zip(INTERPOLATIONS, (cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC)))
_MIN_SIDE = 4  # intermediate frames never shrink below this many pixels


# --------------------------------------------------------------------------- kernels


def blur_kernel(params: KernelParams) -> np.ndarray:
    """The normalised (size, size) float64 kernel described by ``params``.

    Gaussian family: ``exp(-0.5 q)`` (plain), ``exp(-0.5 q^beta)`` (generalized) and
    ``1 / (1 + q^beta)`` (plateau), with ``q = p^T S^-1 p`` and ``S`` the covariance
    of the rotated axis sigmas. ``sinc``: the ideal circular low-pass
    ``omega J1(omega r) / (2 pi r)``.
    """
    k = params.size
    if k < 3 or k % 2 == 0:
        raise ValueError(f"size: expected an odd kernel size >= 3; got {k}")
    r = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
    xx, yy = np.meshgrid(r, r)
    if params.type == "sinc":
        dist = np.hypot(xx, yy)
        safe = np.where(dist == 0, 1.0, dist)
        j1 = torch.special.bessel_j1(torch.from_numpy(params.omega * safe)).numpy()
        kernel = np.where(dist == 0, params.omega**2 / (4.0 * math.pi), params.omega * j1 / (2.0 * math.pi * safe))
    else:
        c, s = math.cos(params.angle), math.sin(params.angle)
        rot = np.array([[c, -s], [s, c]])
        cov = rot @ np.diag([params.sigma_x**2, params.sigma_y**2]) @ rot.T
        inv = np.linalg.inv(cov)
        q = inv[0, 0] * xx**2 + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy**2
        if params.type.startswith("generalized"):
            kernel = np.exp(-0.5 * q**params.beta)
        elif params.type.startswith("plateau"):
            kernel = 1.0 / (1.0 + q**params.beta)
        elif params.type in ("iso", "aniso"):
            kernel = np.exp(-0.5 * q)
        else:
            raise ValueError(f"type: unknown kernel type {params.type!r}; expected one of {KERNEL_TYPES}")
    return kernel / kernel.sum()


# --------------------------------------------------------------------------- operations


def _filter(clip: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    k = kernel.astype(np.float32)
    return np.stack([cv2.filter2D(f, -1, k, borderType=cv2.BORDER_REFLECT_101) for f in clip])


def _resize(clip: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    h, w = size
    if clip.shape[1:3] == (h, w):
        return clip
    flag = _INTERPOLATIONS[interpolation]
    return np.stack([cv2.resize(f, (w, h), interpolation=flag) for f in clip])


def _add_noise(clip: np.ndarray, p: StageParams, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(clip)
    T, h, w, _ = clip.shape
    for t in range(T):
        frame = clip[t]
        if p.noise_type == "gaussian":
            shape = (h, w, 1) if p.noise_gray else (h, w, 3)
            noise = rng.standard_normal(shape).astype(np.float32) * np.float32(p.noise_level / 255.0)
        else:
            # Poisson noise of an 8-bit signal: counts proportional to intensity.
            base = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[..., None] if p.noise_gray else frame
            lam = np.clip(base, 0.0, 1.0).astype(np.float64) * 255.0
            noise = ((rng.poisson(lam) / 255.0 - base) * p.noise_level).astype(np.float32)
        out[t] = np.clip(frame + noise, 0.0, 1.0)
    return out


def _quantize(clip: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(clip * 255.0), 0, 255).astype(np.uint8)


def _jpeg(clip: np.ndarray, quality: int) -> np.ndarray:
    out = np.empty_like(clip)
    for t, frame in enumerate(_quantize(clip)):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out[t] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return out


def _video_codec(clip: np.ndarray, codec: str, bits_per_pixel: float, fps: int, overhead_bits: int = 0) -> np.ndarray:
    """Encode and decode the clip in memory with PyAV, single-threaded so the bytes are reproducible."""
    frames = _quantize(clip)
    T, h, w, _ = frames.shape
    # yuv420p needs even sides and encoders dislike tiny frames: pad by edge replication.
    ph, pw = max(16, h + h % 2), max(16, w + w % 2)
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="matroska") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.bit_rate = max(1000, int(round((bits_per_pixel * h * w + overhead_bits) * fps)))
        stream.thread_count = 1
        if stream.codec_context.name == "libx264":
            stream.options = {"threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buf.seek(0)
    with av.open(buf, mode="r") as container:
        container.streams.video[0].thread_count = 1
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != T:
        raise RuntimeError(f"video codec {codec!r} returned {len(decoded)} frames for {T}")
    return np.stack(decoded)[:, :h, :w].astype(np.float32) / 255.0


def _run_stage(clip: np.ndarray, p: StageParams, rng: np.random.Generator) -> np.ndarray:
    if p.kernel is not None:
        clip = _filter(clip, blur_kernel(p.kernel))
    if p.resize_factor != 1.0:
        h, w = clip.shape[1:3]
        size = (max(_MIN_SIDE, int(round(h * p.resize_factor))), max(_MIN_SIDE, int(round(w * p.resize_factor))))
        clip = np.clip(_resize(clip, size, p.resize_interpolation), 0.0, 1.0)
    clip = _add_noise(clip, p, rng)
    if p.jpeg_quality is not None:
        clip = _jpeg(clip, p.jpeg_quality)
    return clip


def _as_clip(frames: Any, name: str) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array (T, H, W, 3); got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (T, H, W, 3) with T >= 1; got {frames.shape}")
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    if frames.dtype == np.uint16:
        return frames.astype(np.float32) / 65535.0
    if np.issubdtype(frames.dtype, np.floating):
        if not np.all(np.isfinite(frames)) or frames.min() < -1e-3 or frames.max() > 1.0 + 1e-3:
            raise ValueError(f"{name}: float frames must be finite and within [0, 1]")
        return np.clip(frames, 0.0, 1.0).astype(np.float32)
    raise TypeError(f"{name}: expected dtype uint8, uint16 or float in [0, 1]; got {frames.dtype}")


def _check_scale(scale: Any, H: int, W: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale: expected an integer >= 1; got {scale!r}")
    if H < scale or W < scale:
        raise ValueError(f"scale: frames of {H}x{W} are smaller than the scale factor {scale}")
    return int(scale)


def apply_degradation(
    frames: np.ndarray,
    params: DegradationParams,
    rng: np.random.Generator,
    *,
    scale: int = 4,
    fps: int = 25,
    video_frame_overhead_bits: int = 600,
) -> np.ndarray:
    """Degrade a clip with already drawn ``params``; ``rng`` supplies the per-frame noise.

    ``fps`` and ``video_frame_overhead_bits`` come from the :class:`DegradationConfig`.

    Returns a uint8 clip ``(T, H // scale, W // scale, 3)``.
    """
    clip = _as_clip(frames, "frames")
    T, H, W, _ = clip.shape
    scale = _check_scale(scale, H, W)
    target = (H // scale, W // scale)
    clip = _run_stage(clip, params.first, rng)
    if params.second is not None:
        clip = _run_stage(clip, params.second, rng)

    def final_resize(c: np.ndarray) -> np.ndarray:
        c = np.clip(_resize(c, target, params.final_interpolation), 0.0, 1.0)
        if params.final_sinc is not None:
            c = np.clip(_filter(c, blur_kernel(params.final_sinc)), 0.0, 1.0)
        return c

    def codec(c: np.ndarray) -> np.ndarray:
        if params.video_codec is None:
            return c
        return _video_codec(c, params.video_codec, params.video_bits_per_pixel, fps, video_frame_overhead_bits)

    clip = final_resize(codec(clip)) if params.codec_first else codec(final_resize(clip))
    return _quantize(clip)


def degrade_clip(
    frames: np.ndarray, *, seed: int, config: DegradationConfig | None = None, scale: int = 4
) -> np.ndarray:
    """Turn an HQ clip into its LQ counterpart, reproducibly.

    Args:
        frames: ``(T, H, W, 3)`` RGB, uint8, uint16 or float in ``[0, 1]``.
        seed: the only source of randomness: equal seeds give identical bytes.
        config: the recipe (defaults: :class:`DegradationConfig`).
        scale: the downscaling factor; the LQ clip is ``(T, H // scale, W // scale, 3)``.

    Returns:
        The LQ clip as uint8.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0; got {seed!r}")
    config = DegradationConfig() if config is None else config
    rng = np.random.default_rng(int(seed))
    params = sample_params(config, rng)
    return apply_degradation(
        frames, params, rng, scale=scale, fps=config.fps, video_frame_overhead_bits=config.video_frame_overhead_bits
    )


def make_pair(
    frames: np.ndarray, *, seed: int, config: DegradationConfig | None = None, scale: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """An aligned ``(lq, hq)`` training pair from an HQ clip.

    ``hq`` is the input cropped (top-left) to a multiple of ``scale`` and converted
    to uint8; ``lq`` is :func:`degrade_clip` of that crop, so
    ``hq.shape[1:3] == (lq.shape[1] * scale, lq.shape[2] * scale)``.
    """
    clip = _as_clip(frames, "frames")
    H, W = clip.shape[1:3]
    scale = _check_scale(scale, H, W)
    hq = _quantize(clip[:, : (H // scale) * scale, : (W // scale) * scale])
    return degrade_clip(hq, seed=seed, config=config, scale=scale), hq
