"""Quality and temporal-consistency metrics for upscaled videos.

Conventions used throughout this module:

* **Frames** are numpy arrays, either one frame ``(H, W, 3)`` or a clip
  ``(T, H, W, 3)``, RGB channel order. ``uint8`` frames span ``[0, 255]``,
  ``uint16`` frames span ``[0, 65535]`` and floating-point frames span
  ``[0, 1]`` (values a hair outside are clipped; anything clearly outside is an
  error, because it usually means ``[0, 255]`` floats were passed).
* **PSNR** is computed on the ``[0, 255]`` scale, ``10 log10(255^2 / MSE)`` with
  the MSE taken over all pixels and channels of one frame; a video's PSNR is the
  mean of its per-frame values (the video-SR literature's convention). Identical
  frames give ``inf``.
* **Y channel** is ITU-R BT.601 luma as MATLAB's ``rgb2ycbcr`` computes it:
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in ``[0, 1]``,
  kept as a float in ``[16, 235]`` (not rounded), then scored on the ``[0, 255]``
  scale.
* **SSIM** is Wang et al.'s SSIM with an 11x11 Gaussian window (sigma 1.5),
  ``K1 = 0.01``, ``K2 = 0.03``, dynamic range 255, evaluated only where the whole
  window fits (no padding); for RGB it is the mean over the three channels.
* ``crop_border`` removes that many pixels from every side before scoring (the
  literature usually crops ``scale`` pixels); it is 0 by default.
* **E*warp** (flow warping error, Lai et al., ECCV 2018) is defined in
  :func:`warping_error`; videos report it multiplied by 1000 ("x 10^-3"), like
  the Upscale-A-Video paper.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from uav.protocols import FlowEstimator

__all__ = [
    "EWARP_SCALE",
    "VideoMetrics",
    "LPIPSMetric",
    "to_float01",
    "to_uint8",
    "rgb_to_y",
    "psnr",
    "ssim",
    "psnr_frames",
    "ssim_frames",
    "resolve_flow_estimator",
    "occlusion_mask",
    "warp_frame",
    "warping_error",
    "evaluate_video",
]

#: E*warp is reported multiplied by this factor ("x 10^-3").
EWARP_SCALE = 1e3

_FLOAT_TOLERANCE = 1e-3
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
_BT601_Y = np.array([65.481, 128.553, 24.966], dtype=np.float64)


# --------------------------------------------------------------------------- conversion


def _check_frames(frames: Any, name: str) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        raise TypeError(
            f"{name}: expected a numpy array (T, H, W, 3) or (H, W, 3); got a torch tensor "
            "(convert with .permute(...).cpu().numpy() first)"
        )
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array; got {type(frames).__name__}")
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (T, H, W, 3) or (H, W, 3); got {frames.shape}")
    if frames.dtype == np.bool_ or not (
        np.issubdtype(frames.dtype, np.floating) or frames.dtype in (np.uint8, np.uint16)
    ):
        raise TypeError(f"{name}: expected dtype uint8, uint16 or float; got {frames.dtype}")
    if frames.size == 0:
        raise ValueError(f"{name}: empty array of shape {frames.shape}")
    return frames


def _to_255(frames: np.ndarray, name: str) -> np.ndarray:
    """float64 copy of ``frames`` on the [0, 255] scale (exact for uint8)."""
    frames = _check_frames(frames, name)
    if frames.dtype == np.uint8:
        return frames.astype(np.float64)
    if frames.dtype == np.uint16:
        return frames.astype(np.float64) * (255.0 / 65535.0)
    return to_float01(frames, name=name, dtype=np.float64) * 255.0


def to_float01(frames: np.ndarray, *, name: str = "frames", dtype: Any = np.float32) -> np.ndarray:
    """Convert frames (uint8, uint16 or float in ``[0, 1]``) to floats in ``[0, 1]``.

    Args:
        frames: ``(T, H, W, 3)`` or ``(H, W, 3)`` RGB frames.
        name: the argument name used in error messages.
        dtype: the floating-point dtype of the result.

    Raises:
        ValueError: float input clearly outside ``[0, 1]`` (more than 1e-3 off), or
            contains NaN/inf.
    """
    frames = _check_frames(frames, name)
    if frames.dtype == np.uint8:
        return frames.astype(dtype) / dtype(255.0)
    if frames.dtype == np.uint16:
        return frames.astype(dtype) / dtype(65535.0)
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{name}: float frames contain NaN or infinite values")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
        raise ValueError(
            f"{name}: float frames must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}] "
            "(pass uint8 for [0, 255] data)"
        )
    return np.clip(frames, 0.0, 1.0).astype(dtype)


def to_uint8(frames: np.ndarray, *, name: str = "frames") -> np.ndarray:
    """Convert frames (uint8, uint16 or float in ``[0, 1]``) to uint8 with rounding."""
    frames = _check_frames(frames, name)
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.rint(to_float01(frames, name=name, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def rgb_to_y(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB frames on the ``[0, 255]`` scale (values in ``[16, 235]``).

    Matches MATLAB's ``rgb2ycbcr`` (and BasicSR's ``rgb2ycbcr(..., y_only=True)``)
    without the final rounding to integers. Returns float64 of shape ``frames.shape[:-1]``.
    """
    rgb01 = _to_255(frames, "frames") / 255.0
    return rgb01 @ _BT601_Y + 16.0


