"""``uav upscale``: upscale a video, an image sequence or a folder of videos x4.

Order of work, so that mistakes cost seconds, not a model load: settings are checked,
every input is probed and its frame range resolved, every output is test-opened by the
writer (codec, pixel format, folder permissions), and only then are the weights loaded.
Outputs are written under a temporary name and renamed when complete, so a failure
never leaves a partial file at the output path.
"""

from __future__ import annotations

import contextlib
import random
import time
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uav.cli.app import app
from uav.cli.common import (UserError, frame_position, handle_errors, print_json, quiet_libraries, self_check_banner,
                            stderr_console)
from uav.cli.executor_options import EXIT_PARTIAL_FAILURE, SplitOpt, failure_line, parse_split, render_batch
from uav.cli.jobs import (
    Job,
    missing_dirs,
    plan_jobs,
    preflight_output,
    probe_jobs,
    remove_empty,
)
from uav.cli.options import (
    MODEL,
    DeviceOpt,
    DtypeOpt,
    RunOptions,
    VaeOpt,
    WeightsOpt,
    settings_from_options,
    with_run_options,
    with_setting_options,
)
from uav.cli.local_run import local_summary, run_record
from uav.cli.preflight import build_tiny_release, check_vae, find_weights, parse_dtype, resolve_device

__all__ = ["upscale_command"]

_IO = "Input and output"


# ---------------------------------------------------------------------------- command
@app.command("upscale")
@with_setting_options()
@with_run_options
def upscale_command(
    input: Annotated[str, typer.Argument(
        metavar="INPUT", help="A video file, an image-sequence folder or pattern (frames/%05d.png), or a folder of videos "
             "(each is upscaled).", show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Output file (or folder for png/tiff, or for a folder of videos). "
                               "Default: <name>_uav.<ext> beside the input.", metavar="PATH",
        rich_help_panel=_IO)] = None,
    start: Annotated[Optional[str], typer.Option(
        help="First frame: an index or a timecode HH:MM:SS:FF.", metavar="FRAME", rich_help_panel=_IO)] = None,
    end: Annotated[Optional[str], typer.Option(
        help="Frame after the last one (exclusive): an index or a timecode.", metavar="FRAME",
        rich_help_panel=_IO)] = None,
    codec: Annotated[str, typer.Option(
        help="h264, h265, prores_hq, prores_4444, dnxhr_hq, dnxhr_hqx (= dnxhr), dnxhr_444, or an image folder: "
             "png, tiff, exr, dpx.", metavar="CODEC", rich_help_panel=_IO)] = "h264",
    start_number: Annotated[Optional[str], typer.Option(
        "--start-number", help="Number of a sequence output's first image: N, 'source' (the source's frame number) or "
                               "'timecode' (the start timecode in frames). Default 0.", metavar="N|source|timecode",
        rich_help_panel=MODEL)] = None,
    fps: Annotated[Optional[str], typer.Option(
        help="Frame rate of an image-sequence input, e.g. 24 or 24000/1001 (default 24).", metavar="RATE",
        rich_help_panel=_IO)] = None,
    weights: WeightsOpt = None,
    vae: VaeOpt = "3d",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    self_check: Annotated[bool, typer.Option(
        "--self-check", help="Run every stage with tiny RANDOM networks (no weights needed) to test the "
                             "installation. The output is NOT an upscale and is named *_selfcheck_random.*.",
        metavar="", rich_help_panel=MODEL)] = False,
    temporal_split: SplitOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check everything (settings, plugins, inputs, weights folder, outputs) and show what would "
                          "run; write nothing and load no model.", rich_help_panel=_IO)] = False,
    scenes: Annotated[str, typer.Option(
        "--scenes", metavar="auto|none|FILE",
        help="auto: find the hard cuts and upscale each scene as its own clip (windows and propagation never "
             "cross a cut; a clip without cuts gives exactly the unsplit result); none: one clip; FILE: the "
             "scenes and per-scene settings of a scene list (uav scenes IN -o FILE: .toml, .otio, .edl). See "
             "docs/scenes.md.", rich_help_panel=_IO)] = "auto",
    *,
    options: RunOptions,
    setting_values: dict[str, Optional[str]],
) -> None:
    """Upscale INPUT x4 with Upscale-A-Video.

    Examples:

      uav upscale clip.mp4 -o clip_4x.mp4 --propagation-steps 24,26,28

      uav upscale old.mp4 -o out/ --noise-level 100 --guidance-scale 5 --steps 20

      uav upscale frames/ -o frames_4x --codec png   (images: one sequence)

      uav upscale videos/ -o upscaled/               (videos: each one)

      uav upscale clip.mp4 --prompt auto --captioner-option model=models/llava-1.5-13b-hf

    Without weights, --self-check runs tiny random networks through every stage (not an upscale).
    """
    quiet_libraries(options.debug)
    console = stderr_console(quiet=options.quiet)
    with handle_errors(debug=options.debug, as_json=options.as_json), contextlib.ExitStack() as stack:
        # built in a dry run too: executor options are checked like every other option
        run_on = options.build_executor(always=temporal_split is not None)
        summary = _run(
            input, output, options, console=console, stack=stack, self_check=self_check, setting_values=setting_values,
            start=frame_position(start), end=frame_position(end), codec=codec,
            start_number=frame_position(start_number), fps=fps, weights=weights, vae=vae or "3d", device=device,
            dtype=dtype, run_on=None if dry_run else run_on, dry_run=dry_run, split=parse_split(temporal_split),
            scenes=scenes,
        )
        if options.as_json:
            print_json(summary)
    if summary.get("failed"):
        typer.echo(f"error: {summary['failed_line']}", err=True)
        raise typer.Exit(EXIT_PARTIAL_FAILURE)


