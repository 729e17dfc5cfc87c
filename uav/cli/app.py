"""The typer application behind the ``uav`` command.

Each sub-command lives in its own module of this package and attaches itself to
:data:`app`; :mod:`uav.cli` imports them all.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="uav",
    help="Temporally consistent diffusion video super-resolution (Upscale-A-Video).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
