"""The typer application behind the ``uav`` command.

Each sub-command lives in its own module of this package and attaches itself to
:data:`app`; :mod:`uav.cli` imports them all, and attaches the commands other
distributions register in the ``uav.cli`` entry-point group (``uav timeline`` comes
from the OpenTimelineIO integration that way, so uav's core never imports it).

Usage errors (an unknown option, a missing value, a value of the wrong type) print
one line ``error: ...`` and exit with 2, like every other user error, instead of
click's boxed panel.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from uav.cli.common import EXIT_INTERRUPTED, EXIT_USER_ERROR, GuardedStdout, StdoutError, command_group


def _hide_flag_types() -> None:
    """On/off flags need no type in ``--help`` (Typer prints ``<bool>`` beside each):
    the tag says nothing a flag's name does not."""
    from typer.core import TyperOption

    show = getattr(TyperOption, "display_type_rich", None)
    if show is None or getattr(show, "_uav_flags_hidden", False):
        return  # another Typer, or done already

    def display_type_rich(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "is_flag", False) or getattr(self, "is_bool_flag", False):
            return None
        return show(self, *args, **kwargs)

    display_type_rich._uav_flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()

#: entry-point group of command-line extensions: ``name = "module:typer_app"`` adds ``uav name``
CLI_ENTRYPOINT_GROUP = "uav.cli"


class OneLineErrorsGroup(TyperGroup):
    """The root group: click's usage errors become one ``error:`` line (exit 2)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        from typer._click import exceptions as click_exceptions

        stdout = sys.stdout
        if not isinstance(stdout, GuardedStdout):
            sys.stdout = GuardedStdout(stdout)
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except StdoutError as exc:
            if not standalone_mode:
                raise
            _silence(stdout)
            sys.stderr.write(f"error: {exc}; the command's output was lost\n")
            sys.exit(EXIT_USER_ERROR)
        except click_exceptions.UsageError as exc:
            if not standalone_mode:
                raise
            self._report(usage_message(exc), args)
            sys.exit(EXIT_USER_ERROR)
        except click_exceptions.ClickException as exc:
            if not standalone_mode:
                raise
            self._report(" ".join(exc.format_message().split()), args)
            sys.exit(exc.exit_code)
        except typer.Abort:  # typer's own: its vendored click has none (Ctrl-C, end of input)
            if not standalone_mode:
                raise
            sys.stderr.write("error: interrupted\n")
            sys.exit(EXIT_INTERRUPTED)
        finally:
            if isinstance(sys.stdout, GuardedStdout) and sys.stdout is not stdout:
                sys.stdout = stdout
        if not standalone_mode:
            return rv
        # non-standalone click returns the exit code of a typer.Exit, or the command's value
        sys.exit(rv if isinstance(rv, int) else 0)


    @staticmethod
    def _report(message: str, args: Sequence[str] | None) -> None:
        """The ``error:`` line on stderr; with ``--json`` also the ``{"ok": false}`` document on
        stdout, as every other error of a ``--json`` run, so a script always gets JSON."""
        sys.stderr.write(f"error: {message}\n")
        given = list(sys.argv[1:] if args is None else args)
        options = given[:given.index("--")] if "--" in given else given  # after "--" all are arguments
        if "--json" in options:
            try:
                sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
                sys.stdout.flush()
            except (StdoutError, OSError):
                _silence(sys.stdout)  # the error line is on stderr; nothing more can reach stdout


def _silence(stdout: Any) -> None:
    """Point the process's stdout at /dev/null, so that the interpreter's last flush of what
    could not be written does not end in a traceback after the error line."""
    try:
        fd = stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer)
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass


def usage_message(exc: Any) -> str:
    """A click usage error on one line, naming the command and where to read its options."""
    text = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        return f"{ctx.command_path}: {text} (see '{ctx.command_path} --help')"
    return text


app = command_group("uav", "Temporally consistent diffusion video super-resolution (Upscale-A-Video).",
                    cls=OneLineErrorsGroup)


def _print_version(value: bool) -> None:
    if value:
        from uav import __version__

        typer.echo(f"uav {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", help="Print the version and exit.",
                                           callback=_print_version, is_eager=True),
) -> None:
    """Temporally consistent diffusion video super-resolution (Upscale-A-Video)."""


def attach_extension(name: str) -> bool:
    """Attach ``uav NAME`` from the ``uav.cli`` entry-point group; ``False`` if none is registered.

    Raises:
        ImportError: the entry point is registered but its module does not import.
    """
    for ep in importlib.metadata.entry_points(group=CLI_ENTRYPOINT_GROUP):
        if ep.name != name:
            continue
        if any(group.name == name for group in app.registered_groups):
            return True
        sub = ep.load()
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name)
        else:
            app.command(name)(sub)
        return True
    return False


def extension_names() -> list[str]:
    """Names of the commands registered in the ``uav.cli`` entry-point group."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=CLI_ENTRYPOINT_GROUP)})
