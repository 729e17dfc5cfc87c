"""``uav timeline``: plan and upscale the media an edit uses.

``uav timeline plan IN`` prints what would be rendered; ``uav timeline upscale IN -o
OUT --media-dir DIR`` renders it and writes the relinked timeline. Every per-shot
setting can be given on the command line, where it overrides the shot list, the
markers and the metadata of every clip.

``uav timeline upscale`` takes every model and pipeline option of ``uav upscale``
with the same name, type and meaning, except those a timeline decides itself
(``--start``, ``--end``, ``--fps``) and ``--self-check`` (see docs/timelines.md).
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uav.cli.common import (
    ProgressReporter,
    UserError,
    command_group,
    fail,
    handle_errors,
    print_json,
    quiet_libraries,
    self_check_banner,
    stderr_console,
)
from uav.cli.executor_options import (
    EXIT_PARTIAL_FAILURE,
    failure_line,
)
from uav.cli.options import (
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    RunOptions,
    VaeOpt,
    WeightsOpt,
    SETTING_FLAGS,
    with_run_options,
    with_setting_options,
)
from uav.cli.preflight import codec_spec, find_weights, parse_dtype, resolve_device
from uav.components import COMPONENT_FIELDS, check_component
from uav.settings import SettingsError

from .jobs import Plan
from .options import MODEL, InputArg, PlanningOptions, with_planning_options
from uav.shots.settings import AUTO_PROMPT_KEYS, DEFAULT_SEED, PIPELINE_KEYS, validate_settings
from .timeline_files import show_adapter_output

app = command_group(
    "timeline", "Upscale the media an OpenTimelineIO timeline (otio, otioz, FCP XML, EDL, AAF) uses, clip by clip.")

_SHOT = "Per-shot settings (override every clip)"
#: ``--dtype`` spellings kept from this command's first release
_LONG_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

PlanJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
#: the defaults ``--help`` shows where a timeline's differ from ``uav upscale``'s (a shot's seed is fixed)
_DEFAULT_TEXT = {"seed": f"{DEFAULT_SEED}, fixed per shot"}


_KEY_OF_FIELD = {name: key for key, name in (*PIPELINE_KEYS.items(), *AUTO_PROMPT_KEYS.items())}


def _overrides(setting_values: Mapping[str, Any], vae: str | None) -> dict[str, Any]:
    """The per-shot overrides the options give (only those given), validated as a shot layer,
    and the component names resolved through the registry before anything is planned."""
    unshot = [field for field, v in setting_values.items() if v is not None and field not in _KEY_OF_FIELD]
    if unshot:  # pipeline settings with no per-shot key yet (issue 21's --preset, --compile, ...)
        raise UserError(f"{SETTING_FLAGS[unshot[0]]}: not a timeline setting yet; use it with `uav upscale`")
    given = {_KEY_OF_FIELD[field]: v for field, v in setting_values.items() if v is not None}
    if vae is not None:
        given["vae"] = vae
    overrides = validate_settings(given, where="command-line overrides")
    for field in COMPONENT_FIELDS:
        # the validated value: ``--tiling true`` has become ``tile = on`` by now
        value = overrides.get(_KEY_OF_FIELD.get(field, field))
        if isinstance(value, str) and not (field == "flow" and value == "auto"):
            try:
                check_component(field, value)
            except SettingsError as exc:
                where = exc.located(_KEY_OF_FIELD[field], "command-line overrides")
                raise UserError(f"{SETTING_FLAGS[field]}: {where}") from None
    return overrides


def _print_table(plan: Plan, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("clip", "media", "range", "frames", "settings", "output"):
        table.add_column(col, justify="right" if col == "frames" else "left", overflow="fold")
    for row in plan.rows():
        table.add_row(*(row[c] for c in ("clip", "media", "range", "frames", "settings", "output")))
    console = Console(width=max(Console().width, 140))
    console.print(table)
    console.print(f"{len(plan.jobs)} job(s), {plan.total_frames} frame(s) to render, "
                  f"{len(plan.skipped)} item(s) skipped, handles {plan.handles}")
    for w in plan.warnings:
        typer.echo(f"warning: {w}", err=True)
    for r in plan.relinked:
        typer.echo(r.describe(), err=True)


def _load_renderer(spec: str) -> Any:
    """``module:callable`` -> the callable (called without arguments when it is a class)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"--renderer must be 'module:callable', got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load renderer {spec!r}: {exc}") from None
    return obj() if isinstance(obj, type) else obj


