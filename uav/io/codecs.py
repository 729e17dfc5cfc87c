"""The output formats :class:`~uav.io.writer.VideoWriter` writes, and where each goes.

Video codecs write one file (``.mp4``/``.mov``/``.mkv``, ``.mxf`` for DNxHR);
``png``/``tiff``/``exr``/``dpx`` write a folder of numbered images. The finishing
formats (``exr``, ``dpx``) name their frames ``<folder>.%07d.<ext>``, the pattern
conform and compositing tools expect.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ALPHA_PIX_FMTS", "CodecSpec", "CODECS", "alpha_pix_fmt", "frame_pattern", "known_codecs", "open_encoder",
           "output_path"]


@dataclass(frozen=True)
class CodecSpec:
    """One output format the writer knows."""

    name: str
    description: str
    #: "video" (a file written with PyAV) or "sequence" (a folder of images)
    kind: str
    #: FFmpeg encoder (video) or image extension (sequence)
    encoder: str
    #: pixel format used for 8-bit and for 16-bit input when ``pix_fmt`` is not given
    pix_fmt_8bit: str
    pix_fmt_16bit: str
    #: pixel formats a caller may ask for
    pix_fmts: tuple[str, ...]
    #: file suffixes this codec can be written to (video) / the sequence's extension
    suffixes: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)
    default_crf: int | None = None
    #: how a sequence's frames are named when only a folder is given: ``{stem}`` is the
    #: folder's name (spaces replaced), followed by the extension
    frame_name: str = "%06d"
    #: the writer takes float32 frames and keeps them float (EXR)
    float_frames: bool = False
    #: the smallest frame the encoder takes, ``(width, height)``
    min_size: tuple[int, int] | None = None
    #: suffixes whose files say "full range" for this codec (``None``: all of them). ProRes
    #: in .mov has no range flag (readers assume limited) and FFmpeg reads none back from
    #: DNxHR 444 in .mxf: full-range sources are converted to limited range there.
    full_range_suffixes: tuple[str, ...] | None = None

    def says_full_range(self, suffix: str) -> bool:
        """Whether a file of this codec ending in ``suffix`` can say "full range" (sequences: RGB)."""
        return self.kind != "video" or self.full_range_suffixes is None or suffix.lower() in self.full_range_suffixes

    def bits(self, pix_fmt: str | None = None) -> int:
        """Bits per sample the output holds with ``pix_fmt`` (default: the codec's); 32 for float."""
        fmt = pix_fmt or self.pix_fmt_16bit
        if self.float_frames:
            return 32 if "f32" in fmt else 16
        for bits in (16, 12, 10):
            if str(bits) in fmt.replace("48", "16").replace("64", "16"):
                return bits
        return 8
    #: the pixel format that keeps an alpha channel (``None``: the format has no alpha)
    alpha_pix_fmt: str | None = None

    def keeps_alpha(self, pix_fmt: str | None = None) -> bool:
        """Whether this format, written with ``pix_fmt`` (default: its own), keeps alpha."""
        return self.alpha_pix_fmt is not None and (pix_fmt is None or pix_fmt in ALPHA_PIX_FMTS)


#: the pixel formats with an alpha channel the writer knows
ALPHA_PIX_FMTS = ("yuva444p10le", "rgba", "rgba64")


CODECS: dict[str, CodecSpec] = {
    "h264": CodecSpec(
        "h264", "H.264 / AVC (libx264), 8- or 10-bit", "video", "libx264", "yuv420p", "yuv420p10le",
        ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"),
        (".mp4", ".mov", ".mkv"), {}, 18,
    ),
    "h265": CodecSpec(
        "h265", "H.265 / HEVC (libx265), 8- or 10-bit", "video", "libx265", "yuv420p", "yuv420p10le",
        ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"),
        (".mp4", ".mov", ".mkv"), {"x265-params": "log-level=error"}, 20,
    ),
    "prores_hq": CodecSpec(
        "prores_hq", "Apple ProRes 422 HQ (prores_ks), 10-bit 4:2:2", "video", "prores_ks", "yuv422p10le",
        "yuv422p10le", ("yuv422p10le",), (".mov", ".mkv"), {"profile": "3", "vendor": "apl0"},
        full_range_suffixes=(".mkv",),
    ),
    "prores_4444": CodecSpec(
        "prores_4444", "Apple ProRes 4444 (prores_ks), 10-bit 4:4:4", "video", "prores_ks", "yuv444p10le",
        "yuv444p10le", ("yuv444p10le", "yuva444p10le"), (".mov", ".mkv"), {"profile": "4", "vendor": "apl0"},
        full_range_suffixes=(".mkv",),
        alpha_pix_fmt="yuva444p10le",
    ),
    "png": CodecSpec(
        "png", "PNG image sequence folder, 8- or 16-bit", "sequence", ".png", "rgb24", "rgb48",
        ("rgb24", "rgb48", "rgba", "rgba64"), (".png",), alpha_pix_fmt="rgba",
    ),
    "tiff": CodecSpec(
        "tiff", "16-bit TIFF image sequence folder", "sequence", ".tif", "rgb48", "rgb48", ("rgb48", "rgba64"),
        (".tif", ".tiff"), alpha_pix_fmt="rgba64",
    ),
    "exr": CodecSpec(
        "exr", "OpenEXR image sequence folder, 16-bit half float RGB (--compression piz, zip, dwaa, none)",
        "sequence", ".exr", "rgbf16le", "rgbf16le", ("rgbf16le", "rgbf32le"), (".exr",), frame_name="{stem}.%07d",
        float_frames=True,
    ),
    "dpx": CodecSpec(
        "dpx", "DPX image sequence folder, 10-bit (gbrp10be) or 16-bit (rgb48be) RGB", "sequence", ".dpx",
        "gbrp10be", "gbrp10be", ("gbrp10be", "rgb48be", "gbrp10le", "rgb48le"), (".dpx",), frame_name="{stem}.%07d",
    ),
    "dnxhr_hq": CodecSpec(
        "dnxhr_hq", "Avid DNxHR HQ (dnxhd), 8-bit 4:2:2", "video", "dnxhd", "yuv422p", "yuv422p", ("yuv422p",),
        (".mov", ".mxf"), {"profile": "dnxhr_hq"}, min_size=(256, 120),
    ),
    "dnxhr_hqx": CodecSpec(
        "dnxhr_hqx", "Avid DNxHR HQX (dnxhd), 10-bit 4:2:2", "video", "dnxhd", "yuv422p10le", "yuv422p10le",
        ("yuv422p10le",), (".mov", ".mxf"), {"profile": "dnxhr_hqx"}, min_size=(256, 120),
    ),
    "dnxhr_444": CodecSpec(
        "dnxhr_444", "Avid DNxHR 444 (dnxhd), 10-bit 4:4:4", "video", "dnxhd", "yuv444p10le", "yuv444p10le",
        ("yuv444p10le", "gbrp10le"), (".mov", ".mxf"), {"profile": "dnxhr_444"}, min_size=(256, 120),
        full_range_suffixes=(".mov",),
    ),
}
#: ``dnxhr`` is DNxHR HQX, the 10-bit profile finishing asks for most
CODECS["dnxhr"] = dataclasses.replace(CODECS["dnxhr_hqx"], name="dnxhr",
                                      description="Avid DNxHR HQX (same as dnxhr_hqx), 10-bit 4:2:2")


def known_codecs() -> str:
    """The codec names, comma-separated, for error messages."""
    return ", ".join(CODECS)


def output_path(path: str | Path, spec: CodecSpec) -> tuple[Path, str | None]:
    """``(destination, file name pattern)``: the file, or the folder plus ``%0Nd`` pattern."""
    text = os.fspath(path)
    p = Path(text)
    if spec.kind == "video":
        if p.suffix.lower() not in spec.suffixes:
            raise ValueError(f"{spec.name} output must end in {' or '.join(spec.suffixes)}, got {p.name!r}"
                             + (" (png/tiff write image-sequence folders)" if not p.suffix else ""))
        if p.is_dir():
            raise ValueError(f"output path {p} is an existing folder; give a file name such as {p / 'out.mp4'}")
        return p, None
    if re.search(r"%0?\d*d", p.name):
        if p.suffix.lower() not in spec.suffixes:
            raise ValueError(f"{spec.name} sequence pattern must end in {' or '.join(spec.suffixes)}, got {p.name!r}")
        if spec.frame_name != "%06d" and re.search(r"\s", p.name):
            raise ValueError(f"{spec.name} frame names must not contain spaces (finishing tools split on them), got "
                             f"{p.name!r}")
        return p.parent, p.name
    if p.suffix.lower() in spec.suffixes:
        raise ValueError(f"{spec.name} writes a folder of numbered images, not the single file {p.name!r}; pass a "
                         f"folder (e.g. {p.stem!r}) or a pattern like '{p.stem}/%06d{p.suffix}'")
    if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".avi", ".webm"):
        raise ValueError(f"codec {spec.name!r} writes an image-sequence folder, but the output {p.name!r} looks like a "
                         "video file; pass a folder (e.g. 'out_frames') or a pattern like 'out_frames/%06d.png'")
    return p, frame_pattern(p.name, spec)


