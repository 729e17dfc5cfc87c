"""``uav`` command line. Sub-command modules register themselves on :data:`app`."""

from __future__ import annotations

import importlib

from uav.cli.app import app

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
    "train",
]


def _load_commands() -> None:
    import sys

    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"uav.cli.{name}")
        except ImportError as exc:
            print(f"warning: the '{name}' commands are unavailable: {exc}", file=sys.stderr)


def main() -> None:
    """Console-script entry point."""
    _load_commands()
    app()


__all__ = ["app", "main"]
