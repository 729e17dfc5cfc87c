"""``uav`` command line. Sub-command modules register themselves on :data:`app`."""

from __future__ import annotations

import importlib

from uav.cli.app import app, attach_extension, extension_names

# One line per sub-command module. A module that fails to import is reported on stderr
# and its command is not offered, so one broken optional dependency does not take the
# whole CLI down.
_COMMAND_MODULES: list[str] = [
    "upscale",
    "weights",
    "doctor",
    "timeline",
    "evaluate",
    "plugins",
    "caption",
    "train",
    "info",
    "scenes",
]


def _load_commands() -> None:
    import sys

    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"uav.cli.{name}")
        except ImportError as exc:
            print(f"warning: the '{name}' commands are unavailable: {exc}", file=sys.stderr)
    # commands of other distributions (``[project.entry-points."uav.cli"]``)
    for name in extension_names():
        try:
            attach_extension(name)
        except Exception as exc:  # a broken extension must not take the whole CLI down
            print(f"warning: the '{name}' commands are unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)


def main() -> None:
    """Console-script entry point."""
    _load_commands()
    app()


__all__ = ["app", "main"]
