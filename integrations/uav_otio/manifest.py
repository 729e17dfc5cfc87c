"""The media folder's manifest: which outputs exist, what made them, and who relies on them.

Every output file in a media folder is recorded in ``uav_manifest.json`` with the
hash of what produced it (media, range, settings, model) and its **owners**: the
output timelines that point at it. Two cuts may share a media folder: an output is
shared when both need the same content, and is never replaced by other content
while a timeline other than the one being rendered relies on it
(:class:`OutputOwnershipError`). Output names are chosen with the manifest in view
(:func:`free_for`), so two cuts that use the same media differently get different
files instead of overwriting each other.

Several processes may render into one folder at once: every change re-reads the
manifest under an exclusive lock (``uav_manifest.json.lock``) and writes it
atomically, so no process drops another's entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from uav.io.atomic import TEMP_MARK, clean_stale_temporaries, process_alive, temporary_path
from uav.io.provenance import settings_hash as compute_settings_hash


try:  # POSIX; on Windows the lock is a no-op and one process per folder is assumed
    import fcntl
except ImportError:  # pragma: no cover - not exercised on Linux CI
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "output_size",
    "MANIFEST_NAME",
    "PARTIAL_MARK",
    "Manifest",
    "OutputOwnershipError",
    "clean_partials",
    "compute_settings_hash",
    "owner_id",
    "write_json_atomic",
]

#: the manifest's file name inside the media folder
MANIFEST_NAME = "uav_manifest.json"
#: marks temporary files (uav.io's temporary names); one in the media folder is a leftover or in flight
PARTIAL_MARK = TEMP_MARK
_MANIFEST_FORMAT = "uav-timeline-manifest"
_MANIFEST_VERSION = 2


class OutputOwnershipError(ValueError):
    """Rendering would replace a file another timeline relies on with other content."""


def owner_id(path: str | Path | None) -> str | None:
    """How an output timeline is named as an owner: its absolute path (``None``: unknown)."""
    if path is None:
        return None
    return str(Path(path).expanduser().resolve())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it."""
    tmp = temporary_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


#: remove the temporaries of interrupted runs from a media folder (a run rendering there now keeps its own)
clean_partials = clean_stale_temporaries


def _owners(entry: Mapping[str, Any]) -> set[str]:
    return {str(o) for o in entry.get("owners") or ()}


