"""Run any diffusers noise scheduler inside the propagation loop.

The published loop (SPEC §6) asks the scheduler for the predicted clean sample
``x0`` of the network output, lets flow-guided propagation edit that ``x0``, then
takes the step. Published DDIM (``ddim-official``) builds the previous sample from the
edited ``x0`` but keeps the noise direction ``ε`` implied by the *network's* output.
A general scheduler (DPM-Solver++, UniPC, Euler, ...) cannot be told "use this x0 and
that ε": its ``step`` only takes a model output. :class:`DiffusersSchedulerAdapter`
therefore converts the (possibly edited) ``x0`` back into the model output that
*implies* it, for the current sample and noise level, in the scheduler's
``prediction_type``:

* ``v_prediction``: ``v' = (√ᾱ·x_t − x0') / √(1−ᾱ)``
* ``epsilon``:      ``ε' = (x_t − √ᾱ·x0') / √(1−ᾱ)``
* ``sample``:       ``x0'``

so the scheduler sees an output that is exactly consistent with ``x0'`` (its own
``x0`` estimate equals ``x0'``), and its noise estimate moves with the edit. This
differs from the published rule whenever propagation changes ``x0``: with DDIM, the
published update is ``√ᾱ_prev·x0' + √(1−ᾱ_prev)·ε_net`` while the adapter gives
``√ᾱ_prev·x0' + √(1−ᾱ_prev)·ε'`` with ``ε'`` re-derived from ``x0'``. When ``x0`` is not
edited the network output is passed through unchanged, so the scheduler's plain
trajectory is reproduced exactly.

The adapter always talks to the loop in variance-preserving terms: the sample it
receives and returns is ``x_t``, fed to the network as is (``scale_model_input`` is
the identity), and the loop starts from noise times :attr:`init_noise_sigma` (1, or
very nearly 1). Schedulers that work in sigma space (Euler, Heun, ...) are converted
internally (``x_σ = x_t·√(σ²+1)``), which is exactly their ``scale_model_input``.
"""

from __future__ import annotations

import inspect
import json
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

Tensor = torch.Tensor

__all__ = [
    "DiffusersSchedulerAdapter",
    "SCHEDULER_PRESETS",
    "DEFAULT_SCHEDULER_CONFIG",
    "load_scheduler_config",
    "build_diffusers_scheduler",
]

#: The Stable Diffusion x4 upscaler DDIM config the release uses (SPEC §5.1).
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.0001,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}

#: short name -> (diffusers class name, config overrides)
SCHEDULER_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
}

_PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")


def load_scheduler_config(config: Any) -> Any:
    """Normalise a scheduler ``config`` argument.

    Accepts ``None`` (the release's DDIM config), a mapping, a path to a
    ``scheduler_config.json`` or to a folder holding one (directly or under
    ``scheduler/``), or a diffusers scheduler (returned unchanged).
    """
    if config is None:
        return dict(DEFAULT_SCHEDULER_CONFIG)
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, (str, Path)):
        path = Path(config).expanduser()
        if path.is_dir():
            for candidate in (path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
                if candidate.is_file():
                    path = candidate
                    break
            else:
                raise FileNotFoundError(f"config folder {path} has no scheduler_config.json (nor scheduler/scheduler_config.json)")
        if not path.is_file():
            raise FileNotFoundError(f"scheduler config not found: {path}")
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, Mapping):
            raise ValueError(f"scheduler config {path} must hold a JSON object, got {type(data).__name__}")
        return dict(data)
    if isinstance(getattr(config, "config", None), Mapping):
        return config
    raise TypeError(
        "config must be None, a mapping, a path to scheduler_config.json (or its folder) "
        f"or a diffusers scheduler, got {type(config).__name__}"
    )


def _scheduler_class(class_name: str) -> type:
    import diffusers

    cls = getattr(diffusers, class_name, None) if class_name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        available = sorted(
            n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("_")
        )
        raise ValueError(f"unknown diffusers scheduler class {class_name!r}; available: {', '.join(available)}")
    return cls


def build_diffusers_scheduler(class_name: str, config: Any = None, **overrides: Any) -> Any:
    """``<class_name>.from_config(config, **overrides)`` with only the keys it accepts."""
    cls = _scheduler_class(class_name)
    cfg = load_scheduler_config(config)
    if not isinstance(cfg, Mapping):
        cfg = dict(cfg.config)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise TypeError(f"{class_name} does not accept option(s) {unknown}")
    # Release configs carry bookkeeping keys other classes would warn about.
    filtered = {k: v for k, v in cfg.items() if k in accepted}
    filtered.update(overrides)
    return cls.from_config(filtered)