def frame_pattern(folder_name: str, spec: CodecSpec) -> str:
    """The file name pattern of a sequence written into the folder ``folder_name``:
    ``%06d.png``, or ``<folder>.%07d.exr`` for the finishing formats (spaces and other
    characters a render farm's tools stumble on become ``_``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", folder_name).strip("._") or "frame"
    return spec.frame_name.format(stem=stem) + spec.encoder


def alpha_pix_fmt(spec: CodecSpec, pix_fmt: str | None, bit_depth: int) -> str:
    """The pixel format that writes RGBA frames with ``spec`` (``pix_fmt`` if it keeps alpha).

    Raises:
        ValueError: the codec, or the ``pix_fmt`` asked for, has no alpha channel.
    """
    if spec.alpha_pix_fmt is None:
        raise ValueError(f"codec {spec.name!r} has no alpha channel; prores_4444, png and tiff keep alpha")
    if pix_fmt is not None and not spec.keeps_alpha(pix_fmt):
        raise ValueError(f"pix_fmt {pix_fmt!r} has no alpha channel; use {spec.alpha_pix_fmt!r}")
    if pix_fmt is not None:
        return pix_fmt
    return "rgba64" if spec.kind == "sequence" and bit_depth == 16 else spec.alpha_pix_fmt


def open_encoder(codec_context: Any, spec: CodecSpec, picture: str) -> None:
    """Open ``codec_context`` (a PyAV encoder set up for ``spec``) now, so that a size or setting
    the encoder refuses (libx264 takes at most 16384 pixels a side) fails with its reason.

    Raises:
        ValueError: ``{codec} ({encoder}) cannot encode {picture} frames: {the encoder's reason}``.
    """
    import av
    import av.logging

    previous, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # the second refusal of a run says why, too
    logs: list[Any] = []
    try:
        with av.logging.Capture() as logs:
            codec_context.open()
    except av.FFmpegError as exc:
        reasons = [str(entry[2]).strip() for entry in logs if str(entry[2]).strip()]
        reason = "; ".join(dict.fromkeys(reasons)) or exc.strerror or str(exc)
        raise ValueError(f"{spec.name} ({spec.encoder}) cannot encode {picture} frames: {reason}; choose another "
                         "--codec (h265, prores_hq, png and tiff take larger pictures) or a smaller input") from None
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skip)
