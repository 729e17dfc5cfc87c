"""The Python API: read a timeline, plan it, upscale it, write it back."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opentimelineio as otio

from .plan import DEFAULT_HANDLES, Plan, RenderJob, plan_timeline
from .relink import DOWNGRADE_SCHEMA_VERSIONS, absolutize_media_urls, relink_plan
from uav.io.atomic import temporary_path

from .exports import check_written
from .manifest import Manifest, owner_id
from .render import RenderReport, Renderer, UpscalerRenderer, render_plan
from .shots import ShotList, load_shot_list

__all__ = [
    "ADAPTER_PACKAGES",
    "Preview",
    "preview_timeline",
    "LoadedTimeline",
    "TimelineReadError",
    "UpscaleResult",
    "adapter_can_write",
    "output_paths",
    "parse_adapter_options",
    "plan_file",
    "read_timeline",
    "timeline_owner",
    "upscale_timeline",
    "write_timeline",
]


@dataclass
class LoadedTimeline:
    """A timeline read from disk and the folder its relative media paths start from."""

    timeline: otio.schema.Timeline
    path: Path | None
    base_dir: Path | None


def _pick_timeline(obj: Any, path: Path, name: str | None) -> otio.schema.Timeline:
    if isinstance(obj, otio.schema.Timeline):
        if name is not None and obj.name != name:
            raise ValueError(f"{str(path)!r} holds timeline {obj.name!r}, not {name!r}")
        return obj
    timelines = [t for t in (obj.find_children(descended_from_type=otio.schema.Timeline)
                             if hasattr(obj, "find_children") else [])]
    if name is not None:
        timelines = [t for t in timelines if t.name == name]
    if len(timelines) == 1:
        return timelines[0]
    names = [t.name for t in (obj.find_children(descended_from_type=otio.schema.Timeline)
                              if hasattr(obj, "find_children") else [])]
    if not names:
        raise ValueError(f"{str(path)!r} holds no timeline (got a {type(obj).__name__})")
    want = f"named {name!r}" if name is not None else "(choose one by name)"
    raise ValueError(f"{str(path)!r} holds {len(names)} timelines {names}; expected one {want}")


#: a JSON timeline nested deeper than this is refused before OpenTimelineIO parses it
#: (its reader recurses: deep enough arrays crash the process); real edits nest < 100
MAX_JSON_DEPTH = 512

#: the package that reads each format OpenTimelineIO does not read by itself
ADAPTER_PACKAGES: dict[str, str] = {
    ".xml": "otio-fcp-adapter (in uav's 'otio' extra)",
    ".edl": "otio-cmx3600-adapter (in uav's 'otio' extra)",
    ".aaf": "otio-aaf-adapter (in uav's 'otio' extra)",
    ".ale": "otio-ale-adapter (in uav's 'otio' extra)",
    ".xges": "otio-xges-adapter (in uav's 'otio' extra)",
    ".ma": "otio-maya-sequencer-adapter (in uav's 'otio' extra)",
    ".fcpxml": "otio-fcpx-xml-adapter",
    ".fcpxmld": "otio-fcpx-xml-adapter",
    ".kdenlive": "otio-kdenlive-adapter",
    ".drp": "otio-drp-adapter",
    ".mlt": "otio-mlt-adapter",
    ".m3u8": "otio-hls-playlist-adapter",
}


class TimelineReadError(ValueError):
    """A timeline file that cannot be read; the message names the file and the adapter."""


@contextlib.contextmanager
def adapter_output_to_stderr() -> Iterator[None]:
    """Send what adapters print (banners, "[Reader] Building timeline tracks...") to
    stderr: stdout carries only uav's own output, e.g. exactly the JSON of ``--json``."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")