def _check_tensor(name: str, value: object, like: Tensor | None = None) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if like is not None and value.shape != like.shape:
        raise ValueError(f"{name} must have the sample's shape {tuple(like.shape)}, got {tuple(value.shape)}")
    return value


class DiffusersSchedulerAdapter:
    """A :class:`uav.protocols.DenoisingScheduler` around a diffusers scheduler.

    Args:
        scheduler: a diffusers scheduler instance (used as is; it is stateful, so do
            not share it between loops).
        generator: random generator passed to stochastic schedulers' ``step``.
        eta: passed to ``step`` for schedulers that take it (DDIM).

    See the module docstring for how an edited ``x0`` is fed to the scheduler.
    """

    def __init__(self, scheduler: Any, *, generator: torch.Generator | None = None, eta: float | None = None) -> None:
        alphas = getattr(scheduler, "alphas_cumprod", None)
        if not isinstance(alphas, Tensor) or not callable(getattr(scheduler, "step", None)):
            raise ValueError(
                f"{type(scheduler).__name__} is not supported: the adapter needs a DDPM-family scheduler "
                "with alphas_cumprod and step()"
            )
        prediction_type = getattr(scheduler.config, "prediction_type", None)
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {_PREDICTION_TYPES}, got {prediction_type!r}")
        if eta is not None and (not isinstance(eta, numbers.Real) or isinstance(eta, bool) or eta < 0):
            raise ValueError(f"eta must be a real number >= 0, got {eta!r}")
        self.scheduler = scheduler
        self.prediction_type: str = prediction_type
        self.alphas_cumprod: Tensor = alphas.to(torch.float32)
        self.generator = generator
        params = inspect.signature(scheduler.step).parameters
        self._step_kwargs: dict[str, Any] = {}
        if "generator" in params:
            self._step_kwargs["generator"] = generator
        if eta is not None:
            if "eta" not in params:
                raise TypeError(f"{type(scheduler).__name__}.step takes no eta")
            self._step_kwargs["eta"] = float(eta)
        self._index = 0
        self.num_inference_steps: int | None = None

    @property
    def init_noise_sigma(self) -> float:
        """Scale of the initial noise in the adapter's (VP) terms: 1 for VP schedulers.

        Sigma-space schedulers start from ``init_noise_sigma`` of their own, which
        diffusers sets to ``σ_max`` (not ``√(σ_max²+1)``) for ``linspace``/``trailing``
        spacing; converted to VP terms that is ``σ_max/√(σ_max²+1)``, slightly below 1.
        Multiply the initial noise by this to reproduce the scheduler's own trajectory.
        """
        native = float(self.scheduler.init_noise_sigma)
        if native == 1.0:
            return 1.0
        sigma = self._sigma_at(0)
        return native / (1.0 + sigma * sigma) ** 0.5 if sigma is not None else 1.0

    @property
    def config(self) -> Any:
        """The wrapped scheduler's config."""
        return self.scheduler.config

    @property
    def timesteps(self) -> Tensor:  # type: ignore[override]
        """The wrapped scheduler's timesteps (model inputs, in call order)."""
        return self.scheduler.timesteps

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> Tensor:
        """Prepare ``num_inference_steps`` steps; returns the timesteps."""
        if not isinstance(num_inference_steps, numbers.Integral) or isinstance(num_inference_steps, bool):
            raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        self.num_inference_steps = int(num_inference_steps)
        self._index = 0
        return self.timesteps

    def scale_model_input(self, sample: Tensor, timestep: int | Tensor | None = None) -> Tensor:
        """Identity: the adapter's samples are already what the network takes."""
        return sample

    # -- noise level ------------------------------------------------------------------

    def _position(self, timestep: int | Tensor) -> tuple[int, Tensor]:
        """The current step index and the schedule's exact timestep value there.

        Callers may pass the timestep rounded to an int (sigma schedules have
        fractional timesteps); the scheduler always receives its own value.
        """
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before predict_x0/step")
        step_index = getattr(self.scheduler, "step_index", None)
        index = int(step_index) if step_index is not None else self._index
        timesteps = self.timesteps
        if index >= len(timesteps):
            raise RuntimeError(f"the schedule of {len(timesteps)} steps is finished; call set_timesteps again")
        if isinstance(timestep, Tensor):
            if timestep.numel() == 0:
                raise ValueError("timestep must not be empty")
            t = float(timestep.reshape(-1)[0])
        elif isinstance(timestep, numbers.Real) and not isinstance(timestep, bool):
            t = float(timestep)
        else:
            raise TypeError(f"timestep must be a number or a tensor, got {type(timestep).__name__}")
        expected = float(timesteps[index])
        if abs(expected - t) >= 1.0:
            raise ValueError(
                f"timestep {t:g} is not the current step's timestep {expected:g} "
                f"(step {index} of {len(timesteps)}); the adapter must be stepped in schedule order"
            )
        return index, timesteps[index]

    def _sigma_at(self, index: int) -> float | None:
        sigmas = getattr(self.scheduler, "sigmas", None)
        if isinstance(sigmas, Tensor) and sigmas.ndim == 1 and index < sigmas.numel():
            return float(sigmas[index])
        return None

    def _alpha_bar(self, index: int, timestep: int | Tensor) -> float:
        sigma = self._sigma_at(index)
        if sigma is not None:
            # Sigma-parameterised schedules may sit between integer timesteps (Karras,
            # interpolation); their own sigma is what their step uses.
            return 1.0 / (1.0 + sigma * sigma)
        t = int(timestep.reshape(-1)[0]) if isinstance(timestep, Tensor) else int(timestep)
        return float(self.alphas_cumprod[t])

    def _input_scale(self, timestep: int | Tensor, like: Tensor) -> float:
        """``c`` with ``scheduler.scale_model_input(x) = c·x`` (1 for VP schedulers)."""
        one = torch.ones(1, dtype=torch.float32, device=like.device)
        return float(self.scheduler.scale_model_input(one, timestep).reshape(-1)[0])

    # -- conversions ------------------------------------------------------------------

    def _x0_from_output(self, output: Tensor, sample: Tensor, abar: float) -> Tensor:
        a, s = abar**0.5, (1.0 - abar) ** 0.5
        if self.prediction_type == "v_prediction":
            return a * sample - s * output
        if self.prediction_type == "epsilon":
            return (sample - s * output) / a
        return output

    def _output_from_x0(self, x0: Tensor, sample: Tensor, abar: float) -> Tensor:
        a, s = abar**0.5, max(1.0 - abar, 1e-12) ** 0.5
        if self.prediction_type == "v_prediction":
            return (a * sample - x0) / s
        if self.prediction_type == "epsilon":
            return (sample - a * x0) / s
        return x0

    def predict_x0(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor) -> Tensor:
        """The clean sample the network output implies at ``timestep`` (VP terms:
        ``x0 = √ᾱ·x_t − √(1−ᾱ)·v`` for v-prediction)."""
        sample = _check_tensor("sample", sample)
        model_output = _check_tensor("model_output", model_output, sample)
        index, t = self._position(timestep)
        self._input_scale(t, sample)  # lets sigma schedulers initialise their step index
        return self._x0_from_output(model_output, sample, self._alpha_bar(index, t))

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, x0: Tensor, *,
             generator: torch.Generator | None = None) -> Tensor:
        """The sample at the next timestep, with the scheduler's own update rule applied
        to the model output consistent with ``x0``. ``generator`` (the run's seeded one)
        replaces the adapter's own for stochastic schedulers."""
        sample = _check_tensor("sample", sample)
        model_output = _check_tensor("model_output", model_output, sample)
        x0 = _check_tensor("x0", x0, sample)
        index, t = self._position(timestep)
        scale = self._input_scale(t, sample)
        abar = self._alpha_bar(index, t)
        if torch.equal(x0, self._x0_from_output(model_output, sample, abar)):
            output = model_output
        else:
            output = self._output_from_x0(x0.to(sample.dtype), sample, abar).to(model_output.dtype)
        scheduler_sample = sample if scale == 1.0 else sample / scale
        kwargs = dict(self._step_kwargs)
        if generator is not None and "generator" in kwargs:
            kwargs["generator"] = generator
        prev = self.scheduler.step(output, t, scheduler_sample, return_dict=True, **kwargs).prev_sample
        self._index = index + 1
        if scale != 1.0:
            # Back to VP terms at the next noise level (σ = 0 after the last step).
            step_index = getattr(self.scheduler, "step_index", None)
            next_sigma = self._sigma_at(int(step_index) if step_index is not None else self._index)
            prev = prev / (1.0 + (next_sigma or 0.0) ** 2) ** 0.5
        return prev

    def __repr__(self) -> str:
        return f"DiffusersSchedulerAdapter({type(self.scheduler).__name__}, prediction_type={self.prediction_type!r})"