def _check_ext(ext: str) -> None:
    """``--ext`` of ``plan``: an extension some movie codec writes (``upscale`` opens the writer
    with its codec instead, :func:`_check_codec`)."""
    from uav.io.writer import CODECS

    suffix = "." + ext.lstrip(".").lower()
    movies = sorted({s for spec in CODECS.values() if spec.kind == "video" for s in spec.suffixes})
    if suffix not in movies:
        raise UserError(f"--ext {ext}: no movie codec uav writes makes {suffix} files; choose one of "
                        f"{', '.join(m.lstrip('.') for m in movies)}")


def _check_codec(codec: str, ext: str, pix_fmt: str | None, crf: int | None, compression: str | None = None) -> None:
    """Open (and abort) the writer once, as ``uav upscale`` does: a bad codec, pixel format,
    crf, compression or extension fails here, not after the first shot has rendered."""
    from uav.io.writer import VideoWriter

    spec = codec_spec(codec)
    if spec.kind == "sequence":
        if ext not in ("", "mov", ".mov"):
            raise UserError(f"--ext {ext}: --codec {codec} writes an image-sequence folder per job (relinked as an "
                            "image sequence); drop --ext")
        name = "preflight"
    else:
        name = "preflight" + (ext if ext.startswith(".") else f".{ext}")
    width, height = spec.min_size or (64, 64)
    with tempfile.TemporaryDirectory(prefix="uav-timeline-preflight-") as tmp:
        VideoWriter(Path(tmp) / name, fps=24, width=width, height=height, codec=codec, pix_fmt=pix_fmt,
                    crf=crf, compression=compression).abort()


@app.command("plan")
@with_setting_options(sampling=_SHOT, tiling=_SHOT, default_text=_DEFAULT_TEXT)
@with_planning_options
def plan_command(
    timeline: InputArg,
    media_dir: Annotated[
        Optional[Path], typer.Option("--media-dir", help="Where outputs would go (shown in the plan).")
    ] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="The output timeline 'timeline upscale' would write: outputs are then named exactly "
                               "as that render names them (with --media-dir).")] = None,
    as_json: PlanJsonOpt = False,
    vae: VaeOpt = None,
    debug: DebugOpt = False,
    *,
    planning: PlanningOptions,
    setting_values: dict[str, Optional[str]],
) -> None:
    """Show, per clip, the media range to render (used range + handles), its settings and output."""
    from .api import plan_file

    quiet_libraries(debug)
    with handle_errors(debug=debug, as_json=as_json), show_adapter_output(debug):
        overrides = _overrides(setting_values, vae)
        _check_ext(planning.ext)
        _, plan = plan_file(timeline, media_dir=media_dir, output=output, reading=planning.reading(),
                            planning=planning.planning(overrides))
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        _print_table(plan, f"uav timeline plan: {timeline.name}")


