"""Scene lists on disk: OpenTimelineIO timelines (and every format its adapters write) and
TOML shot lists, written by ``uav scenes`` and read by ``uav upscale --scenes FILE``.

The TOML is a shot list in the timeline integration's format (``[[shot]]`` tables,
read by :func:`uav.shots.shot_list.load_shot_list`), one entry per scene with the
scene's range in ``start``/``end``; the timeline has one clip per scene on a video
track, named like the TOML's entries, so ``uav timeline upscale scenes.otio --shots
scenes.toml`` pairs them too. Per-scene settings come from the same places as in a
timeline: a shot list's keys, a clip's ``uav:`` markers and ``metadata["uav"]``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from uav.scenes.detect import Scene, SceneError, scene_names, timecode_of

__all__ = ["TIMELINE_SUFFIXES", "check_cover", "read_scene_list", "write_scene_list"]

#: what ``-o`` may end in besides ``.toml`` (anything else an installed OTIO adapter writes works too)
TIMELINE_SUFFIXES = (".otio", ".edl", ".xml", ".otioz")


# ---------------------------------------------------------------------------- writing
def write_scene_list(path: str | Path, scenes: Sequence[Scene], *, info: Any, note: str = "") -> Path:
    """Write ``scenes`` of the source ``info`` describes as a TOML shot list or a timeline (by suffix), atomically.

    Raises:
        SceneError: a suffix no installed OpenTimelineIO adapter writes.
    """
    from uav.io.atomic import atomic_output

    out = Path(path)
    if out.suffix.lower() == ".toml":
        text = shot_list_text(scenes, info=info, note=note)
        with atomic_output(out) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        return out
    import opentimelineio as otio

    timeline = scene_timeline(scenes, info=info)
    adapter = _adapter_name(out, write=True)
    # some adapters print banners: stdout carries only uav's own output (--json)
    with atomic_output(out) as tmp, contextlib.redirect_stdout(sys.stderr):
        try:
            otio.adapters.write_to_file(timeline, str(tmp), adapter_name=adapter)
        except Exception as exc:  # adapters raise anything; one line naming the file
            raise SceneError(f"{out}: the {adapter} adapter cannot write these scenes ({exc})") from None
    return out


def shot_list_text(scenes: Sequence[Scene], *, info: Any, note: str = "") -> str:
    """The TOML shot list of ``scenes``: one ``[[shot]]`` per scene with ``clip``, ``start``, ``end``."""
    name = Path(info.path).name
    lines = [f"# Scenes of {name}{': ' + note if note else ''}",
             f"# {len(scenes)} scene(s), frames {scenes[0].start}-{scenes[-1].end} at {info.fps} fps.",
             f"# start/end: frames of {name} (end exclusive) or 'HH:MM:SS:FF' timecodes; scenes must meet.",
             "# Add per-shot settings to a scene (prompt = \"...\", noise_level = 60 ...), move a cut by",
             "# editing two bounds, join two scenes by deleting one entry and extending its neighbour.",
             f"#   uav upscale {name} --scenes {name.rsplit('.', 1)[0]}.toml", ""]
    for scene in scenes:
        lines += ["[[shot]]", f"clip = {json.dumps(scene.name)}", f"start = {scene.start}", f"end = {scene.end}"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in scene.settings.items()]
        a, b = timecode_of(scene.start, info.fps, info.start_timecode), timecode_of(scene.end, info.fps,
                                                                                  info.start_timecode)
        if a and b:
            lines.append(f"# {a} - {b} ({scene.frames} frames)")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string takes JSON's escapes


def _media_origin(info: Any) -> int:
    """The media time of the file's first frame: its start timecode in frames, else 0."""
    from uav.io.timecode import timecode_rate_supported, timecode_to_frames

    if info.start_timecode and timecode_rate_supported(info.fps):
        with contextlib.suppress(ValueError):
            return timecode_to_frames(info.start_timecode, info.fps)
    return 0