def _check_json_depth(path: Path, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (brackets inside strings do not count)."""
    import numpy as np

    data = _JSON_STRING.sub(b'""', path.read_bytes())
    brackets = np.frombuffer(b"".join(_JSON_BRACKETS.findall(data)), dtype=np.uint8)
    if brackets.size == 0:
        return
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int64)
    if int(np.cumsum(steps).max()) > limit:
        raise TimelineReadError(
            f"cannot read timeline {str(path)!r}: its JSON nests deeper than {limit} levels "
            "(not an edit OpenTimelineIO writes; refused before parsing)"
        )


def _adapter_name_for(path: Path, adapter_name: str | None) -> str:
    if adapter_name:
        return adapter_name
    try:
        return otio.adapters.from_filepath(str(path)).name
    except otio.exceptions.OTIOError:
        return "?"


def parse_adapter_options(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["rate=25", "ignore_timecode_mismatch=true"]`` -> ``{"rate": 25, "ignore_...": True}``.

    Values are read as JSON where they parse (numbers, true/false, null, quoted text)
    and kept as text otherwise.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--adapter-option: expected KEY=VALUE with KEY a name, got {item!r}")
        text = value.strip()
        try:
            out[key] = json.loads(text)
        except ValueError:
            lowered = text.lower()
            out[key] = {"true": True, "false": False}.get(lowered, text)
    return out


def read_timeline(
    path: str | Path,
    *,
    adapter_name: str | None = None,
    timeline_name: str | None = None,
    extract_dir: str | Path | None = None,
    rate: float | None = None,
    adapter_options: Mapping[str, Any] | None = None,
) -> LoadedTimeline:
    """Read any timeline OpenTimelineIO can read (``.otio``, ``.otioz``, and with the
    ``otio`` extra FCP7/Premiere XML, CMX 3600 EDL, AAF...).

    Args:
        path: the timeline file.
        adapter_name: force an adapter instead of guessing from the suffix.
        timeline_name: pick a timeline by name when the file holds several.
        extract_dir: where an ``.otioz`` bundle's media is unpacked (default: a
            temporary folder removed at exit).
        rate: the frame rate of an EDL (EDLs do not carry one; the reader assumes 24).
        adapter_options: further keyword arguments for the adapter's reader.

    Raises:
        FileNotFoundError: no such file.
        TimelineReadError: no adapter for the suffix, or the adapter fails on the file
            (the message names the file, the adapter and the adapter's own message).
        ValueError: the file does not hold exactly one (matching) timeline.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"timeline {str(p)!r} does not exist")
    base_dir = p.resolve().parent
    options = dict(adapter_options or {})
    if rate is not None:
        if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate <= 1000):
            raise ValueError(f"--rate: expected a frame rate in (0, 1000], got {rate!r}")
        options["rate"] = rate
    if adapter_name is None and p.suffix.lower() == ".otioz":
        if extract_dir is None:
            extract = Path(tempfile.mkdtemp(prefix="uav-otioz-"))
            atexit.register(shutil.rmtree, extract, True)
            created = True
        else:
            extract = Path(extract_dir)
            created = not extract.exists()
        try:
            try:
                with zipfile.ZipFile(p) as z:
                    extract.mkdir(parents=True, exist_ok=True)
                    z.extractall(extract)  # zipfile drops ".." and absolute parts of names
            except zipfile.BadZipFile as exc:
                raise TimelineReadError(f"{str(p)!r} is not a valid .otioz bundle: {exc}") from None
            content = extract / "content.otio"
            if not content.is_file():
                raise TimelineReadError(f"{str(p)!r} is not a valid .otioz bundle: it has no content.otio")
            obj = _read_with_adapter(content, "otio_json", {}, shown=p)
        except BaseException:
            if created:  # a bad bundle leaves nothing behind
                shutil.rmtree(extract, ignore_errors=True)
            raise
        return LoadedTimeline(_pick_timeline(obj, p, timeline_name), p, extract.resolve())
    obj = _read_with_adapter(p, adapter_name, options, shown=p)
    return LoadedTimeline(_pick_timeline(obj, p, timeline_name), p, base_dir)


def _read_with_adapter(path: Path, adapter_name: str | None, options: dict[str, Any], *, shown: Path) -> Any:
    name = _adapter_name_for(path, adapter_name)
    if name == "otio_json":
        _check_json_depth(path)
    try:
        with adapter_output_to_stderr():
            return otio.adapters.read_from_file(str(path), adapter_name=adapter_name, **options)
    except otio.exceptions.NoKnownAdapterForExtensionError:
        suffix = path.suffix.lower()
        package = ADAPTER_PACKAGES.get(suffix)
        hint = (f"install {package} to read them" if package
                else "name a reader with --adapter if the format is known under another suffix")
        raise TimelineReadError(
            f"no OpenTimelineIO adapter reads {path.suffix!r} files ({str(shown)!r}): {hint}; "
            f"installed adapters: {', '.join(otio.adapters.available_adapter_names())}"
        ) from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # adapters raise anything: AttributeError, ParseError, RuntimeError...
        message = " ".join(str(exc).split()) or "no message"
        hint = ""
        if name == "cmx_3600" and "rate" not in options:
            hint = "; EDLs carry no frame rate and 24 was assumed: pass the edit's rate with --rate (e.g. --rate 25)"
        raise TimelineReadError(
            f"cannot read timeline {str(shown)!r} with the {name} adapter: {type(exc).__name__}: {message}{hint}"
        ) from None