@app.command("upscale")
@with_setting_options(sampling=_SHOT, tiling=_SHOT, default_text=_DEFAULT_TEXT)
@with_planning_options
@with_run_options
def upscale_command(
    timeline: InputArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output timeline (.otio is always written).")],
    media_dir: Annotated[Path, typer.Option("--media-dir", help="Folder for the rendered media and the manifest.")],
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="Write .otio with one media reference per clip (OTIO 0.14 schema).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-render even finished outputs.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check everything (timeline, settings, plugins, media, weights folder, outputs) and show "
                          "what would be rendered; write nothing.")] = False,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    vae_dtype: Annotated[
        Optional[str], typer.Option("--vae-dtype", help="VAE dtype (default float32).", rich_help_panel=MODEL)
    ] = None,
    codec: Annotated[str, typer.Option(
        "--codec", help="prores_hq (ProRes 422 HQ, for editing), prores_4444, dnxhr_hq, dnxhr_hqx (= dnxhr), "
                        "dnxhr_444, h264, h265, or an image-sequence folder per job, relinked as an image sequence: "
                        "exr, dpx, png, tiff.", metavar="CODEC", rich_help_panel=MODEL)] = "prores_hq",
    renderer: Annotated[
        Optional[str],
        typer.Option("--renderer", hidden=True, help="module:callable to render with instead of VideoUpscaler."),
    ] = None,
    vae: VaeOpt = None,
    scenes: Annotated[str, typer.Option(
        "--scenes", metavar="auto|none", help="auto: a clip whose media itself holds hard cuts (a pre-edited "
        "source) is upscaled scene by scene, as uav upscale --scenes auto does (docs/scenes.md); none (default): "
        "each render is one clip.", rich_help_panel=MODEL)] = "none",
    *,
    options: RunOptions,
    planning: PlanningOptions,
    setting_values: dict[str, Optional[str]],
) -> None:
    """Render every planned range and write the timeline relinked to the new media.

    Rerunning the same command renders only what changed."""
    quiet, as_json, debug = options.quiet, options.as_json, options.debug
    quiet_libraries(debug)
    console = stderr_console(quiet=quiet)
    with handle_errors(debug=debug, as_json=as_json), show_adapter_output(debug):
        overrides = _overrides(setting_values, vae)
        from uav.captioning import parse_captioner_options

        captioner_options = parse_captioner_options(options.captioner_option)
        # checks every model option before anything loads; a dry run stops there
        default_renderer = functools.partial(_default_renderer, console, weights=weights, device=device, dtype=dtype,
                                             vae_dtype=vae_dtype, codec=codec, pix_fmt=options.pix_fmt,
                                             crf=options.crf, ext=planning.ext, compression=options.compression,
                                             scenes=scenes)
        if dry_run:
            _dry_run(timeline, output, media_dir, console=console, as_json=as_json, quiet=quiet, renderer=renderer,
                     default_renderer=default_renderer, overrides=overrides, planning=planning, force=force,
                     codec=codec)
            return
        run_on = options.build_executor()
        from uav.executors.progress import RunProgress

        from .params import Rendering

        render_fn, model = _renderer_for(renderer, default_renderer, run_on, console)
        run_view = RunProgress(console if run_on is not None else None)
        how = Rendering(renderer=render_fn, model=model, force=force, executor=run_on,
                        captioner_options=captioner_options, on_caption=functools.partial(_print_caption, console))
        from .api import upscale_timeline

        try:
            with run_view:
                result = upscale_timeline(
                    timeline, output, media_dir, downgrade=downgrade, reading=planning.reading(),
                    planning=planning.planning(overrides, codec), rendering=how,
                    on_job=functools.partial(_print_job, console, run_on, run_view),
                    on_event=run_view if run_on is not None else None,
                )
        except KeyboardInterrupt:
            raise fail("interrupted: finished outputs are kept; rerun the same command to finish",
                       as_json=as_json, code=130) from None
    _report(result, run_on=run_on, executor=options.executor, as_json=as_json, quiet=quiet)


def _renderer_for(renderer: str | None, default_renderer: Callable[[], Any], run_on: Any,
                  console: Any) -> tuple[Any, Any]:
    """``(what renders, the model record)``: a ``--renderer`` spec (which travels to
    executor workers as text) or the default renderer (with a progress bar in process)."""
    if renderer is not None:
        return (renderer if run_on is not None else _load_renderer(renderer)), None
    render_fn = default_renderer()
    model = render_fn.model
    return (_with_progress(render_fn, console) if run_on is None else render_fn), model


def _print_job(console: Any, run_on: Any, run_view: Any, job: Any, status: str) -> None:
    from rich.markup import escape

    if run_on is not None:
        if status == "cached":
            run_view.skip()
        return
    if status == "rendering":
        at = job.timecode or f"{job.start_seconds:.3f} s"
        console.print(escape(f"rendering {job.output_name}: {job.frames} frames from {job.media.display} @ {at}"))
    elif status == "cached":
        console.print(escape(f"up to date {job.output_name}"))


def _print_caption(console: Any, job: Any, caption: Mapping[str, Any], cached: bool) -> None:
    from rich.markup import escape

    how = "prompt (kept)" if cached else f"prompt from {caption['captioner']}"
    console.print(escape(f"{how} for {job.output_name}: {caption['caption']}"))