def _run(source: str, output: str | None, options: RunOptions, *, console: Any, stack: contextlib.ExitStack,
         self_check: bool, setting_values: dict[str, Any], start: int | str | None, end: int | str | None,
         codec: str, start_number: int | str | None, fps: str | None, weights: Path | None, vae: str, device: str,
         dtype: str, run_on: Any, dry_run: bool, split: Any, scenes: str) -> dict[str, Any]:
    """Every check of the command line, the inputs and the outputs, before any model loads;
    then the dry run's summary, or the run (here or on ``run_on``) and its summary."""
    from uav.arguments import output_size
    from uav.cli.scene_runs import check_scene_mode, plan_scenes
    from uav.io.rates import parse_fps
    from uav.weights import is_tiny_random

    started = time.perf_counter()
    check_vae(vae)
    scenes = check_scene_mode(scenes)
    dtype_name = parse_dtype(dtype)
    settings = settings_from_options(setting_values, options.captioner_option)
    if settings.seed is None:
        # draw it here so the summary can say how to reproduce the run
        settings = settings.replace(seed=random.randrange(2**31))
    rate = None if fps is None else parse_fps(fps, name="--fps")
    # the workers' devices are theirs to check: the driver may have no GPU
    device_name = resolve_device(device) if run_on is None else (None if device == "auto" else device)
    folder = find_weights(weights, self_check=self_check)
    tiny = folder is None or is_tiny_random(folder)
    # random networks never produce a file that could pass for an upscale: *_selfcheck_random.*
    kind, jobs = plan_jobs(source, output, codec, self_check=tiny)
    if not jobs:
        raise UserError(f"{source}: folder holds no videos")
    probe_jobs(jobs, start=start, end=end, fps=rate)
    created: list[Path] = []
    for job in jobs:
        created += [d for d in missing_dirs(job.output) if d not in created]
    stack.callback(remove_empty, created)  # folders made for outputs that never came
    for job in jobs:
        preflight_output(job, codec=codec, pix_fmt=options.pix_fmt, crf=options.crf, compression=options.compression,
                         start_number=start_number, start=start, fps=rate,
                         size=output_size(job.width, job.height, settings))
    _check_model(settings, folder=folder, tiny=tiny, vae=vae)
    given = {name for name, value in setting_values.items() if value is not None}
    # the self-check renders a short cut of the clip: one clip, whatever --scenes says
    runs = plan_scenes(jobs, "none" if self_check else scenes, settings=settings, given=given, start=start, end=end,
                       fps=rate, vae=vae, codec=codec, console=console)
    if dry_run:
        return _dry_run_summary(jobs, console=console, quiet=options.quiet, settings=settings, folder=folder,
                                tiny=tiny, vae=vae, device=device, dtype=dtype, kind=kind, started=started,
                                split=split, runs=runs)
    if tiny:
        self_check_banner(console)
    built = folder is None
    if folder is None:
        with console.status("building a tiny random release for the self-check ..."):
            folder = build_tiny_release(stack)
    writer_options = _writer_options(codec, options, start_number=start_number,
                                     rate=rate if kind == "sequence" else None)
    common = dict(folder=folder, built=built, tiny=tiny, device=device, device_name=device_name, dtype=dtype,
                  dtype_name=dtype_name, vae=vae, kind=kind, settings=settings, writer_options=writer_options,
                  start=start, end=end, console=console, quiet=options.quiet, split=split, started=started,
                  created=created)
    if runs or run_on is not None:
        return _executor_summary(jobs, runs, run_on=run_on, **common)
    return local_summary(jobs, rate=rate, self_check=self_check, **common)


