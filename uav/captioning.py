"""Automatic prompts: caption one frame of a clip with a captioner plugin.

The paper prompts the diffusion model with what LLaVA says about the clip's first
frame (SPEC §7.7). :func:`caption_clip` does that step on its own, before any
upscaling: it picks the frame (``first``, ``middle`` or an index), reads only that
frame, builds the captioner from the registry, captions, and frees the captioner's
model so the upscaler gets the memory back::

    from uav.captioning import caption_clip

    caption = caption_clip("clip.mp4", captioner="llava-local", options={"model": "models/llava-1.5-13b-hf"})
    caption.text       # 'A black cat sits on a red sofa ...'

To caption several clips with one loaded model, use :class:`ClipCaptioner` as a
context manager; to check a captioner choice without loading weights (before a long
run), :func:`check_captioner`. Every problem the user can fix (missing folder, wrong
model type, unknown option, frame out of range) raises :class:`CaptionError`, a
``ValueError`` with a one-line message.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, get_args

from uav.components import registry_or_default
from uav.knobs import Frame
from uav.settings import DEFAULT_CAPTIONER, SettingsError, UpscaleSettings

__all__ = [
    "DEFAULT_CAPTIONER",
    "FRAME_CHOICES",
    "Caption",
    "CaptionError",
    "CaptionFrame",
    "ClipCaptioner",
    "caption_clip",
    "check_captioner",
    "parse_caption_frame",
    "parse_captioner_options",
    "resolve_frame",
    "select_frame",
]

#: which frame of a clip is captioned: ``"first"`` (the paper's), ``"middle"`` or an index
CaptionFrame = Frame
#: the named frame choices; an int index is the third kind
FRAME_CHOICES: tuple[str, ...] = get_args(get_args(Frame)[0])


class CaptionError(ValueError):
    """A captioning request that cannot work (the message is one line and names the fix)."""


@dataclass(frozen=True)
class Caption:
    """A caption and where it came from.

    Attributes:
        text: the caption, on one line.
        captioner: the registry name of the captioner that wrote it.
        frame: index of the captioned frame in the input (counted from the input's
            first frame, not from ``start``).
    """

    text: str
    captioner: str
    frame: int

    def to_dict(self) -> dict[str, Any]:
        """``{"caption": ..., "captioner": ..., "frame": ...}`` (what ``uav caption --json`` prints)."""
        return {"caption": self.text, "captioner": self.captioner, "frame": self.frame}


# ------------------------------------------------------------------------------ parsing
def parse_caption_frame(value: Any) -> CaptionFrame:
    """Normalise a frame choice: ``"first"``, ``"middle"`` or an index ``>= 0`` (an int or digits),
    read as the settings read ``caption_frame``."""
    try:
        return UpscaleSettings.parse_value("caption_frame", value, text=True, label="caption frame")
    except SettingsError as exc:
        raise CaptionError(str(exc)) from None


def resolve_frame(frame: Any, num_frames: int) -> int:
    """The index (in ``[0, num_frames)``) that ``frame`` selects in a clip of ``num_frames`` frames.

    ``middle`` is ``num_frames // 2`` (the later of the two middle frames of an even count).
    """
    choice = parse_caption_frame(frame)
    if num_frames < 1:
        raise CaptionError("the clip has no frames to caption")
    if choice == "first":
        return 0
    if choice == "middle":
        return num_frames // 2
    if choice >= num_frames:
        raise CaptionError(f"caption frame {choice} is out of range: the clip has {num_frames} frame(s), "
                           f"0 to {num_frames - 1}")
    return int(choice)


def parse_captioner_options(items: Iterable[str] | None) -> dict[str, str]:
    """``["model=DIR", "device=cuda"]`` -> ``{"model": "DIR", "device": "cuda"}``.

    The value is everything after the first ``=`` (it may hold ``=`` itself); a key
    given twice is an error rather than a silent override. Values stay strings: each
    captioner converts its own options.
    """
    options: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CaptionError(f"--captioner-option: expected KEY=VALUE (e.g. model=/path/to/llava), got {item!r}")
        if key in options:
            raise CaptionError(f"--captioner-option: {key!r} is given twice")
        options[key] = value
    return options


# ------------------------------------------------------------------------------ captioner
def _build(name: str, options: Mapping[str, Any], registry: Any) -> Any:
    """Build the captioner; every failure the user can fix becomes one :class:`CaptionError` line."""
    from uav.registry import UnknownComponentError

    if not isinstance(name, str) or not name.strip():
        raise CaptionError(f"captioner must be a registered name, got {name!r}")
    try:
        return registry_or_default(registry).get("captioner", name, **dict(options))
    except UnknownComponentError as exc:
        raise CaptionError(_line(exc.args[0] if exc.args else exc)) from None
    except (ValueError, TypeError, OSError, ImportError) as exc:
        # TypeError: an option of the wrong kind for a third-party factory; it came from the user
        text = _line(f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror
                     and exc.filename else exc)
        raise CaptionError(text if repr(name) in text else f"captioner {name!r}: {text}") from None


def _line(exc: Any) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _free_memory() -> None:
    """Collect what was just dropped and hand cached CUDA blocks back (to the upscaler, or other processes)."""
    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def check_captioner(captioner: str = DEFAULT_CAPTIONER, options: Mapping[str, Any] | None = None, *,
                    registry: Any = None) -> None:
    """Raise :class:`CaptionError` unless ``captioner`` can be built with ``options``.

    The built-in captioners check their folder, its model type and its processor when
    they are built and load weights only on the first caption, so this costs seconds
    even for a 13B model: call it before a long run so a wrong folder fails first.
    """
    ClipCaptioner(captioner, options, registry=registry).close()


# ------------------------------------------------------------------------------ frames
def _as_frame(frames: Any, name: str) -> Any:
    """One frame in any layout the upscaler accepts -> ``(1, 3, H, W)`` float in ``[-1, 1]``, as captioners take it."""
    # the upscaler's own conversion, so a caption sees exactly the pixels the upscale does
    from uav.frames import frames_to_tensor

    return frames_to_tensor(frames, name=name)[0].permute(1, 0, 2, 3)


def _read_path_frame(video: str | os.PathLike[str], frame: Any, *, start: int | str | None, end: int | str | None,
                     fps: Fraction | int | str | None, vfr: str) -> tuple[Any, int]:
    """The chosen frame of a file or image sequence as ``(1, 3, H, W)`` in ``[-1, 1]``, and its index."""
    from uav.io import reader

    path = os.fspath(video)
    info = reader.probe(path, fps=fps)
    # checks the range and the frame rate mode without decoding anything
    reader.iter_frames(path, start=start, end=end, vfr=vfr, fps=fps)
    total = info.num_frames_cfr if vfr == "cfr" and info.num_frames_cfr is not None else info.num_frames
    first = reader.parse_frame_position(start, info.fps, info.start_timecode) or 0
    stop = reader.parse_frame_position(end, info.fps, info.start_timecode)
    stop = total if stop is None else min(stop, total)
    index = first + resolve_frame(frame, stop - first)
    pixels = next(iter(reader.iter_frames(path, start=index, end=index + 1, vfr=vfr, fps=fps)))
    return _as_frame(pixels[None], str(path)), index


def _memory_frame(video: Any, frame: Any, *, start: int | str | None, end: int | str | None) -> tuple[Any, int]:
    """The chosen frame of in-memory frames (tensor, array or list), converting only that frame."""
    import numpy as np
    import torch

    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise CaptionError(f"{name} must be a frame index >= 0 for in-memory frames, got {value!r}")
    if torch.is_tensor(video):
        # (1, 3, T, H, W) or (T, 3, H, W), as VideoUpscaler.upscale takes them
        frames_axis = 2 if video.ndim == 5 else 0
    elif isinstance(video, np.ndarray):
        frames_axis = 0 if video.ndim == 4 else None  # (T, H, W, 3); (H, W, 3) is one frame
    elif isinstance(video, (list, tuple)):
        frames_axis = 0
    else:
        raise CaptionError(f"video: expected a path, a tensor, an array or a list of frames, got {type(video).__name__}")
    total = 1 if frames_axis is None else (len(video) if frames_axis == 0 else video.shape[frames_axis])
    first = start or 0
    stop = total if end is None else min(end, total)
    if first >= stop:
        raise CaptionError(f"the frame range [{first}, {stop}) of the {total}-frame video is empty")
    index = first + resolve_frame(frame, stop - first)
    if frames_axis is None:
        one = video
    elif frames_axis == 2:
        one = video[:, :, index:index + 1]
    else:
        one = video[index:index + 1]
    return _as_frame(list(one) if isinstance(one, (list, tuple)) else one, "video"), index


def select_frame(video: Any, frame: Any = "first", *, start: int | str | None = None, end: int | str | None = None,
                 fps: Fraction | int | str | None = None, vfr: str = "error") -> tuple[Any, int]:
    """The frame ``frame`` of ``video`` as a ``(1, 3, H, W)`` float tensor in ``[-1, 1]``, and its index.

    Arguments as :meth:`ClipCaptioner.caption`; only the chosen frame is read and converted.
    """
    parse_caption_frame(frame)
    if isinstance(video, (str, os.PathLike)):
        return _read_path_frame(video, frame, start=start, end=end, fps=fps, vfr=vfr)
    return _memory_frame(video, frame, start=start, end=end)


# ------------------------------------------------------------------------------ captioning
class ClipCaptioner:
    """One captioner, built once and used for any number of clips; frees its model on close.

    Args:
        captioner: a registered captioner name (``llava-local``, ``blip-local``, a plugin's).
        options: the captioner's factory options (e.g. ``{"model": "/models/llava"}``);
            values may be strings, as given on the command line.
        registry: the :class:`uav.registry.Registry` to build from (default: all
            installed plugins).

    Raises:
        CaptionError: unknown captioner, unknown option, missing folder, wrong model type.

    Use as a context manager (``with ClipCaptioner(...) as c: c.caption(...)``) or call
    :meth:`close` when done, so the model's memory is given back before upscaling.
    """

    def __init__(self, captioner: str = DEFAULT_CAPTIONER, options: Mapping[str, Any] | None = None, *,
                 registry: Any = None) -> None:
        self.name = captioner
        self._registry = registry_or_default(registry)
        self._captioner: Any = _build(captioner, options or {}, registry)

    def caption(self, video: Any, *, frame: Any = "first", start: int | str | None = None,
                end: int | str | None = None, fps: Fraction | int | str | None = None,
                vfr: str = "error") -> Caption:
        """Caption one frame of ``video``.

        Args:
            video: a video file, image folder, image pattern or image (anything
                :func:`uav.io.probe` reads), or in-memory frames as
                :meth:`uav.VideoUpscaler.upscale` takes them (a ``(T, 3, H, W)`` or
                ``(1, 3, T, H, W)`` tensor in ``[-1, 1]``, a ``(T, H, W, 3)`` uint8/uint16
                array, a list of ``(H, W, 3)`` frames).
            frame: ``"first"`` (the paper's choice), ``"middle"`` or an index, counted
                within ``[start, end)``.
            start, end: the range the frame is chosen in (a shot's used range), as
                frame indices or timecodes; ``None`` is the whole input.
            fps: frame rate of an image sequence (for timecodes).
            vfr: variable-frame-rate handling, as :func:`uav.io.iter_frames`.

        Only the chosen frame is read and converted.
        """
        image, index = select_frame(video, frame, start=start, end=end, fps=fps, vfr=vfr)
        return self._describe(image, index)

    def _describe(self, image: Any, index: int) -> Caption:
        if self._captioner is None:
            raise CaptionError(f"captioner {self.name!r} is closed")
        text = self._captioner(image)
        if not isinstance(text, str) or not text.strip():
            from uav.plugin_results import describe_component

            got = "an empty caption" if isinstance(text, str) else f"{type(text).__name__}, not a str"
            who = describe_component("captioner", self.name, self._registry)
            raise CaptionError(f"{who} returned {got}; fix or update that plugin, choose another captioner or "
                               "pass --prompt TEXT")
        return Caption(text=" ".join(text.split()), captioner=self.name, frame=index)

    def close(self) -> None:
        """Free the captioner and its model (idempotent)."""
        captioner, self._captioner = self._captioner, None
        if captioner is None:
            return
        close = getattr(captioner, "close", None)
        if callable(close):
            close()
        # the last reference: a captioner without close() frees its model here
        del captioner, close
        _free_memory()

    def __enter__(self) -> "ClipCaptioner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def caption_clip(video: Any, captioner: str = DEFAULT_CAPTIONER, options: Mapping[str, Any] | None = None, *,
                 frame: Any = "first", start: int | str | None = None, end: int | str | None = None,
                 fps: Fraction | int | str | None = None, vfr: str = "error", registry: Any = None) -> Caption:
    """Caption one frame of ``video`` with the captioner ``captioner`` and free it again.

    The frame is read before the captioner is built, so an out-of-range ``frame`` or
    a bad input fails without paying for the model. See :meth:`ClipCaptioner.caption`
    for the arguments; ``options`` go to the captioner (``model=`` the local folder).

    Returns:
        A :class:`Caption`; ``caption.text`` is the prompt to upscale with (the
        added prompt is appended by the pipeline, as for any prompt).

    Raises:
        CaptionError: unknown captioner or option, missing folder, wrong model type,
            frame out of range; :class:`uav.io.VideoInputError` for unreadable input.
    """
    # the frame first: a bad input or frame fails before any captioner is built
    image, index = select_frame(video, frame, start=start, end=end, fps=fps, vfr=vfr)
    with ClipCaptioner(captioner, options, registry=registry) as clip_captioner:
        return clip_captioner._describe(image, index)
