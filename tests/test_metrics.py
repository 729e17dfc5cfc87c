"""Tests for uav.metrics: PSNR/SSIM against independent computations, E*warp behaviour, LPIPS loading."""

from __future__ import annotations

import math
import sys
import types

import cv2
import numpy as np
import pytest
import torch

from uav import eval as M


def _texture(h: int, w: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Smooth random RGB texture in [0, 1], float64."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w, 3))
    tex = cv2.GaussianBlur(noise, (0, 0), sigma)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return tex


# --------------------------------------------------------------------------- PSNR


def test_psnr_constant_offset_matches_closed_form():
    rng = np.random.default_rng(1)
    a = rng.integers(20, 200, size=(2, 17, 23, 3), dtype=np.uint8)
    b = (a.astype(np.int32) + 7).astype(np.uint8)
    expected = 10 * math.log10(255.0**2 / 49.0)
    assert M.psnr(a, b) == pytest.approx(expected, abs=1e-10)
    np.testing.assert_allclose(M.psnr_frames(a, b), [expected, expected], atol=1e-10)
    # The same data as float [0, 1] and as uint16 gives the same number.
    assert M.psnr(a / 255.0, b / 255.0) == pytest.approx(expected, abs=1e-9)
    assert M.psnr(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257) == pytest.approx(expected, abs=1e-9)


def test_psnr_per_frame_and_mean_over_frames():
    base = np.full((3, 8, 8, 3), 100, dtype=np.uint8)
    offsets = [1, 5, 20]
    other = np.stack([base[i] + d for i, d in enumerate(offsets)]).astype(np.uint8)
    per = M.psnr_frames(other, base)
    expected = [10 * math.log10(255.0**2 / d**2) for d in offsets]
    np.testing.assert_allclose(per, expected, atol=1e-10)
    assert M.psnr(other, base) == pytest.approx(np.mean(expected), abs=1e-10)


def test_psnr_y_of_gray_offset_matches_bt601_closed_form():
    gray = np.random.default_rng(2).integers(30, 200, size=(12, 14, 1), dtype=np.uint8).repeat(3, axis=2)
    d = 9
    shifted = (gray.astype(np.int32) + d).astype(np.uint8)
    y_diff = d * (65.481 + 128.553 + 24.966) / 255.0  # BT.601 luma step of a gray step d
    assert M.psnr(shifted, gray, y_channel=True) == pytest.approx(10 * math.log10(255.0**2 / y_diff**2), abs=1e-9)


def test_rgb_to_y_matches_matlab_reference_points():
    pix = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(M.rgb_to_y(pix)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)


def test_psnr_identical_is_inf_and_crop_border_ignores_edges():
    a = np.random.default_rng(3).integers(0, 256, size=(2, 20, 20, 3), dtype=np.uint8)
    assert math.isinf(M.psnr(a, a.copy()))
    b = a.copy()
    b[:, :2] = 255 - b[:, :2]  # damage only the top two rows
    assert math.isfinite(M.psnr(a, b))
    assert math.isinf(M.psnr(a, b, crop_border=2))
    assert math.isfinite(M.psnr(a, b, crop_border=1))


# --------------------------------------------------------------------------- SSIM


def _ssim_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    """Direct per-window SSIM of two float64 2-D images on [0, 255] (Wang et al. 2004)."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = np.sum(w * px), np.sum(w * py)
            vx = np.sum(w * (px - mx) ** 2)
            vy = np.sum(w * (py - my) ** 2)
            cxy = np.sum(w * (px - mx) * (py - my))
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_bruteforce_window_computation_rgb_and_y():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, size=(16, 19, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int32) + rng.integers(-40, 40, size=a.shape), 0, 255).astype(np.uint8)
    af, bf = a.astype(np.float64), b.astype(np.float64)
    expected_rgb = np.mean([_ssim_bruteforce(af[..., c], bf[..., c]) for c in range(3)])
    assert M.ssim(a, b) == pytest.approx(expected_rgb, abs=1e-10)
    coeffs = np.array([65.481, 128.553, 24.966])
    ya, yb = af / 255.0 @ coeffs + 16.0, bf / 255.0 @ coeffs + 16.0
    assert M.ssim(a, b, y_channel=True) == pytest.approx(_ssim_bruteforce(ya, yb), abs=1e-10)
    # crop_border crops before the window is applied
    assert M.ssim(a, b, crop_border=2) == pytest.approx(
        np.mean([_ssim_bruteforce(af[2:-2, 2:-2, c], bf[2:-2, 2:-2, c]) for c in range(3)]), abs=1e-10
    )


def test_ssim_of_constant_images_matches_closed_form():
    a = np.full((1, 13, 13, 3), 0.4)
    b = np.full((1, 13, 13, 3), 0.7)
    ma, mb, c1 = 0.4 * 255, 0.7 * 255, (0.01 * 255) ** 2
    assert M.ssim(a, b) == pytest.approx((2 * ma * mb + c1) / (ma**2 + mb**2 + c1), abs=1e-12)
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_against_skimage_when_available():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, size=(24, 30, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int32) + rng.integers(-25, 25, size=a.shape), 0, 255).astype(np.uint8)
    ref = np.mean(
        [
            skm.structural_similarity(a[..., c], b[..., c], gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255)
            for c in range(3)
        ]
    )
    assert M.ssim(a, b) == pytest.approx(ref, abs=1e-6)


def test_bad_inputs_raise_clear_errors():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"same shape.*\(2, 16, 16, 3\).*\(2, 16, 17, 3\)"):
        M.psnr(a, np.zeros((2, 16, 17, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.psnr(a.astype(np.float32) + 200.0, a.astype(np.float32))
    with pytest.raises(TypeError, match="torch tensor"):
        M.psnr(torch.zeros(2, 16, 16, 3), a)
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="crop_border"):
        M.psnr(a, a, crop_border=-1)
    with pytest.raises(ValueError, match="shape"):
        M.psnr(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))


# --------------------------------------------------------------------------- E*warp


VELOCITY = (1.0, 0.5)  # pixels per frame, (x, y)


def _moving_clip(T: int = 6, size: int = 40) -> np.ndarray:
    """Frames of one texture warped with the known flow VELOCITY: V_{t+1}(p + v) = V_t(p)."""
    big = _texture(size + 24, size + 24, seed=7, sigma=2.5).astype(np.float32)
    frames = []
    for t in range(T):
        m = np.float32([[1, 0, VELOCITY[0] * t], [0, 1, VELOCITY[1] * t]])
        moved = cv2.warpAffine(big, m, (big.shape[1], big.shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        frames.append(moved[12 : 12 + size, 12 : 12 + size])
    return np.clip(np.stack(frames), 0, 1)


def _flicker(clip: np.ndarray, amount: float = 0.1) -> np.ndarray:
    sign = np.array([(-1) ** t for t in range(clip.shape[0])], dtype=np.float32)[:, None, None, None]
    return np.clip(clip + amount * sign, 0, 1)


class KnownFlow:
    """FlowEstimator returning the true constant flow, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, frames, *, size=None):
        T, _, H, W = frames.shape
        self.calls.append(T)
        h, w = size if size is not None else (H, W)
        fw = torch.zeros(1, 2, T - 1, h, w)
        fw[:, 0], fw[:, 1] = VELOCITY[0], VELOCITY[1]
        return fw, -fw