def _prepare_pair(
    a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """[0, 255] float64 copies of ``a`` and ``b``, cropped, as (..., H, W, C) (C=1 for Y)."""
    _check_frames(a, names[0])
    _check_frames(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape; got {a.shape} and {b.shape}")
    if not isinstance(crop_border, (int, np.integer)) or isinstance(crop_border, bool) or crop_border < 0:
        raise ValueError(f"crop_border: expected an integer >= 0; got {crop_border!r}")
    h, w = a.shape[-3], a.shape[-2]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border: {crop_border} removes the whole {h}x{w} frame")
    if y_channel:
        xa, xb = rgb_to_y(a)[..., None], rgb_to_y(b)[..., None]
    else:
        xa, xb = _to_255(a, names[0]), _to_255(b, names[1])
    if crop_border:
        xa = xa[..., crop_border:-crop_border, crop_border:-crop_border, :]
        xb = xb[..., crop_border:-crop_border, crop_border:-crop_border, :]
    return xa, xb


# --------------------------------------------------------------------------- PSNR / SSIM


def _pair_clips(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs checked, of equal shape, as clips (a single frame becomes T=1)."""
    _check_frames(output, "output")
    _check_frames(reference, "reference")
    if output.shape != reference.shape:
        raise ValueError(f"output and reference must have the same shape; got {output.shape} and {reference.shape}")
    if output.ndim == 3:
        return output[None], reference[None]
    return output, reference


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
    a, b = _pair_clips(output, reference)
    # Frame by frame: float64 copies of a whole high-resolution clip would be huge.
    mse = np.empty(a.shape[0], dtype=np.float64)
    for t in range(a.shape[0]):
        xa, xb = _prepare_pair(a[t], b[t], crop_border, y_channel, ("output", "reference"))
        mse[t] = np.mean((xa - xb) ** 2)
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


def ssim_frames(
    output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """Per-frame SSIM (float64 array of length T). Frames must be at least 11x11 after cropping.

    Args:
        output, reference: frames of identical shape ``(T, H, W, 3)`` or ``(H, W, 3)``.
        crop_border: pixels removed from every side before scoring.
        y_channel: score the BT.601 Y channel instead of the mean over R, G and B.
    """
    a, b = _pair_clips(output, reference)
    out = np.empty(a.shape[0], dtype=np.float64)
    for t in range(a.shape[0]):
        xa, xb = _prepare_pair(a[t], b[t], crop_border, y_channel, ("output", "reference"))
        if min(xa.shape[0], xa.shape[1]) < _SSIM_WINDOW:
            raise ValueError(
                f"SSIM needs frames of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after cropping; "
                f"got {xa.shape[0]}x{xa.shape[1]}"
            )
        channels = [
            np.mean(_ssim_map_channel(np.ascontiguousarray(xa[:, :, c]), np.ascontiguousarray(xb[:, :, c])))
            for c in range(xa.shape[2])
        ]
        out[t] = float(np.mean(channels))
    return out


def ssim(output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM; for a clip, the mean of the per-frame values. See :func:`ssim_frames`."""
    return float(np.mean(ssim_frames(output, reference, crop_border=crop_border, y_channel=y_channel)))


# --------------------------------------------------------------------------- LPIPS


class LPIPSMetric:
    """LPIPS (Zhang et al., CVPR 2018) through the optional ``lpips`` package.

    No weights are downloaded: the caller supplies them.

    Args:
        weights: a file saved with ``torch.save(lpips.LPIPS(net=net).state_dict(), path)``
            (backbone and linear layers together), or the ``lpips`` package's own
            linear-layer file (e.g. ``lpips/weights/v0.1/alex.pth``) together with
            ``backbone``.
        net: ``"alex"`` (the usual choice), ``"vgg"`` or ``"squeeze"``.
        backbone: a torchvision state dict of the matching backbone
            (e.g. ``alexnet-owt-7be5be79.pth``); needed only when ``weights`` lacks it.
        device: where to run the network.

    Raises:
        ImportError: the ``lpips`` package is not installed.
        FileNotFoundError: a weights file does not exist.
        ValueError: the weights do not fit the network.
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        net: str = "alex",
        backbone: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        try:
            import lpips  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ImportError(
                "LPIPS needs the optional package 'lpips' (pip install lpips) and a weights file "
                "you supply; it is not installed"
            ) from exc
        if net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"net: expected 'alex', 'vgg' or 'squeeze'; got {net!r}")
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"LPIPS weights: no such file {str(weights)!r}")
        # pnet_rand/pretrained=False keep lpips from downloading anything itself.
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        state = _load_state_dict(weights)
        if backbone is not None:
            backbone = Path(backbone)
            if not backbone.is_file():
                raise FileNotFoundError(f"LPIPS backbone: no such file {str(backbone)!r}")
            state = {**_map_backbone_keys(model, _load_state_dict(backbone)), **state}
        expected = set(model.state_dict())
        missing = sorted(k for k in expected if k not in state)
        if missing:
            if all(k.startswith("net.") for k in missing):
                raise ValueError(
                    f"LPIPS weights {str(weights)!r} hold no '{net}' backbone; pass the torchvision "
                    "backbone weights as backbone=... (--lpips-backbone) or save a full "
                    "lpips.LPIPS(...).state_dict()"
                )
            raise ValueError(f"LPIPS weights {str(weights)!r} do not fit net={net!r}; missing {missing[:4]}")
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def frames(self, output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0) -> np.ndarray:
        """Per-frame LPIPS distance (lower is better), float64 array of length T."""
        a, b = _pair_clips(output, reference)
        out = np.empty(a.shape[0], dtype=np.float64)
        for t in range(a.shape[0]):
            xa, xb = _prepare_pair(a[t], b[t], crop_border, False, ("output", "reference"))
            ta = torch.from_numpy(xa / 127.5 - 1.0).permute(2, 0, 1)[None].float().to(self.device)
            tb = torch.from_numpy(xb / 127.5 - 1.0).permute(2, 0, 1)[None].float().to(self.device)
            out[t] = float(self.model(ta, tb).mean())
        return out


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict")
    return state


def _map_backbone_keys(model: torch.nn.Module, backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision ``features.<i>.*`` keys to lpips' ``net.slice<k>.<i>.*``.

    lpips keeps torchvision's layer index as the child name inside each slice, so
    the mapping can be read off the model itself.
    """
    where: dict[str, str] = {}
    for slice_name, child in model.net.named_children():
        for idx, _ in child.named_children():
            where[idx] = f"net.{slice_name}.{idx}"
    mapped = {}
    for key, value in backbone.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "features" and parts[1] in where:
            mapped[f"{where[parts[1]]}.{parts[2]}"] = value
    return mapped


# --------------------------------------------------------------------------- flow


class _DISFlow:
    """OpenCV DIS flow (PRESET_MEDIUM on grayscale uint8), following :class:`FlowEstimator`.

    A private stand-in so metrics work without the plugin system.
    """

    def __call__(self, frames: torch.Tensor, *, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 2:
            raise ValueError(f"frames: expected (T>=2, 3, H, W); got {tuple(frames.shape)}")
        rgb = ((frames.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        gray = [cv2.cvtColor(np.ascontiguousarray(f.permute(1, 2, 0).numpy()), cv2.COLOR_RGB2GRAY) for f in rgb]
        # A fresh DIS object per pair: it keeps internal state between calls.
        def calc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)

        fw = [calc(gray[k], gray[k + 1]) for k in range(len(gray) - 1)]
        bw = [calc(gray[k + 1], gray[k]) for k in range(len(gray) - 1)]
        H, W = gray[0].shape
        return _stack_flows(fw, H, W, size), _stack_flows(bw, H, W, size)


def _stack_flows(flows: list[np.ndarray], H: int, W: int, size: tuple[int, int] | None) -> torch.Tensor:
    if size is not None and tuple(size) != (H, W):
        h, w = size
        flows = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) * np.array([w / W, h / H], np.float32) for f in flows]
    arr = np.stack(flows, axis=0).transpose(3, 0, 1, 2)[None]  # (1, 2, T-1, h, w)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def resolve_flow_estimator(flow: str | FlowEstimator | None = None, **options: Any) -> FlowEstimator:
    """Turn a flow choice into an estimator object.

    Args:
        flow: ``None`` (DIS), a name registered by a flow plugin (``"dis"``,
            ``"farneback"``, ``"raft"``, ...; see ``uav plugins``), or an object
            following :class:`uav.protocols.FlowEstimator`, returned as it is.
        options: passed to the plugin's factory when ``flow`` is a name (e.g.
            ``weights=`` and ``device=`` for ``raft``).

    Without the plugin system (or with the flow plugin blocked), ``"dis"`` still
    works through a private OpenCV DIS estimator.

    Raises:
        ValueError: unknown name (the message lists the installed ones).
        TypeError: neither a name nor a callable.
    """
    if flow is None:
        flow = "dis"
    if isinstance(flow, str):
        try:
            from uav.registry import get_component  # noqa: PLC0415 - keeps metrics importable alone
        except ImportError:
            get_component = None
        if get_component is not None:
            try:
                return get_component("flow", flow, **options)
            except KeyError as exc:  # UnknownComponentError is a KeyError and a ValueError
                if flow.strip().lower() != "dis":
                    raise ValueError(f"flow: {exc}") from None
        if flow.strip().lower() == "dis":
            return _DISFlow()
        raise ValueError(f"flow: unknown flow estimator {flow!r}; available without plugins: dis")
    if options:
        raise TypeError("flow: options can only be given when the estimator is selected by name")
    if callable(flow):
        return flow  # type: ignore[return-value]
    raise TypeError(f"flow: expected a name or a FlowEstimator object; got {type(flow).__name__}")


def _chunk_flows(
    estimator: FlowEstimator, frames: np.ndarray, size: tuple[int, int], chunk: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_pair, forward, backward)`` per chunk, flows ``(n, h, w, 2)`` float32.

    Chunks overlap by one frame so every neighbouring pair is seen exactly once;
    only one chunk's frames and flows are held at a time, which keeps memory
    bounded for long high-resolution clips.
    """
    T = frames.shape[0]
    start = 0
    while start < T - 1:
        stop = min(T, start + chunk)
        sub01 = to_float01(frames[start:stop], name="flow frames")
        sub = torch.from_numpy(np.ascontiguousarray(sub01.transpose(0, 3, 1, 2))) * 2.0 - 1.0
        result = estimator(sub, size=size)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise ValueError("flow estimator: expected a (forward, backward) tuple")
        out = []
        for flows, label in ((result[0], "forward"), (result[1], "backward")):
            shape = (1, 2, stop - start - 1, size[0], size[1])
            if not isinstance(flows, torch.Tensor) or tuple(flows.shape) != shape:
                got = tuple(flows.shape) if isinstance(flows, torch.Tensor) else type(flows).__name__
                raise ValueError(f"flow estimator: {label} flow should have shape {shape}; got {got}")
            out.append(flows[0].detach().float().cpu().numpy().transpose(1, 2, 3, 0))
        yield start, out[0], out[1]
        start = stop - 1


# --------------------------------------------------------------------------- E*warp


def warp_frame(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp ``image`` (H, W[, C]) float32 with ``flow`` (H, W, 2): sample at ``p + flow(p)``.

    Bilinear, with samples outside the frame clamped to the border.
    """
    H, W = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32),
        gx + flow[..., 0].astype(np.float32),
        gy + flow[..., 1].astype(np.float32),
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Occluded pixels of frame t from the flows t->t+1 (``forward``) and t+1->t (``backward``).

    Both flows are (H, W, 2). A pixel p is occluded (True) when the
    forward-backward check fails,
    ``|f(p) + b(p + f(p))|^2 > 0.01 (|f(p)|^2 + |b(p + f(p))|^2) + 0.5``,
    or when it lies on a motion boundary, ``|grad f(p)|^2 > 0.01 |f(p)|^2 + 0.002``
    (Sundaram et al. 2010, as used by Lai et al. 2018 for the warping error).
    """
    b_at = warp_frame(backward, forward)
    f2 = np.sum(forward.astype(np.float64) ** 2, axis=-1)
    b2 = np.sum(b_at.astype(np.float64) ** 2, axis=-1)
    inconsistent = np.sum((forward + b_at).astype(np.float64) ** 2, axis=-1) > 0.01 * (f2 + b2) + 0.5
    du = np.zeros_like(forward, dtype=np.float64)
    dv = np.zeros_like(forward, dtype=np.float64)
    du[:, :-1] = forward[:, :-1] - forward[:, 1:]
    dv[:-1, :] = forward[:-1, :] - forward[1:, :]
    boundary = np.sum(du**2 + dv**2, axis=-1) > 0.01 * f2 + 0.002
    return inconsistent | boundary


def warping_error(
    frames: np.ndarray,
    *,
    flow: str | FlowEstimator | None = None,
    flow_frames: np.ndarray | None = None,
    chunk: int = 16,
) -> np.ndarray:
    """Per-pair flow warping error of a clip (raw, not multiplied by 1000).

    For each pair ``(t, t+1)``, with ``f`` the flow t->t+1 and ``M_t`` the
    non-occluded pixels of frame t (:func:`occlusion_mask`), the error is::

        E_t = sum_p M_t(p) ||V_t(p) - W(V_{t+1})(p)||^2 / (3 * sum_p M_t(p))

    where ``W(V_{t+1})(p) = V_{t+1}(p + f(p))`` (bilinear) and pixel values are in
    ``[0, 1]``. The division by 3 averages over the colour channels, as Lai et
    al.'s reference evaluation does (their mask is stored per channel). A pair with
    no valid pixel scores 0, as there. E_warp of the clip is the mean of ``E_t``.

    Args:
        frames: the clip to score, ``(T, H, W, 3)`` with ``T >= 2``.
        flow: the flow estimator (see :func:`resolve_flow_estimator`); DIS by default.
        flow_frames: the clip the flow is estimated on (e.g. the ground truth);
            ``frames`` itself by default. It must have the same length; its spatial
            size may differ (flows are returned at the size of ``frames``).
        chunk: how many frames the estimator sees at once (>= 2).

    Returns:
        float64 array of length ``T - 1``.
    """
    _check_frames(frames, "frames")
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"frames: the warping error needs a clip (T>=2, H, W, 3); got shape {frames.shape}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2:
        raise ValueError(f"chunk: expected an integer >= 2; got {chunk!r}")
    src = frames if flow_frames is None else _check_frames(flow_frames, "flow_frames")
    if src.ndim != 4 or src.shape[0] != frames.shape[0]:
        raise ValueError(f"flow_frames: expected {frames.shape[0]} frames (T, H, W, 3); got shape {src.shape}")
    estimator = resolve_flow_estimator(flow)
    H, W = frames.shape[1:3]
    errors = np.empty(frames.shape[0] - 1, dtype=np.float64)
    # Frames are converted one at a time: a float copy of a whole 4K clip would not fit.
    for first, fw, bw in _chunk_flows(estimator, src, (H, W), chunk):
        for k in range(fw.shape[0]):
            t = first + k
            valid = ~occlusion_mask(fw[k], bw[k])
            n = int(valid.sum())
            if n == 0:
                errors[t] = 0.0
                continue
            cur = to_float01(frames[t], name="frames", dtype=np.float64)
            nxt = warp_frame(to_float01(frames[t + 1], name="frames"), fw[k]).astype(np.float64)
            errors[t] = float(np.sum(np.sum((cur - nxt) ** 2, axis=-1)[valid]) / (3.0 * n))
    return errors


# --------------------------------------------------------------------------- video summary


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


@dataclass
class VideoMetrics:
    """Metrics of one video against its reference.

    ``psnr``/``psnr_y`` are in dB, ``ssim``/``ssim_y`` in [0, 1] (means over frames),
    ``ewarp`` is E*warp x 10^-3 (``None`` when not computed or T < 2) and ``lpips``
    is ``None`` unless requested. ``per_frame`` maps each computed metric name to its
    per-frame list; ``per_frame["ewarp"]`` has ``T - 1`` entries (pair ``k, k+1``).
    """

    psnr: float
    psnr_y: float
    ssim: float
    ssim_y: float
    ewarp: float | None = None
    lpips: float | None = None
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    frames: int = 0
    crop_border: int = 0

    def to_dict(self, *, include_lpips: bool | None = None) -> dict[str, Any]:
        """A JSON-ready dict with keys ``psnr, psnr_y, ssim, ssim_y, ewarp, per_frame``
        (plus ``lpips`` when it was computed, or when ``include_lpips`` is True).
        Non-finite numbers (the PSNR of identical frames) become ``None``."""
        d: dict[str, Any] = {
            "psnr": _finite_or_none(self.psnr),
            "psnr_y": _finite_or_none(self.psnr_y),
            "ssim": _finite_or_none(self.ssim),
            "ssim_y": _finite_or_none(self.ssim_y),
            "ewarp": _finite_or_none(self.ewarp),
        }
        if include_lpips or (include_lpips is None and self.lpips is not None):
            d["lpips"] = _finite_or_none(self.lpips)
        d["per_frame"] = {k: [_finite_or_none(x) for x in v] for k, v in self.per_frame.items()}
        return d


def _finite_or_none(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def evaluate_video(
    output: np.ndarray,
    reference: np.ndarray,
    *,
    crop_border: int = 0,
    ewarp: bool = True,
    flow: str | FlowEstimator | None = None,
    flow_on: Literal["output", "reference"] = "output",
    lpips: LPIPSMetric | None = None,
) -> VideoMetrics:
    """Score ``output`` against ``reference`` with PSNR, SSIM (RGB and Y), E*warp and optionally LPIPS.

    Args:
        output, reference: clips ``(T, H, W, 3)`` of identical shape.
        crop_border: pixels removed from every side for PSNR, SSIM and LPIPS
            (E*warp always uses the whole frame).
        ewarp: compute E*warp of ``output`` (needs ``T >= 2``).
        flow: flow estimator for E*warp (name or object); DIS by default.
        flow_on: estimate the flow on the ``"output"`` itself or on the ``"reference"``.
        lpips: an :class:`LPIPSMetric` to also compute LPIPS.
    """
    _check_frames(output, "output")
    _check_frames(reference, "reference")
    if output.ndim == 3:
        output, reference = output[None], reference[None]
    if output.shape != reference.shape:
        raise ValueError(f"output and reference must have the same shape; got {output.shape} and {reference.shape}")
    if flow_on not in ("output", "reference"):
        raise ValueError(f"flow_on: expected 'output' or 'reference'; got {flow_on!r}")
    per: dict[str, np.ndarray] = {
        "psnr": psnr_frames(output, reference, crop_border=crop_border),
        "psnr_y": psnr_frames(output, reference, crop_border=crop_border, y_channel=True),
        "ssim": ssim_frames(output, reference, crop_border=crop_border),
        "ssim_y": ssim_frames(output, reference, crop_border=crop_border, y_channel=True),
    }
    ewarp_value: float | None = None
    if ewarp and output.shape[0] >= 2:
        errs = warping_error(output, flow=flow, flow_frames=reference if flow_on == "reference" else None)
        per["ewarp"] = errs * EWARP_SCALE
        ewarp_value = _mean(per["ewarp"])
    lpips_value: float | None = None
    if lpips is not None:
        per["lpips"] = lpips.frames(output, reference, crop_border=crop_border)
        lpips_value = _mean(per["lpips"])
    return VideoMetrics(
        psnr=_mean(per["psnr"]),
        psnr_y=_mean(per["psnr_y"]),
        ssim=_mean(per["ssim"]),
        ssim_y=_mean(per["ssim_y"]),
        ewarp=ewarp_value,
        lpips=lpips_value,
        per_frame={k: [float(x) for x in v] for k, v in per.items()},
        frames=int(output.shape[0]),
        crop_border=int(crop_border),
    )
