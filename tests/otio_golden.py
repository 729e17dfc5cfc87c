"""The golden timeline exports in ``tests/data/otio_golden`` and the media they point at.

The exports are hand-written in the form each editor writes (see the folder's README);
they name media on the editor's machine, which :func:`make_media` makes here (tiny
movies whose frame ``i`` is grey level ``4*i``, at the rate and start timecode
``media.json`` gives) for the conform (``search_paths``) to find.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import opentimelineio as otio

import otio_fixtures as F

GOLDEN = Path(__file__).parent / "data" / "otio_golden"


def make_media(folder: Path) -> Path:
    """Every movie ``media.json`` lists, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, spec in json.loads((GOLDEN / "media.json").read_text()).items():
        frames = [np.full((F.H, F.W, 3), F.level(i), np.uint8) for i in range(spec["frames"])]
        F.write_movie(folder / name, frames, Fraction(spec["rate"]), spec["timecode"])
    return folder


def _scrub(value: Any, roots: list[tuple[str, str]]) -> Any:
    """``value`` with the test's folders replaced by ``/GOLDEN`` and hashes (which include
    those folders) by ``*``."""
    if isinstance(value, dict):
        return {k: "*" if k.endswith("_hash") else _scrub(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, roots) for v in value]
    if isinstance(value, str):
        for real, shown in roots:
            value = value.replace(real, shown)
    return value


def normalised(timeline: otio.schema.Timeline, roots: dict[Path, str]) -> otio.schema.Timeline:
    """``timeline`` with each folder of ``roots`` shown as its name there (``{tmp: "/GOLDEN"}``)
    and every hash as ``*``: what it would read had the test run in the same folders."""
    data = json.loads(otio.adapters.write_to_string(timeline, "otio_json"))
    pairs = [(real.resolve().as_uri(), "file://" + shown) for real, shown in roots.items()]
    pairs += [(str(real.resolve()), shown) for real, shown in roots.items()]
    return otio.adapters.read_from_string(json.dumps(_scrub(data, pairs)), "otio_json")