def test_ewarp_near_zero_for_known_flow_sequence_and_large_with_flicker():
    clip = _moving_clip()
    clean = M.warping_error(clip, flow=KnownFlow())
    flick = M.warping_error(_flicker(clip), flow=KnownFlow())
    assert clean.shape == (clip.shape[0] - 1,)
    assert clean.max() < 1e-4  # bilinear re-interpolation and frame-edge residue only
    # +-0.1 flicker between neighbours is a 0.2 step, squared 0.04 (clipping trims a little)
    assert flick.min() > 0.02
    assert flick.mean() > 200 * clean.mean()


def test_ewarp_with_default_dis_flow_separates_stable_from_flicker():
    clip = _moving_clip()
    stable = M.warping_error(clip).mean() * M.EWARP_SCALE
    flicker = M.warping_error(_flicker(clip)).mean() * M.EWARP_SCALE
    assert stable < 0.5  # x 1e-3
    assert flicker > 10.0
    # Flow estimated on the clean reference scores the flickering output just as badly.
    on_ref = M.warping_error(_flicker(clip), flow_frames=clip).mean() * M.EWARP_SCALE
    assert on_ref > 10.0


def test_ewarp_chunking_sees_every_pair_once():
    clip = _moving_clip(T=7)
    est = KnownFlow()
    chunked = M.warping_error(_flicker(clip), flow=est, chunk=3)
    assert est.calls == [3, 3, 3]  # pairs (0,1),(1,2) | (2,3),(3,4) | (4,5),(5,6)
    whole = M.warping_error(_flicker(clip), flow=KnownFlow(), chunk=16)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12)