def _load_shots(shots: str | Path | ShotList | None) -> ShotList | None:
    if shots is None or isinstance(shots, ShotList):
        return shots
    return load_shot_list(shots)


def plan_file(
    path: str | Path,
    *,
    handles: int = DEFAULT_HANDLES,
    media_dir: str | Path | None = None,
    shots: str | Path | ShotList | None = None,
    overrides: Mapping[str, Any] | None = None,
    name_by: str = "media",
    ext: str = ".mov",
    timeline_name: str | None = None,
    output: str | Path | None = None,
    adapter_name: str | None = None,
    rate: float | None = None,
    adapter_options: Mapping[str, Any] | None = None,
    search_paths: Sequence[str | Path] | None = None,
) -> tuple[LoadedTimeline, Plan]:
    """Read a timeline file and plan it (see :func:`uav_otio.plan.plan_timeline`;
    ``search_paths`` relink offline media, :mod:`uav_otio.conform`).

    ``output``, the timeline :func:`upscale_timeline` would write, makes the plan name
    outputs exactly as that render will (its own earlier renders may be replaced).
    ``adapter_name``, ``rate`` and ``adapter_options`` go to :func:`read_timeline`."""
    loaded = read_timeline(path, timeline_name=timeline_name, adapter_name=adapter_name, rate=rate,
                           adapter_options=adapter_options)
    plan = plan_timeline(
        loaded.timeline,
        handles=handles,
        media_dir=media_dir,
        shot_list=_load_shots(shots),
        overrides=overrides,
        base_dir=loaded.base_dir,
        name_by=name_by,
        ext=ext,
        owner=timeline_owner(output, path) if output is not None else None,
        search_paths=search_paths,
    )
    return loaded, plan


def _refuse_overwriting_input(output: str | Path, input_path: Path) -> list[Path]:
    """The files written for ``output``; refuses when one of them is the input timeline."""
    targets = output_paths(output, input_path)
    if input_path.resolve() in [p.resolve() for p in targets]:
        raise ValueError(
            f"output {str(output)!r} would overwrite the input timeline {str(input_path)!r}; choose another output name"
        )
    return targets


def timeline_owner(output: str | Path, input_path: str | Path | None = None) -> str:
    """The owner id an output timeline is recorded under in media manifests (its ``.otio``)."""
    return owner_id(output_paths(output, input_path)[0])


def adapter_can_write(suffix: str) -> str | None:
    """The name of the adapter that writes ``suffix`` files, or ``None``."""
    try:
        adapter = otio.adapters.from_filepath(f"x{suffix}")
    except otio.exceptions.OTIOError:
        return None
    return adapter.name if adapter.has_feature("write") else None


def output_paths(output: str | Path, input_path: str | Path | None = None) -> list[Path]:
    """The files :func:`write_timeline` writes for ``output``: always ``.otio``, plus
    ``output`` itself when it names another writable format, plus the input's own
    format when its adapter can write."""
    out = Path(output)
    paths = [out if out.suffix.lower() == ".otio" else out.with_suffix(".otio")]
    if out.suffix.lower() != ".otio":
        if adapter_can_write(out.suffix) is None:
            raise ValueError(f"no OpenTimelineIO adapter writes {out.suffix!r} files (output {str(out)!r})")
        paths.append(out)
    if input_path is not None:
        suffix = Path(input_path).suffix
        if suffix.lower() != ".otio" and adapter_can_write(suffix) is not None:
            extra = out.with_suffix(suffix)
            if extra not in paths:
                paths.append(extra)
    return paths


