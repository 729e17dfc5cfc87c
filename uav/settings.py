"""``UpscaleSettings``: every sampling knob, its default and its validation, in one place.

Defaults are those of the published inference script (SPEC §7.1), not of its
pipeline class: 30 steps, guidance 6, noise level 120, no propagation, ``vae_3d``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

#: the U-Net refuses noise levels above this (``max_noise_level`` of the release)
MAX_NOISE_LEVEL = 350
COLOR_FIX_CHOICES = ("none", "wavelet", "adain")


class SettingsError(ValueError):
    """An invalid setting; the message names the setting, what was expected and what came."""


@dataclass(frozen=True)
class UpscaleSettings:
    """Knobs of one upscale run. Build with keywords, or ``UpscaleSettings.from_dict``.

    Attributes:
        prompt: what the video shows; ``added_prompt`` is appended after ", ".
        added_prompt: quality words appended to every prompt (published ``--a_prompt``).
        negative_prompt: the classifier-free guidance "unconditional" text.
        noise_level: noise added to the low-res input, 0..350 (more = more generated detail,
            less fidelity); also the U-Net's class label.
        guidance_scale: classifier-free guidance weight; ``<= 1`` turns guidance off.
        num_inference_steps: DDIM steps.
        propagation_steps: 0-based step indices at which flow-guided latent propagation
            edits the predicted x0 (the paper uses late steps, e.g. 24, 26, 28 of 30).
        color_fix: ``None``/``"none"``, ``"wavelet"`` or ``"adain"`` (or a plugin's name).
        seed: seed of the CPU generator for the low-res noise and the initial latents.
        w_lr: weight of the low-res SFT conditioning in the ``vae_video`` decoder.
        eta: DDIM eta (0 = deterministic, as published).
        flow: flow estimator name (``"auto"``: RAFT when its weights are present, else DIS).
        scheduler: ``"ddim-official"`` (published rule) or a plugin scheduler's name.
        segments: temporal window rule: ``"official"`` (published, default) or a plugin's name.
        window: frames per U-Net window (8 as trained).
        window_batch: how many windows go through the U-Net in one call (same numbers, faster on GPUs).
        tiling: spatial tiling rule (``"official"`` hard paste, ``"feather"``, or a plugin's).
        tile: ``None`` = automatic (when h*w >= tile_threshold), ``True``/``False`` to force.
        tile_mode: ``"pipeline"`` (published: each tile runs the whole pipeline on its own and the
            outputs are blended) or ``"latent"`` (MultiDiffusion-style: one run whose U-Net predictions
            are averaged over overlapping latent tiles at every step; frames decode whole).
        tile_size, tile_overlap, tile_threshold: in low-res pixels (published 256, 64, 384²).
        decode_chunk: frames per VAE decode call (3 as published; GroupNorm makes it matter).
        decode_tile: decode in overlapping spatial tiles of this many low-res pixels (``None``:
            whole frames, as published). The VAE's mid-block attention costs the square of a
            frame's pixel count; on a CPU, 64-128 keeps large frames practical.
        fuse_scale: propagation fusion weight beta (0.5 as published).
        offload: keep the whole-clip denoising state (latents, low-res clip, merged
            predictions) in host memory and move one group of windows at a time to the
            accelerator; ``None`` = automatic (on for CUDA). Same numbers; GPU memory then
            does not grow with the clip length.
        downscale_large: apply the published 1/4 area downscale to inputs whose sides are both
            >= 1280 px; never done silently.
    """

    prompt: str = ""
    added_prompt: str = "best quality, extremely detailed"
    negative_prompt: str = "blur, worst quality"
    noise_level: int = 120
    guidance_scale: float = 6.0
    num_inference_steps: int = 30
    propagation_steps: tuple[int, ...] = ()
    color_fix: str | None = None
    seed: int | None = None
    w_lr: float = 1.0
    eta: float = 0.0
    flow: str = "auto"
    scheduler: str = "ddim-official"
    segments: str = "official"
    window: int = 8
    window_batch: int = 1
    tiling: str = "official"
    tile: bool | None = None
    tile_mode: str = "pipeline"
    tile_size: int = 256
    tile_overlap: int = 64
    tile_threshold: int = 384 * 384
    decode_chunk: int = 3
    decode_tile: int | None = None
    offload: bool | None = None
    fuse_scale: float = 0.5
    downscale_large: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.propagation_steps, (str, bytes)):
            object.__setattr__(self, "propagation_steps", parse_int_list(self.propagation_steps, "propagation_steps"))
        else:
            object.__setattr__(self, "propagation_steps", tuple(self.propagation_steps or ()))
        if self.color_fix is not None:
            object.__setattr__(self, "color_fix", str(self.color_fix).lower())
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first invalid setting."""
        _int_in("noise_level", self.noise_level, 0, MAX_NOISE_LEVEL)
        _int_in("num_inference_steps", self.num_inference_steps, 1, 1000)
        _finite("guidance_scale", self.guidance_scale)
        if self.guidance_scale <= 0:
            raise SettingsError(f"guidance_scale must be > 0 (1 disables guidance), got {self.guidance_scale}")
        if self.guidance_scale < 1 and self.negative_prompt:
            raise SettingsError(
                f"guidance_scale={self.guidance_scale} < 1 turns classifier-free guidance off, so negative_prompt "
                f"{self.negative_prompt!r} would be ignored: use guidance_scale >= 1, or negative_prompt=''"
            )
        for s in self.propagation_steps:
            if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < self.num_inference_steps:
                raise SettingsError(
                    f"propagation_steps must be step indices in [0, {self.num_inference_steps}) "
                    f"(num_inference_steps={self.num_inference_steps}), got {list(self.propagation_steps)}"
                )
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise SettingsError(f"seed must be an int or None, got {self.seed!r}")
        _finite("w_lr", self.w_lr)
        _finite("eta", self.eta)
        if self.eta < 0:
            raise SettingsError(f"eta must be >= 0, got {self.eta}")
        _int_in("window", self.window, 1, 1024)
        _int_in("window_batch", self.window_batch, 1, 1024)
        _int_in("tile_size", self.tile_size, 8, 1 << 16)
        _int_in("tile_overlap", self.tile_overlap, 0, self.tile_size - 1)
        _int_in("tile_threshold", self.tile_threshold, 1, 1 << 40)
        _int_in("decode_chunk", self.decode_chunk, 1, 1024)
        if self.decode_tile is not None:
            _int_in("decode_tile", self.decode_tile, 8, 1 << 16)
        _finite("fuse_scale", self.fuse_scale)
        if not 0.0 <= self.fuse_scale <= 1.0:
            raise SettingsError(f"fuse_scale must be in [0, 1], got {self.fuse_scale}")
        if self.tile_mode not in ("pipeline", "latent"):
            raise SettingsError(f"tile_mode must be 'pipeline' or 'latent', got {self.tile_mode!r}")
        for name in ("prompt", "added_prompt", "negative_prompt", "flow", "scheduler", "segments", "tiling"):
            if not isinstance(getattr(self, name), str):
                raise SettingsError(f"{name} must be a string, got {getattr(self, name)!r}")

    # ------------------------------------------------------------------ helpers
    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def full_prompt(self) -> str:
        """``prompt`` and ``added_prompt`` joined by ", " (the published code joins them with no separator)."""
        parts = [p.strip() for p in (self.prompt, self.added_prompt) if p and p.strip()]
        return ", ".join(parts)

    @property
    def color_fix_name(self) -> str:
        return self.color_fix or "none"

    def replace(self, **changes: Any) -> "UpscaleSettings":
        """A copy with some fields changed (validated)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(self.field_names())}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UpscaleSettings":
        """Build from plain data (e.g. JSON/TOML); ``steps`` is accepted for ``num_inference_steps``."""
        data = dict(data)
        if "steps" in data:
            data["num_inference_steps"] = data.pop("steps")
        unknown = set(data) - set(cls.field_names())
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(cls.field_names())}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["propagation_steps"] = list(self.propagation_steps)
        return out


def parse_int_list(value: str | Sequence[int] | None, name: str = "value") -> tuple[int, ...]:
    """``"24,26,28"`` -> ``(24, 26, 28)``; empty string -> ``()``."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            return tuple(int(p) for p in text.replace(" ", "").split(",") if p != "")
        except ValueError:
            raise SettingsError(f"{name} must be a comma-separated list of integers, got {text!r}") from None
    return tuple(int(v) for v in value)


def _int_in(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingsError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be in [{lo}, {hi}], got {value}")


def _finite(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {value!r}")
