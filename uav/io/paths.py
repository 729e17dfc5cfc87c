"""Path facts shared by every front door: whether an output would land on an input, and
whether an input is a file uav can read (not a broken link, a pipe or a device)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import VideoInputError

__all__ = ["same_file", "refuse_output_onto_input", "refuse_unreadable"]


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one existing file: the same path spelled another way
    (relative, ``..``), a symbolic link to it or a hard link of it."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (yet): nothing to overwrite
        return False


def refuse_output_onto_input(source: object, output: str | os.PathLike[str]) -> None:
    """Raise when writing ``output`` would replace the file ``source`` (a path; other
    inputs, such as frames in memory, never clash).

    Raises:
        VideoInputError: ``output`` is ``source`` itself (one line naming both).
    """
    if not isinstance(source, (str, os.PathLike)):
        return
    if same_file(source, output):
        where = "" if Path(output) == Path(source) else f" ({Path(source)})"
        raise VideoInputError(output, f"is the input itself{where}; writing it would replace the source",
                              "choose another output name")


def refuse_unreadable(path: Path) -> None:
    """Raise for a broken symbolic link, a named pipe, a socket or a device; return for a
    regular file, a folder or a path that does not exist (the caller says so).

    uav reads an input several times (probe, frames, audio), and opening a pipe that has
    no writer would wait for ever, so these are refused before anything opens them.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise VideoInputError(path, f"is a broken symbolic link (to {os.readlink(path)})",
                                  "fix or remove the link") from None
        return
    except OSError:
        return  # unreadable: the open that follows reports it
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    raise VideoInputError(path, f"is {kind}, not a file",
                          "uav reads its input several times: save the stream to a file first and pass that")
