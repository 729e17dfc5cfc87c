"""Weight-free optical flow through OpenCV: DIS and Farnebäck.

Flows are computed on 8-bit luma at the frames' own size, then resized to the
requested size with the vectors rescaled per axis. They follow the RAFT convention
the pipeline expects: ``forward[k]`` satisfies ``frame_k(p) ≈ frame_{k+1}(p + f(p))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .common import check_frames, check_size, stack_flows, to_gray_uint8

Tensor = torch.Tensor

__all__ = ["DISFlow", "FarnebackFlow"]

_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a declared dependency
        raise ImportError("the 'dis' and 'farneback' flow estimators need opencv-python(-headless)") from exc
    return cv2


class _OpenCVFlow:
    """Runs a two-frame OpenCV flow function over neighbouring frame pairs."""

    def _pair(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, frames: Tensor, *, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Forward and backward flows ``(1, 2, T-1, h, w)`` of a ``(T, 3, H, W)`` clip in [-1, 1]."""
        frames = check_frames(frames)
        out_size = check_size(size, (int(frames.shape[2]), int(frames.shape[3])))
        gray = to_gray_uint8(frames)
        forward, backward = [], []
        for k in range(gray.shape[0] - 1):
            forward.append(torch.from_numpy(self._pair(gray[k], gray[k + 1])).permute(2, 0, 1))
            backward.append(torch.from_numpy(self._pair(gray[k + 1], gray[k])).permute(2, 0, 1))
        return stack_flows(forward, out_size, frames.device), stack_flows(backward, out_size, frames.device)


class DISFlow(_OpenCVFlow):
    """OpenCV's Dense Inverse Search flow (Kroeger et al., ECCV 2016).

    Args:
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"`` (default; the most accurate).
        variational_refinement_iterations: override the preset's refinement
            iterations (``None`` keeps the preset's).
    """

    def __init__(self, preset: str = "medium", *, variational_refinement_iterations: int | None = None) -> None:
        if preset not in _DIS_PRESETS:
            raise ValueError(f"preset must be one of {sorted(_DIS_PRESETS)}, got {preset!r}")
        if variational_refinement_iterations is not None and (
            not isinstance(variational_refinement_iterations, int) or variational_refinement_iterations < 0
        ):
            raise ValueError(
                "variational_refinement_iterations must be None or an int >= 0, "
                f"got {variational_refinement_iterations!r}"
            )
        self.preset = preset
        self.variational_refinement_iterations = variational_refinement_iterations

    def _make(self) -> Any:
        # DIS objects keep state between calls; a fresh one per pair keeps calls independent.
        dis = _cv2().DISOpticalFlow_create(_DIS_PRESETS[self.preset])
        if self.variational_refinement_iterations is not None:
            dis.setVariationalRefinementIterations(self.variational_refinement_iterations)
        return dis

    #: DIS refuses frames this small (OpenCV needs a side >= 12); smaller ones are enlarged first
    min_side = 16

    def _pair(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        h, w = first.shape
        factor = -(-self.min_side // min(h, w)) if min(h, w) < self.min_side else 1
        if factor == 1:
            return self._make().calc(first, second, None)
        cv2 = _cv2()
        size = (w * factor, h * factor)
        big = [cv2.resize(img, size, interpolation=cv2.INTER_LINEAR) for img in (first, second)]
        flow = self._make().calc(big[0], big[1], None)
        # back to the frames' grid: average the vectors over each block, in the small grid's pixels
        small = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA)
        return (small / factor).astype(np.float32)

    def __repr__(self) -> str:
        return f"DISFlow(preset={self.preset!r})"


class FarnebackFlow(_OpenCVFlow):
    """OpenCV's Farnebäck polynomial-expansion flow.

    The arguments are those of ``cv2.calcOpticalFlowFarneback``; the defaults suit
    low-resolution video (a 5-level pyramid, 15 px windows).
    """

    def __init__(
        self,
        *,
        pyr_scale: float = 0.5,
        levels: int = 5,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
    ) -> None:
        if not 0.0 < pyr_scale < 1.0:
            raise ValueError(f"pyr_scale must lie in (0, 1), got {pyr_scale!r}")
        for name, value in (("levels", levels), ("winsize", winsize), ("iterations", iterations)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if poly_n not in (5, 7):
            raise ValueError(f"poly_n must be 5 or 7, got {poly_n!r}")
        self.params = dict(pyr_scale=float(pyr_scale), levels=levels, winsize=winsize,
                           iterations=iterations, poly_n=poly_n, poly_sigma=float(poly_sigma), flags=0)

    def _pair(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return _cv2().calcOpticalFlowFarneback(first, second, None, **self.params)

    def __repr__(self) -> str:
        return f"FarnebackFlow({self.params})"
