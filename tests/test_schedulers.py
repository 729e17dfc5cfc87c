"""Parity and behaviour tests for uav.sampling.schedulers (SPEC §5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import load_file

from uav.protocols import DenoisingScheduler
from uav.sampling.schedulers import OfficialDDIM, low_res_add_noise

PARITY = Path(__file__).parent / "data" / "parity"
ATOL = 1e-6


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(PARITY / "scheduler_io.safetensors")


@pytest.fixture(scope="module")
def ddim_config() -> dict:
    return json.loads((PARITY / "scheduler_config_ddim_x4.json").read_text())


@pytest.fixture(scope="module")
def ddpm_config() -> dict:
    return json.loads((PARITY / "low_res_scheduler_config_ddpm_x4.json").read_text())


@pytest.fixture(scope="module")
def manifest_params() -> dict:
    manifest = json.loads((PARITY / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["file"] == "scheduler_io.safetensors")
    return entry["params"]


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def test_is_a_denoising_scheduler(ddim_config):
    sched = OfficialDDIM(ddim_config)
    assert isinstance(sched, DenoisingScheduler)
    assert sched.prediction_type == "v_prediction"
    assert sched.init_noise_sigma == 1.0


def test_alphas_tables_match_fixture(io, ddim_config, ddpm_config):
    sched = OfficialDDIM(ddim_config)
    assert _max_err(sched.alphas_cumprod, io["ddim_alphas_cumprod"]) <= ATOL
    assert _max_err(sched.final_alpha_cumprod.reshape(1), io["ddim_final_alpha_cumprod"]) <= ATOL
    # The low-res table, read back through add_noise: image=1, noise=0 gives sqrt(ᾱ[ℓ]).
    ddpm = DDPMScheduler.from_config({k: v for k, v in ddpm_config.items() if not k.startswith("_")})
    levels = torch.arange(0, 351)
    got = torch.stack([low_res_add_noise(torch.ones(1), torch.zeros(1), int(l), ddpm)[0] for l in levels])
    assert _max_err(got, io["lowres_alphas_cumprod"][levels].sqrt()) <= ATOL


@pytest.mark.parametrize("source", ["config", "object"])
def test_set_timesteps_exact(io, ddim_config, manifest_params, source):
    arg = ddim_config if source == "config" else DDIMScheduler.from_config(ddim_config)
    sched = OfficialDDIM(arg)
    for n in manifest_params["set_timesteps"]:
        ts = sched.set_timesteps(n)
        assert ts.dtype == torch.int64
        assert torch.equal(ts, io[f"set_timesteps_{n}"])
        assert torch.equal(sched.timesteps, ts)
        # SPEC §5.3: leading spacing r = 1000 // N plus steps_offset 1.
        r = 1000 // n
        assert ts.tolist() == [k * r + 1 for k in range(n - 1, -1, -1)]


def test_step_cases_match_fixture(io, ddim_config, manifest_params):
    sched = OfficialDDIM(ddim_config)
    timesteps = sched.set_timesteps(manifest_params["step_N"])
    for j, index in enumerate(manifest_params["step_indices"]):
        case = {k[len(f"step{j}_"):]: v for k, v in io.items() if k.startswith(f"step{j}_")}
        t = case["timestep"]
        assert int(t) == int(timesteps[index])
        x0 = sched.predict_x0(case["model_output"], t, case["sample"])
        assert _max_err(x0, case["x0"]) <= ATOL
        prev = sched.step(case["model_output"], t, case["sample"], x0)
        assert _max_err(prev, case["prev_sample"]) <= ATOL
        assert _max_err(prev, case["prev_sample_official_step"]) <= ATOL
        prev_override = sched.step(case["model_output"], t, case["sample"], case["x0_override"])
        assert _max_err(prev_override, case["prev_sample_with_x0_override"]) <= ATOL
        # Plain Python ints work the same as the (1,) tensors of the fixture.
        assert torch.equal(sched.predict_x0(case["model_output"], int(t), case["sample"]), x0)


def test_eta_case_with_explicit_noise(io, ddim_config, manifest_params):
    eta_case = manifest_params["eta_case"]
    sched = OfficialDDIM(ddim_config, eta=eta_case["eta"])
    timesteps = sched.set_timesteps(eta_case["N"])
    t = io["eta_timestep"]
    assert int(t) == int(timesteps[eta_case["index"]])
    x0 = sched.predict_x0(io["eta_model_output"], t, io["eta_sample"])
    assert _max_err(x0, io["eta_x0"]) <= ATOL
    prev = sched.step(io["eta_model_output"], t, io["eta_sample"], x0, variance_noise=io["eta_variance_noise"])
    assert _max_err(prev, io["eta_prev_sample"]) <= ATOL


def test_eta_noise_from_generator_is_reproducible(io, ddim_config):
    sched = OfficialDDIM(ddim_config, eta=0.5)
    sched.set_timesteps(30)
    args = (io["eta_model_output"], io["eta_timestep"], io["eta_sample"], io["eta_x0"])
    a = sched.step(*args, generator=torch.Generator().manual_seed(3))
    b = sched.step(*args, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(io["eta_sample"].shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert _max_err(a, sched.step(*args, variance_noise=noise)) == 0.0
    deterministic = OfficialDDIM(ddim_config)
    deterministic.set_timesteps(30)
    assert _max_err(a, deterministic.step(*args)) > 1e-3


def test_low_res_add_noise_matches_fixture(io, ddpm_config, manifest_params):
    for level in manifest_params["lowres_levels"]:
        out = low_res_add_noise(io["lowres_image"], io["lowres_noise"], level, ddpm_config)
        assert _max_err(out, io[f"lowres_noisy_level{level}"]) <= ATOL
        # A scheduler object gives the same numbers as its config.
        ddpm = DDPMScheduler.from_config({k: v for k, v in ddpm_config.items() if not k.startswith("_")})
        assert torch.equal(out, low_res_add_noise(io["lowres_image"], io["lowres_noise"], level, ddpm))


@pytest.mark.parametrize("bad", [-1, 351, 2.5, True, "20", None])
def test_low_res_add_noise_rejects_bad_levels(ddpm_config, bad):
    with pytest.raises(ValueError, match="noise_level"):
        low_res_add_noise(torch.zeros(2), torch.zeros(2), bad, ddpm_config)


def test_low_res_add_noise_rejects_shape_mismatch(ddpm_config):
    with pytest.raises(ValueError, match="noise"):
        low_res_add_noise(torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 3, 2, 4, 5), 20, ddpm_config)


def test_edited_x0_only_moves_the_clean_term(ddim_config):
    """ε comes from (v, x_t), so prev is affine in x0 with slope sqrt(ᾱ_prev)."""
    sched = OfficialDDIM(ddim_config)
    sched.set_timesteps(30)
    g = torch.Generator().manual_seed(0)
    v, x, x0a, x0b = (torch.randn(1, 4, 2, 3, 3, generator=g) for _ in range(4))
    t = 496
    alpha_prev = sched.alphas_cumprod[t - 33]
    diff = sched.step(v, t, x, x0a) - sched.step(v, t, x, x0b)
    assert _max_err(diff, alpha_prev.sqrt() * (x0a - x0b)) <= 1e-5


def test_last_step_uses_alphas_cumprod_zero(ddim_config):
    sched = OfficialDDIM(ddim_config)
    sched.set_timesteps(30)
    x0 = torch.full((1, 4, 1, 2, 2), 0.3)
    v = torch.randn(1, 4, 1, 2, 2)
    x = torch.randn(1, 4, 1, 2, 2)
    # t=1, t_prev=-32 < 0: ᾱ_prev = ᾱ[0], so prev = sqrt(ᾱ0)·x0 + sqrt(1-ᾱ0)·ε.
    a_t, a0 = sched.alphas_cumprod[1], sched.alphas_cumprod[0]
    eps = a_t.sqrt() * v + (1 - a_t).sqrt() * x
    expected = a0.sqrt() * x0 + (1 - a0).sqrt() * eps
    assert _max_err(sched.step(v, 1, x, x0), expected) <= 1e-6


def test_per_batch_timesteps_match_scalar_calls(ddim_config):
    sched = OfficialDDIM(ddim_config, eta=0.3)
    sched.set_timesteps(20)
    g = torch.Generator().manual_seed(1)
    v, x, noise = (torch.randn(2, 4, 2, 3, 3, generator=g) for _ in range(3))
    t = torch.tensor([951, 1])
    x0 = sched.predict_x0(v, t, x)
    prev = sched.step(v, t, x, x0, variance_noise=noise)
    for b in range(2):
        x0_b = sched.predict_x0(v[b : b + 1], int(t[b]), x[b : b + 1])
        assert torch.allclose(x0[b : b + 1], x0_b, atol=1e-6)
        prev_b = sched.step(v[b : b + 1], int(t[b]), x[b : b + 1], x0_b, variance_noise=noise[b : b + 1])
        assert torch.allclose(prev[b : b + 1], prev_b, atol=1e-6)


def test_does_not_mutate_the_given_scheduler(ddim_config):
    base = DDIMScheduler.from_config(ddim_config)
    base.set_timesteps(7)
    before = base.timesteps.clone()
    OfficialDDIM(base).set_timesteps(30)
    assert torch.equal(base.timesteps, before)


def test_input_errors(ddim_config):
    sched = OfficialDDIM(ddim_config)
    x = torch.zeros(1, 4, 1, 2, 2)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sched.step(x, 1, x, x)
    sched.set_timesteps(10)
    with pytest.raises(ValueError, match="timestep"):
        sched.predict_x0(x, 1000, x)
    with pytest.raises(TypeError, match="timestep"):
        sched.predict_x0(x, 1.5, x)
    with pytest.raises(ValueError, match="sample"):
        sched.predict_x0(x, 1, torch.zeros(1, 4, 1, 2, 3))
    with pytest.raises(ValueError, match="num_inference_steps"):
        sched.set_timesteps(0)
    with pytest.raises(ValueError, match="prediction_type"):
        OfficialDDIM({**ddim_config, "prediction_type": "epsilon"})
    with pytest.raises(ValueError, match="eta"):
        OfficialDDIM(ddim_config, eta=-0.1)
    with pytest.raises(TypeError, match="scheduler_or_config"):
        OfficialDDIM(42)
