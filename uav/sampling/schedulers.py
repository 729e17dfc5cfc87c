"""DDIM v-prediction update split as Upscale-A-Video uses it, and the low-res noising.

Implements SPEC §5 (Zhou et al., "Upscale-A-Video", CVPR 2024; official
``models_video/scheduling_ddim.py``): the published loop first asks the scheduler for
the predicted clean sample ``x0`` of the network's v-prediction (``step_v0``), may edit
that ``x0`` with flow-guided propagation, then builds the previous sample from the
(possibly edited) ``x0`` while re-using the noise direction implied by the *network's*
v and ``x_t`` (``step_vt``). :class:`OfficialDDIM` exposes that split through the
:class:`uav.protocols.DenoisingScheduler` protocol; :func:`low_res_add_noise` is the
``low_res_scheduler.add_noise`` applied to the conditioning video (SPEC §5.4).

The noise tables and the timestep spacing come from diffusers' ``DDIMScheduler`` /
``DDPMScheduler`` built from the release configs, so the numbers are the published ones.
"""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

# the largest LR noise level the published UNet accepts (SPEC §2.1); the settings schema
# (a torch-free leaf module) holds it
from uav.models import MAX_NOISE_LEVEL

Tensor = torch.Tensor

__all__ = ["OfficialDDIM", "low_res_add_noise", "MAX_NOISE_LEVEL"]


