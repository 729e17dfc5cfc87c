"""Image sequences as clips: a folder of PNG / TIFF / JPEG / BMP / EXR / DPX files, a
printf pattern such as ``frames/%05d.png``, or an explicit list of image files.

Frames are decoded with OpenCV, which keeps 16-bit samples; image sizes are read from
the headers with Pillow, without decoding. EXR frames are read with the OpenEXR
bindings as float32 (:mod:`uav.io.exr`), DPX frames with FFmpeg as uint16
(:mod:`uav.io.dpx`); their headers' colour tags, frame rate and timecode describe the
sequence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError
from .info import VideoInfo
from .rates import DEFAULT_SEQUENCE_FPS, parse_fps

__all__ = [
    "IMAGE_EXTENSIONS",
    "SequenceScan",
    "is_pattern",
    "image_size",
    "read_image",
    "read_images",
    "scan_sequence",
    "iter_sequence",
]

#: extensions read as image-sequence frames
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".exr", ".dpx")
#: the dtype of each ``VideoInfo.bit_depth``
_DTYPES = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16), 32: np.dtype(np.float32)}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceScan:
    """A probed image sequence: its :class:`VideoInfo` and its files in frame order."""

    info: VideoInfo
    files: tuple[Path, ...]


def is_pattern(text: str) -> bool:
    """Whether the file name of ``text`` holds a printf frame number like ``%05d``."""
    return bool(re.search(r"%0?\d*d", Path(text).name))


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _list_sequence(text: str) -> list[Path]:
    p = Path(text)
    if is_pattern(text):
        folder = p.parent
        if not folder.is_dir():
            raise VideoInputError(p, f"folder {folder} of the image pattern does not exist", "check the path")
        match = re.search(r"%(0?)(\d*)d", p.name)
        assert match is not None
        zero, width = match.group(1), match.group(2)
        digits = rf"\d{{{int(width)}}}" if zero and width else r"\d+"
        regex = re.compile(re.escape(p.name[: match.start()]) + f"({digits})" + re.escape(p.name[match.end():]) + "$")
        found = [(int(m.group(1)), f) for f in folder.iterdir() if f.is_file() and (m := regex.match(f.name))]
        files = [f for _, f in sorted(found)]
        if not files:
            raise VideoInputError(p, "no files match this image pattern", "check the folder and the %0Nd width")
        return files
    if p.is_file():
        return [p]
    images = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise VideoInputError(p, "folder contains no images", f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    kinds = sorted({f.suffix.lower().replace(".tiff", ".tif").replace(".jpeg", ".jpg") for f in images})
    if len(kinds) > 1:
        raise VideoInputError(p, f"folder mixes {' and '.join(kinds)} images",
                              "pass a pattern such as folder/%05d.png to pick one sequence")
    return sorted(images, key=lambda f: _natural_key(f.name))


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from an image's header without decoding it; ``None`` if unknown."""
    from PIL import Image

    if path.suffix.lower() in (".exr", ".dpx"):
        from .dpx import dpx_size
        from .exr import exr_size

        try:
            return (exr_size if path.suffix.lower() == ".exr" else dpx_size)(path)
        except VideoInputError:
            return None

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # the caller decodes the image instead and reports what is wrong with it
    return int(width), int(height)


def read_image(path: Path) -> np.ndarray:
    """One image as ``(H, W, 3)`` RGB ``uint8`` or ``uint16`` (``float32`` in [0, 1] for EXR)."""
    import cv2

    if path.suffix.lower() == ".exr":
        return _read_exr(path)
    if path.suffix.lower() == ".dpx":
        from .dpx import read_dpx

        return read_dpx(path)
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        if not path.is_file():
            raise VideoInputError(path, "image sequence frame is missing", "check the sequence's frame numbers")
        raise VideoInputError(path, "cannot be decoded as an image", "the file is damaged or not an image")
    if data.dtype not in (np.uint8, np.uint16):
        raise VideoInputError(path, f"has {data.dtype} samples; only 8- and 16-bit integer images are supported",
                              "convert it to 16-bit TIFF or PNG")
    if data.ndim == 2:
        data = np.repeat(data[:, :, None], 3, axis=2)
    elif data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    elif data.shape[2] == 4:
        data = cv2.cvtColor(data, cv2.COLOR_BGRA2RGB)
    else:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(data)