def write_timeline(
    timeline: otio.schema.Timeline,
    output: str | Path,
    *,
    input_path: str | Path | None = None,
    downgrade: bool = False,
) -> tuple[list[Path], list[str]]:
    """Write ``timeline`` to every file of :func:`output_paths`, each atomically.

    Args:
        timeline: the (relinked) timeline.
        output: the main output path.
        input_path: the input timeline, whose format is written too where possible.
        downgrade: write ``.otio`` in the OTIO 0.14 schema (one media reference per
            clip, the active one) for readers that know only one.

    Every format but ``.otio`` is read back after writing and kept only if every
    clip's source range survived exactly (:func:`uav_otio.exports.check_written`);
    otherwise the file is not left behind and the warnings say ``refused: ...``.

    Returns:
        ``(written, warnings)``: the files written, and why any other format was not.
    """
    written: list[Path] = []
    problems: list[str] = []
    for path in output_paths(output, input_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
        kwargs: dict[str, Any] = {}
        if path.suffix.lower() == ".otio" and downgrade:
            kwargs["target_schema_versions"] = DOWNGRADE_SCHEMA_VERSIONS
        try:
            if path.suffix.lower() == ".otio":
                with adapter_output_to_stderr():
                    otio.adapters.write_to_file(timeline, str(tmp), **kwargs)
            else:
                # a copy: some writers edit what they write (the EDL writer trims around transitions)
                with adapter_output_to_stderr():
                    otio.adapters.write_to_file(timeline.deepcopy(), str(tmp), **kwargs)
                refusal = check_written(tmp, timeline)
                if refusal is not None:
                    with contextlib.suppress(OSError):
                        path.unlink()  # an earlier run's file would now describe other renders
                    problems.append(f"{refusal}; {str(path)!r} not written")
                    continue
            os.replace(tmp, path)
            written.append(path)
        except Exception as exc:  # adapters raise anything from OTIOError to KeyError
            if path.suffix.lower() == ".otio":
                raise
            problems.append(f"could not write {str(path)!r}: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return written, problems


@dataclass
class UpscaleResult:
    """What :func:`upscale_timeline` did."""

    timeline: otio.schema.Timeline
    plan: Plan
    report: RenderReport
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    relinked: int = 0


def upscale_timeline(
    timeline: str | Path | otio.schema.Timeline,
    output: str | Path,
    media_dir: str | Path,
    *,
    renderer: Renderer | None = None,
    weights: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    codec: str = "prores_hq",
    model: Mapping[str, Any] | None = None,
    handles: int = DEFAULT_HANDLES,
    shots: str | Path | ShotList | None = None,
    overrides: Mapping[str, Any] | None = None,
    name_by: str = "media",
    ext: str = ".mov",
    base_dir: str | Path | None = None,
    timeline_name: str | None = None,
    adapter_name: str | None = None,
    rate: float | None = None,
    adapter_options: Mapping[str, Any] | None = None,
    downgrade: bool = False,
    force: bool = False,
    search_paths: Sequence[str | Path] | None = None,
    progress: Callable[[RenderJob, int, int], None] | None = None,
    on_job: Callable[[RenderJob, str], None] | None = None,
    executor: Any = None,
    on_event: Callable[[Any], None] | None = None,
    captioner_options: Mapping[str, Any] | None = None,
    on_caption: Callable[[RenderJob, dict[str, Any], bool], None] | None = None,
) -> UpscaleResult:
    """Upscale every clip an edit uses and write the relinked timeline.

    Args:
        timeline: a timeline file, or a Timeline object (then ``base_dir`` resolves
            relative media paths).
        output: the output timeline (``.otio`` is always written; see :func:`write_timeline`).
        media_dir: where rendered media and the manifest go.
        renderer: ``renderer(job, settings, output_path, progress=None)``; default
            :class:`uav_otio.render.UpscalerRenderer` (uav's ``VideoUpscaler``) built
            from ``weights``, ``device``, ``dtype`` and ``codec``.
        model: what identifies the model for the cache key and metadata; defaults to
            ``renderer.model`` when the renderer has one.
        handles: frames added on each side of each used range.
        shots: a TOML shot list path or a parsed :class:`~uav_otio.shots.ShotList`.
        overrides: settings that beat every other layer.
        name_by, ext: output naming (see :func:`uav_otio.plan.plan_timeline`).
        timeline_name: pick a timeline in a file that holds several.
        adapter_name, rate, adapter_options: how to read the file (see :func:`read_timeline`).
        downgrade: write ``.otio`` for readers with one media reference per clip.
        force: re-render even what the manifest says is done.
        search_paths: folders where offline media is looked for (by file name, then
            reel name and timecode); found media is relinked in the written timeline
            and listed in ``result.plan.relinked``.
        progress, on_job: callbacks (see :func:`uav_otio.render.render_plan`).
        executor, on_event: hand the jobs to a :class:`uav.executors.Executor` (e.g.
            ``make_executor("ray")``) and receive its progress events; see
            :func:`uav_otio.render.render_plan`.
        captioner_options: options of the captioner of ``prompt=auto`` shots
            (``{"model": "/models/llava"}``); their captions are kept in the manifest and
            in the relinked references' ``metadata["uav"]["caption"]``.
        on_caption: ``on_caption(job, caption, cached)`` as each such caption is known.

    Returns:
        An :class:`UpscaleResult`. Rerunning with the same arguments renders nothing
        and rewrites the same timeline.
    """
    mdir = Path(media_dir)
    made: list[Path] = []  # folders this call creates: removed again if it fails and they stay empty
    probe_dir = mdir
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        made.append(probe_dir)
        probe_dir = probe_dir.parent
    try:
        return _upscale_timeline(timeline, output, mdir, renderer=renderer, weights=weights, device=device,
                                 dtype=dtype, codec=codec, model=model, handles=handles, shots=shots,
                                 overrides=overrides, name_by=name_by, ext=ext, base_dir=base_dir,
                                 timeline_name=timeline_name, adapter_name=adapter_name, rate=rate,
                                 adapter_options=adapter_options, search_paths=search_paths,
                                 downgrade=downgrade, force=force, progress=progress, on_job=on_job,
                                 executor=executor, on_event=on_event, captioner_options=captioner_options,
                                 on_caption=on_caption)
    except BaseException:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                if folder.is_dir() and Manifest(folder).discard_if_empty():
                    folder.rmdir()  # only when empty: finished renders are kept
        raise


def _upscale_timeline(
    timeline: str | Path | otio.schema.Timeline,
    output: str | Path,
    mdir: Path,
    *,
    renderer: Renderer | None,
    weights: str | Path | None,
    device: str | None,
    dtype: str | None,
    codec: str,
    model: Mapping[str, Any] | None,
    handles: int,
    shots: str | Path | ShotList | None,
    overrides: Mapping[str, Any] | None,
    name_by: str,
    ext: str,
    base_dir: str | Path | None,
    timeline_name: str | None,
    adapter_name: str | None,
    rate: float | None,
    adapter_options: Mapping[str, Any] | None,
    search_paths: Sequence[str | Path] | None,
    downgrade: bool,
    force: bool,
    progress: Callable[[RenderJob, int, int], None] | None,
    on_job: Callable[[RenderJob, str], None] | None,
    executor: Any = None,
    on_event: Callable[[Any], None] | None = None,
    captioner_options: Mapping[str, Any] | None = None,
    on_caption: Callable[[RenderJob, dict[str, Any], bool], None] | None = None,
) -> UpscaleResult:
    input_path: Path | None = None
    if isinstance(timeline, otio.schema.Timeline):
        tl, bdir = timeline, Path(base_dir) if base_dir is not None else None
    else:
        input_path = Path(timeline)
        extract = mdir / f".{input_path.stem}.otioz-source" if input_path.suffix.lower() == ".otioz" else None
        _refuse_overwriting_input(output, input_path)
        loaded = read_timeline(input_path, timeline_name=timeline_name, extract_dir=extract,
                               adapter_name=adapter_name, rate=rate, adapter_options=adapter_options)
        tl, bdir = loaded.timeline, Path(base_dir) if base_dir is not None else loaded.base_dir
    owner = timeline_owner(output, input_path)
    plan = plan_timeline(
        tl,
        handles=handles,
        media_dir=mdir,
        shot_list=_load_shots(shots),
        overrides=overrides,
        base_dir=bdir,
        name_by=name_by,
        ext=ext,
        owner=owner,
        search_paths=search_paths,
    )
    if renderer is None:
        renderer = UpscalerRenderer(weights=weights, device=device, dtype=dtype, codec=codec)
    if model is None:
        model = getattr(renderer, "model", None) or {}
    report = render_plan(plan, renderer, media_dir=mdir, model=model, force=force, progress=progress, on_job=on_job,
                         owner=owner, executor=executor, on_event=on_event, captioner_options=captioner_options,
                         on_caption=on_caption)
    relinked = relink_plan(tl, plan, report)
    if bdir is not None and Path(output).resolve().parent != bdir.resolve():
        # Relative links to the original media would break next to the new file.
        absolutize_media_urls(tl, bdir)
    written, problems = write_timeline(tl, output, input_path=input_path, downgrade=downgrade)
    return UpscaleResult(tl, plan, report, written, list(plan.warnings) + problems, relinked)


@dataclass
class Preview:
    """What :func:`upscale_timeline` would do, worked out without writing anything."""

    plan: Plan
    render: list[RenderJob] = field(default_factory=list)  # would be rendered
    cached: list[RenderJob] = field(default_factory=list)  # already done
    written: list[Path] = field(default_factory=list)  # timeline files that would be written

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "dry_run": True,
            "render": [{"output": j.output_name, "frames": j.frames, "media": j.media.display,
                        "range": [j.start, j.end], "timecode": j.timecode, "clips": list(j.clip_names),
                        "settings_hash": j.settings_hash} for j in self.render],
            "cached": [j.output_name for j in self.cached],
            "frames_to_render": sum(j.frames for j in self.render),
            "skipped": [s.to_dict() for s in self.plan.skipped],
            "relinked": [r.to_dict() for r in self.plan.relinked],
            "offline": [s.to_dict() for s in self.plan.offline],
            "would_write": [str(p) for p in self.written],
            "warnings": list(self.plan.warnings),
        }


def preview_timeline(
    timeline: str | Path,
    output: str | Path,
    media_dir: str | Path,
    *,
    model: Mapping[str, Any] | None = None,
    handles: int = DEFAULT_HANDLES,
    shots: str | Path | ShotList | None = None,
    overrides: Mapping[str, Any] | None = None,
    name_by: str = "media",
    ext: str = ".mov",
    timeline_name: str | None = None,
    adapter_name: str | None = None,
    rate: float | None = None,
    adapter_options: Mapping[str, Any] | None = None,
    search_paths: Sequence[str | Path] | None = None,
    force: bool = False,
) -> Preview:
    """Everything :func:`upscale_timeline` checks before its first render, and what it
    would render, with nothing written (``--dry-run``).

    The timeline is read and planned (media probed, offline media searched), every
    shot's settings are validated and every component they name is resolved through
    the plugin registry, the output formats are checked, and the media folder's
    manifest is read to tell finished renders from those to do and to find renders
    that would replace another timeline's files.

    Raises:
        the errors :func:`upscale_timeline` would raise before rendering: unreadable
        timeline, bad settings, unknown components, an output that would overwrite the
        input, :class:`~uav_otio.manifest.OutputOwnershipError`.
    """
    from uav.settings import UpscaleSettings

    from .render import jobs_to_render, render_hash
    from .shots import to_upscale_settings

    input_path = Path(timeline)
    mdir = Path(media_dir)
    targets = _refuse_overwriting_input(output, input_path)
    owner = timeline_owner(output, input_path)
    # an .otioz unpacks into a temporary folder removed at exit, never into the media folder
    loaded = read_timeline(input_path, timeline_name=timeline_name, adapter_name=adapter_name, rate=rate,
                           adapter_options=adapter_options)
    plan = plan_timeline(loaded.timeline, handles=handles, media_dir=mdir, shot_list=_load_shots(shots),
                         overrides=overrides, base_dir=loaded.base_dir, name_by=name_by, ext=ext, owner=owner,
                         search_paths=search_paths)
    checked: set[str] = set()
    for job in plan.jobs:  # every component of every distinct shot, as the render will resolve them
        if job.settings_hash not in checked:
            checked.add(job.settings_hash)
            settings: UpscaleSettings = to_upscale_settings(job.settings)
            settings.check_components()
    preview = Preview(plan, written=list(targets))
    model_rec = {k: (str(v) if isinstance(v, Path) else v) for k, v in dict(model or {}).items()}
    hashes = {id(job): render_hash(job, model_rec) for job in plan.jobs}
    # the decision render_plan makes, on the manifest as it is now (read only; a
    # folder that does not exist yet holds nothing, so everything would render)
    if mdir.is_dir():
        pending = {id(job) for job, _ in jobs_to_render(plan, Manifest(mdir), hashes, owner, force=force)}
    else:
        pending = {id(job) for job in plan.jobs}
    preview.render = [job for job in plan.jobs if id(job) in pending]
    preview.cached = [job for job in plan.jobs if id(job) not in pending]
    return preview
