"""Shared plumbing of the ``uav`` commands: error handling, progress, output modes.

Every command that does real work wraps its body in :func:`handle_errors`, so a user
error (a missing file, a bad setting, a weights folder that does not fit) prints one
line ``error: ...`` on stderr and exits with code 2 instead of a traceback; ``--debug``
shows the traceback as well. Progress is drawn on stderr with ETA, so ``--json`` can
keep stdout to exactly one JSON document.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import traceback
from typing import Any, Iterator, Mapping

import typer

#: exit code of a user error (bad input, bad option, unusable weights); click uses 2 for usage errors too
EXIT_USER_ERROR = 2
#: exit code of an unexpected internal error (a bug, or e.g. running out of memory)
EXIT_INTERNAL_ERROR = 1
#: exit code after Ctrl-C
EXIT_INTERRUPTED = 130

SELF_CHECK_BANNER = "SELF-CHECK with a tiny RANDOM network — this output is NOT an upscale"
#: inserted before the suffix of every output written by random networks
SELF_CHECK_SUFFIX = "_selfcheck_random"


def command_group(name: str, help: str, **options: Any) -> typer.Typer:
    """A typer group of ``uav`` commands: ``uav`` itself, or one that also runs on its own
    (``python -m uav.train``, ``uav timeline``).

    A group run on its own is the program, so it must behave like ``uav``: the group's
    help when called bare, no shell-completion options and plain tracebacks (only
    under ``--debug``, which :func:`handle_errors` decides). ``options`` go to
    :class:`typer.Typer` as well (e.g. ``cls``).
    """
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, **options)


class UserError(ValueError):
    """A problem the user can fix; the message is printed as is, on one line."""


class StdoutError(Exception):
    """Standard output cannot be written (a full device, a closed pipe): the command's
    result cannot reach its reader. Not an ``OSError``, so no handler mistakes it for a
    problem with the command's own files."""

    def __init__(self, cause: OSError) -> None:
        self.cause = cause
        super().__init__(f"cannot write to standard output ({cause.strerror or cause})")


class GuardedStdout:
    """``sys.stdout`` whose write errors raise :class:`StdoutError` (everything else passes through)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: Any) -> Any:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise StdoutError(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise StdoutError(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


#: exceptions that mean "the user asked for something that cannot work": uav's own (UserError,
#: SettingsError, ReleaseError, VideoInputError, InputError) are all ValueErrors. TypeError is left
#: out on purpose: inside uav it means a bug, reported as an internal error
USER_ERRORS = (ValueError, KeyError, OSError)


def one_line(exc: BaseException) -> str:
    """The exception's message on a single line (``KeyError`` without its quotes)."""
    if isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(exc).__name__


def _hint_for(exc: BaseException) -> str:
    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return " (out of memory: try --tile on with a smaller --tile-size, a smaller --decode-chunk, or --dtype fp16)"
    return ""


def fail(message: str, *, as_json: bool = False, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``error: message`` (and, with ``as_json``, ``{"ok": false, ...}`` on stdout); return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    if as_json:
        try:
            typer.echo(json.dumps({"ok": False, "error": message}))
        except StdoutError:
            pass  # the error line is on stderr; nothing more can reach stdout
    return typer.Exit(code)


@contextlib.contextmanager
def handle_errors(*, debug: bool = False, as_json: bool = False) -> Iterator[None]:
    """Turn exceptions into one ``error:`` line and an exit code.

    User errors exit with :data:`EXIT_USER_ERROR`; anything else is reported as an
    internal error (exit 1) with the exception type, still on one line. ``debug``
    prints the traceback first.
    """
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit, StdoutError):
        raise
    except KeyboardInterrupt:
        raise fail("interrupted; nothing was written for the file in progress", as_json=as_json,
                   code=EXIT_INTERRUPTED) from None
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        raise fail(one_line(exc) + _hint_for(exc), as_json=as_json) from None
    except Exception as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        hint = "" if debug else " (rerun with --debug for the traceback)"
        raise fail(f"internal error: {type(exc).__name__}: {one_line(exc)}{_hint_for(exc)}{hint}",
                   as_json=as_json, code=EXIT_INTERNAL_ERROR) from None


def quiet_libraries(debug: bool = False) -> None:
    """Silence the download/loading chatter of diffusers and transformers (kept with ``--debug``).

    uav's own warnings (e.g. "input is large") still reach stderr.
    """
    if not debug:
        for name in ("diffusers", "transformers"):
            try:
                module = __import__(f"{name}.utils.logging", fromlist=["logging"])
                module.set_verbosity_error()
                module.disable_progress_bar()
            except Exception:  # an older/newer library without these helpers: its chatter is harmless
                pass
    logger = logging.getLogger("uav")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
    # the handler, not the logger, filters: the logger's level belongs to whoever embeds uav
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    if debug:
        logger.setLevel(logging.DEBUG)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def stderr_console(quiet: bool = False) -> Any:
    """A rich console on stderr (so stdout stays machine-readable)."""
    from rich.console import Console

    return Console(stderr=True, quiet=quiet, highlight=False)


