"""Provenance: where an output's frames came from, stored in the output itself.

A record is a JSON object: ``uav_version``, ``model`` (weights folder, its identity
hash, VAE, dtype, device), ``settings_hash`` and the full ``settings``, ``prompt``
and ``caption``, ``seed``, and ``source`` (file, frame range, rate, timecode). The
writer stores it as the ``uav`` tag of a mov/mp4/mkv, in the ``uav`` attribute of
every EXR header, as ``uav.json`` in a sequence's folder, and as ``<file>.uav.json``
beside an .mxf (FFmpeg's MXF muxer takes no free tags); :func:`read_provenance`
finds it again wherever it is.

The weights identity (:func:`weights_identity`) must not read gigabytes: it hashes
each file's relative name and size and the SHA-256 of its first and last MiB
(safetensors headers and the tensors at both ends), which tells different releases
apart, and stays the same when a folder is copied (unlike modification times). It is
cached per process by ``(path, size, mtime)`` of every file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "PROVENANCE_KEY",
    "SEQUENCE_SIDECAR",
    "WEIGHTS_HASH_METHOD",
    "provenance_json",
    "read_provenance",
    "settings_hash",
    "sidecar_path",
    "weights_identity",
]

#: the metadata tag / EXR attribute / JSON sidecar stem that holds the record
PROVENANCE_KEY = "uav"
#: a sequence folder's provenance file
SEQUENCE_SIDECAR = "uav.json"
#: how :func:`weights_identity` hashes a folder (recorded beside the hash)
WEIGHTS_HASH_METHOD = "sha256(name, size, first and last MiB of every file)"
_SAMPLE = 1 << 20


def provenance_json(record: Mapping[str, Any], indent: int | None = None) -> str:
    """``record`` as JSON text (keys sorted; paths and fractions as strings)."""
    return json.dumps(record, sort_keys=True, indent=indent, default=str)


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of a settings dictionary (key order does not matter)."""
    text = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sidecar_path(output: Path | None) -> Path:
    """Where the JSON record of ``output`` goes: ``uav.json`` inside a sequence folder
    (``output=None`` gives the bare name), ``<file>.uav.json`` beside a file."""
    if output is None:
        return Path(SEQUENCE_SIDECAR)
    return output.with_name(f"{output.name}.{PROVENANCE_KEY}.json")


def _file_digest(path: Path, size: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        digest.update(fh.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            fh.seek(size - _SAMPLE)
            digest.update(fh.read(_SAMPLE))
        elif size > _SAMPLE:
            digest.update(fh.read())
    return digest.digest()


def weights_identity(folder: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """``{"path", "hash", "files", "method"}`` of a weights folder; ``None`` without one.

    Hidden files (temporaries) are left out. See the module notes for what is hashed.
    """
    if folder is None:
        return None
    root = Path(folder)
    if not root.is_dir():
        return None
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    stats = [(p.relative_to(root).as_posix(), p.stat()) for p in files]
    digest = _folder_hash(root.resolve(), tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    return {"path": str(root.resolve()), "hash": digest, "files": len(stats), "method": WEIGHTS_HASH_METHOD}


@functools.lru_cache(maxsize=None)
def _folder_hash(root: Path, files: tuple[tuple[str, int, int], ...]) -> str:
    """The hash of ``files`` (relative name, size, mtime) in ``root``; a changed file changes the key."""
    digest = hashlib.sha256()
    for name, size, _ in files:
        digest.update(f"{name}\0{size}\0".encode())
        digest.update(_file_digest(root / name, size))
    return digest.hexdigest()[:16]


def _from_container(path: Path) -> dict[str, Any] | None:
    import av

    try:
        with av.open(str(path), mode="r") as container:
            tags = {k.lower(): v for k, v in dict(container.metadata).items()}
    except (av.FFmpegError, OSError):
        return None
    return _parse(tags.get(PROVENANCE_KEY))


def _parse(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_provenance(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, where)`` for an output written by uav; ``(None, None)`` when it holds none.

    ``where`` says where it was found: ``"metadata"`` (the container's ``uav`` tag),
    ``"sidecar"`` (a JSON file), or ``"exr header"``. ``path`` is a file, a sequence
    folder, or a sequence pattern.
    """
    p = Path(path)
    if "%" in p.name:
        p = p.parent
    if p.is_dir():
        side = p / SEQUENCE_SIDECAR
        if side.is_file():
            return _parse(side.read_text(encoding="utf-8")), "sidecar"
        exrs = sorted(f for f in p.iterdir() if f.suffix.lower() == ".exr")
        if exrs:
            from .exr import exr_header

            return exr_header(exrs[0]).get("provenance"), "exr header"
        return None, None
    if p.suffix.lower() == ".exr":
        from .exr import exr_header

        return exr_header(p).get("provenance"), "exr header"
    side = sidecar_path(p)
    if side.is_file():
        return _parse(side.read_text(encoding="utf-8")), "sidecar"
    record = _from_container(p)
    return (record, "metadata") if record is not None else (None, None)
