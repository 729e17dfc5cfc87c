"""Errors raised by :mod:`uav.io`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["VideoInputError"]


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
