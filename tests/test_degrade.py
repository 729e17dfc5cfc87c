"""Tests for uav.degrade: bit-reproducibility, per-clip constant parameters, shapes, kernels, validation."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from uav.eval import degrade as D


def _hq_clip(T: int = 5, size: int = 64, seed: int = 0) -> np.ndarray:
    """A small moving textured uint8 clip."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur((rng.random((size + 16, size + 16, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    return np.stack([big[t : t + size, 2 * t : 2 * t + size] for t in range(T)])


def _seed_with_codec(codec: str) -> int:
    for seed in range(200):
        if D.sample_params(None, seed).video_codec == codec:
            return seed
    raise AssertionError(f"no seed below 200 draws {codec}")


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_degrade_clip_is_bit_reproducible_for_a_seed(codec):
    hq = _hq_clip()
    seed = _seed_with_codec(codec)
    a = D.degrade_clip(hq, seed=seed)
    b = D.degrade_clip(hq.copy(), seed=seed)
    assert a.dtype == np.uint8 and a.shape == (5, 16, 16, 3)
    assert hashlib.sha256(a.tobytes()).hexdigest() == hashlib.sha256(b.tobytes()).hexdigest()


def test_different_seeds_give_different_degradations():
    hq = _hq_clip()
    outs = {hashlib.sha256(D.degrade_clip(hq, seed=s).tobytes()).hexdigest() for s in range(4)}
    assert len(outs) == 4


def test_parameters_are_drawn_once_per_clip_and_logged_as_plain_data():
    p1, p2 = D.sample_params(None, 11), D.sample_params(None, 11)
    assert p1 == p2
    d = p1.to_dict()
    assert set(d) >= {"first", "second", "video_codec", "final_interpolation"}
    assert isinstance(d["first"]["resize_factor"], float)
    assert D.sample_params(None, 12) != p1


def test_parameters_constant_over_time_on_a_static_clip():
    """Without per-frame noise and codec, a static clip must stay static: no parameter varies per frame."""
    frame = _hq_clip(T=1)[0]
    hq = np.repeat(frame[None], 4, axis=0)
    quiet = dataclasses.replace(D.NoiseConfig(), gaussian_prob=1.0, gaussian_sigma=(0.0, 0.0))
    cfg = D.DegradationConfig(
        first=dataclasses.replace(D.StageConfig(), noise=quiet),
        second=dataclasses.replace(D.StageConfig(), noise=quiet),
        video_prob=0.0,
    )
    for seed in range(3):
        lq = D.degrade_clip(hq, seed=seed, config=cfg)
        assert all(np.array_equal(lq[0], lq[t]) for t in range(1, 4))


def test_noise_realisation_changes_per_frame_but_reproducibly():
    hq = np.repeat(_hq_clip(T=1)[0][None], 3, axis=0)
    cfg = D.DegradationConfig(second=None, video_prob=0.0)
    lq = D.degrade_clip(hq, seed=3, config=cfg)
    assert not np.array_equal(lq[0], lq[1])
    assert np.array_equal(lq, D.degrade_clip(hq, seed=3, config=cfg))


def test_make_pair_aligns_hq_and_lq_and_degrades_noticeably():
    hq = _hq_clip(T=3, size=66)  # not a multiple of 4: cropped to 64
    lq, hq_crop = D.make_pair(hq, seed=5, scale=4)
    assert hq_crop.shape == (3, 64, 64, 3) and lq.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(hq_crop, hq[:, :64, :64])
    down = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in hq_crop])
    assert np.abs(lq.astype(int) - down.astype(int)).mean() > 1.0  # more than a plain resize
    lq3, hq3 = D.make_pair(hq, seed=5, scale=3)
    assert hq3.shape == (3, 66, 66, 3) and lq3.shape == (3, 22, 22, 3)


def test_blur_kernels_are_normalised_and_shaped():
    for ktype in D.KERNEL_TYPES:
        k = D.blur_kernel(D.KernelParams(ktype, 9, sigma_x=2.0, sigma_y=1.0, angle=0.3, beta=1.5, omega=1.5))
        assert k.shape == (9, 9)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        assert k[4, 4] == pytest.approx(k.max())
    iso = D.blur_kernel(D.KernelParams("iso", 7, sigma_x=1.2, sigma_y=1.2))
    np.testing.assert_allclose(iso, iso.T, atol=1e-15)
    r = np.arange(7) - 3.0
    g = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 1.2**2))
    np.testing.assert_allclose(iso, g / g.sum(), atol=1e-14)
    aniso = D.blur_kernel(D.KernelParams("aniso", 9, sigma_x=3.0, sigma_y=0.5, angle=0.0))
    assert aniso[4, 0] > aniso[0, 4]  # wide along x, narrow along y


def test_bad_arguments_raise_clear_errors():
    hq = _hq_clip(T=2)
    with pytest.raises(ValueError, match="seed"):
        D.degrade_clip(hq, seed=-1)
    with pytest.raises(ValueError, match="scale"):
        D.degrade_clip(hq, seed=0, scale=0)
    with pytest.raises(ValueError, match="shape"):
        D.degrade_clip(hq[0], seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        D.degrade_clip(hq.astype(np.float32), seed=0)
    with pytest.raises(ValueError, match="video_codecs"):
        D.DegradationConfig(video_codecs=("libx264",), video_codec_probs=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"first.blur.prob"):
        D.DegradationConfig(first=D.StageConfig(blur=D.BlurConfig(prob=1.5)))
    with pytest.raises(ValueError, match="kernel_sizes"):
        D.DegradationConfig(first=D.StageConfig(blur=D.BlurConfig(kernel_sizes=(4,))))


@pytest.mark.slow
def test_same_bytes_in_a_fresh_process():
    """Reproducible across interpreter runs, not only within one (no hidden global state)."""
    seed = _seed_with_codec("libx264")
    code = (
        "import hashlib, sys; sys.path.insert(0, 'tests'); import test_degrade as t; from uav.eval import degrade as D; "
        f"print(hashlib.sha256(D.degrade_clip(t._hq_clip(), seed={seed}).tobytes()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == hashlib.sha256(D.degrade_clip(_hq_clip(), seed=seed).tobytes()).hexdigest()