def _read_exr(path: Path) -> np.ndarray:
    from .exr import read_exr

    data = read_exr(path)
    if not np.isfinite(data).all():
        raise VideoInputError(path, "has NaN or infinite pixels", "fix or re-render the frame")
    low, high = float(data.min()), float(data.max())
    if low < 0.0 or high > 1.0:
        # the networks see display-referred [0, 1] code values; scene-linear highlights are clipped
        log.warning("%s: values span %.3g..%.3g; clipped to [0, 1] (uav reads EXR as display-referred)",
                    path, low, high)
        data = np.clip(data, 0.0, 1.0)
    return data


def _frame_number(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


def _header_facts(path: Path) -> dict[str, Any]:
    """Colour tags, rate and timecode an EXR or DPX header gives the sequence."""
    if path.suffix.lower() == ".exr":
        from .exr import exr_header

        return exr_header(path)
    if path.suffix.lower() == ".dpx":
        from .dpx import dpx_header

        return dpx_header(path)
    return {}


def _check_sizes(files: Sequence[Path], width: int, height: int) -> None:
    for f in files:
        size = image_size(f)
        if size is None:
            image = read_image(f)
            size = (image.shape[1], image.shape[0])
        if size != (width, height):
            raise VideoInputError(f, f"is {size[0]}x{size[1]} but the sequence's first image {files[0].name} is "
                                     f"{width}x{height}", "all images of a sequence must have the same size")


def _describe(path: Path, files: Sequence[Path], rate: Fraction | None) -> SequenceScan:
    first = read_image(files[0])
    height, width = first.shape[:2]
    _check_sizes(files, width, height)
    facts = _header_facts(files[0])
    rate = rate or facts.get("fps") or DEFAULT_SEQUENCE_FPS
    depth = next(bits for bits, dtype in _DTYPES.items() if dtype == first.dtype)
    color = facts.get("color") or {}
    info = VideoInfo(
        path=path,
        width=width,
        height=height,
        num_frames=len(files),
        fps=rate,
        bit_depth=depth,
        is_image_sequence=True,
        num_frames_cfr=len(files),
        codec=files[0].suffix.lower().lstrip("."),
        pix_fmt={8: "rgb24", 16: "rgb48", 32: "rgbf32"}[depth],
        duration=len(files) / float(rate),
        start_timecode=facts.get("timecode"),
        color_primaries=color.get("color_primaries"),
        color_trc=color.get("color_trc"),
        first_frame_number=_frame_number(files[0]),
    )
    return SequenceScan(info=info, files=tuple(files))


def scan_sequence(text: str, fps: Fraction | int | str | None) -> SequenceScan:
    """Probe the sequence named by ``text`` (folder, pattern or one image) at ``fps`` (default: an
    EXR header's ``framesPerSecond``, else 24)."""
    rate = None if fps is None else parse_fps(fps)
    return _describe(Path(text), _list_sequence(text), rate)


def iter_sequence(scan: SequenceScan, first: int, stop: int) -> Iterator[np.ndarray]:
    """Decode images ``[first, stop)`` of ``scan``, checking each against the sequence's size and depth."""
    info = scan.info
    dtype = _DTYPES[info.bit_depth]
    for f in scan.files[first:stop]:
        image = read_image(f)
        if image.shape[:2] != (info.height, info.width):
            raise VideoInputError(f, f"is {image.shape[1]}x{image.shape[0]} but the sequence is "
                                     f"{info.width}x{info.height}", "all images of a sequence must have the same size")
        if image.dtype != dtype:
            raise VideoInputError(f, f"is {8 * image.dtype.itemsize}-bit but the sequence starts "
                                     f"{info.bit_depth}-bit", "all images of a sequence must have the same bit depth")
        yield image


def read_images(files: Sequence[str | Path], *, fps: Fraction | int | str | None = None) -> np.ndarray:
    """The images ``files``, in that order, as one ``(T, H, W, 3)`` array (``uint8`` or ``uint16``).

    For sequences whose frames are named by something other than their position in a
    folder, e.g. an OpenTimelineIO image-sequence reference (prefix, frame step, zero
    padding). Every image must have the size and bit depth of the first.

    Raises:
        VideoInputError: no files, or a file that is missing, undecodable or different.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("read_images() needs at least one image file")
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise VideoInputError(missing, "image sequence frame is missing", "check the sequence's frame numbers")
    rate = DEFAULT_SEQUENCE_FPS if fps is None else parse_fps(fps)
    scan = _describe(paths[0].parent, paths, rate)
    return np.stack(list(iter_sequence(scan, 0, len(paths))))
