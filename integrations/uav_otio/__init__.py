"""OpenTimelineIO integration for uav: upscale a whole edit clip by clip.

Read a timeline, plan the media ranges the cut really uses (plus handles), render
each with its own settings through an injectable renderer (uav's ``VideoUpscaler``
by default), and write back a timeline whose clips point at the new media::

    from uav_otio import plan_file, upscale_timeline

    loaded, plan = plan_file("cut.otio", handles=12)
    result = upscale_timeline("cut.otio", "cut_uav.otio", "media_uav")

The command line is ``uav timeline plan`` / ``uav timeline upscale``.
"""

from __future__ import annotations

from .api import UpscaleResult, plan_file, upscale_timeline
from .timeline_files import LoadedTimeline, output_paths, read_timeline, write_timeline
from .plan import (
    DEFAULT_HANDLES,
    UPSCALED_KEY,
    ClipUse,
    MediaSource,
    Plan,
    RenderJob,
    SkippedItem,
    plan_timeline,
)
from .relink import DOWNGRADE_SCHEMA_VERSIONS, relink_plan, single_reference_copy
from .render import MANIFEST_NAME, Manifest, RenderReport, atomic_output, render_plan
from .shots import (
    DEFAULT_SETTINGS,
    SHOT_KEYS,
    ShotList,
    ShotSettingsError,
    load_shot_list,
    parse_marker_settings,
    resolve_clip_settings,
    validate_settings,
)
from .upscaler_renderer import UpscalerRenderer

__all__ = [
    "DEFAULT_HANDLES",
    "DEFAULT_SETTINGS",
    "DOWNGRADE_SCHEMA_VERSIONS",
    "MANIFEST_NAME",
    "SHOT_KEYS",
    "UPSCALED_KEY",
    "ClipUse",
    "LoadedTimeline",
    "Manifest",
    "MediaSource",
    "Plan",
    "RenderJob",
    "RenderReport",
    "ShotList",
    "ShotSettingsError",
    "SkippedItem",
    "UpscaleResult",
    "UpscalerRenderer",
    "atomic_output",
    "load_shot_list",
    "output_paths",
    "parse_marker_settings",
    "plan_file",
    "plan_timeline",
    "read_timeline",
    "relink_plan",
    "render_plan",
    "resolve_clip_settings",
    "single_reference_copy",
    "upscale_timeline",
    "validate_settings",
    "write_timeline",
]
