"""Offline media relinked like a conform.

Timelines arrive from other machines: AAFs and XMLs point at ``C:/Users/...`` or
``/Volumes/...``, Avid EDLs name their media only in ``* SOURCE FILE:`` comments
and reel names, and some clips carry no reference at all. :class:`MediaSearch`
looks for each clip's media under search folders, in the order an assistant
editor's conform would:

1. the reference's own path, when it exists (nothing to relink);
2. the file name, anywhere under the search folders; when several files carry
   it, the one whose folders match the original path's tail, else the one whose
   timecode covers the clip;
3. the reel (tape) name and the source timecode: files whose name starts with the
   reel name and whose own start timecode and length cover the clip's source range.

Every relink is reported (:class:`Relink`), and every clip left offline gets a
reason that says what was searched. Paths with a Windows drive, UNC paths and
``/Volumes/...`` are absolute: they are never joined to the timeline's folder, and
resolve only through the search folders.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import opentimelineio as otio

from .manifest import MANIFEST_NAME, Manifest
from .media import UPSCALED_KEY, url_to_path

__all__ = [
    "MEDIA_EXTENSIONS",
    "MediaSearch",
    "MediaSpan",
    "Relink",
    "is_foreign_path",
    "media_names",
    "reel_name",
]

#: file extensions searched when a name comes without one (reels, Avid source names)
MEDIA_EXTENSIONS = frozenset(
    {".mov", ".mp4", ".m4v", ".mxf", ".avi", ".mkv", ".webm", ".mts", ".m2ts", ".mpg", ".mpeg", ".dv", ".y4m"}
)

#: metadata keys (compared without case, ``_`` or spaces) that hold a reel or tape name
_REEL_KEYS = frozenset({"reel", "reelname", "tape", "tapename", "tapeid"})

_DRIVE = re.compile(r"^[A-Za-z]:[/\\]")


def is_foreign_path(url: str) -> bool:
    """Whether ``url`` is an absolute path of another machine: a Windows drive path
    (``C:/x``, ``C:\\x``, ``file:///C:/x``), a UNC path (``\\\\server\\share``) or a
    macOS volume (``/Volumes/...``). Such paths are never relative to the timeline."""
    if not isinstance(url, str) or not url:
        return False
    text = unquote(url)
    if text.lower().startswith("file:"):
        parsed = urlparse(text)
        if parsed.netloc and parsed.netloc.lower() != "localhost":
            return True  # file://server/share/...: a UNC path
        text = parsed.path
    if _DRIVE.match(text.lstrip("/")) or text.startswith("\\\\"):
        return True
    return text.startswith("/Volumes/")


def _parts(url: str) -> list[str]:
    """The path components of a URL or path written on any system."""
    text = unquote(url)
    if text.startswith("file:"):
        text = urlparse(text).path or text[5:]
    return [p for p in re.split(r"[/\\]+", text) if p and p != "."]


@dataclass(frozen=True)
class MediaSpan:
    """A media file's own timing: rate, first frame (its start timecode) and length."""

    path: Path
    rate: Fraction
    start_frame: int
    frames: int

    @property
    def start(self) -> float:
        return self.start_frame / self.rate

    @property
    def end(self) -> float:
        return (self.start_frame + self.frames) / self.rate

    def covers(self, source: otio.opentime.TimeRange) -> bool:
        """Whether a clip's source range lies inside the file.

        Timecodes are labels: when the clip's rate and the file's have the same
        nominal frame count per second (23.976 and 24), frame numbers are compared,
        as a conform compares timecode (an EDL read at 24 fps still finds 23.976 fps
        media); otherwise seconds are, with half a frame of slack.
        """
        rate = source.start_time.rate
        if round(rate) == round(float(self.rate)):
            first = round(source.start_time.value_rescaled_to(rate))
            last = first + round(source.duration.value_rescaled_to(rate))
            return first >= self.start_frame and last <= self.start_frame + self.frames
        slack = 0.5 / float(self.rate)
        start, end = source.start_time.to_seconds(), source.end_time_exclusive().to_seconds()
        return start >= self.start - slack and end <= self.end + slack

    def describe(self) -> str:
        return f"{self.path.name} ({_label_tc(self.start_frame, self.rate)}-" \
               f"{_label_tc(self.start_frame + self.frames, self.rate)})"


def _label_tc(frame: int, rate: Fraction | float) -> str:
    """Frame number ``frame`` as a timecode label (at the nominal rate, non-drop)."""
    try:
        from uav.io import frames_to_timecode

        return frames_to_timecode(frame, Fraction(rate).limit_denominator(1001))
    except (ValueError, TypeError, ZeroDivisionError):
        return f"frame {frame}"


@dataclass(frozen=True)
class Relink:
    """One clip pointed at media found under the search folders."""

    clip: str
    source: str  # the URL or name the timeline gave
    target: Path
    how: str  # "file name", "file name and folder", "file name and timecode", "reel and timecode"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"clip": self.clip, "from": self.source, "to": str(self.target), "how": self.how}
        if self.note:
            d["note"] = self.note
        return d

    def describe(self) -> str:
        extra = f"; {self.note}" if self.note else ""
        return f"relinked {self.clip}: {self.source} -> {self.target} (by {self.how}{extra})"


def media_names(clip: otio.schema.Clip, ref: Any) -> list[str]:
    """File names (or stems) a clip's media is known by, most specific first: the
    reference's path, an Avid EDL ``* SOURCE FILE:`` comment, the reference's name
    and a clip name that is a media file name."""
    names: list[str] = []

    def add(text: Any) -> None:
        if isinstance(text, str) and text.strip():
            name = _parts(text.strip())[-1] if _parts(text.strip()) else ""
            if name and name not in names:
                names.append(name)

    if isinstance(ref, otio.schema.ExternalReference) and ref.target_url:
        add(ref.target_url)
    for comment in (clip.metadata.get("cmx_3600") or {}).get("comments") or []:
        m = re.match(r"^\*?\s*SOURCE FILE:?\s*(.+)$", str(comment), re.IGNORECASE)
        if m:
            add(m.group(1))
    if ref is not None and not isinstance(ref, otio.schema.GeneratorReference):
        add(getattr(ref, "name", None))
    if clip.name and Path(clip.name).suffix.lower() in MEDIA_EXTENSIONS:
        add(clip.name)
    return names


def _find_reel(metadata: Any, depth: int = 0) -> str | None:
    if depth > 4 or not isinstance(metadata, Mapping):
        return None
    for key, value in metadata.items():
        if re.sub(r"[\s_]", "", str(key)).lower() in _REEL_KEYS:
            if isinstance(value, Mapping):
                value = value.get("name")
            if isinstance(value, str) and value.strip() and value.strip().upper() not in ("AX", "BL", "BLACK"):
                return value.strip()
    for value in metadata.values():
        found = _find_reel(value, depth + 1)
        if found:
            return found
    return None


def reel_name(clip: otio.schema.Clip, ref: Any) -> str | None:
    """The reel (tape) name of a clip, as the cmx_3600 adapter (``cmx_3600.reel``),
    FCP7 XML (``fcp_xml ... timecode.reel.name``) and AAF (``Tape``/``TapeID`` user
    comments) keep it; ``AX``/``BL`` (no reel, black) count as none."""
    return _find_reel(clip.metadata) or (_find_reel(ref.metadata) if ref is not None else None)


def _squash(text: str) -> str:
    # EDL writers keep letters, digits and spaces, and cut reel names to 8 characters
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass
class _Outcome:
    path: Path | None = None
    how: str = ""
    note: str = ""
    reason: str = ""


@dataclass
class MediaSearch:
    """Finds offline media under ``search_paths`` (searched recursively, once; ``None`` or
    empty: nothing is searched).

    Raises:
        ValueError: a search path is not an existing folder.
    """

    search_paths: Iterable[str | Path] | None = ()
    relinked: list[Relink] = field(default_factory=list)
    _offline: dict[int, str] = field(default_factory=dict, init=False, repr=False)
    _by_name: dict[str, list[Path]] | None = field(default=None, init=False, repr=False)
    _by_stem: dict[str, list[Path]] = field(default_factory=dict, init=False, repr=False)
    _reels: dict[str, list[Path]] = field(default_factory=dict, init=False, repr=False)
    _spans: dict[Path, MediaSpan | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        given = [self.search_paths] if isinstance(self.search_paths, (str, Path)) else self.search_paths or ()
        paths = []
        for p in given:
            folder = Path(p).expanduser()
            if not folder.is_dir():
                raise ValueError(f"search path {str(p)!r} is not a folder")
            paths.append(folder.resolve())
        self.search_paths = tuple(paths)

    # ------------------------------------------------------------------ index

    def _index(self) -> None:
        if self._by_name is not None:
            return
        self._by_name = {}
        seen: set[Path] = set()
        for root in self.search_paths:
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                renders = _rendered_names(Path(folder)) if MANIFEST_NAME in files else set()
                for f in sorted(files):
                    if f.startswith(".") or f in renders:
                        continue  # partial renders, AppleDouble files; uav's renders are no source media
                    path = Path(folder) / f
                    if path in seen:
                        continue  # nested search paths
                    seen.add(path)
                    self._by_name.setdefault(f.lower(), []).append(path)
                    if path.suffix.lower() in MEDIA_EXTENSIONS:
                        self._by_stem.setdefault(path.stem.lower(), []).append(path)

    def _named(self, name: str) -> list[Path]:
        self._index()
        assert self._by_name is not None
        if Path(name).suffix.lower() in MEDIA_EXTENSIONS or name.lower() in self._by_name:
            return list(self._by_name.get(name.lower(), []))
        return list(self._by_stem.get(name.lower(), []))

    def _reel_candidates(self, reel: str) -> list[Path]:
        self._index()
        key = _squash(reel)
        if not key:
            return []
        if key not in self._reels:  # one scan per reel, however many clips name it
            self._reels[key] = sorted(
                {p for stem, paths in self._by_stem.items() if _squash(stem).startswith(key) for p in paths})
        return self._reels[key]

    def span(self, path: Path) -> MediaSpan | None:
        """The file's own timing, probed with :func:`uav.io.probe` (``None`` when unreadable)."""
        if path not in self._spans:
            from uav.io import VideoInputError, probe, timecode_to_frames

            try:
                info = probe(path)
                start = timecode_to_frames(info.start_timecode, info.fps) if info.start_timecode else 0
                self._spans[path] = MediaSpan(path, Fraction(info.fps), int(start), int(info.num_frames))
            except (VideoInputError, ValueError, OSError):
                self._spans[path] = None
        return self._spans[path]

    # ------------------------------------------------------------------ search

    def _covering(self, paths: list[Path], source: otio.opentime.TimeRange) -> list[Path]:
        return [p for p in paths if (s := self.span(p)) is not None and s.covers(source)]

    def _by_file_name(self, names: list[str], original: list[str], source: otio.opentime.TimeRange) -> _Outcome:
        for name in names:
            found = self._named(name)
            if not found:
                continue
            if len(found) == 1:
                return _Outcome(found[0], "file name")
            scores = {p: _tail_score(p, original) for p in found}
            best = max(scores.values())
            top = [p for p in found if scores[p] == best]
            listing = ", ".join(str(p) for p in found)
            if len(top) == 1 and best > 1:
                return _Outcome(top[0], "file name and folder", f"{len(found)} files named {name}: {listing}")
            covering = self._covering(top, source)
            if len(covering) == 1:
                return _Outcome(covering[0], "file name and timecode", f"{len(found)} files named {name}: {listing}")
            return _Outcome(reason=f"{len(found)} files named {name!r} under the search paths and neither folders "
                                   f"nor timecode tell them apart ({listing}); give a narrower --search-path")
        if names:
            return _Outcome(reason=f"no file named {' or '.join(repr(n) for n in names)} under the search paths")
        return _Outcome(reason="the timeline names no media file")

    def _by_reel(self, reel: str, source: otio.opentime.TimeRange) -> _Outcome:
        candidates = self._reel_candidates(reel)
        rate = source.start_time.rate
        first = round(source.start_time.value)
        wanted = f"{_label_tc(first, rate)}-{_label_tc(first + round(source.duration.value_rescaled_to(rate)), rate)}"
        if not candidates:
            return _Outcome(reason=f"no media file named after reel {reel!r}")
        covering = self._covering(candidates, source)
        if len(covering) == 1:
            return _Outcome(covering[0], "reel and timecode")
        if covering:
            listing = ", ".join(self.span(p).describe() for p in covering)  # type: ignore[union-attr]
            return _Outcome(reason=f"reel {reel!r} at {wanted} matches several files: {listing}")
        spans = [self.span(p) for p in candidates]
        seen = ", ".join(s.describe() if s else f"{p.name} (unreadable)" for p, s in zip(candidates, spans))
        return _Outcome(reason=f"no file of reel {reel!r} covers {wanted} (found {seen})")

    def resolve(self, clip: otio.schema.Clip, ref: Any, label: str, base_dir: Path | None) -> Any:
        """Relink ``clip`` when ``ref``, its source reference, is offline.

        Returns the reference to plan with: ``ref`` itself (online, not relinkable, or
        not found; then :meth:`offline_reason` says why) or the relinked one, which is
        also stored in the clip under the key ``ref`` had (and reported in
        :attr:`relinked`). An ``ExternalReference`` keeps its range and metadata; a
        ``MissingReference`` becomes an ``ExternalReference``.
        """
        if not isinstance(ref, (otio.schema.ExternalReference, otio.schema.MissingReference)) and ref is not None:
            return ref
        original = ref.target_url if isinstance(ref, otio.schema.ExternalReference) else ""
        if original:
            try:
                path = url_to_path(original, base_dir)
            except ValueError:
                return ref  # http:// and friends: not ours to search for
            # on POSIX a drive path stays relative; it must not be found next to the working folder
            if (path.is_absolute() or not is_foreign_path(original)) and path.is_file():
                return ref
        if not self.search_paths:
            if is_foreign_path(original):
                self._offline[id(clip)] = ("a path from another machine, which is never looked up next to the "
                                           "timeline; give --search-path DIR to relink it by file name")
            return ref
        names = media_names(clip, ref)
        source = clip.trimmed_range()
        outcome = self._by_file_name(names, _parts(original) if original else [], source)
        reasons = [outcome.reason]
        reel = reel_name(clip, ref)
        if outcome.path is None and reel:
            by_reel = self._by_reel(reel, source)
            outcome = by_reel if by_reel.path is not None else outcome
            reasons.append(by_reel.reason)
        if outcome.path is None:
            self._offline[id(clip)] = "; ".join(r for r in reasons if r)
            return ref
        new = self._relinked_reference(ref, outcome)
        self._store(clip, ref, new)
        source = original or (names[0] if names else f"reel {reel}")
        self.relinked.append(Relink(label, source, outcome.path, outcome.how, outcome.note))
        return new

    @staticmethod
    def _relinked_reference(ref: Any, outcome: _Outcome) -> otio.schema.ExternalReference:
        assert outcome.path is not None
        if isinstance(ref, otio.schema.ExternalReference):
            new = ref.clone()
            source = ref.target_url
        else:
            new = otio.schema.ExternalReference(
                available_range=ref.available_range if ref is not None else None,
                metadata=dict(ref.metadata) if ref is not None else None,
            )
            new.name = (ref.name if ref is not None else "") or outcome.path.name
            source = ref.name if ref is not None else ""
        new.target_url = outcome.path.resolve().as_uri()
        new.metadata["uav_conform"] = {"from": source, "how": outcome.how}
        return new

    @staticmethod
    def _store(clip: otio.schema.Clip, ref: Any, new: otio.schema.ExternalReference) -> None:
        refs = dict(clip.media_references())
        active = clip.active_media_reference_key
        key = otio.schema.Clip.DEFAULT_MEDIA_KEY if active == UPSCALED_KEY and \
            otio.schema.Clip.DEFAULT_MEDIA_KEY in refs else active
        refs[key] = new
        clip.set_media_references(refs, active)

    def offline_reason(self, clip: otio.schema.Clip, reason: str) -> str:
        """``reason`` (why the planner cannot use the clip's media) with what the search
        found, when it looked for this clip."""
        extra = self._offline.get(id(clip))
        return f"{reason}; {extra}" if extra else reason


def _rendered_names(folder: Path) -> set[str]:
    """The files a uav media folder's manifest lists (renders and their claims)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unreadable manifest only means nothing is excluded
        manifest = Manifest(folder)
    return set(manifest.outputs) | set(manifest.claims)


def _tail_score(path: Path, original: list[str]) -> int:
    """How many trailing path components ``path`` shares with the original path."""
    mine = [p.lower() for p in path.parts]
    theirs = [p.lower() for p in original]
    n = 0
    while n < min(len(mine), len(theirs)) and mine[-1 - n] == theirs[-1 - n]:
        n += 1
    return n