def _writer_options(codec: str, options: RunOptions, *, start_number: Any, rate: Fraction | None) -> dict[str, Any]:
    """The writer keywords the options give (only those given; ``rate`` for image sequences)."""
    given = {"pix_fmt": options.pix_fmt or None, "crf": options.crf, "compression": options.compression,
             "start_number": start_number, "fps": rate}
    return {"codec": codec, **{k: v for k, v in given.items() if v is not None}}


def _executor_summary(jobs: list[Job], runs: dict[str, Any], *, run_on: Any, folder: Path, built: bool,
                      tiny: bool, device: str, device_name: Any, dtype: str, dtype_name: Any, vae: str, kind: str,
                      settings: Any, writer_options: dict[str, Any], start: Any, end: Any, console: Any, quiet: bool,
                      split: Any, started: float, created: list[Path]) -> dict[str, Any]:
    """Render on an executor (with ``runs``: scenes as jobs, :mod:`uav.cli.scene_runs`) and
    build the run's summary."""
    from uav.cli.scene_runs import render_with_scenes

    common = dict(weights=folder, device=device_name, dtype=dtype_name, vae=vae, settings=settings,
                  writer_options=writer_options, start=start, end=end, console=console, quiet=quiet, split=split)
    if runs:
        records, failed, run = render_with_scenes(jobs, runs, executor=run_on, model={"dtype": dtype_name}, **common)
    else:
        records, failed, run = render_batch(jobs, executor=run_on, **common)
    if records:
        created.clear()  # keep the folders that hold outputs
    record = run_record(tiny=tiny, built=built, folder=folder, device=device, dtype=dtype, vae=vae, kind=kind,
                        settings=settings, started=started)
    return {"ok": not failed, **record, "outputs": records,
            "executor": "local" if run_on is None else run_on.name, "jobs": run["jobs"],
            "failed": [r.to_dict() for r in failed],
            "temporal_split": None if split is None else {"part_frames": split.part_frames,
                                                          "overlap": split.overlap},
            "failed_line": failure_line(failed) if failed else None, "seconds": record.pop("seconds")}


def _check_model(settings: Any, *, folder: Path | None, tiny: bool, vae: str) -> None:
    """The model-side checks every run makes before loading anything, dry or not (the
    components the settings name were resolved when the options were parsed): the
    captioner can be built, and the weights folder is complete."""
    from uav.weights import find_release

    if settings.auto_prompt:
        from uav.captioning import check_captioner

        # a wrong captioner folder fails here, before the upscaler's weights load
        check_captioner(settings.captioner, dict(settings.captioner_options))
    if folder is not None and not tiny:
        missing = find_release(folder).missing(vae=vae)  # type: ignore[arg-type]
        if missing:
            raise UserError(f"weights folder {folder} lacks {', '.join(missing)} (see docs/weights.md)")