def test_occlusion_mask_flags_inconsistent_flow_and_motion_boundaries():
    fw = np.zeros((20, 20, 2), np.float32)
    fw[..., 0] = 2.0
    bw = -fw.copy()
    assert not M.occlusion_mask(fw, bw).any()
    bw_bad = bw.copy()
    bw_bad[5:10, 5:10] = 3.0  # backward flow disagrees here
    occ = M.occlusion_mask(fw, bw_bad)
    assert occ[6:9, 4:7].all() and not occ[15:, 15:].any()
    fw_edge = fw.copy()
    fw_edge[:, 10:, 0] = -2.0  # a motion boundary between columns 9 and 10
    bw_edge = -fw_edge
    assert M.occlusion_mask(fw_edge, bw_edge)[:, 9].all()


def test_ewarp_rejects_bad_estimator_output_and_short_clips():
    def wrong(frames, *, size=None):
        return torch.zeros(1, 2, 1, 3, 3), torch.zeros(1, 2, 1, 3, 3)

    clip = _moving_clip(T=3)
    with pytest.raises(ValueError, match="forward flow should have shape"):
        M.warping_error(clip, flow=wrong)
    with pytest.raises(ValueError, match="T>=2"):
        M.warping_error(clip[:1])
    with pytest.raises(ValueError, match="unknown flow estimator 'nope'"):
        M.warping_error(clip, flow="nope")


