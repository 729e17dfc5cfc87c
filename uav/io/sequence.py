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
from .paths import refuse_unreadable
from .rates import DEFAULT_SEQUENCE_FPS, parse_fps

__all__ = [
    "IMAGE_EXTENSIONS",
    "SequenceScan",
    "is_pattern",
    "image_size",
    "read_image",
    "read_image_planes",
    "read_images",
    "scan_sequence",
    "iter_sequence",
    "iter_sequence_alpha",
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
    """Whether ``text`` is an image pattern: its file name holds a printf frame number like
    ``%05d`` and it is not an existing file (``take%d.mov`` on disk is a video)."""
    return bool(re.search(r"%0?\d*d", Path(text).name)) and not Path(text).is_file()


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
        found = [(int(m.group(1)), f) for f in folder.iterdir() if not f.is_dir() and (m := regex.match(f.name))]
        for _, f in found:
            refuse_unreadable(f)
        if not found:
            raise VideoInputError(p, "no files match this image pattern", "check the folder and the %0Nd width")
        _check_numbering(p, found)
        return [f for _, f in sorted(found)]
    if p.is_file():
        return [p]
    # every image-named entry counts: a broken link or a pipe among the frames is reported, not skipped
    images = [f for f in p.iterdir() if not f.is_dir() and f.suffix.lower() in IMAGE_EXTENSIONS]
    for f in images:
        refuse_unreadable(f)
    if not images:
        raise VideoInputError(p, "folder contains no images", f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    kinds = sorted({f.suffix.lower().replace(".tiff", ".tif").replace(".jpeg", ".jpg") for f in images})
    if len(kinds) > 1:
        raise VideoInputError(p, f"folder mixes {' and '.join(kinds)} images",
                              "pass a pattern such as folder/%05d.png to pick one sequence")
    files = sorted(images, key=lambda f: _natural_key(f.name))
    numbered = _frame_numbers(files)
    if numbered is not None:
        _check_numbering(p, numbered)
    return files


_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$")


def _frame_numbers(files: Sequence[Path]) -> list[tuple[int, Path]] | None:
    """Each file's frame number when all names are one prefix, a number and one suffix
    (``plate.1001.png``); ``None`` when the names do not number frames."""
    parts = [_NUMBERED.match(f.name) for f in files]
    if len(files) < 2 or any(m is None for m in parts):
        return None
    shapes = {(m.group(1), m.group(3).lower()) for m in parts if m is not None}
    if len(shapes) != 1:
        return None
    return [(int(m.group(2)), f) for m, f in zip(parts, files) if m is not None]


def _spans(numbers: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"`` (the first ten spans, then how many more)."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans[:10])
    return text + (f" and {len(spans) - 10} more ranges" if len(spans) > 10 else "")


def _check_numbering(path: Path, numbered: Sequence[tuple[int, Path]]) -> None:
    """Refuse a sequence whose frame numbers skip or repeat: the numbering is the timing,
    so closing a gap up would shift every later frame."""
    seen: dict[int, Path] = {}
    for number, f in numbered:
        if number in seen:
            raise VideoInputError(path, f"frame number {number} appears twice ({seen[number].name} and {f.name})",
                                  "keep one file per frame number")
        seen[number] = f
    first, last = min(seen), max(seen)
    missing = sorted(set(range(first, last + 1)) - set(seen))
    if missing:
        raise VideoInputError(path, f"image sequence {first}-{last} is missing frame{'s' if len(missing) > 1 else ''} "
                                    f"{_spans(missing)}", "the numbering is the timing, so uav will not close the "
                                    "gap: render or copy the missing frames, or split the sequence at the gap")


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
            turned = _orientation_of(image) in _TRANSPOSING
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # the caller decodes the image instead and reports what is wrong with it
    return (int(height), int(width)) if turned else (int(width), int(height))


#: EXIF orientations that swap width and height
_TRANSPOSING = (5, 6, 7, 8)


def _orientation_of(image: Any) -> int:
    try:
        value = int(image.getexif().get(0x0112, 1) or 1)
    except (OSError, ValueError, TypeError, SyntaxError):
        return 1
    return value if 1 <= value <= 8 else 1


def _orientation(path: Path) -> int:
    """The EXIF orientation (1-8, 1 = upright) of an image file; 1 when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return _orientation_of(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 1


def _upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (H, W[, C]) turned as EXIF ``orientation`` says a viewer shows it."""
    swap = (1, 0) + tuple(range(2, array.ndim))
    turns = {
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # mirrored vertically
        5: lambda a: a.transpose(swap),  # mirrored along the main diagonal
        6: lambda a: np.rot90(a, k=-1),  # stored turned 90 degrees anticlockwise: turn it clockwise
        7: lambda a: a.transpose(swap)[::-1, ::-1],  # mirrored along the other diagonal
        8: lambda a: np.rot90(a, k=1),  # stored turned clockwise
    }
    turn = turns.get(orientation)
    return array if turn is None else np.ascontiguousarray(turn(array))


def read_image(path: Path) -> np.ndarray:
    """One image as ``(H, W, 3)`` RGB ``uint8`` or ``uint16`` (``float32`` in [0, 1] for EXR),
    upright (EXIF orientation applied)."""
    return read_image_planes(path)[0]


def read_image_planes(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """One image as ``(RGB (H, W, 3), alpha (H, W) or None)``, upright; EXR and DPX frames
    are read without alpha."""
    import cv2

    if path.suffix.lower() == ".exr":
        return _read_exr(path), None
    if path.suffix.lower() == ".dpx":
        from .dpx import read_dpx

        return read_dpx(path), None
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        if not path.is_file():
            raise VideoInputError(path, "image sequence frame is missing", "check the sequence's frame numbers")
        raise VideoInputError(path, "cannot be decoded as an image", "the file is damaged or not an image")
    if data.dtype not in (np.uint8, np.uint16):
        raise VideoInputError(path, f"has {data.dtype} samples; only 8- and 16-bit integer images are supported",
                              "convert it to 16-bit TIFF or PNG")
    alpha = None
    if data.ndim == 2:
        data = np.repeat(data[:, :, None], 3, axis=2)
    elif data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    elif data.shape[2] == 2:  # grey + alpha
        data, alpha = np.repeat(data[:, :, :1], 3, axis=2), data[:, :, 1]
    elif data.shape[2] == 4:
        data, alpha = cv2.cvtColor(data, cv2.COLOR_BGRA2RGB), data[:, :, 3]
    else:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    # OpenCV reads the stored pixels; viewers (and editors) show them turned as EXIF says
    orientation = _orientation(path)
    rgb = _upright(np.ascontiguousarray(data), orientation)
    return rgb, None if alpha is None else _upright(np.ascontiguousarray(alpha), orientation)


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
    first, first_alpha = read_image_planes(files[0])
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
        has_alpha=first_alpha is not None,
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


def iter_sequence_alpha(scan: SequenceScan, first: int, stop: int) -> Iterator[np.ndarray]:
    """The alpha planes ``(H, W)`` of images ``[first, stop)`` (opaque for an image without one)."""
    info = scan.info
    dtype = np.uint16 if info.bit_depth == 16 else np.uint8
    for f in scan.files[first:stop]:
        rgb, alpha = read_image_planes(f)
        if rgb.shape[:2] != (info.height, info.width):
            raise VideoInputError(f, f"is {rgb.shape[1]}x{rgb.shape[0]} but the sequence is "
                                     f"{info.width}x{info.height}", "all images of a sequence must have the same size")
        yield np.full(rgb.shape[:2], np.iinfo(dtype).max, dtype) if alpha is None else alpha.astype(dtype)


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
