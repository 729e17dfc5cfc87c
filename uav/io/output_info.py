"""What a written output holds, read back from the file: its format, the colour tags
that survived, and its provenance (for ``uav info`` and ``uav upscale --json``).

The colour report compares what the writer was asked to tag with what a reader finds
in the output, so a format that cannot hold a tag is named, never assumed. RGB
outputs (EXR, DPX, PNG, TIFF) hold no YUV matrix and are always full range: those two
tags are reported as not carried, with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .metadata import color_tags, output_color
from .provenance import read_provenance

__all__ = ["RGB_REASONS", "color_report", "describe_output"]

#: why an RGB output does not carry a tag
RGB_REASONS = {"color_space": "RGB output: no YUV matrix (the pixels are already RGB)",
               "color_range": "RGB output: always full range (the reader expanded limited-range YUV)"}


def color_report(path: str | os.PathLike[str], wanted: Mapping[str, str | None] | None) -> dict[str, Any]:
    """``{"carried": {tag: value}, "not_carried": {tag: reason}}`` for an output written
    with the colour tags ``wanted`` (as given to the writer; missing ones are the
    writer's BT.709 defaults)."""
    from .probing import probe

    asked = output_color(dict(wanted or {}))
    info = probe(path)
    found = color_tags(info)
    carried: dict[str, str] = {}
    missing: dict[str, str] = {}
    for key, value in asked.items():
        if info.is_image_sequence and key in RGB_REASONS:
            missing[key] = RGB_REASONS[key]
        elif found.get(key) == value:
            carried[key] = value
        else:
            fmt = info.codec or Path(path).suffix.lstrip(".")
            where = f" (reads back as {found[key]})" if key in found else ""
            missing[key] = f"{fmt} cannot carry {key}={value}{where}"
    return {"carried": carried, "not_carried": missing}


def describe_output(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The facts of a video or sequence output and its provenance record.

    Raises:
        VideoInputError: ``path`` is missing or not a video / image sequence.
    """
    from .probing import probe

    info = probe(path)
    record, where = read_provenance(path)
    facts: dict[str, Any] = {
        "path": str(path),
        "kind": "sequence" if info.is_image_sequence else "video",
        "codec": info.codec,
        "pix_fmt": info.pix_fmt,
        "width": info.width,
        "height": info.height,
        "frames": info.num_frames,
        "fps": str(info.fps),
        "timecode": info.start_timecode,
        "color": color_tags(info),
        "audio": info.has_audio,
    }
    if info.is_image_sequence:
        from .writer import SEQUENCE_AUDIO_NAME

        folder = Path(path).parent if "%" in Path(path).name else Path(path)
        facts["audio"] = (folder / SEQUENCE_AUDIO_NAME).is_file()
        facts["first_frame_number"] = info.first_frame_number
        if info.codec == "exr":
            from .exr import exr_header
            from .sequence import scan_sequence

            first = scan_sequence(os.fspath(path), info.fps).files[0]
            header = exr_header(first)
            facts.update(compression=header["compression"], pixel_type=header["pixel_type"])
    facts["provenance"] = record
    facts["provenance_in"] = where
    return facts
