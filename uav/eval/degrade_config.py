"""The degradation recipe of :mod:`uav.eval.degrade`: configuration and per-clip parameters.

:class:`DegradationConfig` holds every number of the pipeline (frozen dataclasses,
validated on construction); :func:`sample_params` draws one clip's parameters from it
with a seeded ``numpy`` generator. Both are plain data, so a run can be logged and
replayed (``.to_dict()``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "KERNEL_TYPES",
    "INTERPOLATIONS",
    "BlurConfig",
    "ResizeConfig",
    "NoiseConfig",
    "StageConfig",
    "DegradationConfig",
    "DegradationParams",
    "KernelParams",
    "StageParams",
    "sample_params",
]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc")
#: resize interpolations by name (OpenCV's linear, area and cubic)
INTERPOLATIONS = ("bilinear", "area", "bicubic")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BlurConfig:
    """Random blur kernel. Sizes are odd; sigmas in pixels; angles in radians."""

    prob: float = 1.0
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15)
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.405, 0.225, 0.108, 0.027, 0.108, 0.027, 0.1)
    sigma: tuple[float, float] = (0.2, 3.0)
    rotation: tuple[float, float] = (-math.pi, math.pi)
    beta_gaussian: tuple[float, float] = (0.5, 4.0)
    beta_plateau: tuple[float, float] = (1.0, 2.0)
    sinc_omega: tuple[float, float] = (math.pi / 3, math.pi)


@dataclass(frozen=True)
class ResizeConfig:
    """Random rescaling: up (factor in ``[1, scale[1]]``), down (``[scale[0], 1]``) or keep."""

    mode_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    scale: tuple[float, float] = (0.15, 1.5)
    interpolations: tuple[str, ...] = ("bilinear", "area", "bicubic")


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian (sigma on the 0-255 scale) or Poisson noise, optionally gray (same on all channels)."""

    gaussian_prob: float = 0.5
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass(frozen=True)
class StageConfig:
    """One round of blur, resize, noise and JPEG (``jpeg_quality=None`` skips JPEG)."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg_quality: tuple[int, int] | None = (30, 95)


def _second_stage() -> StageConfig:
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma=(0.2, 1.5)),
        resize=ResizeConfig(mode_probs=(0.3, 0.4, 0.3), scale=(0.3, 1.2)),
        noise=NoiseConfig(gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
        jpeg_quality=(30, 95),
    )


@dataclass(frozen=True)
class DegradationConfig:
    """The whole degradation recipe (plain data; safe to serialise with :func:`dataclasses.asdict`).

    Attributes:
        first: the first degradation round.
        second: the second round, or ``None`` for a first-order pipeline.
        video_prob: probability of video-codec compression.
        video_codecs, video_codec_probs: PyAV encoder names and their probabilities.
        video_bits_per_pixel: range of the codec bitrate in bits per pixel per frame
            (RealBasicVSR's 1e4-1e5 bit/s at 25 fps on 64x64 frames is about 0.1-1.0).
        video_frame_overhead_bits: bits per frame added to that budget; encoders
            spend a roughly fixed amount per frame on headers, so without it tiny
            frames would decode as flat colour.
        fps: frame rate given to the encoder's rate control.
        final_interpolations: interpolations for the resize to the LQ size.
        final_sinc_prob: probability of the final sinc (ringing) filter.
        final_sinc_omega: cutoff range of that filter.
        final_sinc_sizes: its kernel sizes.
    """

    first: StageConfig = field(default_factory=StageConfig)
    second: StageConfig | None = field(default_factory=_second_stage)
    video_prob: float = 1.0
    video_codecs: tuple[str, ...] = ("libx264", "mpeg4")
    video_codec_probs: tuple[float, ...] = (0.5, 0.5)
    video_bits_per_pixel: tuple[float, float] = (0.1, 1.0)
    video_frame_overhead_bits: int = 600
    fps: int = 25
    final_interpolations: tuple[str, ...] = ("bilinear", "area", "bicubic")
    final_sinc_prob: float = 0.8
    final_sinc_omega: tuple[float, float] = (math.pi / 3, math.pi)
    final_sinc_sizes: tuple[int, ...] = (7, 9, 11, 13, 15)

    def __post_init__(self) -> None:
        for name, stage in (("first", self.first), ("second", self.second)):
            if stage is None:
                if name == "first":
                    raise ValueError("first: a StageConfig is required")
                continue
            if not isinstance(stage, StageConfig):
                raise TypeError(f"{name}: expected StageConfig or None; got {type(stage).__name__}")
            _validate_stage(stage, name)
        _check_prob(self.video_prob, "video_prob")
        _check_choice(self.video_codecs, self.video_codec_probs, "video_codecs")
        _check_range(self.video_bits_per_pixel, "video_bits_per_pixel", low=1e-6)
        if not isinstance(self.video_frame_overhead_bits, int) or self.video_frame_overhead_bits < 0:
            raise ValueError(f"video_frame_overhead_bits: expected an integer >= 0; got {self.video_frame_overhead_bits!r}")
        if not isinstance(self.fps, int) or self.fps < 1:
            raise ValueError(f"fps: expected an integer >= 1; got {self.fps!r}")
        _check_names(self.final_interpolations, INTERPOLATIONS, "final_interpolations")
        _check_prob(self.final_sinc_prob, "final_sinc_prob")
        _check_range(self.final_sinc_omega, "final_sinc_omega", low=1e-6)
        _check_sizes(self.final_sinc_sizes, "final_sinc_sizes")

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts and lists."""
        return asdict(self)


def _check_prob(p: float, name: str) -> None:
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1]; got {p!r}")