def scene_timeline(scenes: Sequence[Scene], *, info: Any) -> Any:
    """An OTIO timeline with one clip per scene (named as the scene) over the source file."""
    import opentimelineio as otio

    rate = float(info.fps)
    origin = _media_origin(info)

    def span(start: int, frames: int) -> Any:
        return otio.opentime.TimeRange(otio.opentime.RationalTime(start, rate),
                                       otio.opentime.RationalTime(frames, rate))

    source = Path(info.path).resolve()
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for scene in scenes:
        ref = otio.schema.ExternalReference(target_url=source.as_uri(), available_range=span(origin, info.num_frames))
        clip = otio.schema.Clip(name=scene.name, media_reference=ref, source_range=span(origin + scene.start,
                                                                                        scene.frames))
        if scene.settings:
            clip.metadata["uav"] = dict(scene.settings)
        track.append(clip)
    # record timecodes run along the source's own, as an NLE's sequence of the file would
    timeline = otio.schema.Timeline(name=f"{source.stem} scenes", global_start_time=otio.opentime.RationalTime(
        origin + (scenes[0].start if scenes else 0), rate))
    timeline.tracks.append(track)
    return timeline


# ---------------------------------------------------------------------------- reading
def read_scene_list(path: str | Path, *, info: Any, first: int, stop: int) -> tuple[list[Scene], list[str]]:
    """The scenes a TOML shot list or a timeline gives for frames ``[first, stop)`` of the source, and warnings.

    Raises:
        SceneError: an unreadable file, bad settings, or scenes that do not cover the
            range exactly once (the message names the scenes at fault).
    """
    p = Path(path)
    if not p.is_file():
        raise SceneError(f"--scenes {p}: no such file; give auto, none, or a scene list (.toml, .otio, .edl ...)")
    if p.suffix.lower() == ".toml":
        scenes, warnings = _from_shot_list(p, info)
    else:
        scenes, warnings = _from_timeline(p, info), []
    check_cover(scenes, first, stop, source=str(p))
    return scenes, warnings


def check_cover(scenes: Sequence[Scene], first: int, stop: int, *, source: str) -> None:
    """Refuse scenes that leave a frame of ``[first, stop)`` out or give one twice."""
    if not scenes:
        raise SceneError(f"{source}: no scenes (a [[shot]] needs start and end; a timeline, clips)")
    if scenes[0].start != first or scenes[-1].end != stop:
        raise SceneError(f"{source}: the scenes cover frames {scenes[0].start}-{scenes[-1].end} but the input is "
                         f"frames {first}-{stop}; give --start/--end or make the scenes cover it")
    for a, b in zip(scenes, scenes[1:]):
        if a.end != b.start:
            what = "overlaps" if a.end > b.start else "leaves a gap before"
            raise SceneError(f"{source}: {a.name!r} ends at frame {a.end} and {what} {b.name!r}, which starts at "
                             f"{b.start}; scenes must meet")
    for scene in scenes:
        if scene.frames <= 0:
            raise SceneError(f"{source}: {scene.name!r} is empty (frames {scene.start}-{scene.end})")


def _frame(value: int | str, info: Any, where: str) -> int:
    from uav.io.reader import parse_frame_position

    try:
        return int(parse_frame_position(value, info.fps, info.start_timecode))
    except ValueError as exc:
        raise SceneError(f"{where}: {exc}") from None


