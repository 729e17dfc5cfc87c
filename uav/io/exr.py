"""OpenEXR frames: 16-bit half (or 32-bit float) RGB, written and read with the
OpenEXR project's own Python bindings (``openexr`` on PyPI).

Why not FFmpeg's EXR encoder through PyAV: it compresses with none, RLE or ZIP only
(no PIZ, no DWAA) and writes no chromaticities, frame rate, timecode or custom
attributes, so it cannot make the files a finishing pipeline expects.

The pixels are the clip's code values (display-referred, as decoded from the source),
not linearised: the header says which primaries (``chromaticities``, the standard
attribute) and which transfer they are in (``uav:color_trc`` and its siblings), so a
compositor can pick the matching input transform.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoInputError

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "PRIMARIES_CHROMATICITIES",
    "exr_header",
    "exr_size",
    "read_exr",
    "write_exr",
]

#: ``compression`` names the writer accepts, and OpenEXR's name for each
COMPRESSIONS = {"piz": "PIZ_COMPRESSION", "zip": "ZIP_COMPRESSION", "dwaa": "DWAA_COMPRESSION",
                "none": "NO_COMPRESSION"}
DEFAULT_COMPRESSION = "piz"
#: header attributes that hold the FFmpeg colour tag names (RGB has no matrix or range of
#: its own: they say what the source was, for a pipeline that wants to go back to it)
COLOR_ATTRIBUTES = {"color_primaries": "uav:color_primaries", "color_trc": "uav:color_trc",
                    "color_space": "uav:color_space", "color_range": "uav:color_range"}
#: the header attribute holding the provenance record (JSON)
PROVENANCE_ATTRIBUTE = "uav"

#: CIE xy of red, green, blue and white for the primaries an EXR header can name
PRIMARIES_CHROMATICITIES: dict[str, tuple[float, ...]] = {
    "bt709": (0.640, 0.330, 0.300, 0.600, 0.150, 0.060, 0.3127, 0.3290),
    "bt2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290),
    "smpte432": (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3127, 0.3290),
    "smpte431": (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.314, 0.351),
    "bt470bg": (0.640, 0.330, 0.290, 0.600, 0.150, 0.060, 0.3127, 0.3290),
    "smpte170m": (0.630, 0.340, 0.310, 0.595, 0.155, 0.070, 0.3127, 0.3290),
    "smpte240m": (0.630, 0.340, 0.310, 0.595, 0.155, 0.070, 0.3127, 0.3290),
    "bt470m": (0.670, 0.330, 0.210, 0.710, 0.140, 0.080, 0.310, 0.316),
    "film": (0.681, 0.319, 0.243, 0.692, 0.145, 0.049, 0.310, 0.316),
}


def _timecode(label: str) -> Any:
    import OpenEXR as exr

    drop = ";" in label
    h, m, s, f = (int(p) for p in label.replace(";", ":").split(":"))
    return exr.TimeCode(h, m, s, f, int(drop), *([0] * 13))


def write_exr(path: Path, rgb: np.ndarray, *, compression: str = DEFAULT_COMPRESSION, half: bool = True,
              color: Mapping[str, str] | None = None, fps: Fraction | None = None, timecode: str | None = None,
              provenance: Mapping[str, Any] | None = None) -> None:
    """Write one ``(H, W, 3)`` float RGB frame to ``path``.

    Args:
        compression: one of :data:`COMPRESSIONS`.
        half: 16-bit half floats (default) or 32-bit floats.
        color: FFmpeg colour tag names; ``color_primaries`` also sets the standard
            ``chromaticities`` attribute when it is one :data:`PRIMARIES_CHROMATICITIES` knows.
        fps, timecode: ``framesPerSecond`` and this frame's ``timeCode``.
        provenance: stored as JSON in the ``uav`` string attribute.

    Raises:
        OSError: the file could not be written.
    """
    import OpenEXR as exr

    header: dict[str, Any] = {"compression": getattr(exr, COMPRESSIONS[compression]), "type": exr.scanlineimage}
    for key, value in (color or {}).items():
        if key in COLOR_ATTRIBUTES and value:
            header[COLOR_ATTRIBUTES[key]] = str(value)
    primaries = (color or {}).get("color_primaries")
    if primaries in PRIMARIES_CHROMATICITIES:
        header["chromaticities"] = PRIMARIES_CHROMATICITIES[primaries]
    if fps is not None:
        header["framesPerSecond"] = (Fraction(fps).numerator, Fraction(fps).denominator)
    if timecode:
        header["timeCode"] = _timecode(timecode)
    if provenance is not None:
        header[PROVENANCE_ATTRIBUTE] = json.dumps(provenance, sort_keys=True, default=str)
    pixels = np.ascontiguousarray(rgb, dtype=np.float16 if half else np.float32)
    try:
        with exr.File(header, {"RGB": pixels}) as image:
            image.write(str(path))
    except RuntimeError as exc:  # the bindings report I/O failures as RuntimeError
        raise OSError(f"cannot write {path.name}: {exc}") from None


def _open(path: Path, header_only: bool) -> Any:
    import OpenEXR as exr

    try:
        return exr.File(str(path), separate_channels=True, header_only=header_only)
    except Exception as exc:  # the bindings raise RuntimeError / ValueError for damaged files
        if not path.is_file():
            raise VideoInputError(path, "image sequence frame is missing", "check the sequence's frame numbers") \
                from None
        raise VideoInputError(path, f"cannot be read as OpenEXR ({exc})", "the file is damaged or not an EXR") \
            from None


def read_exr(path: Path) -> np.ndarray:
    """The frame's RGB (or luminance ``Y``, repeated) as ``(H, W, 3)`` float32.

    Raises:
        VideoInputError: unreadable, or without R/G/B or Y channels.
    """
    with _open(path, header_only=False) as image:
        channels = {name: ch.pixels for name, ch in image.channels().items()}
    names = [c for c in ("R", "G", "B") if c in channels]
    if len(names) == 3:
        planes = [channels[c] for c in names]
    elif "Y" in channels:
        planes = [channels["Y"]] * 3
    else:
        raise VideoInputError(path, f"has no R, G, B (or Y) channels (it has {', '.join(sorted(channels)) or 'none'})",
                              "export the frames as RGB EXR")
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise VideoInputError(path, "has subsampled colour channels", "export the frames as full-resolution RGB EXR")
    return np.ascontiguousarray(np.stack(planes, axis=-1).astype(np.float32))


def exr_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the data window, from the header alone."""
    with _open(path, header_only=True) as image:
        low, high = image.header()["dataWindow"]
    return int(high[0] - low[0] + 1), int(high[1] - low[1] + 1)


