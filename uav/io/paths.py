"""Path facts shared by every front door: whether an output would land on an input."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import VideoInputError

__all__ = ["same_file", "refuse_output_onto_input"]


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
