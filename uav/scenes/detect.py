"""Scenes of a clip: what a scene is, and finding the cuts with a ``scenes`` plugin.

A :class:`Scene` is a frame range of the source (``end`` exclusive, frames counted
from the file's first frame) with a name and the per-shot settings that apply to it
alone. :func:`detect_scenes` decodes the clip with :mod:`uav.io` and asks a
registered scene detector (kind ``scenes``; the built-ins wrap PySceneDetect, see
:mod:`uav_scenes`) where new scenes start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_MIN_SCENE",
    "Scene",
    "SceneError",
    "detect_cuts",
    "detect_scenes",
    "scene_names",
    "scenes_from_cuts",
    "timecode_of",
]

#: the detector ``--scenes auto`` and ``uav scenes`` use unless told otherwise
DEFAULT_DETECTOR = "adaptive"
#: the shortest scene detection makes, in frames (PySceneDetect's default)
DEFAULT_MIN_SCENE = 15


class SceneError(ValueError):
    """A scene list that cannot be used (gaps, overlaps, a bad file); one line for the user."""


@dataclass(frozen=True)
class Scene:
    """Frames ``[start, end)`` of the source, upscaled as a clip of their own.

    Attributes:
        index: 1-based position in the scene list.
        start, end: frame indices of the source file (``end`` exclusive).
        name: the scene's name (``scene 001``, or the clip name a file gave it).
        settings: the per-shot settings (shot-list spelling: ``prompt``, ``noise_level``,
            ``steps`` ...) that apply to this scene only; empty for detected scenes.
    """

    index: int
    start: int
    end: int
    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_dict(self, fps: Fraction | None = None, start_timecode: str | None = None) -> dict[str, Any]:
        """The JSON row ``uav scenes --json`` prints (timecodes where the rate has them)."""
        row: dict[str, Any] = {"index": self.index, "name": self.name, "start": self.start, "end": self.end,
                               "frames": self.frames}
        if fps is not None:
            row["start_timecode"] = timecode_of(self.start, fps, start_timecode)
            row["end_timecode"] = timecode_of(self.end, fps, start_timecode)
            row["start_seconds"] = round(float(self.start / Fraction(fps)), 6)
        if self.settings:
            row["settings"] = dict(self.settings)
        return row


def timecode_of(frame: int, fps: Fraction, start_timecode: str | None = None) -> str | None:
    """The timecode of source frame ``frame`` (from the source's start timecode, else 00:00:00:00);
    ``None`` at rates SMPTE timecode does not count."""
    from uav.io.timecode import offset_timecode, timecode_rate_supported

    if not timecode_rate_supported(Fraction(fps)):
        return None
    drop = bool(start_timecode) and ";" in start_timecode
    origin = start_timecode or ("00:00:00;00" if drop else "00:00:00:00")
    try:
        return offset_timecode(origin, frame, Fraction(fps))
    except ValueError:
        return None


def scene_names(count: int) -> list[str]:
    """``scene 001`` ... (wider numbers when there are more than 999 scenes)."""
    width = max(3, len(str(count)))
    return [f"scene {k:0{width}d}" for k in range(1, count + 1)]


def scenes_from_cuts(cuts: Sequence[int], first: int, stop: int) -> list[Scene]:
    """The scenes between ``first`` and ``stop`` that the cuts (absolute frames) make."""
    bounds = [first, *sorted({c for c in cuts if first < c < stop}), stop]
    names = scene_names(len(bounds) - 1)
    return [Scene(k + 1, a, b, names[k]) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def detect_cuts(source: str | Path, *, start: int | str | None = None, end: int | str | None = None,
                detector: str = DEFAULT_DETECTOR, threshold: float | None = None,
                min_scene: int = DEFAULT_MIN_SCENE, options: Mapping[str, Any] | None = None,
                registry: Any = None, fps: Fraction | None = None) -> list[int]:
    """The frames of ``source[start:end]`` that start a new scene, as source frame indices.

    Args:
        source: a video file or image sequence (anything :func:`uav.io.probe` reads).
        start, end: the range to look in (indices or timecodes; ``end`` exclusive).
        detector: a registered ``scenes`` component (``adaptive``, ``content`` ...).
        threshold: the detector's sensitivity (its own scale; ``None``: its default).
        min_scene: the shortest scene, in frames.
        options: further options for the detector's factory.
        fps: the rate of an image sequence.

    Raises:
        SceneError: an unknown detector or a bad option (one line).
    """
    from uav.io import reader

    detect = build_detector(detector, threshold=threshold, min_scene=min_scene, options=options,
                            registry=registry)
    info = reader.probe(source) if fps is None else reader.probe(source, fps=fps)
    first = reader.parse_frame_position(start, info.fps, info.start_timecode) or 0
    frames = reader.iter_frames(source, start=start, end=end, fps=fps)
    return [first + k for k in detect(frames, info.fps) if k > 0]


def build_detector(name: str, *, threshold: float | None = None, min_scene: int = DEFAULT_MIN_SCENE,
                   options: Mapping[str, Any] | None = None, registry: Any = None) -> Any:
    """The ``scenes`` component ``name`` built with its options (:class:`SceneError` when it cannot be)."""
    if registry is None:
        from uav.registry import default_registry

        registry = default_registry()
    kwargs = dict(options or {})
    if threshold is not None:
        kwargs["threshold"] = threshold
    kwargs["min_scene"] = min_scene
    try:
        return registry.get("scenes", name, **kwargs)
    except (KeyError, ValueError, TypeError) as exc:
        raise SceneError(f"--detector {name}: {exc}") from None


def detect_scenes(source: str | Path, *, start: int | str | None = None, end: int | str | None = None,
                  **options: Any) -> list[Scene]:
    """:func:`detect_cuts` as a scene list covering ``[start, end)`` (one scene when there is no cut)."""
    from uav.io import reader

    fps = options.get("fps")
    info = reader.probe(source) if fps is None else reader.probe(source, fps=fps)
    first = reader.parse_frame_position(start, info.fps, info.start_timecode) or 0
    stop = reader.parse_frame_position(end, info.fps, info.start_timecode)
    stop = info.num_frames if stop is None else stop
    return scenes_from_cuts(detect_cuts(source, start=start, end=end, **options), first, stop)
