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

import importlib
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uav.cli.common import (
    ProgressReporter,
    UserError,
    fail,
    handle_errors,
    print_json,
    quiet_libraries,
    self_check_banner,
    stderr_console,
)
from uav.cli.executor_options import (
    EXIT_PARTIAL_FAILURE,
    AddressOpt,
    ExecutorOpt,
    GpusOpt,
    WorkersOpt,
    build_executor,
    failure_line,
)
from uav.settings import UpscaleSettings

from .api import parse_adapter_options
from .plan import DEFAULT_HANDLES, Plan
from .shots import COLOR_FIX_CHOICES, ShotSettingsError, validate_settings

app = typer.Typer(
    name="timeline",
    help="Upscale the media an OpenTimelineIO timeline (otio, otioz, FCP XML, EDL, AAF) uses, clip by clip.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_SHOT = "Per-shot settings (override every clip)"
_MODEL = "Model and output"
_PLAN = "Planning"
_REPORT = "Reporting"
_LIB = UpscaleSettings()
#: ``--dtype`` values; the long names are kept from this command's first release
_DTYPES = {"auto": None, "fp32": "fp32", "fp16": "fp16", "bf16": "bf16",
           "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

InputArg = Annotated[Path, typer.Argument(help="Timeline to read (.otio, .otioz, .xml, .edl, .aaf, ...).")]
HandlesOpt = Annotated[
    int, typer.Option("--handles", min=0, help="Frames added before and after every used range.", rich_help_panel=_PLAN)
]
ShotsOpt = Annotated[
    Optional[Path],
    typer.Option("--shots", help="TOML shot list: shot tables matched by clip name, marker name or media file.",
                 rich_help_panel=_PLAN),
]
NameByOpt = Annotated[
    str, typer.Option("--name-by", help="Name outputs after the 'media' file or the 'clip'.", rich_help_panel=_PLAN)
]
ExtOpt = Annotated[str, typer.Option("--ext", help="Output file extension.", rich_help_panel=_MODEL)]
TimelineNameOpt = Annotated[
    Optional[str],
    typer.Option("--timeline-name", help="Timeline to use when the file holds several.", rich_help_panel=_PLAN),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AdapterOpt = Annotated[Optional[str], typer.Option(
    "--adapter", help="OpenTimelineIO adapter to read the file with (default: from its suffix).",
    rich_help_panel=_PLAN)]
RateOpt = Annotated[Optional[float], typer.Option(
    "--rate", help="Frame rate of an EDL (EDLs carry none; 24 is assumed otherwise), e.g. 25 or 29.97.",
    rich_help_panel=_PLAN)]
AdapterOptionOpt = Annotated[Optional[list[str]], typer.Option(
    "--adapter-option", help="KEY=VALUE passed to the adapter's reader (repeatable), e.g. "
                             "ignore_timecode_mismatch=true.", rich_help_panel=_PLAN)]

PromptOpt = Annotated[Optional[str], typer.Option("--prompt", help="Positive prompt.", rich_help_panel=_SHOT)]
NegOpt = Annotated[Optional[str], typer.Option("--negative-prompt", help="Negative prompt.", rich_help_panel=_SHOT)]
AddedOpt = Annotated[
    Optional[str], typer.Option("--added-prompt", help="Text appended to the prompt.", rich_help_panel=_SHOT)
]
NoiseOpt = Annotated[
    Optional[int], typer.Option("--noise-level", help="Noise added to the input, 0..350.", rich_help_panel=_SHOT)
]
GuidanceOpt = Annotated[
    Optional[float], typer.Option("--guidance-scale", help="Classifier-free guidance, >= 1.", rich_help_panel=_SHOT)
]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Denoising steps.", rich_help_panel=_SHOT)]
PropOpt = Annotated[
    Optional[str],
    typer.Option("--propagation-steps", help="Comma list of step indices for flow propagation, e.g. 24,26,28.",
                 rich_help_panel=_SHOT),
]
ColorOpt = Annotated[
    Optional[str],
    typer.Option("--color-fix", help=f"Colour correction: {', '.join(COLOR_FIX_CHOICES)}.", rich_help_panel=_SHOT),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed.", rich_help_panel=_SHOT)]
FlowOpt = Annotated[Optional[str], typer.Option("--flow", help="Optical-flow estimator name.", rich_help_panel=_SHOT)]
TilingOpt = Annotated[
    Optional[str],
    typer.Option("--tiling", help="Tiling strategy: official (hard paste, published) or feather; true/false "
                                  "also work, as --tile on/off. \\[default: official]",
                 rich_help_panel=_SHOT, show_default=False),
]
VaeOpt = Annotated[
    Optional[str],
    typer.Option("--vae", help="Decoder: 3d (published default) or video (temporal, LR-conditioned).",
                 rich_help_panel=_SHOT),
]
# The pipeline knobs below mirror ``uav upscale``'s options (same names, types and help);
# here a value given overrides every clip, and leaving one out leaves the shots' own.
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", help="Sampler: ddim-official (published) or a plugin scheduler (see `uav plugins`). "
                        "\\[default: ddim-official]", rich_help_panel=_SHOT, show_default=False)]
TileOpt = Annotated[Optional[str], typer.Option(
    "--tile", help="Spatial tiling: auto (when the input has >= 384x384 pixels), on or off. \\[default: auto]",
    rich_help_panel=_SHOT, show_default=False)]
TileModeOpt = Annotated[Optional[str], typer.Option(
    "--tile-mode", help="pipeline (published: each tile runs the whole pipeline) or latent (U-Net predictions "
                        "averaged over overlapping latent tiles each step; frames decode whole). "
                        "\\[default: pipeline]", rich_help_panel=_SHOT, show_default=False)]
TileSizeOpt = Annotated[Optional[int], typer.Option(
    "--tile-size", help=f"Tile side in input pixels. \\[default: {_LIB.tile_size}]", rich_help_panel=_SHOT,
    show_default=False)]
TileOverlapOpt = Annotated[Optional[int], typer.Option(
    "--tile-overlap", help=f"Tile overlap in input pixels. \\[default: {_LIB.tile_overlap}]", rich_help_panel=_SHOT,
    show_default=False)]
WindowBatchOpt = Annotated[Optional[int], typer.Option(
    "--window-batch", help="8-frame windows per U-Net call: same result, faster on GPUs with memory to spare. "
                           "\\[default: 1]", rich_help_panel=_SHOT, show_default=False)]
DecodeChunkOpt = Annotated[Optional[int], typer.Option(
    "--decode-chunk", help=f"Frames per VAE decode call; fewer = less memory (changes the numbers slightly). "
                           f"\\[default: {_LIB.decode_chunk}]", rich_help_panel=_SHOT, show_default=False)]
DecodeTileOpt = Annotated[Optional[int], typer.Option(
    "--decode-tile", help="Decode in overlapping tiles of this many input pixels (bounds the VAE's attention cost on "
                          "large frames; changes the numbers slightly). \\[default: whole frames]",
    rich_help_panel=_SHOT, show_default=False)]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _overrides(**values: Any) -> dict[str, Any]:
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return validate_settings(given, where="command-line overrides")
    except ShotSettingsError as exc:
        raise _fail(str(exc)) from None


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


#: override key -> (registry kind, option, value that needs no plugin)
_COMPONENTS = {
    "flow": ("flow", "--flow", "auto"),
    "tiling": ("tiling", "--tiling", None),
    "scheduler": ("scheduler", "--scheduler", "ddim-official"),
    "color_fix": ("color", "--color-fix", "none"),
}


def _check_components(overrides: Mapping[str, Any]) -> None:
    """Unknown component names on the command line fail before any model is loaded, as in ``uav upscale``."""
    wanted = [(key, value) for key, value in overrides.items()
              if key in _COMPONENTS and isinstance(value, str) and value != _COMPONENTS[key][2]]
    if not wanted:
        return
    from uav.registry import default_registry  # imports torch: only when a name needs checking

    registry = default_registry()
    for key, value in wanted:
        kind, option, _ = _COMPONENTS[key]
        try:
            registry.factory(kind, value)
        except KeyError as exc:
            raise UserError(f"{option}: {exc.args[0] if exc.args else exc}") from None


def _check_codec(codec: str, ext: str, pix_fmt: str | None, crf: int | None) -> None:
    """Open (and abort) the writer once, as ``uav upscale`` does: a bad codec, pixel format,
    crf or extension fails here, not after the first shot has rendered."""
    from uav.io.writer import CODECS, VideoWriter

    if codec not in CODECS:
        raise UserError(f"--codec: unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    if CODECS[codec].kind != "video":
        movies = ", ".join(name for name, spec in CODECS.items() if spec.kind == "video")
        raise UserError(f"--codec {codec} writes an image folder, but a timeline's clips are relinked to movie "
                        f"files; choose one of {movies}")
    suffix = ext if ext.startswith(".") else f".{ext}"
    with tempfile.TemporaryDirectory(prefix="uav-timeline-preflight-") as tmp:
        VideoWriter(Path(tmp) / f"preflight{suffix}", fps=24, width=64, height=64, codec=codec, pix_fmt=pix_fmt,
                    crf=crf).abort()


def _dtype(value: str) -> str | None:
    if value not in _DTYPES:
        raise UserError(f"--dtype: expected auto, fp32, fp16 or bf16, got {value!r}")
    return _DTYPES[value]


@app.command("plan")
def plan_command(
    timeline: InputArg,
    handles: HandlesOpt = DEFAULT_HANDLES,
    shots: ShotsOpt = None,
    media_dir: Annotated[
        Optional[Path], typer.Option("--media-dir", help="Where outputs would go (shown in the plan).")
    ] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="The output timeline 'timeline upscale' would write: outputs are then named exactly "
                               "as that render names them (with --media-dir).")] = None,
    name_by: NameByOpt = "media",
    ext: ExtOpt = "mov",
    timeline_name: TimelineNameOpt = None,
    adapter: AdapterOpt = None,
    rate: RateOpt = None,
    adapter_option: AdapterOptionOpt = None,
    as_json: JsonOpt = False,
    prompt: PromptOpt = None,
    negative_prompt: NegOpt = None,
    added_prompt: AddedOpt = None,
    noise_level: NoiseOpt = None,
    guidance_scale: GuidanceOpt = None,
    steps: StepsOpt = None,
    propagation_steps: PropOpt = None,
    color_fix: ColorOpt = None,
    seed: SeedOpt = None,
    flow: FlowOpt = None,
    scheduler: SchedulerOpt = None,
    tiling: TilingOpt = None,
    tile: TileOpt = None,
    tile_mode: TileModeOpt = None,
    tile_size: TileSizeOpt = None,
    tile_overlap: TileOverlapOpt = None,
    window_batch: WindowBatchOpt = None,
    decode_chunk: DecodeChunkOpt = None,
    decode_tile: DecodeTileOpt = None,
    vae: VaeOpt = None,
) -> None:
    """Show, per clip, the media range to render (used range + handles), its settings and output."""
    from .api import plan_file

    overrides = _overrides(
        prompt=prompt, negative_prompt=negative_prompt, added_prompt=added_prompt, noise_level=noise_level,
        guidance_scale=guidance_scale, steps=steps, propagation_steps=propagation_steps, color_fix=color_fix,
        seed=seed, flow=flow, scheduler=scheduler, tiling=tiling, tile=tile, tile_mode=tile_mode,
        tile_size=tile_size, tile_overlap=tile_overlap, window_batch=window_batch, decode_chunk=decode_chunk,
        decode_tile=decode_tile,
        vae=vae,
    )
    try:
        _, plan = plan_file(
            timeline, handles=handles, media_dir=media_dir, shots=shots, overrides=overrides,
            name_by=name_by, ext=ext, timeline_name=timeline_name, output=output,
            adapter_name=adapter, rate=rate, adapter_options=parse_adapter_options(adapter_option),
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        _print_table(plan, f"uav timeline plan: {timeline.name}")


@app.command("upscale")
def upscale_command(
    timeline: InputArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output timeline (.otio is always written).")],
    media_dir: Annotated[Path, typer.Option("--media-dir", help="Folder for the rendered media and the manifest.")],
    handles: HandlesOpt = DEFAULT_HANDLES,
    shots: ShotsOpt = None,
    name_by: NameByOpt = "media",
    ext: ExtOpt = "mov",
    timeline_name: TimelineNameOpt = None,
    adapter: AdapterOpt = None,
    rate: RateOpt = None,
    adapter_option: AdapterOptionOpt = None,
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="Write .otio with one media reference per clip (OTIO 0.14 schema).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-render even finished outputs.")] = False,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", help="Release folder (pretrained_models/upscale_a_video layout). Default: $UAV_WEIGHTS, "
                          "./pretrained_models/upscale_a_video, ~/.cache/uav/upscale_a_video.",
        rich_help_panel=_MODEL)] = None,
    device: Annotated[str, typer.Option(
        "--device", help="auto (CUDA if available), cpu, cuda, cuda:N or mps.", rich_help_panel=_MODEL)] = "auto",
    dtype: Annotated[str, typer.Option(
        "--dtype", help="U-Net/text-encoder precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.",
        rich_help_panel=_MODEL)] = "auto",
    vae_dtype: Annotated[
        Optional[str], typer.Option("--vae-dtype", help="VAE dtype (default float32).", rich_help_panel=_MODEL)
    ] = None,
    codec: Annotated[str, typer.Option(
        "--codec", help="prores_hq (ProRes 422 HQ, for editing), prores_4444, h264 or h265.",
        rich_help_panel=_MODEL)] = "prores_hq",
    pix_fmt: Annotated[Optional[str], typer.Option(
        "--pix-fmt", help="Encoder pixel format, e.g. yuv420p10le (default depends on the codec).",
        rich_help_panel=_MODEL)] = None,
    crf: Annotated[Optional[int], typer.Option(
        "--crf", help="h264/h265 quality, 0 (lossless) to 51 (default 18 / 20).", rich_help_panel=_MODEL)] = None,
    renderer: Annotated[
        Optional[str],
        typer.Option("--renderer", hidden=True, help="module:callable to render with instead of VideoUpscaler."),
    ] = None,
    prompt: PromptOpt = None,
    negative_prompt: NegOpt = None,
    added_prompt: AddedOpt = None,
    noise_level: NoiseOpt = None,
    guidance_scale: GuidanceOpt = None,
    steps: StepsOpt = None,
    propagation_steps: PropOpt = None,
    color_fix: ColorOpt = None,
    seed: SeedOpt = None,
    flow: FlowOpt = None,
    scheduler: SchedulerOpt = None,
    tiling: TilingOpt = None,
    tile: TileOpt = None,
    tile_mode: TileModeOpt = None,
    tile_size: TileSizeOpt = None,
    tile_overlap: TileOverlapOpt = None,
    window_batch: WindowBatchOpt = None,
    decode_chunk: DecodeChunkOpt = None,
    decode_tile: DecodeTileOpt = None,
    vae: VaeOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary; errors only.",
                                        rich_help_panel=_REPORT)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout (progress stays on stderr).",
                                          rich_help_panel=_REPORT)] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.",
                                        rich_help_panel=_REPORT)] = False,
    executor: ExecutorOpt = "local",
    ray_address: AddressOpt = None,
    gpus_per_worker: GpusOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Render every planned range and write the timeline relinked to the new media.

    Rerunning the same command renders only what changed."""
    quiet_libraries(debug)
    console = stderr_console(quiet=quiet)
    with handle_errors(debug=debug, as_json=as_json):
        overrides = validate_settings(
            {k: v for k, v in dict(
                prompt=prompt, negative_prompt=negative_prompt, added_prompt=added_prompt, noise_level=noise_level,
                guidance_scale=guidance_scale, steps=steps, propagation_steps=propagation_steps,
                color_fix=color_fix, seed=seed, flow=flow, scheduler=scheduler, tiling=tiling, tile=tile,
                tile_mode=tile_mode, tile_size=tile_size, tile_overlap=tile_overlap, window_batch=window_batch,
                decode_chunk=decode_chunk, decode_tile=decode_tile, vae=vae,
            ).items() if v is not None},
            where="command-line overrides",
        )
        _check_components(overrides)
        run_on = build_executor(executor, ray_address=ray_address, gpus_per_worker=gpus_per_worker, workers=workers,
                                debug=debug)
        if renderer is not None:
            render_fn, model = _load_renderer(renderer), None
            if run_on is not None:
                render_fn = renderer  # the spec travels; each worker imports it
        else:
            render_fn = _default_renderer(console, weights=weights, device=device, dtype=dtype, vae_dtype=vae_dtype,
                                          codec=codec, pix_fmt=pix_fmt, crf=crf, ext=ext)
            model = render_fn.model
            if run_on is None:
                render_fn = _with_progress(render_fn, console)
        from uav.executors.progress import RunProgress

        run_view = RunProgress(console if run_on is not None else None)

        def on_job(job: Any, status: str) -> None:
            from rich.markup import escape

            if run_on is not None:
                if status == "cached":
                    run_view.skip()
                return
            if status == "rendering":
                at = job.timecode or f"{job.start_seconds:.3f} s"
                console.print(escape(f"rendering {job.output_name}: {job.frames} frames from {job.media.display} "
                                     f"@ {at}"))
            elif status == "cached":
                console.print(escape(f"up to date {job.output_name}"))

        from .api import upscale_timeline

        try:
            with run_view:
                result = upscale_timeline(
                    timeline, output, media_dir, renderer=render_fn, model=model, handles=handles, shots=shots,
                    overrides=overrides, name_by=name_by, ext=ext, timeline_name=timeline_name, downgrade=downgrade,
                    force=force, on_job=on_job, adapter_name=adapter, rate=rate,
                    adapter_options=parse_adapter_options(adapter_option), executor=run_on,
                    on_event=run_view if run_on is not None else None,
                )
        except KeyboardInterrupt:
            raise fail("interrupted: finished outputs are kept; rerun the same command to finish",
                       as_json=as_json, code=130) from None
    # plan warnings point at the edit (media shorter than the cut, unmatched shot entries): never silenced
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    summary = {
        "ok": True,
        "rendered": [r.job.output_name for r in result.report.rendered],
        "cached": [r.job.output_name for r in result.report.cached],
        "relinked_clips": result.relinked,
        "skipped": [s.to_dict() for s in result.plan.skipped],
        "written": [str(p) for p in result.written],
        "frames_rendered": sum(r.job.frames for r in result.report.rendered),
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


def _default_renderer(console: Any, *, weights: Path | None, device: str, dtype: str, vae_dtype: str | None,
                      codec: str, pix_fmt: str | None, crf: int | None, ext: str) -> Any:
    """The :class:`~uav_otio.render.UpscalerRenderer` the options ask for, every option checked
    the way ``uav upscale`` checks it, before any model is loaded."""
    from uav.cli.upscale import find_weights, resolve_device

    from .render import UpscalerRenderer

    dtype_name = _dtype(dtype)
    device_name = resolve_device(device)
    _check_codec(codec, ext, pix_fmt, crf)
    folder = find_weights(weights, self_check=False)
    from uav.testing import is_tiny_random

    if folder is not None and is_tiny_random(folder):
        # random networks: say so loudly, whatever the output mode (no --self-check renaming here)
        self_check_banner(console)
    return UpscalerRenderer(weights=folder, device=device_name, dtype=dtype_name, codec=codec, pix_fmt=pix_fmt,
                            crf=crf, vae_dtype=vae_dtype)


def _with_progress(render_fn: Any, console: Any) -> Any:
    """Wrap the default renderer so each render draws ``uav upscale``'s progress bars."""

    def render(job: Any, settings: Mapping[str, Any], output_path: Path, progress: Any = None) -> None:
        flow = bool(settings.get("propagation_steps")) and job.frames > 1
        with ProgressReporter(console, label=job.output_name, frames=job.frames, steps=int(settings["steps"]),
                              flow=flow) as reporter:
            render_fn(job, settings, output_path, progress=progress, events=reporter)

    return render
