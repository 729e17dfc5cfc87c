"""Training settings of both fine-tuning stages, and the degradation recipe read from TOML.

One :class:`TrainConfig` serves ``uav train unet`` and ``uav train vae`` (and the Python
API); the stage-specific fields are ignored by the other stage. Every field is checked
in :meth:`TrainConfig.validate`, so a bad value fails before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Stage = Literal["unet", "vae"]
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")
#: the VAE's downscale factor between HQ pixels and latents (and LR pixels)
SCALE = 4


class TrainConfigError(ValueError):
    """A training setting or input the user can fix; the message is one line."""


@dataclass
class TrainConfig:
    """Everything one training run needs.

    Attributes:
        data: folder of high-quality clips (videos or image-sequence folders).
        output: run folder: ``checkpoints/``, ``log.jsonl``, and at the end ``release/``.
        init: a release folder (official layout) or the image SD x4 upscaler folder (diffusers layout).
        captions: one JSON (``{"clip name": "caption"}``) or CSV (``clip,caption``) file; without it a
            sidecar ``<clip>.txt`` is used where present, else the empty prompt.
        degradations: TOML file of the degradation recipe (see :func:`load_degradation_config`);
            ``None`` = the documented default (:class:`uav.eval.degrade.DegradationConfig`).
        frames: clip window length in frames.
        stride: frames between the starts of two windows of one clip.
        crop: side of the square low-res crop in pixels (the HQ crop is ``4 * crop``; latents have the
            low-res size).
        steps: optimizer steps in total (a resumed run stops at the same step).
        batch_size: clips per process and micro-step.
        grad_accum: micro-steps per optimizer step.
        lr: peak learning rate (AdamW); warmup_steps: linear warm-up from 0;
        lr_schedule: ``constant`` or ``cosine`` (decay to 0 at ``steps``) after warm-up.
        weight_decay, max_grad_norm: AdamW weight decay; gradient clipping (0 = off).
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (autocast; the trained weights stay fp32).
        gradient_checkpointing: recompute block activations in the backward pass.
        ema_decay: decay of the exponential moving average of the trained weights (0 = off); the
            release is written from the EMA weights when it is on.
        checkpoint_every: optimizer steps between checkpoints (one is always written at the end).
        keep_checkpoints: how many of the newest checkpoints are kept.
        resume: continue from the newest checkpoint in ``output`` when there is one.
        validate_every: optimizer steps between validations (0 = only at the start and end).
        validation_clip: held-out HQ clip upscaled at validation (default: the first data clip).
        validation_inference_steps: DDIM steps of that upscale.
        eval_samples: size of the fixed evaluation set whose loss is logged at every validation.
        seed: the run's seed: data order, crops, degradations, timesteps and noise all derive from it.
        num_workers: data-loading worker processes.
        cache_latents: keep the frozen VAE's posterior of each HQ window on disk (``output/latent_cache``).
        prompt_dropout: probability of replacing a caption by the empty prompt (classifier-free guidance).
        max_noise_level: noise-level augmentation of the low-res input draws levels in ``[0, max]``.
        perceptual_weight: weight of the perceptual term of the VAE stage (LPIPS when installed,
            otherwise the structure loss of :mod:`uav.train.vae_stage`).
        device: ``None`` = what accelerate picks (CUDA when present); ``"cpu"`` forces the CPU.
        progress: draw rich progress bars on stderr.
    """

    data: Path
    output: Path
    init: Path
    captions: Path | None = None
    degradations: Path | None = None
    frames: int = 8
    stride: int = 4
    crop: int = 64
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_steps: int = 100
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    validate_every: int = 0
    validation_clip: Path | None = None
    validation_inference_steps: int = 20
    eval_samples: int = 4
    seed: int = 0
    num_workers: int = 2
    cache_latents: bool = False
    prompt_dropout: float = 0.1
    max_noise_level: int = 350
    perceptual_weight: float = 0.1
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("data", "output", "init", "captions", "degradations", "validation_clip"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

    def validate(self) -> "TrainConfig":
        """Raise :class:`TrainConfigError` naming the first invalid field; return ``self``."""
        least = {**dict.fromkeys(("frames", "stride", "crop", "steps", "batch_size", "grad_accum", "checkpoint_every",
                                  "keep_checkpoints", "validation_inference_steps"), 1),
                 **dict.fromkeys(("warmup_steps", "validate_every", "eval_samples", "seed", "num_workers"), 0)}
        for name, low in least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TrainConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
        if self.crop % 8:
            raise TrainConfigError(f"crop: the low-res crop must be a multiple of 8 (U-Net downsampling), "
                                   f"got {self.crop}")
        for name in ("lr", "weight_decay", "max_grad_norm", "perceptual_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise TrainConfigError(f"{name}: expected a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise TrainConfigError(f"lr: expected a number > 0, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise TrainConfigError(f"ema_decay: expected a number in [0, 1), got {self.ema_decay!r}")
        if not 0.0 <= self.prompt_dropout <= 1.0:
            raise TrainConfigError(f"prompt_dropout: expected a probability in [0, 1], got {self.prompt_dropout!r}")
        if not isinstance(self.max_noise_level, int) or not 0 <= self.max_noise_level <= 350:
            raise TrainConfigError(f"max_noise_level: expected an integer in [0, 350], got {self.max_noise_level!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise TrainConfigError(f"mixed_precision: expected one of {', '.join(MIXED_PRECISION)}, "
                                   f"got {self.mixed_precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise TrainConfigError(f"lr_schedule: expected one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not self.data.is_dir():
            raise TrainConfigError(f"data: {self.data} is not a folder of clips")
        if not self.init.exists():
            raise TrainConfigError(f"init: {self.init} does not exist (a release folder or the SD x4 upscaler folder)")
        for name in ("captions", "degradations", "validation_clip"):
            value = getattr(self, name)
            if value is not None and not value.exists():
                raise TrainConfigError(f"{name}: {value} does not exist")
        if self.output.exists() and not self.output.is_dir():
            raise TrainConfigError(f"output: {self.output} exists and is not a folder")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------- degradations
def degradation_config_from_dict(doc: Mapping[str, Any], *, source: str = "degradations") -> Any:
    """Build a :class:`uav.eval.degrade.DegradationConfig` from nested tables.

    The tables mirror the dataclasses: top-level keys are ``DegradationConfig`` fields,
    ``[first]`` / ``[second]`` are stages with ``[first.blur]``, ``[first.resize]``,
    ``[first.noise]`` sub-tables and ``jpeg_quality``; ``second = false`` drops the second
    round. Keys left out keep their defaults; unknown keys are errors.
    """
    from uav.eval.degrade import DegradationConfig

    def build(base: Any, table: Any, where: str) -> Any:
        """``base`` with the fields ``table`` gives; a field holding a recipe table recurses
        (``where``: the table's TOML path, empty at the top level)."""
        if not isinstance(table, Mapping):
            raise TrainConfigError(f"{source}: [{where}] must be a table, got {type(table).__name__}")
        known = {f.name for f in dataclasses.fields(base)}
        unknown = sorted(set(table) - known)
        if unknown:
            place = f"in [{where}]" if where else "at the top level"
            raise TrainConfigError(f"{source}: unknown key(s) {unknown} {place}; known: {sorted(known)}")
        values = {}
        for name, value in table.items():
            if name == "second" and value is False and not where:
                values[name] = None  # a first-order recipe
            elif dataclasses.is_dataclass(getattr(base, name)):
                values[name] = build(getattr(base, name), value, f"{where}.{name}" if where else name)
            else:
                values[name] = tuple(value) if isinstance(value, list) else value
        try:
            return dataclasses.replace(base, **values)
        except (TypeError, ValueError) as exc:
            raise TrainConfigError(f"{source}: [{where}]: {exc}" if where else f"{source}: {exc}") from None

    return build(DegradationConfig(), doc, "")


def load_degradation_config(path: str | Path | None) -> Any:
    """Read the degradation recipe from a TOML file (``None``: the default recipe)."""
    from uav.eval.degrade import DegradationConfig

    if path is None:
        return DegradationConfig()
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TrainConfigError(f"degradations: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrainConfigError(f"degradations: {path} is not valid TOML: {exc}") from None
    return degradation_config_from_dict(doc, source=str(path))
