"""Pictures and an HTML report for judging an upscaled video.

* :func:`temporal_profile` / :func:`profile_figure`: one image row (or column)
  tracked over time, several videos side by side (as in the Upscale-A-Video
  paper's Fig. 6). Flicker shows up as horizontal streaks, stable detail as
  smooth vertical (or diagonal, under motion) lines.
* :func:`frame_strip`: chosen frames of several videos, one video per row.
* :func:`crop_figure`: the same region of one frame in several videos, zoomed.
* :func:`write_report`: one self-contained HTML file with the metrics table, a
  per-frame PSNR chart and the pictures (embedded as base64 PNG by default).

Frames follow :mod:`uav.eval.frames`' conventions: ``(T, H, W, 3)`` RGB, uint8,
uint16 or float in ``[0, 1]``. Returned pictures are uint8 RGB ``(h, w, 3)``.
Videos of different sizes (e.g. the low-res input next to the output) are resized
to a common size first: the first video's, unless ``size`` says otherwise. With
labels on, every figure carries a :data:`LABEL_HEIGHT`-pixel caption bar above
each panel (or each row of a strip).
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from uav.eval.frames import to_uint8
from uav.eval.video import VideoMetrics
from uav.io.atomic import atomic_output
from uav.protocols import int_arg

__all__ = [
    "LABEL_HEIGHT",
    "temporal_profile",
    "profile_figure",
    "frame_strip",
    "crop_figure",
    "write_png",
    "write_report",
]

#: height in pixels of the caption bar drawn above each labelled panel
LABEL_HEIGHT = 18
_BACKGROUND = 255  # white, in every channel


# --------------------------------------------------------------------------- helpers


def _clip_u8(frames: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array (T, H, W, 3); got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (T, H, W, 3); got {frames.shape}")
    return to_uint8(frames, name=name)


def _resize_clip(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    flag = cv2.INTER_AREA if h * w < frames.shape[1] * frames.shape[2] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (w, h), interpolation=flag) for f in frames])


def _videos(videos: Mapping[str, np.ndarray], size: tuple[int, int] | None) -> tuple[list[str], list[np.ndarray], tuple[int, int]]:
    if not isinstance(videos, Mapping) or len(videos) == 0:
        raise ValueError("videos: expected a non-empty mapping of label -> frames (T, H, W, 3)")
    names = [str(k) for k in videos]
    clips = [_clip_u8(v, f"videos[{k!r}]") for k, v in videos.items()]
    if size is None:
        size = (int(clips[0].shape[1]), int(clips[0].shape[2]))
    elif len(size) != 2 or min(size) < 1:
        raise ValueError(f"size: expected (height, width) >= 1; got {size!r}")
    return names, [_resize_clip(c, (int(size[0]), int(size[1]))) for c in clips], (int(size[0]), int(size[1]))


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    """``panel`` with a caption bar of :data:`LABEL_HEIGHT` pixels on top."""
    bar = np.full((LABEL_HEIGHT, panel.shape[1], 3), 40, dtype=np.uint8)
    cv2.putText(bar, text, (3, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def _concat(panels: Sequence[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """``panels`` side by side (``axis=1``) or stacked (``axis=0``), ``gap`` white pixels apart,
    the shorter ones padded with white to the longest."""
    across = 1 - axis
    extent = max(p.shape[across] for p in panels)
    parts = []
    for i, p in enumerate(panels):
        pad = [(0, 0)] * 3
        pad[across] = (0, extent - p.shape[across])
        pad[axis] = (gap if i else 0, 0)
        parts.append(np.pad(p, pad, constant_values=_BACKGROUND))
    return np.concatenate(parts, axis=axis)


# --------------------------------------------------------------------------- temporal profiles


def temporal_profile(frames: np.ndarray, *, row: int | None = None, column: int | None = None) -> np.ndarray:
    """One row or column of a clip tracked over time.

    Exactly one of ``row`` and ``column`` is given. A row profile is ``(T, W, 3)``
    (time runs downwards); a column profile is ``(H, T, 3)`` (time runs to the right).
    """
    clip = _clip_u8(frames, "frames")
    T, H, W, _ = clip.shape
    if (row is None) == (column is None):
        raise ValueError("temporal_profile: give exactly one of row= and column=")
    if row is not None:
        row = int_arg("row", row, 0)
        if row >= H:
            raise ValueError(f"row: {row} is outside frames of height {H}")
        return np.ascontiguousarray(clip[:, row])
    column = int_arg("column", column, 0)
    if column >= W:
        raise ValueError(f"column: {column} is outside frames of width {W}")
    return np.ascontiguousarray(clip[:, :, column].transpose(1, 0, 2))


def profile_figure(
    videos: Mapping[str, np.ndarray],
    *,
    row: int | None = None,
    column: int | None = None,
    size: tuple[int, int] | None = None,
    time_scale: int = 1,
    gap: int = 4,
    labels: bool = True,
) -> np.ndarray:
    """Temporal profiles of several videos side by side.

    Args:
        videos: label -> clip; all need the same number of frames T.
        row, column: the line to track, in coordinates of the common size.
        size: common ``(H, W)``; the first video's by default.
        time_scale: each time step is drawn this many pixels thick, so short clips
            stay readable.
        gap: white pixels between panels.
        labels: draw each video's label above its panel.

    Returns:
        For a row profile, ``(LABEL_HEIGHT * labels + T * time_scale, n * W + (n - 1) * gap, 3)``;
        for a column profile, ``(LABEL_HEIGHT * labels + H, n * T * time_scale + (n - 1) * gap, 3)``.
    """
    names, clips, _ = _videos(videos, size)
    time_scale = int_arg("time_scale", time_scale, 1)
    gap = int_arg("gap", gap, 0)
    lengths = {c.shape[0] for c in clips}
    if len(lengths) != 1:
        raise ValueError(f"videos: all clips need the same number of frames; got {sorted(lengths)}")
    panels = []
    for name, clip in zip(names, clips):
        prof = temporal_profile(clip, row=row, column=column)
        prof = np.repeat(prof, time_scale, axis=0 if row is not None else 1)
        panels.append(_label(prof, name) if labels else prof)
    return _concat(panels, gap, axis=1)


# --------------------------------------------------------------------------- strips and crops


def frame_strip(
    videos: Mapping[str, np.ndarray],
    frames: Sequence[int] | None = None,
    *,
    count: int = 4,
    size: tuple[int, int] | None = None,
    gap: int = 4,
    labels: bool = True,
) -> np.ndarray:
    """Chosen frames of several videos: one row per video, one column per frame.

    Args:
        videos: label -> clip.
        frames: frame indices to show; ``count`` evenly spaced frames by default.
        count: how many frames to pick when ``frames`` is None.
        size: common ``(H, W)``; the first video's by default.
        gap: white pixels between frames and rows.
        labels: draw a caption bar with the label (and frame numbers) above each row.

    Returns:
        ``(n * (LABEL_HEIGHT * labels + H) + (n - 1) * gap, k * W + (k - 1) * gap, 3)``
        for n videos and k frames.
    """
    names, clips, _ = _videos(videos, size)
    gap = int_arg("gap", gap, 0)
    T = min(c.shape[0] for c in clips)
    if frames is None:
        count = int_arg("count", count, 1)
        frames = sorted({int(round(x)) for x in np.linspace(0, T - 1, min(count, T))})
    frames = [int_arg("frames", f, 0) for f in frames]
    if not frames or max(frames) >= T:
        raise ValueError(f"frames: expected indices in [0, {T - 1}]; got {frames!r}")
    rows = []
    for name, clip in zip(names, clips):
        row = _concat([clip[f] for f in frames], gap, axis=1)
        rows.append(_label(row, f"{name}  frames {', '.join(map(str, frames))}") if labels else row)
    return _concat(rows, gap, axis=0)


def crop_figure(
    videos: Mapping[str, np.ndarray],
    *,
    frame: int,
    box: tuple[int, int, int, int],
    zoom: int = 4,
    size: tuple[int, int] | None = None,
    gap: int = 4,
    labels: bool = True,
) -> np.ndarray:
    """The same region of one frame in several videos, enlarged with nearest-neighbour zoom.

    Args:
        videos: label -> clip.
        frame: the frame index.
        box: ``(y0, y1, x0, x1)`` (end exclusive) in coordinates of the common size.
        zoom: integer magnification (nearest neighbour, so pixels stay visible).
        size: common ``(H, W)``; the first video's by default.

    Returns:
        ``(LABEL_HEIGHT * labels + (y1 - y0) * zoom, n * (x1 - x0) * zoom + (n - 1) * gap, 3)``.
    """
    names, clips, (H, W) = _videos(videos, size)
    zoom = int_arg("zoom", zoom, 1)
    gap = int_arg("gap", gap, 0)
    frame = int_arg("frame", frame, 0)
    if len(box) != 4:
        raise ValueError(f"box: expected (y0, y1, x0, x1); got {box!r}")
    y0, y1, x0, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
        raise ValueError(f"box: {box!r} is not a non-empty region inside {H}x{W} frames")
    panels = []
    for name, clip in zip(names, clips):
        if frame >= clip.shape[0]:
            raise ValueError(f"frame: {frame} is outside {name!r}, which has {clip.shape[0]} frames")
        crop = np.repeat(np.repeat(clip[frame, y0:y1, x0:x1], zoom, axis=0), zoom, axis=1)
        panels.append(_label(crop, name) if labels else crop)
    return _concat(panels, gap, axis=1)


# --------------------------------------------------------------------------- writing


def _atomic_write(path: Path, data: bytes) -> None:
    """Write under a temporary name in the same folder, then rename into place."""
    if path.is_dir():
        # the rename would fail only after the temporary file exists, with a confusing message
        raise ValueError(f"{str(path)!r} is a folder; give a file name inside it")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def _png_bytes(image: np.ndarray) -> bytes:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = getattr(image, "shape", type(image).__name__), getattr(image, "dtype", None)
        raise ValueError(f"image: expected a uint8 RGB array (h, w, 3); got {got}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Save a uint8 RGB picture as PNG (atomically) and return its path."""
    path = Path(path)
    _atomic_write(path, _png_bytes(image))
    return path