def test_evaluate_video_reports_all_metrics_and_per_frame_lists():
    ref = _moving_clip(T=5)
    out = np.clip(ref + 0.02, 0, 1)
    res = M.evaluate_video(out, ref, flow=KnownFlow())
    d = res.to_dict()
    assert list(d) == ["psnr", "psnr_y", "ssim", "ssim_y", "ewarp", "per_frame"]
    assert set(d["per_frame"]) == {"psnr", "psnr_y", "ssim", "ssim_y", "ewarp"}
    assert len(d["per_frame"]["psnr"]) == 5 and len(d["per_frame"]["ewarp"]) == 4
    assert d["psnr"] == pytest.approx(M.psnr(out, ref))
    assert d["ssim_y"] == pytest.approx(M.ssim(out, ref, y_channel=True))
    assert d["ewarp"] == pytest.approx(M.warping_error(out, flow=KnownFlow()).mean() * 1e3)
    # identical clips: infinite PSNR becomes JSON-safe None, E*warp may be skipped
    same = M.evaluate_video(ref, ref.copy(), ewarp=False).to_dict()
    assert same["psnr"] is None and same["ewarp"] is None and same["ssim"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- LPIPS


def test_lpips_without_package_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` fail
    with pytest.raises(ImportError, match="pip install lpips"):
        M.LPIPSMetric(tmp_path / "w.pth")


def _fake_lpips_module() -> types.ModuleType:
    """A stand-in for the lpips package with its module layout (net.slice1.<idx>, lin0)."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.slice1 = torch.nn.Sequential()
            self.slice1.add_module("0", torch.nn.Conv2d(3, 2, 3, padding=1))

    class LPIPS(torch.nn.Module):
        seen: list[tuple[float, float]] = []

        def __init__(self, net="alex", pretrained=True, pnet_rand=False, verbose=True):
            super().__init__()
            assert pnet_rand and not pretrained  # must not try to download anything
            self.net = Net()
            self.lin0 = torch.nn.Conv2d(2, 1, 1, bias=False)

        def forward(self, a, b):
            LPIPS.seen.append((float(a.min()), float(a.max())))
            return self.lin0((self.net.slice1(a) - self.net.slice1(b)) ** 2).mean(dim=(1, 2, 3))

    mod = types.ModuleType("lpips")
    mod.LPIPS = LPIPS
    return mod


def test_lpips_loads_user_weights_and_scores_frames(monkeypatch, tmp_path):
    fake = _fake_lpips_module()
    monkeypatch.setitem(sys.modules, "lpips", fake)
    torch.manual_seed(0)
    full = fake.LPIPS(pretrained=False, pnet_rand=True)
    torch.save(full.state_dict(), tmp_path / "full.pth")
    torch.save({"lin0.weight": full.lin0.weight.detach().abs()}, tmp_path / "lin.pth")
    torch.save({"features.0.weight": full.net.slice1[0].weight, "features.0.bias": full.net.slice1[0].bias},
               tmp_path / "backbone.pth")

    metric = M.LPIPSMetric(tmp_path / "full.pth")
    a = (_texture(16, 16, seed=1)[None] * 255).astype(np.uint8).repeat(2, axis=0)
    b = a.copy()
    b[1] = 255 - b[1]
    scores = metric.frames(a, b)
    assert scores[0] == 0.0 and scores[1] != 0.0
    lo, hi = fake.LPIPS.seen[-1]
    assert -1.0 <= lo < 0.0 < hi <= 1.0  # inputs scaled to [-1, 1]

    with pytest.raises(ValueError, match="backbone"):
        M.LPIPSMetric(tmp_path / "lin.pth")
    with_backbone = M.LPIPSMetric(tmp_path / "lin.pth", backbone=tmp_path / "backbone.pth")
    assert torch.equal(with_backbone.model.net.slice1[0].weight, full.net.slice1[0].weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        M.LPIPSMetric(tmp_path / "missing.pth")

    res = M.evaluate_video(a, b, ewarp=False, lpips=metric)
    assert res.to_dict()["lpips"] == pytest.approx(float(np.mean(scores)))


def test_flow_by_name_goes_through_the_flow_plugin(monkeypatch):
    import uav.registry
    from uav_flow.opencv import DISFlow

    clip = _flicker(_moving_clip(), 0.05)
    plugin_dis = M.resolve_flow_estimator("dis")
    assert isinstance(plugin_dis, DISFlow) and plugin_dis.preset == "medium"  # the registry's, not a copy
    # the default is the same plugin estimator, so the scores are identical
    np.testing.assert_array_equal(M.warping_error(clip), M.warping_error(clip, flow=plugin_dis))

    def no_plugins(kind, name, **options):
        raise uav.registry.UnknownComponentError(f"unknown flow estimator {name!r}; installed: (none)")

    monkeypatch.setattr(uav.registry, "get_component", no_plugins)
    # without the plugin there is no flow at all: one clear error, no private stand-in
    with pytest.raises(ValueError, match="unknown flow estimator 'dis'"):
        M.resolve_flow_estimator("dis")
    with pytest.raises(ValueError, match="raft"):
        M.resolve_flow_estimator("raft")
