"""Timeline files: read any edit OpenTimelineIO can read, and write it back in every format that keeps it exact.

Reading guards against what adapters do badly (deep JSON that crashes the parser,
banners printed on stdout, exceptions of any type) and names the file and the adapter
in every error; writing is atomic per file, and a format that would not keep every
clip's source range is refused rather than written (:mod:`uav_otio.exports`).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import opentimelineio as otio

from uav.io.atomic import temporary_path

from .edl import EdlError, edl_hint, edl_rate, prepare_edl
from .exports import UnplaceableClip, check_written, for_writer
from .manifest import owner_id
from .relink import DOWNGRADE_SCHEMA_VERSIONS

__all__ = [
    "ADAPTER_PACKAGES",
    "MAX_JSON_DEPTH",
    "LoadedTimeline",
    "TimelineReadError",
    "adapter_can_write",
    "adapter_output_to_stderr",
    "output_paths",
    "parse_adapter_options",
    "read_timeline",
    "refuse_overwriting_input",
    "show_adapter_output",
    "timeline_owner",
    "write_timeline",
]


@dataclass
class LoadedTimeline:
    """A timeline read from disk and the folder its relative media paths start from."""

    timeline: otio.schema.Timeline
    path: Path | None
    base_dir: Path | None
    #: what reading changed or assumed (an EDL's motion effects, skipped keys, drop frame), for the plan's warnings
    notes: list[str] = field(default_factory=list)


def _pick_timeline(obj: Any, path: Path, name: str | None) -> otio.schema.Timeline:
    """The timeline of a file: the only one, or the one named ``name`` (``--timeline``)."""
    if isinstance(obj, otio.schema.Timeline):
        timelines = [obj]
    elif hasattr(obj, "find_children"):
        timelines = list(obj.find_children(descended_from_type=otio.schema.Timeline))
    else:
        timelines = []
    if not timelines:
        raise ValueError(f"{str(path)!r} holds no timeline (got a {type(obj).__name__})")
    names = [t.name for t in timelines]
    chosen = timelines if name is None else [t for t in timelines if t.name == name]
    if len(chosen) == 1:
        return chosen[0]
    if name is None:
        raise ValueError(f"{str(path)!r} holds {len(names)} timelines {names}; choose one with --timeline NAME")
    if not chosen:
        raise ValueError(f"{str(path)!r} holds no timeline named {name!r}; its timelines: {names}")
    raise ValueError(f"{str(path)!r} holds {len(chosen)} timelines named {name!r}; rename one in the editor")


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
    ".fcpxml": "otio-fcpx-xml-adapter (in uav's 'otio' extra)",
    ".fcpxmld": "otio-fcpx-xml-adapter (in uav's 'otio' extra)",
    ".kdenlive": "otio-kdenlive-adapter (in uav's 'otio' extra)",
    ".drp": "otio-drp-adapter",
    ".mlt": "otio-mlt-adapter",
    ".m3u8": "otio-hls-playlist-adapter",
}


class TimelineReadError(ValueError):
    """A timeline file that cannot be read; the message names the file and the adapter."""


#: whether what adapters print reaches stderr (``--debug``: :func:`show_adapter_output`)
_SHOW_ADAPTER_OUTPUT: contextvars.ContextVar[bool] = contextvars.ContextVar("uav_otio_show_adapter_output",
                                                                             default=False)


@contextlib.contextmanager
def show_adapter_output(show: bool = True) -> Iterator[None]:
    """Within the block, what adapters print goes to stderr (``--debug``); outside, it is dropped."""
    token = _SHOW_ADAPTER_OUTPUT.set(show)
    try:
        yield
    finally:
        _SHOW_ADAPTER_OUTPUT.reset(token)


@contextlib.contextmanager
def adapter_output_to_stderr() -> Iterator[io.StringIO | None]:
    """Keep what adapters print (banners, "Unable find slot_id ...", "[Reader] Building
    timeline tracks...") off stdout, which carries only uav's own output (exactly the
    JSON of ``--json``): on stderr inside :func:`show_adapter_output`, else held in the
    yielded buffer and dropped."""
    if _SHOW_ADAPTER_OUTPUT.get():
        with contextlib.redirect_stdout(sys.stderr):
            yield None
        return
    held = io.StringIO()
    with contextlib.redirect_stdout(held), contextlib.redirect_stderr(held):
        yield held


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
            out[key] = {"true": True, "false": False}.get(text.lower(), text)
    return out


def read_timeline(
    path: str | Path,
    *,
    adapter_name: str | None = None,
    timeline_name: str | None = None,
    extract_dir: str | Path | None = None,
    rate: float | str | Fraction | None = None,
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
        rate: the frame rate of an EDL (EDLs do not carry one; the reader assumes 24),
            read as :func:`uav_otio.edl.edl_rate` reads it (``"30000/1001"``, ``"29.97"``,
            ``25``...). An EDL is made readable first (:func:`uav_otio.edl.prepare_edl`:
            drop frame, motion effects, keys); what that changed is in ``notes``.
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
    exact_rate = edl_rate(rate) if rate is not None else None
    notes: list[str] = []
    if adapter_name is None and p.suffix.lower() == ".otioz":
        obj, base_dir = _read_otioz(p, extract_dir)
    elif _adapter_name_for(p, adapter_name) == "cmx_3600":
        obj = _read_edl(p, options, exact_rate, notes)
    else:
        if exact_rate is not None:
            options["rate"] = float(exact_rate)
        obj = _read_with_adapter(p, adapter_name, options, shown=p)
    return LoadedTimeline(_pick_timeline(obj, p, timeline_name), p, base_dir, notes)


def _read_edl(p: Path, options: dict[str, Any], rate: Fraction | None, notes: list[str]) -> Any:
    """An EDL, made readable first (:func:`uav_otio.edl.prepare_edl`) and read at its exact rate."""
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # Avid on Windows writes its code page
    try:
        prepared = prepare_edl(text, rate)
    except EdlError as exc:
        raise TimelineReadError(f"cannot read timeline {str(p)!r}: {exc}") from None
    notes.extend(prepared.notes)
    if prepared.rate is not None:
        options = {**options, "rate": float(prepared.rate)}
    return _read_with_adapter(p, "cmx_3600", options, shown=p, text=prepared.text, rate_given=rate is not None)


def _unsafe_member(member: zipfile.ZipInfo) -> bool:
    """A bundle member that would land outside the folder it is unpacked into (absolute,
    a drive, ``..``) or that is a symbolic link."""
    name = member.filename.replace("\\", "/")
    is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
    return is_link or name.startswith("/") or bool(PureWindowsPath(name).drive) or ".." in PurePosixPath(name).parts


def _read_otioz(p: Path, extract_dir: str | Path | None) -> tuple[Any, Path]:
    """Unpack an ``.otioz`` (after checking every member name: a bundle that would write
    outside its folder is refused before anything is unpacked) and read its content."""
    try:
        with zipfile.ZipFile(p) as z:
            bad = next((m.filename for m in z.infolist() if _unsafe_member(m)), None)
            if bad is not None:
                raise TimelineReadError(f"{str(p)!r} is not a safe .otioz bundle: member {bad!r} is a link or would be "
                                        "unpacked outside its folder; nothing was unpacked")
            if extract_dir is None:
                extract = Path(tempfile.mkdtemp(prefix="uav-otioz-"))
                atexit.register(shutil.rmtree, extract, True)
                created = True
            else:
                extract = Path(extract_dir)
                created = not extract.exists()
            try:
                extract.mkdir(parents=True, exist_ok=True)
                z.extractall(extract)
                content = extract / "content.otio"
                if not content.is_file():
                    raise TimelineReadError(f"{str(p)!r} is not a valid .otioz bundle: it has no content.otio")
                return _read_with_adapter(content, "otio_json", {}, shown=p), extract.resolve()
            except BaseException:
                if created:  # a bad bundle leaves nothing behind
                    shutil.rmtree(extract, ignore_errors=True)
                raise
    except zipfile.BadZipFile as exc:
        raise TimelineReadError(f"{str(p)!r} is not a valid .otioz bundle: {exc}") from None


def _read_with_adapter(path: Path, adapter_name: str | None, options: dict[str, Any], *, shown: Path,
                       text: str | None = None, rate_given: bool = True) -> Any:
    """Read ``path`` (or ``text``, its prepared content) with its adapter; every failure is a
    :class:`TimelineReadError` naming the file and the adapter (and, for an EDL, what to do)."""
    name = _adapter_name_for(path, adapter_name)
    if name == "otio_json":
        _check_json_depth(path)
    said: io.StringIO | None = None
    try:
        with adapter_output_to_stderr() as said:
            if text is not None:
                return otio.adapters.read_from_string(text, adapter_name=name, **options)
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
        hint = f"; {edl_hint(message, rate_given)}" if name == "cmx_3600" else ""
        if said is not None and said.getvalue().strip():
            hint += " (--debug shows what the adapter printed)"
        what = f"{type(exc).__name__}: {message}"
        if _internal(exc):  # the adapter tripped over the file's layout: say that, then what it said
            what = f"the file is not laid out as this reader expects (its error: {what}); export it again, or name " \
                   "another reader with --adapter"
        raise TimelineReadError(f"cannot read timeline {str(shown)!r} with the {name} adapter: {what}{hint}") from None


def _internal(exc: Exception) -> bool:
    """An adapter's own Python error on an unexpected file ("not enough values to unpack",
    ``'NoneType' object has no attribute``, a missing key), as opposed to its report on the file."""
    return isinstance(exc, (AttributeError, KeyError, TypeError, IndexError, ZeroDivisionError)) or (
        isinstance(exc, ValueError) and "values to unpack" in str(exc))



def refuse_overwriting_input(output: str | Path, input_path: Path) -> list[Path]:
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


#: suffixes uav never writes, and what to write instead
NOT_WRITTEN: dict[str, str] = {
    ".mlt": ("otio-mlt-adapter writes them, but it has no reader, so uav could not check that every in-point "
             "survived; write '.kdenlive' instead (an MLT project: melt plays it as it is, Kdenlive opens it)"),
}

#: suffixes whose package in :data:`ADAPTER_PACKAGES` also writes them
_WRITTEN_BY_PACKAGE = frozenset({".xml", ".edl", ".aaf", ".ale", ".xges", ".ma", ".fcpxml", ".kdenlive"})


def adapter_can_write(suffix: str) -> str | None:
    """The name of the adapter that writes ``suffix`` files, or ``None`` (also for the
    suffixes of :data:`NOT_WRITTEN`)."""
    if suffix.lower() in NOT_WRITTEN:
        return None
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
            raise ValueError(_cannot_write(out))
        paths.append(out)
    if input_path is not None:
        suffix = Path(input_path).suffix
        if suffix.lower() != ".otio" and adapter_can_write(suffix) is not None:
            extra = out.with_suffix(suffix)
            if extra not in paths:
                paths.append(extra)
    return paths


#: adapters whose files hold an ``ImageSequenceReference`` (OpenTimelineIO's own formats)
SEQUENCE_ADAPTERS = ("otio_json", "otioz", "otiod")


def sequence_refusal(timeline: otio.schema.Timeline, path: Path) -> str | None:
    """``refused: ...`` when ``timeline`` links a clip to an image sequence and the adapter
    for ``path`` cannot express one (EDL, FCP XML, AAF...: they would name one file or fail)."""
    adapter = adapter_can_write(path.suffix) or path.suffix
    if adapter in SEQUENCE_ADAPTERS:
        return None
    for clip in timeline.find_clips():
        ref = clip.media_reference
        if isinstance(ref, otio.schema.ImageSequenceReference):
            pattern = f"{ref.name_prefix}%0{ref.frame_zero_padding}d{ref.name_suffix}"
            return (f"refused: {adapter} ({path.suffix}) cannot express image sequences: clip {clip.name!r} links to "
                    f"{ref.target_url_base}{pattern}; {str(path)!r} not written (the .otio holds it)")
    return None


def _cannot_write(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in NOT_WRITTEN:
        return f"uav does not write {out.suffix!r} timelines (output {str(out)!r}): {NOT_WRITTEN[suffix]}"
    package = ADAPTER_PACKAGES.get(suffix) if suffix in _WRITTEN_BY_PACKAGE else None
    hint = f": install {package} to write them" if package else ""
    return f"no OpenTimelineIO adapter writes {out.suffix!r} files (output {str(out)!r}){hint}"


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
        try:
            if path.suffix.lower() == ".otio":
                with adapter_output_to_stderr():
                    otio.adapters.write_to_file(timeline, str(tmp),
                                                target_schema_versions=DOWNGRADE_SCHEMA_VERSIONS if downgrade else None)
            else:
                refusal = sequence_refusal(timeline, path)
                if refusal is not None:
                    with contextlib.suppress(OSError):
                        path.unlink()  # an earlier run's file would now describe other renders
                    problems.append(refusal)
                    continue
                adapter = otio.adapters.from_filepath(str(path)).name
                try:
                    handed = for_writer(timeline, adapter)
                except UnplaceableClip as exc:
                    problems.append(f"refused: {path.suffix} cannot place every clip: {exc}; {str(path)!r} not written")
                    continue
                with adapter_output_to_stderr():
                    otio.adapters.write_to_file(handed, str(tmp))
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
