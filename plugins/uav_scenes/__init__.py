"""Built-in uav plugin: scene (shot) detectors on PySceneDetect.

Registered through the ``uav`` entry-point group (name ``scenes``) like any
third-party plugin. Each detector is one of PySceneDetect's, fed the frames uav's
reader decodes (downscaled to about 256 pixels wide first, as PySceneDetect's own
scene manager does), and answers the frames where a new scene starts.

* ``adaptive`` (default): a frame's content change against the mean of its
  neighbours' (``threshold`` = that ratio, default 3.0); camera moves and fast
  action, which change every frame, do not read as cuts.
* ``content``: HSV and edge change between two frames (``threshold`` default 27).
* ``threshold``: fades through black (mean brightness, ``threshold`` default 12).
* ``histogram``: YUV histogram change (``threshold`` default 0.05).
* ``hash``: perceptual-hash distance (``threshold`` default 0.395).

Every detector takes ``min_scene`` (frames, default 15: no cut closer than that to
the previous one) and passes other options to the PySceneDetect class unchanged
(``luma_only``, ``window_width``, ``min_content_val`` ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import numpy as np

from uav.registry import hookimpl

#: detector name -> (PySceneDetect class, the keyword ``threshold`` sets)
DETECTORS: dict[str, tuple[str, str]] = {
    "adaptive": ("AdaptiveDetector", "adaptive_threshold"),
    "content": ("ContentDetector", "threshold"),
    "threshold": ("ThresholdDetector", "threshold"),
    "histogram": ("HistogramDetector", "threshold"),
    "hash": ("HashDetector", "threshold"),
}
#: PySceneDetect's default: frames are downscaled to between this and 1.5x this width
DETECTION_WIDTH = 256


class PySceneDetector:
    """One PySceneDetect detector, built fresh for every clip (detectors keep state)."""

    def __init__(self, name: str, *, threshold: float | None = None, min_scene: int = 15,
                 **options: Any) -> None:
        if name not in DETECTORS:
            raise ValueError(f"unknown PySceneDetect detector {name!r}; expected one of {', '.join(DETECTORS)}")
        if isinstance(min_scene, bool) or not isinstance(min_scene, int) or min_scene < 1:
            raise ValueError(f"min_scene must be a whole number of frames >= 1, got {min_scene!r}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not np.isfinite(threshold) or threshold <= 0):
            raise ValueError(f"threshold must be a number > 0, got {threshold!r}")
        self.name = name
        self.threshold = threshold
        self.min_scene = min_scene
        self.options = options
        self._build()  # unknown options fail here, before any frame is read

    def _build(self) -> Any:
        import scenedetect.detectors as sd

        cls_name, threshold_key = DETECTORS[self.name]
        kwargs: dict[str, Any] = {"min_scene_len": self.min_scene, **self.options}
        if self.threshold is not None:
            kwargs[threshold_key] = float(self.threshold)
        try:
            return getattr(sd, cls_name)(**kwargs)
        except TypeError as exc:
            raise ValueError(f"scene detector {self.name!r}: {exc}") from None

    def __call__(self, frames: Iterable[np.ndarray], fps: Fraction) -> list[int]:
        """The indices of the frames that start a new scene (never 0)."""
        from scenedetect import FrameTimecode

        detector = self._build()
        rate = Fraction(fps)
        cuts: list[Any] = []
        last = None
        for index, frame in enumerate(frames):
            position = FrameTimecode(index, fps=rate)
            cuts += detector.process_frame(position, _small_bgr(frame))
            last = position
        if last is not None:
            cuts += detector.post_process(last)
        return sorted({c.frame_num for c in cuts if c.frame_num > 0})

    def __repr__(self) -> str:
        return f"PySceneDetector({self.name!r}, threshold={self.threshold}, min_scene={self.min_scene})"


def _small_bgr(frame: np.ndarray) -> np.ndarray:
    """``frame`` as 8-bit BGR about :data:`DETECTION_WIDTH` wide (what the detectors expect)."""
    import cv2

    array = np.asarray(frame)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    height, width = array.shape[:2]
    factor = width // DETECTION_WIDTH
    if factor > 1:
        array = cv2.resize(array, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(array[:, :, ::-1])


def _factory(name: str) -> Any:
    def make(**options: Any) -> PySceneDetector:
        return PySceneDetector(name, **options)

    cls_name, key = DETECTORS[name]
    make.__name__ = name
    make.__doc__ = (f"PySceneDetect {cls_name}; options: threshold (its {key}), min_scene (frames, default 15), "
                    f"and the class's own keywords.")
    return make


@hookimpl
def register_scene_detectors(register: Any) -> None:
    """Register ``adaptive`` (the default), ``content``, ``threshold``, ``histogram`` and ``hash``."""
    for name in DETECTORS:
        register(name, _factory(name))