def _check_range(r: tuple[float, float], name: str, *, low: float | None = None) -> None:
    if len(r) != 2 or r[0] > r[1] or (low is not None and r[0] < low):
        bound = f" with low >= {low}" if low is not None else ""
        raise ValueError(f"{name}: expected a (low, high) pair with low <= high{bound}; got {r!r}")


def _check_choice(options: tuple[Any, ...], probs: tuple[float, ...], name: str) -> None:
    if len(options) == 0 or len(options) != len(probs):
        raise ValueError(f"{name}: expected as many probabilities as options; got {len(options)} and {len(probs)}")
    if any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
        raise ValueError(f"{name}: probabilities must be >= 0 and sum to 1; got {probs!r}")


def _check_names(names: tuple[str, ...], allowed: Any, name: str) -> None:
    if len(names) == 0 or any(n not in allowed for n in names):
        raise ValueError(f"{name}: expected a non-empty subset of {sorted(allowed)}; got {names!r}")


def _check_sizes(sizes: tuple[int, ...], name: str) -> None:
    if len(sizes) == 0 or any((not isinstance(k, int)) or k < 3 or k % 2 == 0 for k in sizes):
        raise ValueError(f"{name}: expected odd kernel sizes >= 3; got {sizes!r}")


def _validate_stage(stage: StageConfig, name: str) -> None:
    b, r, n = stage.blur, stage.resize, stage.noise
    _check_prob(b.prob, f"{name}.blur.prob")
    _check_sizes(b.kernel_sizes, f"{name}.blur.kernel_sizes")
    _check_names(b.kernel_types, KERNEL_TYPES, f"{name}.blur.kernel_types")
    _check_choice(b.kernel_types, b.kernel_probs, f"{name}.blur.kernel_types")
    _check_range(b.sigma, f"{name}.blur.sigma", low=1e-3)
    _check_range(b.rotation, f"{name}.blur.rotation")
    _check_range(b.beta_gaussian, f"{name}.blur.beta_gaussian", low=1e-3)
    _check_range(b.beta_plateau, f"{name}.blur.beta_plateau", low=1e-3)
    _check_range(b.sinc_omega, f"{name}.blur.sinc_omega", low=1e-6)
    _check_choice(("up", "down", "keep"), r.mode_probs, f"{name}.resize.mode_probs")
    if not (len(r.scale) == 2 and 0 < r.scale[0] <= 1.0 <= r.scale[1]):
        raise ValueError(f"{name}.resize.scale: expected (low, high) with 0 < low <= 1 <= high; got {r.scale!r}")
    _check_names(r.interpolations, INTERPOLATIONS, f"{name}.resize.interpolations")
    _check_prob(n.gaussian_prob, f"{name}.noise.gaussian_prob")
    _check_prob(n.gray_prob, f"{name}.noise.gray_prob")
    _check_range(n.gaussian_sigma, f"{name}.noise.gaussian_sigma", low=0.0)
    _check_range(n.poisson_scale, f"{name}.noise.poisson_scale", low=0.0)
    if stage.jpeg_quality is not None:
        q = stage.jpeg_quality
        if len(q) != 2 or not (1 <= q[0] <= q[1] <= 100):
            raise ValueError(f"{name}.jpeg_quality: expected (low, high) within [1, 100]; got {q!r}")


# --------------------------------------------------------------------------- sampled parameters


@dataclass(frozen=True)
class KernelParams:
    """One blur kernel: type, odd size, sigmas/angle (Gaussian family), beta, sinc cutoff."""

    type: str
    size: int
    sigma_x: float = 1.0
    sigma_y: float = 1.0
    angle: float = 0.0
    beta: float = 1.0
    omega: float = math.pi


