"""``uav`` command line. Sub-command modules register themselves on :data:`app`."""

from __future__ import annotations

import importlib

from uav.cli.app import app

# One line per sub-command module; a module that is missing is simply not offered.
_COMMAND_MODULES: list[str] = [
    "timeline",
    "evaluate",
    "plugins",
]


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"uav.cli.{name}")


def main() -> None:
    """Console-script entry point."""
    _load_commands()
    app()


__all__ = ["app", "main"]