def _dry_run_summary(jobs: list[Job], *, console: Any, quiet: bool, settings: Any, folder: Path | None, tiny: bool,
                     vae: str, device: str, dtype: str, kind: str, started: float, split: Any = None,
                     runs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--dry-run``: what a run would write. Every check a run makes before loading a model
    (inputs probed, outputs test-opened with their encoders, settings, plugins, weights
    folder) has passed by the time this is called: dry run and run share that path, and
    the folders made for outputs are removed again, so nothing stays written."""
    from rich.markup import escape

    from uav import __version__
    from uav.arguments import output_size
    from uav.cli.scene_runs import scene_rows

    plans = _dry_run_plans(jobs, settings, folder=folder, tiny=tiny, vae=vae, device=device, dtype=dtype)
    outputs = []
    for job, plan in zip(jobs, plans):
        o = {**job.record(output_size(job.width, job.height, settings)), "memory": plan.to_dict()}
        if split is not None:
            o["parts"] = [list(r) for r in split.ranges(job.frames)]
        if runs and job.label in runs:
            o["scenes"] = scene_rows(runs[job.label])
        outputs.append(o)
    if not quiet:
        for o in outputs:
            parts = f", in {len(o['parts'])} parts" if len(o.get("parts", ())) > 1 else ""
            parts += f", in {len(o['scenes'])} scenes" if o.get("scenes") else ""
            console.print(escape(f"would write {o['output']}  ({o['frames']} frames{parts}, {o['output_size'][0]}x"
                                 f"{o['output_size'][1]}) from {o['input']}"))
        for plan in dict.fromkeys(p.describe() for p in plans):
            console.print(escape(plan))
        console.print("dry run: every check passed; nothing was written")
    return {"ok": True, "dry_run": True, "uav_version": __version__, "self_check": tiny,
            "weights": "(a tiny random release would be built)" if folder is None else str(folder),
            "device": device, "dtype": dtype, "vae": vae, "input_kind": kind, "settings": settings.to_dict(),
            "outputs": outputs, "seconds": round(time.perf_counter() - started, 3),
            "temporal_split": None if split is None else {"part_frames": split.part_frames, "overlap": split.overlap}}


def _dry_run_plans(jobs: list[Job], settings: Any, *, folder: Path | None, tiny: bool, vae: str, device: str,
                   dtype: str) -> list[Any]:
    """The memory plan each job would get, from the release's configs (no model loads; the
    tiny networks' configs for a self-check)."""
    import torch

    from uav.cli.doctor import release_configs
    from uav.memory_plan import plan_for_configs, resolve_budget
    from uav.upscaler import default_dtypes, torch_dtype

    dev = torch.device(resolve_device(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    budget = resolve_budget(settings.memory, dev)
    if budget.gib is None:
        return [plan_for_configs({}, {}, height=j.height, width=j.width, frames=j.frames, settings=settings,
                                 budget=budget) for j in jobs]
    if tiny:
        from uav.weights.tiny import TINY_UNET_CONFIG, TINY_VAE_CONFIG

        unet_cfg, vae_cfg, text_params = TINY_UNET_CONFIG, TINY_VAE_CONFIG, 0
    else:
        unet_cfg, vae_cfg, text_params, _ = release_configs(None, vae, folder=folder)
    default_unet, default_vae = default_dtypes(dev)
    unet_dtype = torch_dtype(parse_dtype(dtype), "--dtype") or default_unet
    return [plan_for_configs(unet_cfg, vae_cfg, height=j.height, width=j.width, frames=j.frames, settings=settings,
                             budget=budget, unet_dtype=unet_dtype, vae_dtype=default_vae,
                             text_encoder_params=text_params) for j in jobs]