def _report(result: Any, *, run_on: Any, executor: str, as_json: bool, quiet: bool) -> None:
    """Warnings, relinks and the summary of a finished ``timeline upscale`` (exit 3 when jobs failed)."""
    # plan warnings point at the edit (media shorter than the cut, unmatched shot entries): never silenced
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    if not quiet:
        for r in result.plan.relinked:
            typer.echo(r.describe(), err=True)
    summary = {
        "ok": True,
        "rendered": [r.job.output_name for r in result.report.rendered],
        "cached": [r.job.output_name for r in result.report.cached],
        "relinked_clips": result.relinked,
        "skipped": [s.to_dict() for s in result.plan.skipped],
        "relinked": [r.to_dict() for r in result.plan.relinked],
        "offline": [s.to_dict() for s in result.plan.offline],
        "written": [str(p) for p in result.written],
        "frames_rendered": sum(r.job.frames for r in result.report.rendered),
        # output -> the caption a prompt=auto shot was rendered with
        "captions": {r.job.output_name: r.caption["caption"] for r in result.report.results if r.caption},
    }
    failed = result.report.failed
    if run_on is not None:
        # per job: which worker, how long, what came of it
        summary.update(ok=not failed, executor=executor, jobs=[r.to_dict() for r in result.report.runs],
                       failed=[{"output": r.job.name, "error": r.error} for r in failed])
    if as_json:
        print_json(summary)
    elif not quiet:
        typer.echo(
            f"{len(summary['rendered'])} rendered ({summary['frames_rendered']} frames), "
            f"{len(summary['cached'])} up to date, {result.relinked} clip(s) relinked, "
            f"{len(result.plan.skipped)} skipped; wrote {', '.join(summary['written'])}"
        )
    sys.stdout.flush()
    if failed:
        typer.echo(f"error: {failure_line(failed)}", err=True)
        raise typer.Exit(EXIT_PARTIAL_FAILURE)


def _dry_run(timeline: Path, output: Path, media_dir: Path, *, console: Any, as_json: bool, quiet: bool,
             renderer: str | None, default_renderer: Callable[[], Any], overrides: Mapping[str, Any],
             planning: PlanningOptions, force: bool, codec: str = "prores_hq") -> None:
    """``timeline upscale --dry-run``: every check of a real run, the plan, nothing written."""
    from .api import preview_timeline

    # built as the run builds it: the default renderer checks weights folder, device and codec, and loads nothing
    _, model = _renderer_for(renderer, default_renderer, None, console)
    preview = preview_timeline(timeline, output, media_dir, model=model, force=force, reading=planning.reading(),
                               planning=planning.planning(overrides, codec))
    if as_json:
        print_json(preview.to_dict())
        return
    if not quiet:
        _print_table(preview.plan, f"uav timeline upscale --dry-run: {timeline.name}")
        typer.echo(f"would render {len(preview.render)} file(s) ({sum(j.frames for j in preview.render)} frames), "
                   f"{len(preview.cached)} up to date; would write {', '.join(str(p) for p in preview.written)}; "
                   "nothing was written")


def _default_renderer(console: Any, *, weights: Path | None, device: str, dtype: str, vae_dtype: str | None,
                      codec: str, pix_fmt: str | None, crf: int | None, ext: str,
                      compression: str | None = None, scenes: str = "none") -> Any:
    """The :class:`~uav_otio.render.UpscalerRenderer` the options ask for, every option checked
    the way ``uav upscale`` checks it, before any model is loaded."""

    from .upscaler_renderer import UpscalerRenderer

    if scenes not in ("auto", "none"):
        raise UserError(f"--scenes: expected auto or none, got {scenes!r}")
    dtype_name = parse_dtype(dtype, _LONG_DTYPES)
    device_name = resolve_device(device)
    _check_codec(codec, ext, pix_fmt, crf, compression)
    folder = find_weights(weights, self_check=False)
    from uav.weights import is_tiny_random

    if folder is not None and is_tiny_random(folder):
        # random networks: say so loudly, whatever the output mode (no --self-check renaming here)
        self_check_banner(console)
    return UpscalerRenderer(weights=folder, device=device_name, dtype=dtype_name, codec=codec, pix_fmt=pix_fmt,
                            crf=crf, compression=compression, vae_dtype=vae_dtype, scenes=scenes)


def _with_progress(render_fn: Any, console: Any) -> Any:
    """Wrap the default renderer so each render draws ``uav upscale``'s progress bars."""

    def render(job: Any, settings: Mapping[str, Any], output_path: Path, progress: Any = None) -> None:
        flow = bool(settings.get("propagation_steps")) and job.frames > 1
        with ProgressReporter(console, label=job.output_name, frames=job.frames, steps=int(settings["steps"]),
                              flow=flow) as reporter:
            render_fn(job, settings, output_path, progress=progress, events=reporter)

    return render
