"""Evaluation: metrics, degradations and reports (docs/evaluation.md).

One module per concept:

* :mod:`uav.eval.frames`: the frame conventions every metric shares (dtypes, ranges,
  BT.601 Y, border crop);
* :mod:`uav.eval.fidelity`: PSNR and SSIM;
* :mod:`uav.eval.lpips`: LPIPS, through the optional ``lpips`` extra;
* :mod:`uav.eval.ewarp`: E*warp, the flow warping error, with a flow plugin;
* :mod:`uav.eval.video`: :func:`evaluate_video`, all of them for one video;
* :mod:`uav.eval.degrade` (recipe in :mod:`uav.eval.degrade_config`): seeded
  synthetic degradations that make LQ/HQ pairs;
* :mod:`uav.eval.report`: temporal profiles, frame strips, crops and the HTML report.

The metric names are re-exported here (``from uav.eval import psnr``); the
degradation and report modules are imported on their own (they pull in PyAV and
drawing code that scoring does not need).
"""

from __future__ import annotations

from uav.eval.ewarp import EWARP_SCALE, occlusion_mask, resolve_flow_estimator, warp_frame, warping_error
from uav.eval.fidelity import psnr, psnr_frames, ssim, ssim_frames
from uav.eval.frames import rgb_to_y, to_float01, to_uint8
from uav.eval.lpips import LPIPSMetric
from uav.eval.video import VideoMetrics, evaluate_video

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
