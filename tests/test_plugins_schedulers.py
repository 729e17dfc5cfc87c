"""The diffusers-scheduler adapter: plain trajectories without propagation, and a
model output consistent with an edited x0 when propagation changes it."""

from __future__ import annotations

import pytest
import torch

from uav.protocols import DenoisingScheduler
from uav.registry import Registry
from uav_schedulers.adapter import SCHEDULER_PRESETS, build_diffusers_scheduler

SHAPE = (1, 4, 3, 8, 8)  # (B, C, T, h, w) latents
STEPS = 8
VP_SCHEDULERS = ["ddim", "dpmsolver++", "unipc"]
SIGMA_SCHEDULERS = ["euler", "euler-a", "heun"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


class FixedRandomModel:
    """A deterministic stand-in for the UNet: a fixed random nonlinear map of (x, t)."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(SHAPE[1], SHAPE[1], generator=g) / SHAPE[1] ** 0.5
        self.bias = torch.randn(SHAPE, generator=g) * 0.1
        self.tscale = torch.randn(SHAPE, generator=g) * 0.3

    def __call__(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = float(t)
        mixed = torch.einsum("ij,bjthw->bithw", self.mix, x)
        return torch.tanh(mixed + self.bias) + self.tscale * (t / 1000.0)


def _noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))


def plain_trajectory(name: str, model: FixedRandomModel) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The scheduler on its own, as a diffusers pipeline loop drives it."""
    class_name, overrides = SCHEDULER_PRESETS[name]
    sched = build_diffusers_scheduler(class_name, None, **overrides)
    sched.set_timesteps(STEPS)
    generator = torch.Generator().manual_seed(3)
    x = _noise() * sched.init_noise_sigma
    inputs = []
    for t in sched.timesteps:
        model_input = sched.scale_model_input(x, t)
        inputs.append(model_input)
        kwargs = {"generator": generator} if name == "euler-a" else {}
        x = sched.step(model(model_input, t), t, x, **kwargs).prev_sample
    return inputs, x


def adapter_trajectory(
    registry: Registry, name: str, model: FixedRandomModel, edit=None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The loop as the uav pipeline runs it: predict x0, maybe edit it, step from it."""
    sched = registry.get("scheduler", name, generator=torch.Generator().manual_seed(3))
    assert isinstance(sched, DenoisingScheduler)
    sched.set_timesteps(STEPS)
    x = _noise() * sched.init_noise_sigma
    inputs = []
    for i, t in enumerate(sched.timesteps):
        inputs.append(x)
        v = model(x, t)
        x0 = sched.predict_x0(v, t, x)
        if edit is not None:
            x0 = edit(i, x0)
        x = sched.step(v, t, x, x0)
    return inputs, x


@pytest.mark.parametrize("name", VP_SCHEDULERS + SIGMA_SCHEDULERS)
def test_without_propagation_the_plain_trajectory_is_reproduced(registry, name):
    model = FixedRandomModel()
    plain_inputs, plain_final = plain_trajectory(name, model)
    inputs, final = adapter_trajectory(registry, name, model)
    assert len(inputs) == len(plain_inputs)
    if name in VP_SCHEDULERS:
        # Samples and outputs pass through untouched: bit for bit.
        for a, b in zip(inputs, plain_inputs):
            assert torch.equal(a, b)
        assert torch.equal(final, plain_final)
    else:
        # Sigma-space schedulers are converted to VP terms and back (x_σ = x_t·√(σ²+1)):
        # the network sees the same inputs up to float rounding.
        for a, b in zip(inputs, plain_inputs):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
        assert torch.allclose(final, plain_final, atol=1e-5, rtol=1e-5)


def test_timesteps_rounded_to_int_are_accepted(registry):
    # Pipelines often cast timesteps to int, but sigma schedules have fractional ones:
    # the adapter hands the scheduler its own exact value either way.
    model = FixedRandomModel()

    def run(cast) -> torch.Tensor:
        sched = registry.get("scheduler", "heun")
        sched.set_timesteps(STEPS)
        x = _noise() * sched.init_noise_sigma
        for t in list(sched.timesteps):
            v = model(x, 0)  # timestep-independent, so only the adapter's handling differs
            x = sched.step(v, cast(t), x, sched.predict_x0(v, cast(t), x))
        return x

    exact = run(lambda t: t)
    assert torch.equal(run(lambda t: int(t)), exact)
    sched = registry.get("scheduler", "heun")
    sched.set_timesteps(STEPS)
    assert any(float(t) != int(t) for t in sched.timesteps)


def test_a_noop_edit_that_changes_bits_only_still_follows_the_trajectory(registry):
    # Forcing the conversion path (x0 -> v' -> scheduler) with an x0 equal up to rounding.
    model = FixedRandomModel()
    _, plain_final = plain_trajectory("dpmsolver++", model)
    _, final = adapter_trajectory(registry, "dpmsolver++", model, edit=lambda i, x0: (x0 + 1.0) - 1.0)
    assert torch.allclose(final, plain_final, atol=1e-4)


def _edited_step_inputs(index: int = 2):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(SHAPE, generator=g)
    v = torch.randn(SHAPE, generator=g)
    x0_edit = torch.randn(SHAPE, generator=g) * 0.5
    return x, v, x0_edit


def test_ddim_adapter_rederives_epsilon_from_the_edited_x0(registry):
    adapter = registry.get("scheduler", "ddim")
    official = registry.get("scheduler", "ddim-official")
    adapter.set_timesteps(10)
    official.set_timesteps(10)
    t = adapter.timesteps[0]
    assert torch.equal(adapter.timesteps, official.timesteps)
    x, v, x0_edit = _edited_step_inputs()
    abar = official.alphas_cumprod
    a_t, a_prev = abar[int(t)], abar[int(t) - 100]

    x0 = adapter.predict_x0(v, t, x)
    assert torch.allclose(x0, official.predict_x0(v, t, x), atol=1e-6)
    prev = adapter.step(v, t, x, x0_edit)
    eps_edit = (x - a_t.sqrt() * x0_edit) / (1 - a_t).sqrt()
    assert torch.allclose(prev, a_prev.sqrt() * x0_edit + (1 - a_prev).sqrt() * eps_edit, atol=1e-5)

    # The published rule keeps the network's epsilon instead, so the two differ.
    published = official.step(v, t, x, x0_edit)
    eps_net = a_t.sqrt() * v + (1 - a_t).sqrt() * x
    assert torch.allclose(published, a_prev.sqrt() * x0_edit + (1 - a_prev).sqrt() * eps_net, atol=1e-5)
    assert (published - prev).abs().max() > 0.1


def test_euler_adapter_steps_towards_the_edited_x0(registry):
    adapter = registry.get("scheduler", "euler")
    adapter.set_timesteps(10)
    sigmas = adapter.scheduler.sigmas
    t = adapter.timesteps[0]
    x, v, x0_edit = _edited_step_inputs()
    adapter.predict_x0(v, t, x)
    prev = adapter.step(v, t, x, x0_edit)
    sigma, sigma_next = float(sigmas[0]), float(sigmas[1])
    # Euler in sigma space with the derivative implied by x0': d = (x_σ − x0')/σ.
    x_sigma = x * (sigma**2 + 1) ** 0.5
    expected_sigma = x_sigma + (sigma_next - sigma) * (x_sigma - x0_edit) / sigma
    assert torch.allclose(prev, expected_sigma / (sigma_next**2 + 1) ** 0.5, atol=1e-4, rtol=1e-5)


def test_propagation_edits_change_the_trajectory(registry):
    model = FixedRandomModel()
    _, plain = adapter_trajectory(registry, "unipc", model)
    _, edited = adapter_trajectory(registry, "unipc", model, edit=lambda i, x0: x0 * 0.5 if i in (5, 6) else x0)
    assert (plain - edited).abs().max() > 1e-2


def test_adapter_options_and_errors(registry, tmp_path):
    sched = registry.get("scheduler", "diffusers:DPMSolverMultistepScheduler", use_karras_sigmas=True)
    assert sched.scheduler.config.use_karras_sigmas is True
    assert sched.prediction_type == "v_prediction"  # from the release config
    eps = registry.get("scheduler", "euler", config={"prediction_type": "epsilon"})
    assert eps.prediction_type == "epsilon"
    with pytest.raises(TypeError, match="does not accept option"):
        registry.get("scheduler", "unipc", no_such_option=1)
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        registry.get("scheduler", "ddim", config=tmp_path)
    with pytest.raises(TypeError, match="config must be None, a mapping"):
        registry.get("scheduler", "ddim", config=3)

    sched = registry.get("scheduler", "ddim")
    x = torch.zeros(SHAPE)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sched.predict_x0(x, 1, x)
    sched.set_timesteps(4)
    with pytest.raises(ValueError, match="not the current step's timestep"):
        sched.predict_x0(x, int(sched.timesteps[2]), x)
    with pytest.raises(ValueError, match="sample's shape"):
        sched.predict_x0(torch.zeros(2, 2), sched.timesteps[0], x)