def output_size(path: Path) -> int | None:
    """Bytes of an output: a file's size, or the total of an image-sequence folder's files;
    ``None`` when there is none."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return None


class Manifest:
    """The record of finished outputs in a media folder, and of their owners.

    ``outputs`` maps a file name to its entry: ``render_hash`` (what the content is
    made from), ``settings_hash`` (the job: media, range, settings), ``owners`` (output
    timelines relying on it), and what was recorded for people (settings, range...).
    """

    def __init__(self, media_dir: str | Path) -> None:
        self.media_dir = Path(media_dir)
        self.path = self.media_dir / MANIFEST_NAME
        self.outputs: dict[str, dict[str, Any]] = {}
        #: renders in flight (or killed): name -> owner, render_hash, settings_hash, pid
        self.claims: dict[str, dict[str, Any]] = {}
        #: automatic prompts already made: caption key -> caption, captioner, frame, media, range
        self.captions: dict[str, dict[str, Any]] = {}
        self.reload()

    # ------------------------------------------------------------------ reading
    def reload(self) -> None:
        """Read the manifest from disk (an unreadable one is ignored with a warning)."""
        self.outputs, self.claims, self.captions = {}, {}, {}
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != _MANIFEST_FORMAT or not isinstance(data.get("outputs"), dict):
                raise ValueError("not a uav manifest")
            self.outputs = {str(k): dict(v) for k, v in data["outputs"].items() if isinstance(v, dict)}
            claims = data.get("claims") if isinstance(data.get("claims"), dict) else {}
            self.claims = {str(k): dict(v) for k, v in claims.items() if isinstance(v, dict)}
            captions = data.get("captions") if isinstance(data.get("captions"), dict) else {}
            self.captions = {str(k): dict(v) for k, v in captions.items()
                             if isinstance(v, dict) and isinstance(v.get("caption"), str)}
        except (ValueError, OSError) as exc:
            # Every entry only saves work; starting empty just re-renders (and never
            # overwrites: files without an entry are treated as someone else's).
            warnings.warn(f"ignoring unreadable manifest {str(self.path)!r}: {exc}", stacklevel=2)
            self.outputs = {}

    def is_current(self, name: str, render_hash: str) -> bool:
        """Whether ``name`` exists, is the size recorded, and was made from ``render_hash``."""
        entry = self.outputs.get(name)
        if not entry or entry.get("render_hash") != render_hash:
            return False
        size = output_size(self.media_dir / name)
        return size is not None and size == entry.get("size")

    def name_for_job(self, settings_hash: str) -> str | None:
        """The name an earlier render of the same job (media, range, settings) went to."""
        for name, entry in sorted(self.outputs.items()):
            if entry.get("settings_hash") == settings_hash and output_size(self.media_dir / name) is not None:
                return name
        return None

    def free_for(self, name: str, settings_hash: str, owner: str | None) -> bool:
        """Whether the job ``settings_hash`` of ``owner`` may use the file name ``name``.

        It may when nothing is there, when the file there was made for the same job,
        or when every timeline relying on it is ``owner`` itself (the owner is changing
        its own render). A file with no manifest entry is someone else's: never free.
        """
        entry = self.outputs.get(name)
        claim = self.claims.get(name)
        if claim is not None and claim.get("settings_hash") != settings_hash and claim.get("owner") != owner \
                and process_alive(int(claim.get("pid", 0))):
            return False  # another run is writing other content there right now
        if entry is None:
            ours = claim is not None and (claim.get("settings_hash") == settings_hash or claim.get("owner") == owner)
            return ours or not (self.media_dir / name).exists()
        if entry.get("settings_hash") == settings_hash:
            return True
        others = _owners(entry) - ({owner} if owner else set())
        return not others

    def conflict(self, name: str, render_hash: str, owner: str | None) -> str | None:
        """Why rendering ``render_hash`` into ``name`` for ``owner`` would destroy someone's
        output, or ``None`` when it may go ahead."""
        entry = self.outputs.get(name)
        path = self.media_dir / name
        claim = self.claims.get(name)
        if claim is not None and claim.get("render_hash") != render_hash and claim.get("owner") != owner \
                and process_alive(int(claim.get("pid", 0))) and int(claim.get("pid", 0)) != os.getpid():
            return (f"{str(path)!r} is being rendered right now (process {claim.get('pid')}) for timeline "
                    f"{claim.get('owner')!r} with other content; rendering {owner or 'this render'!r} would "
                    "replace it: use another --media-dir")
        if entry is None:
            if claim is not None and (claim.get("render_hash") == render_hash or claim.get("owner") == owner):
                return None  # a render of ours that was killed after its file appeared
            if path.exists():
                return (f"{str(path)!r} exists but is not in the manifest {str(self.path)!r}: it was not "
                        "rendered here, so it is left alone; move it away or use another --media-dir")
            return None
        if entry.get("render_hash") == render_hash:
            return None  # the same content
        others = sorted(_owners(entry) - ({owner} if owner else set()))
        if not others:
            return None
        who = owner or "this render"
        return (f"{str(path)!r} belongs to timeline {others[0]!r}"
                + (f" (and {len(others) - 1} more)" if len(others) > 1 else "")
                + f"; rendering {who!r} would replace it with other content (other settings, range or model): "
                "use another --media-dir, or render that timeline again so it no longer uses the file")

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def locked(self) -> Iterator[Manifest]:
        """Hold the folder's lock, re-read the manifest, and save it on success."""
        self.media_dir.mkdir(parents=True, exist_ok=True)
        with open(self.media_dir / (MANIFEST_NAME + ".lock"), "a+") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                self.reload()
                yield self
                self.save()
            finally:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def claim(self, name: str, *, render_hash: str, settings_hash: str, owner: str | None) -> None:
        """Say, before rendering, that this process is about to write ``name``.

        Raises:
            OutputOwnershipError: another timeline relies on ``name`` (see :meth:`conflict`).
        """
        with self.locked():
            why = self.conflict(name, render_hash, owner)
            if why is not None:
                raise OutputOwnershipError(why)
            self.claims[name] = {"owner": owner, "render_hash": render_hash, "settings_hash": settings_hash,
                                 "pid": os.getpid()}

    def unclaim(self, name: str) -> None:
        """Withdraw this process's claim on ``name`` (its render failed)."""
        with self.locked():
            claim = self.claims.get(name)
            if claim is not None and int(claim.get("pid", 0)) == os.getpid():
                del self.claims[name]

    def record(self, name: str, entry: dict[str, Any], owner: str | None = None) -> None:
        """Add or replace an entry (keeping the owners of identical content), drop its claim, save."""
        with self.locked():
            self.claims.pop(name, None)
            old = self.outputs.get(name)
            owners = _owners(old) if old and old.get("render_hash") == entry.get("render_hash") else set()
            if owner:
                owners.add(owner)
            self.outputs[name] = {**entry, "owners": sorted(owners)}

    def adopt(self, name: str, owner: str | None) -> None:
        """Add ``owner`` to the timelines relying on ``name`` (a cached output it reuses)."""
        if not owner:
            return
        with self.locked():
            entry = self.outputs.get(name)
            if entry is not None and owner not in _owners(entry):
                entry["owners"] = sorted(_owners(entry) | {owner})

    def release(self, owner: str | None, keep: set[str]) -> list[str]:
        """``owner`` no longer relies on any output outside ``keep``; returns the names let go.

        The files stay: an older copy of the owner's timeline may still point at them.
        """
        if not owner:
            return []
        let_go = []
        with self.locked():
            for name, entry in self.outputs.items():
                if name not in keep and owner in _owners(entry):
                    entry["owners"] = sorted(_owners(entry) - {owner})
                    let_go.append(name)
        return let_go

    def caption_for(self, key: str) -> dict[str, Any] | None:
        """The caption recorded under ``key`` (see :func:`uav_otio.captions.caption_key`), or ``None``."""
        entry = self.captions.get(key)
        return dict(entry) if entry is not None else None

    def record_caption(self, key: str, entry: dict[str, Any]) -> None:
        """Keep a caption (``entry["caption"]`` and where it came from) so a rerun reuses it; saves."""
        with self.locked():
            self.captions[key] = dict(entry)

    def discard_if_empty(self) -> bool:
        """Remove the manifest and its lock file when they record nothing (a run that
        created the folder and failed); returns whether they were removed."""
        self.reload()
        if self.outputs or self.claims or self.captions:
            return False
        for p in (self.path, self.media_dir / (MANIFEST_NAME + ".lock")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return True

    def save(self) -> None:
        self.media_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.path,
            {"format": _MANIFEST_FORMAT, "version": _MANIFEST_VERSION, "outputs": self.outputs, "claims": self.claims,
             "captions": self.captions},
        )
