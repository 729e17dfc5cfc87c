"""``uav timeline``: plan and upscale the media an edit uses.

``uav timeline plan IN`` prints what would be rendered; ``uav timeline upscale IN -o
OUT --media-dir DIR`` renders it and writes the relinked timeline. Every per-shot
setting can be given on the command line, where it overrides the shot list, the
markers and the metadata of every clip.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

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
    Optional[str], typer.Option("--tiling", help="true/false, or a tiling strategy name.", rich_help_panel=_SHOT)
]
VaeOpt = Annotated[Optional[str], typer.Option("--vae", help="VAE variant or weights.", rich_help_panel=_SHOT)]


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
        raise _fail(f"--renderer must be 'module:callable', got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise _fail(f"cannot load renderer {spec!r}: {exc}") from None
    return obj() if isinstance(obj, type) else obj


@app.command("plan")
def plan_command(
    timeline: InputArg,
    handles: HandlesOpt = DEFAULT_HANDLES,
    shots: ShotsOpt = None,
    media_dir: Annotated[
        Optional[Path], typer.Option("--media-dir", help="Where outputs would go (shown in the plan).")
    ] = None,
    name_by: NameByOpt = "media",
    ext: ExtOpt = "mov",
    timeline_name: TimelineNameOpt = None,
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
    tiling: TilingOpt = None,
    vae: VaeOpt = None,
) -> None:
    """Show, per clip, the media range to render (used range + handles), its settings and output."""
    from .api import plan_file

    overrides = _overrides(
        prompt=prompt, negative_prompt=negative_prompt, added_prompt=added_prompt, noise_level=noise_level,
        guidance_scale=guidance_scale, steps=steps, propagation_steps=propagation_steps, color_fix=color_fix,
        seed=seed, flow=flow, tiling=tiling, vae=vae,
    )
    try:
        _, plan = plan_file(
            timeline, handles=handles, media_dir=media_dir, shots=shots, overrides=overrides,
            name_by=name_by, ext=ext, timeline_name=timeline_name,
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
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="Write .otio with one media reference per clip (OTIO 0.14 schema).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-render even finished outputs.")] = False,
    as_json: JsonOpt = False,
    weights: Annotated[
        Optional[Path], typer.Option("--weights", help="Model weights (folder or file).", rich_help_panel=_MODEL)
    ] = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="torch device, e.g. cuda:0 or cpu.", rich_help_panel=_MODEL)
    ] = None,
    dtype: Annotated[
        Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16.", rich_help_panel=_MODEL)
    ] = None,
    vae_dtype: Annotated[
        Optional[str], typer.Option("--vae-dtype", help="VAE dtype (default float32).", rich_help_panel=_MODEL)
    ] = None,
    codec: Annotated[
        str, typer.Option("--codec", help="Output codec (prores_hq, prores_4444, h264, ...).", rich_help_panel=_MODEL)
    ] = "prores_hq",
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
    tiling: TilingOpt = None,
    vae: VaeOpt = None,
) -> None:
    """Render every planned range and write the timeline relinked to the new media.

    Rerunning the same command renders only what changed."""
    from .api import upscale_timeline
    from .render import UpscalerRenderer

    overrides = _overrides(
        prompt=prompt, negative_prompt=negative_prompt, added_prompt=added_prompt, noise_level=noise_level,
        guidance_scale=guidance_scale, steps=steps, propagation_steps=propagation_steps, color_fix=color_fix,
        seed=seed, flow=flow, tiling=tiling, vae=vae,
    )
    if renderer is not None:
        render_fn = _load_renderer(renderer)
    else:
        if weights is None:
            raise _fail("--weights is required: the Upscale-A-Video release folder")
        if not weights.exists():
            raise _fail(f"--weights {str(weights)!r} does not exist")
        render_fn = UpscalerRenderer(weights=weights, device=device, dtype=dtype, codec=codec, vae_dtype=vae_dtype)

    def on_job(job: Any, status: str) -> None:
        if status == "rendering":
            typer.echo(f"rendering {job.output_name}: {job.frames} frames from {job.media.display} "
                       f"@ {job.timecode}", err=True)
        elif status == "cached":
            typer.echo(f"up to date {job.output_name}", err=True)

    try:
        result = upscale_timeline(
            timeline, output, media_dir, renderer=render_fn, handles=handles, shots=shots, overrides=overrides,
            name_by=name_by, ext=ext, timeline_name=timeline_name, downgrade=downgrade, force=force, on_job=on_job,
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: finished outputs are kept; rerun the same command to finish", err=True)
        raise typer.Exit(130) from None
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    summary = {
        "rendered": [r.job.output_name for r in result.report.rendered],
        "cached": [r.job.output_name for r in result.report.cached],
        "relinked_clips": result.relinked,
        "skipped": [s.to_dict() for s in result.plan.skipped],
        "written": [str(p) for p in result.written],
        "frames_rendered": sum(r.job.frames for r in result.report.rendered),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"{len(summary['rendered'])} rendered ({summary['frames_rendered']} frames), "
            f"{len(summary['cached'])} up to date, {result.relinked} clip(s) relinked, "
            f"{len(result.plan.skipped)} skipped; wrote {', '.join(summary['written'])}"
        )
    sys.stdout.flush()