@dataclass(frozen=True)
class StageParams:
    """The parameters one stage drew for a clip (``None`` = step skipped)."""

    kernel: KernelParams | None
    resize_factor: float
    resize_interpolation: str
    noise_type: str  # "gaussian" or "poisson"
    noise_level: float  # sigma on 0-255 for gaussian, scale for poisson
    noise_gray: bool
    jpeg_quality: int | None


@dataclass(frozen=True)
class DegradationParams:
    """Everything drawn for one clip; constant over its frames."""

    first: StageParams
    second: StageParams | None
    video_codec: str | None
    video_bits_per_pixel: float
    final_interpolation: str
    final_sinc: KernelParams | None
    codec_first: bool  # video codec before (True) or after the final resize

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, e.g. to log next to a generated pair."""
        return asdict(self)


def _choice(rng: np.random.Generator, options: tuple[Any, ...], probs: tuple[float, ...] | None = None) -> Any:
    p = None if probs is None else np.asarray(probs, dtype=np.float64) / float(sum(probs))
    return options[int(rng.choice(len(options), p=p))]


def _uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _sample_kernel(rng: np.random.Generator, cfg: BlurConfig) -> KernelParams:
    ktype = _choice(rng, cfg.kernel_types, cfg.kernel_probs)
    size = int(_choice(rng, cfg.kernel_sizes))
    if ktype == "sinc":
        # Small sinc kernels cannot represent a low cutoff, so Real-ESRGAN raises the floor.
        lo = cfg.sinc_omega[0] if size >= 13 else max(cfg.sinc_omega[0], math.pi / 3)
        return KernelParams("sinc", size, omega=_uniform(rng, (min(lo, cfg.sinc_omega[1]), cfg.sinc_omega[1])))
    sx = _uniform(rng, cfg.sigma)
    iso = ktype.endswith("iso") and not ktype.endswith("aniso")
    sy = sx if iso else _uniform(rng, cfg.sigma)
    angle = 0.0 if iso else _uniform(rng, cfg.rotation)
    if ktype.startswith("generalized"):
        beta = _uniform(rng, cfg.beta_gaussian)
    elif ktype.startswith("plateau"):
        beta = _uniform(rng, cfg.beta_plateau)
    else:
        beta = 1.0
    return KernelParams(ktype, size, sx, sy, angle, beta)


def _sample_stage(rng: np.random.Generator, cfg: StageConfig) -> StageParams:
    kernel = _sample_kernel(rng, cfg.blur) if rng.uniform() < cfg.blur.prob else None
    mode = _choice(rng, ("up", "down", "keep"), cfg.resize.mode_probs)
    if mode == "up":
        factor = _uniform(rng, (1.0, cfg.resize.scale[1]))
    elif mode == "down":
        factor = _uniform(rng, (cfg.resize.scale[0], 1.0))
    else:
        factor = 1.0
    interp = _choice(rng, cfg.resize.interpolations)
    gaussian = rng.uniform() < cfg.noise.gaussian_prob
    level = _uniform(rng, cfg.noise.gaussian_sigma if gaussian else cfg.noise.poisson_scale)
    gray = bool(rng.uniform() < cfg.noise.gray_prob)
    quality = None if cfg.jpeg_quality is None else int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    return StageParams(kernel, factor, interp, "gaussian" if gaussian else "poisson", level, gray, quality)


def sample_params(config: DegradationConfig | None = None, rng: np.random.Generator | int = 0) -> DegradationParams:
    """Draw one clip's degradation parameters.

    Args:
        config: the recipe; :class:`DegradationConfig` defaults when ``None``.
        rng: a generator (advanced in place) or an integer seed.
    """
    config = DegradationConfig() if config is None else config
    if not isinstance(config, DegradationConfig):
        raise TypeError(f"config: expected DegradationConfig; got {type(config).__name__}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    first = _sample_stage(rng, config.first)
    second = _sample_stage(rng, config.second) if config.second is not None else None
    codec = _choice(rng, config.video_codecs, config.video_codec_probs) if rng.uniform() < config.video_prob else None
    bpp = _uniform(rng, config.video_bits_per_pixel)
    final_interp = _choice(rng, config.final_interpolations)
    sinc = None
    if rng.uniform() < config.final_sinc_prob:
        sinc = KernelParams("sinc", int(_choice(rng, config.final_sinc_sizes)), omega=_uniform(rng, config.final_sinc_omega))
    codec_first = bool(rng.uniform() < 0.5)
    return DegradationParams(first, second, codec, bpp, final_interp, sinc, codec_first)