def frame_position(value: str | None) -> int | str | None:
    """A ``--start``/``--end`` as typed: a frame index (digits) or a timecode left as text."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() else text


def print_json(doc: Mapping[str, Any]) -> None:
    """Print one JSON document on stdout."""
    typer.echo(json.dumps(doc, indent=2, default=str, allow_nan=False))


def self_check_banner(console: Any) -> None:
    """The loud notice printed whenever random networks produce an output (even with ``--quiet``)."""
    from rich.panel import Panel

    text = (f"[bold]{SELF_CHECK_BANNER}[/bold]\n"
            "Every stage runs (reading, flow, denoising, propagation, decoding, colour fix, writing), but the "
            "networks are random, so the picture is noise. Get the released weights: see docs/weights.md.")
    if console.quiet:
        # --quiet silences progress, never this notice
        typer.echo(f"WARNING: {SELF_CHECK_BANNER}", err=True)
        return
    console.print(Panel(text, title="SELF-CHECK", border_style="bold red", expand=False))


class ProgressReporter:
    """The progress ``callback`` for :meth:`uav.VideoUpscaler.upscale`, drawn as rich bars with ETA.

    One bar per stage, all shown from the start: optical flow (when propagation needs it),
    denoising (steps x tiles) and decode + write (frames). A bar's clock starts when its
    stage does, so elapsed time and ETA are the stage's own. Use as a context manager
    around one video; :attr:`events` counts what arrived and :attr:`stage_seconds` times
    each stage (the first one includes reading the input).
    """

    def __init__(self, console: Any, *, label: str, frames: int, steps: int, flow: bool = False,
                 enabled: bool = True) -> None:
        from rich.markup import escape

        self.console = console
        self.label = escape(label)
        self.frames = frames
        self.steps = steps
        self.flow = flow
        self.enabled = enabled and not console.quiet
        self.events: dict[str, int] = {}
        self.frames_done = 0
        self.stage_seconds: dict[str, float] = {}
        self._last: dict[str, float] = {}  # stage -> time of its latest event, in stage order
        self._t0 = time.perf_counter()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "ProgressReporter":
        self._t0 = time.perf_counter()
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            add = self._progress.add_task
            if self.flow:
                self._tasks["flow"] = add(f"{self.label}: optical flow", total=1)
            self._tasks["denoise"] = add(f"{self.label}: denoise steps", total=self.steps, start=not self.flow)
            self._tasks["decode"] = add(f"{self.label}: decode + write frames", total=self.frames, start=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        # stages run one after the other: each lasts from the previous stage's last event to its own
        previous = self._t0
        for stage, last in self._last.items():
            self.stage_seconds[stage] = round(last - previous, 3)
            previous = last
        if self._progress is not None:
            self._progress.stop()

    # a stage has a task only while bars are drawn (and only if it was shown: flow)
    def _update(self, stage: str, **fields: Any) -> None:
        if stage in self._tasks:
            self._progress.update(self._tasks[stage], **fields)

    def _start(self, stage: str) -> None:
        if stage in self._tasks:
            self._progress.start_task(self._tasks[stage])

    def __call__(self, event: Mapping[str, Any]) -> None:
        stage = str(event.get("stage", "?"))
        self.events[stage] = self.events.get(stage, 0) + 1
        self._last[stage] = time.perf_counter()
        index, total = int(event.get("index", 0)), max(1, int(event.get("total", 1)))
        if stage == "flow":
            self._update("flow", completed=min(index, 1))
            if index >= 1:
                self._start("denoise")
        elif stage == "denoise":
            tiles = max(1, int(event.get("tiles", 1)))
            tile = int(event.get("tile", 0))
            self._start("denoise")  # no-op once started; covers a flow stage that never reported
            fields: dict[str, Any] = {"completed": tile * total + index + 1, "total": total * tiles}
            if tiles > 1:
                fields["description"] = f"{self.label}: denoise steps ({tiles} tiles)"
            self._update("denoise", **fields)
            if tile == tiles - 1 and index == total - 1:
                self._start("decode")
        elif stage == "decode":
            self._start("decode")
            self.frames_done += int(event.get("frames", 0))
            self._update("decode", completed=min(self.frames_done, self.frames))
