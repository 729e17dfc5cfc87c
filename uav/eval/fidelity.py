"""Fidelity to the reference: PSNR and SSIM, on RGB or on the BT.601 Y channel.

* **PSNR** is computed on the ``[0, 255]`` scale, ``10 log10(255^2 / MSE)`` with
  the MSE taken over all pixels and channels of one frame; a video's PSNR is the
  mean of its per-frame values (the video-SR literature's convention). Identical
  frames give ``inf``.
* **SSIM** is Wang et al.'s SSIM with an 11x11 Gaussian window (sigma 1.5),
  ``K1 = 0.01``, ``K2 = 0.03``, dynamic range 255, evaluated only where the whole
  window fits (no padding); for RGB it is the mean over the three channels.

Frame conventions (dtypes, ranges, ``crop_border``) are those of :mod:`uav.eval.frames`.
"""

from __future__ import annotations

import cv2
import numpy as np

from uav.eval.frames import per_frame

__all__ = ["psnr", "ssim", "psnr_frames", "ssim_frames"]

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2


def _psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-300)))


def psnr_frames(
    output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """Per-frame PSNR in dB (float64 array of length T; a single frame gives length 1).

    Args:
        output, reference: frames of identical shape ``(T, H, W, 3)`` or ``(H, W, 3)``.
        crop_border: pixels removed from every side before scoring.
        y_channel: score the BT.601 Y channel instead of RGB.
    """
    mse = per_frame(output, reference, lambda a, b: float(np.mean((a - b) ** 2)), crop_border=crop_border,
                    y_channel=y_channel)
    return _psnr_from_mse(mse)


def psnr(output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB; for a clip, the mean of the per-frame PSNRs. See :func:`psnr_frames`."""
    return float(np.mean(psnr_frames(output, reference, crop_border=crop_border, y_channel=y_channel)))


def _gaussian_window() -> np.ndarray:
    r = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2.0
    g = np.exp(-(r**2) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


def _ssim_map_channel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map of two float64 (H, W) images on [0, 255], 'valid' region only."""
    g = _gaussian_window()
    pad = _SSIM_WINDOW // 2

    def blur(x: np.ndarray) -> np.ndarray:
        # The border mode does not matter: only fully supported positions are kept.
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT_101)[pad:-pad, pad:-pad]

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_a**2 + mu_b**2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return num / den


def _ssim_of_frame(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two prepared frames (H, W, C): the mean over channels of the mean SSIM map."""
    if min(a.shape[0], a.shape[1]) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs frames of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after cropping; "
            f"got {a.shape[0]}x{a.shape[1]}"
        )
    channels = [
        np.mean(_ssim_map_channel(np.ascontiguousarray(a[:, :, c]), np.ascontiguousarray(b[:, :, c])))
        for c in range(a.shape[2])
    ]
    return float(np.mean(channels))


def ssim_frames(
    output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """Per-frame SSIM (float64 array of length T), arguments as :func:`psnr_frames` takes them
    (with ``y_channel`` false: the mean over R, G and B). Frames must be at least 11x11 after cropping."""
    return per_frame(output, reference, _ssim_of_frame, crop_border=crop_border, y_channel=y_channel)


def ssim(output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM; for a clip, the mean of the per-frame values. See :func:`ssim_frames`."""
    return float(np.mean(ssim_frames(output, reference, crop_border=crop_border, y_channel=y_channel)))