def _from_shot_list(path: Path, info: Any) -> tuple[list[Scene], list[str]]:
    from uav.shots.settings import ShotSettingsError, validate_settings
    from uav.shots.shot_list import load_shot_list

    try:
        shots = load_shot_list(path)
    except (ShotSettingsError, OSError) as exc:
        raise SceneError(str(exc)) from None
    ranged = [e for e in shots.entries if e.start is not None or e.end is not None]
    if not ranged:
        raise SceneError(f"{path}: no [[shot]] has start/end; write a scene list with uav scenes IN -o {path.name}")
    ranged.sort(key=lambda e: _frame(e.start if e.start is not None else 0, info, e.describe()))
    names = scene_names(len(ranged))
    scenes, used = [], set()
    for k, entry in enumerate(ranged):
        if entry.start is None:
            raise SceneError(f"{path}: {entry.describe()} has an end but no start")
        start = _frame(entry.start, info, f"{path}: {entry.describe()}")
        end = _frame(entry.end, info, f"{path}: {entry.describe()}") if entry.end is not None else (
            _frame(ranged[k + 1].start, info, entry.describe()) if k + 1 < len(ranged) else info.num_frames)
        name = entry.match_value if entry.match_kind == "clip" else names[k]
        layers = [e for e in shots.entries if e not in ranged and e.matches(name, (), str(info.path))]
        layers.sort(key=lambda e: ({"media": 0, "marker": 1, "clip": 2}[e.match_kind], e.index))
        merged: dict[str, Any] = {}
        for layer in [*layers, entry]:
            merged.update(layer.settings)
            used.add(layer.index)
        try:
            validate_settings(merged, clip=name, where=f"{path}", text=False)
        except ShotSettingsError as exc:
            raise SceneError(str(exc)) from None
        scenes.append(Scene(k + 1, start, end, name, merged))
    warnings = [f"{path}: {e.describe()} matched no scene" for e in shots.entries if e.index not in used]
    return scenes, warnings


def _from_timeline(path: Path, info: Any) -> list[Scene]:
    import opentimelineio as otio

    from uav.shots.layers import resolve_clip_settings
    from uav.shots.settings import ShotSettingsError

    kwargs = {"rate": float(info.fps)} if path.suffix.lower() == ".edl" else {}
    adapter = _adapter_name(path)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # as in write_scene_list
            timeline = otio.adapters.read_from_file(str(path), adapter_name=adapter, **kwargs)
    except Exception as exc:  # adapters raise anything: one line naming the file
        raise SceneError(f"--scenes {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(timeline, otio.schema.Timeline):
        raise SceneError(f"--scenes {path}: holds a {type(timeline).__name__}, not one timeline")
    clips = _first_video_clips(timeline.video_tracks())
    if not clips:
        raise SceneError(f"--scenes {path}: no clip on an enabled video track")
    scenes = []
    names = scene_names(len(clips))
    for k, clip in enumerate(clips):
        start, end = _clip_frames(clip, info)
        name = clip.name or names[k]
        try:
            settings, origin = resolve_clip_settings(clip, timeline=timeline, clip_label=name)
        except ShotSettingsError as exc:
            raise SceneError(f"--scenes {path}: {exc}") from None
        mine = {key: value for key, value in settings.items() if origin.get(key, "default") != "default"}
        scenes.append(Scene(k + 1, start, end, name, mine))
    return sorted(scenes, key=lambda s: s.start)


def _first_video_clips(tracks: Iterable[Any]) -> list[Any]:
    import opentimelineio as otio

    for track in tracks:
        if track.enabled:
            clips = [item for item in track if isinstance(item, otio.schema.Clip) and item.enabled]
            if clips:
                return clips
    return []


def _clip_frames(clip: Any, info: Any) -> tuple[int, int]:
    """A clip's source range as frames of the file (its media's first frame is 0)."""
    import opentimelineio as otio

    fps = float(info.fps)
    ref = clip.media_reference
    available = getattr(ref, "available_range", None) if isinstance(ref, otio.schema.ExternalReference) else None
    origin = round(available.start_time.to_frames(fps)) if available is not None else _media_origin(info)
    used = clip.trimmed_range()
    start = round(used.start_time.value_rescaled_to(fps)) - origin
    return start, start + round(used.duration.value_rescaled_to(fps))


def _adapter_name(path: Path, *, write: bool = False) -> str:
    import opentimelineio as otio

    try:
        return otio.adapters.from_filepath(str(path)).name
    except Exception:
        verb = "writes" if write else "reads"
        raise SceneError(f"{path}: no installed OpenTimelineIO adapter {verb} {path.suffix or 'this file'}; use "
                         ".toml or .otio (EDL and XML need uav's 'otio' extra: pip install 'uav[otio]')") from None