def _primaries_of(chromaticities: Any) -> str | None:
    values = np.asarray(chromaticities, dtype=np.float64)
    for name, known in PRIMARIES_CHROMATICITIES.items():
        if values.shape == (8,) and np.allclose(values, known, atol=2e-3):
            return name
    return None


def exr_header(path: Path) -> dict[str, Any]:
    """What an EXR's header says about the clip: ``color`` (FFmpeg tag names), ``fps``,
    ``timecode``, ``compression``, ``pixel_type`` (``half``/``float``) and ``provenance``."""
    with _open(path, header_only=False) as image:
        header = dict(image.header())
        dtypes = {ch.pixels.dtype for ch in image.channels().values() if ch.pixels is not None}
    color = {key: str(header[attr]) for key, attr in COLOR_ATTRIBUTES.items() if attr in header}
    if "color_primaries" not in color and "chromaticities" in header:
        named = _primaries_of(header["chromaticities"])
        if named:
            color["color_primaries"] = named
    fps = header.get("framesPerSecond")
    tc = header.get("timeCode")
    provenance = None
    if PROVENANCE_ATTRIBUTE in header:
        try:
            provenance = json.loads(header[PROVENANCE_ATTRIBUTE])
        except (TypeError, ValueError):
            provenance = None
    pixel_type = "half" if np.dtype(np.float16) in dtypes else ("float" if dtypes else None)
    compression = str(header.get("compression", "")).rsplit(".", 1)[-1].replace("_COMPRESSION", "").lower()
    return {
        "color": color,
        "fps": Fraction(int(fps[0]), int(fps[1])) if fps is not None else None,
        "timecode": (f"{tc.hours:02d}:{tc.minutes:02d}:{tc.seconds:02d}{';' if tc.dropFrame else ':'}{tc.frame:02d}"
                     if tc is not None else None),
        "compression": {"no": "none"}.get(compression, compression),
        "pixel_type": pixel_type,
        "provenance": provenance,
    }
