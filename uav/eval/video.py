"""One video against its reference: every metric at once, as ``uav eval`` reports it.

:func:`evaluate_video` computes PSNR and SSIM (RGB and Y, :mod:`uav.eval.fidelity`),
E*warp (:mod:`uav.eval.ewarp`) and optionally LPIPS (:mod:`uav.eval.lpips`), and
returns a :class:`VideoMetrics` whose ``to_dict()`` is the ``--json`` document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from uav.eval.ewarp import EWARP_SCALE, warping_error
from uav.eval.fidelity import psnr_frames, ssim_frames
from uav.eval.frames import check_frames
from uav.eval.lpips import LPIPSMetric
from uav.protocols import FlowEstimator

__all__ = ["VideoMetrics", "evaluate_video"]


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
        keys = ["psnr", "psnr_y", "ssim", "ssim_y", "ewarp"]
        if include_lpips or (include_lpips is None and self.lpips is not None):
            keys.append("lpips")
        d: dict[str, Any] = {k: _finite_or_none(getattr(self, k)) for k in keys}
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
    check_frames(output, "output")
    check_frames(reference, "reference")
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
