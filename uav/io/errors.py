"""Errors raised by :mod:`uav.io`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["VideoInputError", "VideoOutputError"]


class VideoInputError(ValueError):
    """An input video or image sequence cannot be used.

    The message is a single line that names the input and says what to do about it, so
    a CLI can print it as is. It subclasses :class:`ValueError` so callers that only
    catch ``ValueError`` for bad arguments also catch bad inputs.
    """

    def __init__(self, path: str | Path, problem: str, hint: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.hint = hint
        message = f"{path}: {problem}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class VideoOutputError(OSError):
    """An output could not be written (disk full, folder gone, I/O error).

    Raised by the writer after it has removed its temporary output, so nothing
    half-written is left behind. Like :class:`VideoInputError` its message is one line
    naming the output; it subclasses :class:`OSError` because the cause is the system,
    not the arguments.
    """

    def __init__(self, path: str | Path, problem: str, errno_code: int | None = None, *,
                 leftover: str | Path | None = None, leftover_reason: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        #: a temporary the writer could not remove (a folder made read-only mid-write)
        self.leftover = None if leftover is None else Path(leftover)
        message = f"{path}: {problem}; nothing was saved"
        if leftover is not None:
            message += (f", but its temporary {leftover} could not be removed ({leftover_reason or 'unknown reason'}):"
                        " delete it once the folder is writable again")
        super().__init__(message)
        if errno_code is not None:
            self.errno = errno_code