def _filtered_config(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the keys ``cls.__init__`` accepts.

    Release configs carry bookkeeping keys (``_class_name``, ``skip_prk_steps`` ...)
    that diffusers would otherwise warn about on every construction.
    """
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in config.items() if k in accepted}


def _build_scheduler(cls: type, scheduler_or_config: Any, argname: str) -> Any:
    if isinstance(scheduler_or_config, cls):
        # A private copy: set_timesteps mutates the scheduler, and callers may share theirs.
        return copy.deepcopy(scheduler_or_config)
    # a config mapping, or another diffusers scheduler: the wanted class from its shared settings
    config = scheduler_or_config if isinstance(scheduler_or_config, Mapping) else \
        getattr(scheduler_or_config, "config", None)
    if isinstance(config, Mapping):
        return cls.from_config(_filtered_config(cls, config))
    raise TypeError(
        f"{argname} must be a diffusers {cls.__name__} or its config mapping, "
        f"got {type(scheduler_or_config).__name__}"
    )


def _timestep_index(timestep: int | Tensor, num_train_timesteps: int) -> Tensor:
    """Validate a timestep (int, 0-dim or 1-D integer tensor) and return it as int64 on CPU."""
    if isinstance(timestep, Tensor):
        if timestep.is_floating_point() or timestep.is_complex() or timestep.dtype == torch.bool:
            raise TypeError(f"timestep must be an integer tensor, got dtype {timestep.dtype}")
        if timestep.ndim > 1:
            raise ValueError(f"timestep must be a scalar or 1-D tensor, got shape {tuple(timestep.shape)}")
        t = timestep.detach().to("cpu", torch.long)
    elif isinstance(timestep, numbers.Integral) and not isinstance(timestep, bool):
        # the loop's case: checked as a Python int, no tensor value is read
        if not 0 <= int(timestep) < num_train_timesteps:
            raise ValueError(f"timestep must lie in [0, {num_train_timesteps}), got {int(timestep)}")
        return torch.tensor(int(timestep), dtype=torch.long)
    else:
        raise TypeError(f"timestep must be an int or an integer tensor, got {type(timestep).__name__}")
    if t.numel() == 0:
        raise ValueError("timestep must not be empty")
    if bool((t < 0).any()) or bool((t >= num_train_timesteps).any()):
        raise ValueError(f"timestep must lie in [0, {num_train_timesteps}), got {t.tolist()}")
    return t


def _coef(values: Tensor, sample: Tensor) -> Tensor:
    """Shape a per-timestep coefficient so it broadcasts against ``sample``.

    A single timestep stays a 0-dim float32 tensor, like the official code's
    ``alphas_cumprod[t]``; a per-batch vector becomes ``(B, 1, ..., 1)``.
    """
    values = values.to(sample.device)
    if values.numel() == 1:
        return values.reshape(())
    if values.shape[0] != sample.shape[0]:
        raise ValueError(
            f"a 1-D timestep needs one entry per batch row: got {values.shape[0]} timesteps "
            f"for a sample of batch size {sample.shape[0]}"
        )
    return values.to(sample.dtype).reshape((-1,) + (1,) * (sample.ndim - 1))


class OfficialDDIM:
    """The published DDIM split for v-prediction (SPEC §5.3-5.4).

    Args:
        scheduler_or_config: a diffusers ``DDIMScheduler`` (copied, not mutated) or its
            config mapping, e.g. ``json.load`` of the release ``scheduler_config.json``.
        eta: DDIM stochasticity; the published pipeline uses 0.

    The schedule's ``alphas_cumprod`` and timesteps are those of diffusers'
    ``DDIMScheduler`` for that config (``leading`` spacing plus ``steps_offset`` for the
    release config, e.g. 30 steps give 958, 925, ..., 34, 1).
    """

    prediction_type: str = "v_prediction"
    init_noise_sigma: float = 1.0

    def __init__(self, scheduler_or_config: DDIMScheduler | Mapping[str, Any], *, eta: float = 0.0) -> None:
        self._ddim: DDIMScheduler = _build_scheduler(DDIMScheduler, scheduler_or_config, "scheduler_or_config")
        cfg = self._ddim.config
        if cfg.prediction_type != "v_prediction":
            raise ValueError(
                f"OfficialDDIM implements the v-prediction split; the scheduler config has "
                f"prediction_type={cfg.prediction_type!r}"
            )
        if getattr(cfg, "thresholding", False):
            raise ValueError("dynamic thresholding is not part of the published method; set thresholding=False")
        if not isinstance(eta, numbers.Real) or isinstance(eta, bool) or not eta >= 0.0:
            raise ValueError(f"eta must be a real number >= 0, got {eta!r}")
        self.eta = float(eta)
        self.num_train_timesteps: int = int(cfg.num_train_timesteps)
        self.alphas_cumprod: Tensor = self._ddim.alphas_cumprod.to(torch.float32)
        # ᾱ used when t_prev < 0: alphas_cumprod[0] for the release config (set_alpha_to_one=False).
        self.final_alpha_cumprod: Tensor = torch.as_tensor(self._ddim.final_alpha_cumprod, dtype=torch.float32)
        self.clip_sample: bool = bool(cfg.clip_sample)
        self.clip_sample_range: float = float(getattr(cfg, "clip_sample_range", 1.0))
        self.num_inference_steps: int | None = None
        self.timesteps: Tensor = torch.empty(0, dtype=torch.long)

    @property
    def config(self) -> Any:
        """The underlying diffusers config (read-only view)."""
        return self._ddim.config

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> Tensor:
        """Prepare ``num_inference_steps`` steps; returns (and stores) the int64 timesteps."""
        if not isinstance(num_inference_steps, numbers.Integral) or isinstance(num_inference_steps, bool):
            raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must lie in [1, {self.num_train_timesteps}], got {n}")
        self._ddim.set_timesteps(n, device=device)
        self.num_inference_steps = n
        self.timesteps = self._ddim.timesteps.to(torch.long)
        return self.timesteps

    def scale_model_input(self, sample: Tensor, timestep: int | Tensor | None = None) -> Tensor:
        """DDIM does not rescale its input; kept for loops written against diffusers."""
        return sample

    def _require_schedule(self) -> None:
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")

    def _alphas(self, timestep: int | Tensor) -> tuple[Tensor, Tensor]:
        self._require_schedule()
        t = _timestep_index(timestep, self.num_train_timesteps)
        t_prev = t - self.num_train_timesteps // self.num_inference_steps
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = torch.where(t_prev >= 0, self.alphas_cumprod[t_prev.clamp(min=0)], self.final_alpha_cumprod)
        return alpha_t, alpha_prev

    def predict_x0(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor) -> Tensor:
        """``step_v0``: ``x0 = sqrt(ᾱ_t)·x_t − sqrt(1−ᾱ_t)·v``."""
        _check_same_shape(model_output=model_output, sample=sample)
        t = _timestep_index(timestep, self.num_train_timesteps)
        alpha_t = _coef(self.alphas_cumprod[t], sample)
        beta_t = 1 - alpha_t
        x0 = alpha_t**0.5 * sample - beta_t**0.5 * model_output
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        x0: Tensor,
        *,
        variance_noise: Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> Tensor:
        """``step_vt``: the sample at the previous timestep, built from ``x0``.

        The noise direction ``ε = sqrt(ᾱ_t)·v + sqrt(1−ᾱ_t)·x_t`` always comes from the
        network's v and ``x_t``, never from ``x0`` (SPEC §5.4, surprise 6), so an edited
        ``x0`` only moves the clean-sample term. With ``eta > 0`` the noise is
        ``variance_noise`` if given, otherwise drawn from ``generator``.
        """
        _check_same_shape(model_output=model_output, sample=sample, x0=x0)
        if variance_noise is not None:
            _check_same_shape(model_output=model_output, variance_noise=variance_noise)
        alpha_t, alpha_prev = self._alphas(timestep)
        alpha_t = _coef(alpha_t, sample)
        alpha_prev = _coef(alpha_prev, sample)
        beta_t = 1 - alpha_t
        beta_prev = 1 - alpha_prev

        eps = alpha_t**0.5 * model_output + beta_t**0.5 * sample
        variance = (beta_prev / beta_t) * (1 - alpha_t / alpha_prev)
        std = self.eta * variance**0.5
        direction = (1 - alpha_prev - std**2) ** 0.5 * eps
        prev = alpha_prev**0.5 * x0 + direction
        if self.eta > 0:
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
            prev = prev + std * variance_noise
        return prev

    @property
    def elementwise(self) -> bool:
        """Whether :meth:`predict_x0` and :meth:`step` act on each element alone (no noise
        draw), so a long clip's step may run a chunk of frames at a time."""
        return self.eta == 0

    def __repr__(self) -> str:
        return (
            f"OfficialDDIM(eta={self.eta}, num_train_timesteps={self.num_train_timesteps}, "
            f"num_inference_steps={self.num_inference_steps})"
        )


def _check_same_shape(**tensors: Tensor) -> None:
    items = list(tensors.items())
    for name, value in items:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    ref_name, ref = items[0]
    for name, value in items[1:]:
        if value.shape != ref.shape:
            raise ValueError(
                f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(value.shape)}"
            )