_METRIC_COLUMNS = (
    ("psnr", "PSNR (dB) &uarr;", 2),
    ("psnr_y", "PSNR-Y (dB) &uarr;", 2),
    ("ssim", "SSIM &uarr;", 4),
    ("ssim_y", "SSIM-Y &uarr;", 4),
    ("lpips", "LPIPS &darr;", 4),
    ("ewarp", "E*<sub>warp</sub> (&times;10<sup>-3</sup>) &darr;", 3),
)
_CHART_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _metrics_dict(m: VideoMetrics | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(m, VideoMetrics):
        # Raw values rather than to_dict(): the table can show an infinite PSNR as such.
        d = {"psnr": m.psnr, "psnr_y": m.psnr_y, "ssim": m.ssim, "ssim_y": m.ssim_y, "ewarp": m.ewarp,
             "per_frame": m.per_frame}
        if m.lpips is not None:
            d["lpips"] = m.lpips
        return d
    if isinstance(m, Mapping):
        return dict(m)
    raise TypeError(f"metrics: expected VideoMetrics or a mapping; got {type(m).__name__}")


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "&ndash;"
    value = float(value)
    if math.isinf(value):
        return "&infin;"
    return f"{value:.{digits}f}"


def _table(metrics: Mapping[str, dict[str, Any]]) -> str:
    cols = [c for c in _METRIC_COLUMNS if any(m.get(c[0]) is not None or c[0] in m for m in metrics.values())]
    head = "".join(f"<th>{title}</th>" for _, title, _ in cols)
    rows = []
    for name, m in metrics.items():
        cells = "".join(f"<td>{_fmt(m.get(key), digits)}</td>" for key, _, digits in cols)
        rows.append(f"<tr><th scope=\"row\">{html.escape(name)}</th>{cells}</tr>")
    return f"<table><thead><tr><th>video</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _chart(metrics: Mapping[str, dict[str, Any]], key: str = "psnr", width: int = 640, height: int = 200) -> str:
    """An inline SVG line chart of one per-frame metric (empty when there is nothing to draw)."""
    series = {name: list((m.get("per_frame") or {}).get(key, [])) for name, m in metrics.items()}
    finite = [float(v) for vals in series.values() for v in vals if v is not None and math.isfinite(float(v))]
    longest = max((len(v) for v in series.values()), default=0)
    if not finite or longest < 2:
        return ""
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 30
    lines = []
    for i, (name, vals) in enumerate(series.items()):
        pts = []
        for t, v in enumerate(vals):
            if v is None or not math.isfinite(float(v)):
                continue
            x = pad + (width - 2 * pad) * t / (longest - 1)
            y = height - pad - (height - 2 * pad) * (float(v) - lo) / (hi - lo)
            pts.append(f"{x:.1f},{y:.1f}")
        colour = _CHART_COLOURS[i % len(_CHART_COLOURS)]
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(pts)}">'
            f"<title>{html.escape(name)}</title></polyline>"
            f'<text x="{pad + 5}" y="{14 + 13 * i}" fill="{colour}" font-size="11">{html.escape(name)}</text>'
        )
    axes = (
        f'<text x="2" y="{pad}" font-size="10">{hi:.2f}</text>'
        f'<text x="2" y="{height - pad}" font-size="10">{lo:.2f}</text>'
        f'<text x="{width / 2:.0f}" y="{height - 8}" font-size="10">frame</text>'
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#999"/>'
    )
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{axes}{"".join(lines)}</svg>'
        f"<figcaption>per-frame {html.escape(key)}</figcaption></figure>"
    )


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
thead th { background: #f0f0f0; }
tbody th { text-align: left; font-weight: normal; font-family: monospace; }
figure { margin: 1.5em 0; }
figure img { image-rendering: pixelated; max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
"""


def write_report(
    path: str | Path,
    *,
    metrics: Mapping[str, VideoMetrics | Mapping[str, Any]],
    images: Sequence[tuple[str, np.ndarray | str | Path]] = (),
    title: str = "uav evaluation",
    notes: str | None = None,
    embed: bool = True,
) -> Path:
    """Write an HTML report with a metrics table, a per-frame PSNR chart and pictures.

    Args:
        path: the ``.html`` file to write (atomically).
        metrics: video label -> :class:`~uav.eval.video.VideoMetrics` (or its ``to_dict()``).
        images: ``(caption, picture)`` pairs; a picture is a uint8 RGB array or the
            path of an existing PNG.
        title: page title and heading.
        notes: optional plain text shown under the heading.
        embed: embed the pictures as base64 data URIs (one self-contained file);
            when False, arrays are saved as PNGs next to the HTML file and
            referenced by relative path (existing PNG files are referenced as they are,
            relative to the HTML file where possible).

    Returns:
        The path of the report.
    """
    path = Path(path)
    table_data = {str(k): _metrics_dict(v) for k, v in metrics.items()}
    figures = []
    for i, item in enumerate(images):
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ValueError(f"images[{i}]: expected a (caption, picture) pair; got {item!r:.80}")
        caption, picture = item
        file = None if isinstance(picture, np.ndarray) else Path(picture)
        if file is not None and not file.is_file():
            raise FileNotFoundError(f"images[{i}]: no such picture {str(file)!r}")
        if embed:
            data = _png_bytes(picture) if file is None else file.read_bytes()
            src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        elif file is None:
            png = path.with_name(f"{path.stem}_{i:02d}.png")
            _atomic_write(png, _png_bytes(picture))
            src = png.name
        else:
            try:
                src = os.path.relpath(file.resolve(), path.parent.resolve())
            except ValueError:  # another drive on Windows
                src = file.resolve().as_uri()
        figures.append(
            f'<figure><img src="{html.escape(src, quote=True)}" alt="{html.escape(str(caption), quote=True)}">'
            f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
        )
    body = [f"<h1>{html.escape(title)}</h1>"]
    if notes:
        body.append(f"<p>{html.escape(notes)}</p>")
    if table_data:
        body.append("<h2>Metrics</h2>" + _table(table_data) + _chart(table_data))
    if figures:
        body.append("<h2>Pictures</h2>" + "".join(figures))
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    _atomic_write(path, doc.encode("utf-8"))
    return path
