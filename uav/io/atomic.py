"""Atomic outputs: write under a hidden temporary name, rename into place when complete.

Every output of :mod:`uav.io` (and of :func:`atomic_output`, for anyone writing files
for uav) is first written as ``.NAME.uavtmp-PID-HOST-TOKEN.EXT`` next to its
destination. The name says whose it is, so leftovers can be cleaned safely:

* on SIGTERM (and SIGINT where Python's own handler is not installed) the process
  removes the temporaries it is writing before it dies;
* a process killed harder (SIGKILL, power loss) leaves its temporary behind, and the
  next output written to that folder removes it: only names of this exact form, only
  when the process that made it is gone (same host, PID no longer alive) or, for one
  from another host or an older uav, when it has not been touched for a day.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TEMP_MARK", "temporary_path", "track", "untrack", "remove", "clean_stale_temporaries", "atomic_output"]

log = logging.getLogger(__name__)

#: marks every temporary name (``.NAME.uavtmp-...``)
TEMP_MARK = ".uavtmp"
#: a temporary whose owner cannot be checked is stale after this long untouched
FOREIGN_STALE_SECONDS = 24 * 3600

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
# .NAME.uavtmp-PID-HOST-TOKEN[.EXT]; older uav versions wrote .NAME.uavtmp-TOKEN[.EXT]
# (renderer temporaries: .NAME.uav-partial-PID[.EXT]).
_OURS = re.compile(r"^\..+\.uavtmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{8}(\.[^.]+)?$")
_LEGACY = re.compile(r"^\..+(\.uavtmp-[0-9a-f]{8}|\.uav-partial-\d+)(\.[^.]+)?$")

_lock = threading.Lock()
_live: dict[Path, int] = {}  # temporaries being written -> the PID writing them
_previous: dict[int, Any] = {}


def temporary_path(final: str | Path, *, folder: bool = False) -> Path:
    """A fresh hidden temporary name next to ``final`` (the real extension kept last,
    since writers pick the container format from it; none for a ``folder``)."""
    final = Path(final)
    tag = f"{TEMP_MARK}-{os.getpid()}-{_HOST}-{secrets.token_hex(4)}"
    if folder:
        return final.with_name(f".{final.name}{tag}")
    return final.with_name(f".{final.stem}{tag}{final.suffix}")


def remove(path: Path) -> str | None:
    """Delete a temporary file or folder; a missing one is fine.

    Returns ``None`` when nothing is left, else why it could not be removed (e.g. "read-only
    file system"), so that the error that follows can name the leftover for the user.
    """
    reasons: list[str] = []

    def note(exc: BaseException) -> None:
        if isinstance(exc, OSError):
            reasons.append((exc.strerror or str(exc)).lower())

    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, onexc=lambda *args: note(args[2])) if _RMTREE_ONEXC else \
                shutil.rmtree(path, onerror=lambda *args: note(args[2][1]))
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        note(exc)
    if not os.path.lexists(path):
        return None
    return reasons[0] if reasons else "it is still there"


#: Python 3.12 renamed rmtree's error callback (``onerror`` is deprecated there)
_RMTREE_ONEXC = "onexc" in shutil.rmtree.__code__.co_varnames if hasattr(shutil.rmtree, "__code__") else False


def track(path: Path) -> None:
    """Remember ``path`` as a temporary this process is writing, to delete on SIGTERM."""
    with _lock:
        _live[Path(path)] = os.getpid()
    _install_handlers()


def untrack(path: Path) -> None:
    """Forget ``path`` (it was renamed into place or removed)."""
    with _lock:
        _live.pop(Path(path), None)


def _remove_live() -> None:
    pid = os.getpid()
    with _lock:
        mine = [p for p, owner in _live.items() if owner == pid]  # not a forked parent's
        for p in mine:
            _live.pop(p, None)
    for p in mine:
        remove(p)


def _on_signal(signum: int, frame: Any) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        # the program handles this signal itself (SIGINT raises KeyboardInterrupt):
        # the writers' own error paths remove their temporaries as the stack unwinds
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    _remove_live()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the signal, as without this handler


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; a later writer there will
    for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if signum is None:
            continue
        try:
            current = signal.getsignal(signum)
            if current is _on_signal or current is None:  # ours already, or set from C: leave it alone
                continue
            _previous[signum] = current
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # not supported on this platform
            continue


def _owner_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's; any other answer counts as alive
        return False
    return False


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still run (this process does; an answer
    the system does not give counts as alive, so nothing of a live process is taken)."""
    return not _owner_gone(pid)


def _is_stale(entry: Path) -> bool:
    name = entry.name
    match = _OURS.match(name)
    if match is not None and match.group("host") == _HOST:
        return _owner_gone(int(match.group("pid")))
    if match is None and not _LEGACY.match(name):
        return False
    try:
        age = time.time() - entry.lstat().st_mtime
    except OSError:
        return False
    return age > FOREIGN_STALE_SECONDS


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries in ``folder`` that no running uav process will finish.

    Only names of uav's temporary form are considered, and only stale ones are
    removed (see the module docs); the folder is not searched recursively.
    Returns what was removed.
    """
    d = Path(folder)
    removed: list[Path] = []
    try:
        entries = [e for e in d.iterdir() if e.name.startswith(".") and (TEMP_MARK in e.name or ".uav-partial" in e.name)]
    except OSError:
        return removed
    with _lock:
        live = set(_live)
    for entry in entries:
        if entry in live or not _is_stale(entry):
            continue
        remove(entry)
        if not entry.exists():
            removed.append(entry)
    if removed:
        log.info("removed %d leftover temporar%s of interrupted runs in %s", len(removed),
                 "y" if len(removed) == 1 else "ies", d)
    return removed


@contextlib.contextmanager
def atomic_output(path: str | Path, *, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    For code that writes an output file uav will use (e.g. a custom timeline renderer).
    On any exception (``KeyboardInterrupt`` included) the temporary file is removed
    and ``path`` is left as it was; on SIGTERM it is removed too. Stale temporaries
    of killed runs in the same folder are removed first. With ``folder`` the temporary
    is an empty folder, made here, which may replace an empty folder at ``path``.

    Raises:
        RuntimeError: the block finished without writing the temporary file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(final.parent)
    tmp = temporary_path(final, folder=folder)
    if folder:
        tmp.mkdir()
    track(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file {str(tmp)!r} for {str(final)!r}")
        os.replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise
    finally:
        untrack(tmp)