def low_res_add_noise(
    image: Tensor,
    noise: Tensor,
    noise_level: int,
    low_res_scheduler_or_config: DDPMScheduler | Mapping[str, Any],
) -> Tensor:
    """Noise the LR conditioning video: ``sqrt(ᾱ[ℓ])·image + sqrt(1−ᾱ[ℓ])·noise`` (SPEC §5.4).

    Args:
        image: the clean LR video, any shape (the pipeline uses ``(1, 3, T, h, w)``).
        noise: standard-normal noise of the same shape.
        noise_level: the integer level ``ℓ`` in ``[0, 350]``.
        low_res_scheduler_or_config: a diffusers ``DDPMScheduler`` or its config mapping
            (the release ``low_res_scheduler``); only its ``alphas_cumprod`` is used.

    Raises:
        ValueError: ``noise_level`` is not an int in ``[0, 350]`` or the shapes differ.
    """
    if not isinstance(noise_level, numbers.Integral) or isinstance(noise_level, bool):
        raise ValueError(f"noise_level must be an int in [0, {MAX_NOISE_LEVEL}], got {noise_level!r}")
    level = int(noise_level)
    if not 0 <= level <= MAX_NOISE_LEVEL:
        raise ValueError(f"noise_level must be an int in [0, {MAX_NOISE_LEVEL}], got {level}")
    _check_same_shape(image=image, noise=noise)
    if isinstance(low_res_scheduler_or_config, Mapping):
        ddpm = _build_scheduler(DDPMScheduler, low_res_scheduler_or_config, "low_res_scheduler_or_config")
        alphas_cumprod = ddpm.alphas_cumprod
    elif isinstance(getattr(low_res_scheduler_or_config, "alphas_cumprod", None), Tensor):
        alphas_cumprod = low_res_scheduler_or_config.alphas_cumprod
    else:
        raise TypeError(
            "low_res_scheduler_or_config must be a diffusers DDPMScheduler or its config mapping, "
            f"got {type(low_res_scheduler_or_config).__name__}"
        )
    if level >= alphas_cumprod.shape[0]:
        raise ValueError(f"noise_level {level} is past the scheduler's {alphas_cumprod.shape[0]} training steps")
    # diffusers casts the table to the sample dtype before taking roots; do the same.
    alpha = alphas_cumprod.to(device=image.device, dtype=image.dtype)[level]
    return alpha**0.5 * image + (1 - alpha) ** 0.5 * noise
