"""Parity and behaviour tests for uav.color_fix (SPEC §7.4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from uav.color_fix import (
    adain_color_fix,
    adaptive_instance_normalization,
    wavelet_color_fix,
    wavelet_decomposition,
    wavelet_reconstruction,
)
from uav.protocols import ColorCorrector

PARITY = Path(__file__).parent / "data" / "parity"


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(PARITY / "color_io.safetensors")


def test_wavelet_matches_fixture(io):
    out = wavelet_reconstruction(io["content"], io["style"])
    assert (out - io["wavelet_reconstruction"]).abs().max().item() <= 1e-5


def test_adain_matches_fixture(io):
    out = adaptive_instance_normalization(io["content"], io["style"])
    assert (out - io["adaptive_instance_normalization"]).abs().max().item() <= 1e-5


def test_adain_transfers_statistics(io):
    out = adaptive_instance_normalization(io["content"], io["style"])
    flat_out, flat_style = out.flatten(2), io["style"].flatten(2)
    assert torch.allclose(flat_out.mean(2), flat_style.mean(2), atol=1e-5)
    # σ carries +1e-5 inside the root, so the stds agree to that order.
    assert torch.allclose(flat_out.std(2), flat_style.std(2), atol=1e-4)


def test_wavelet_bands_sum_to_input():
    x = torch.randn(2, 3, 20, 33, generator=torch.Generator().manual_seed(0))
    high, low = wavelet_decomposition(x)
    assert torch.allclose(high + low, x, atol=1e-5)
    # Five levels with radius up to 16 leave a smooth low band.
    assert low.diff(dim=-1).abs().mean() < 0.2 * x.diff(dim=-1).abs().mean()
    assert torch.allclose(wavelet_reconstruction(x, x), x, atol=1e-5)


@pytest.mark.parametrize(
    ("fix", "core"),
    [(wavelet_color_fix, wavelet_reconstruction), (adain_color_fix, adaptive_instance_normalization)],
)
def test_color_correctors_upsample_the_reference(fix, core):
    g = torch.Generator().manual_seed(1)
    output = torch.rand(3, 3, 32, 48, generator=g) * 2 - 1
    low_res = torch.rand(3, 3, 8, 12, generator=g) * 2 - 1
    assert isinstance(fix, ColorCorrector)
    up = F.interpolate(low_res, size=(32, 48), mode="bicubic", align_corners=False)
    got = fix(output, low_res)
    assert got.shape == output.shape
    assert torch.equal(got, core(output, up))
    # The correction pulls the colours towards the reference.
    assert (got.mean((2, 3)) - up.mean((2, 3))).abs().max() < (output.mean((2, 3)) - up.mean((2, 3))).abs().max()


def test_half_precision_keeps_dtype(io):
    content, style = io["content"].half(), io["style"].half()
    cases = (
        (wavelet_reconstruction, "wavelet_reconstruction"),
        (adaptive_instance_normalization, "adaptive_instance_normalization"),
    )
    for fn, key in cases:
        out = fn(content, style)
        assert out.dtype == torch.float16
        assert (out.float() - io[key]).abs().max().item() < 2e-2


def test_errors():
    ok = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="frames"):
        wavelet_color_fix(ok, torch.zeros(3, 3, 4, 4))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        adain_color_fix(torch.zeros(2, 4, 16, 16), torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match="low_res"):
        adain_color_fix(ok, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        wavelet_color_fix(ok[0], torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="shape of content"):
        wavelet_reconstruction(ok, torch.zeros(2, 3, 16, 8))
    with pytest.raises(TypeError, match="floating-point"):
        adaptive_instance_normalization(ok.to(torch.uint8), ok)
