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
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uav.cli.app import app
from uav.cli.common import (
    SELF_CHECK_BANNER,
    SELF_CHECK_SUFFIX,
    ProgressReporter,
    UserError,
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
    render_batch,
)
from uav.cli.options import (
    MODEL,
    CaptionerOptionOpt,
    CrfOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    PixFmtOpt,
    QuietOpt,
    VaeOpt,
    WeightsOpt,
    settings_from_options,
    with_setting_options,
)

#: file suffixes treated as videos when INPUT is a folder (anything FFmpeg reads works as a single INPUT)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".mxf", ".wmv", ".flv", ".3gp")
OUTPUT_TAG = "_uav"

_IO = "Input and output"


@dataclass
class Job:
    """One input and where its result goes."""

    source: str
    output: Path
    label: str
    frames: int = 0
    width: int = 0
    height: int = 0
    fps: Fraction = Fraction(24)
    has_audio: bool = False


# ---------------------------------------------------------------------------- planning
def _is_pattern(text: str) -> bool:
    import re

    return bool(re.search(r"%0?\d*d", Path(text).name))


def input_kind(source: str) -> str:
    """``"batch"`` (a folder of videos), ``"sequence"`` (images) or ``"video"`` (anything else).

    A folder is judged by what it holds: video files make it a batch, images make it
    one image sequence; both at once is ambiguous and refused.
    """
    from uav.io.reader import IMAGE_EXTENSIONS

    if _is_pattern(source):
        return "sequence"
    path = Path(source)
    if not path.is_dir():
        return "video"
    files = [f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")]
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS + (".exr",)]
    if videos and images:
        raise UserError(f"{path}: folder holds both videos ({videos[0].name}, ...) and images ({images[0].name}, "
                        "...); pass one video, a folder of only videos, or an image pattern such as "
                        f"{path / '%05d.png'}")
    return "batch" if videos else "sequence"


def _codec_spec(codec: str) -> Any:
    from uav.io.writer import CODECS

    if codec not in CODECS:
        raise UserError(f"--codec: unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    return CODECS[codec]


def _default_name(stem: str, source_suffix: str, spec: Any) -> str:
    if spec.kind == "sequence":
        return f"{stem}{OUTPUT_TAG}"  # a folder of images
    suffix = source_suffix.lower() if source_suffix.lower() in spec.suffixes else spec.suffixes[0]
    return f"{stem}{OUTPUT_TAG}{suffix}"


def mark_self_check(path: Path) -> Path:
    """``out.mp4`` -> ``out_selfcheck_random.mp4`` (a sequence folder or pattern's folder likewise)."""
    if _is_pattern(path.name):
        return mark_self_check(path.parent) / path.name
    suffix = path.suffix if path.suffix.lower() in VIDEO_EXTENSIONS else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    if stem.endswith(SELF_CHECK_SUFFIX):
        return path
    return path.with_name(f"{stem}{SELF_CHECK_SUFFIX}{suffix}")


def plan_jobs(source: str, output: str | None, codec: str, *, self_check: bool) -> tuple[str, list[Job]]:
    """Pair every input with its output path; returns ``(kind, jobs)``.

    * a video or image sequence -> OUTPUT, or ``<name>_uav.<ext>`` beside the input; an
      existing folder as OUTPUT receives ``<name>_uav.<ext>``;
    * a folder of videos -> OUTPUT must be a folder (default ``<folder>_uav``), receiving
      ``<stem>_uav.<ext>`` for each video.

    With ``self_check`` every output name gets ``_selfcheck_random`` before its suffix.
    """
    spec = _codec_spec(codec)
    kind = input_kind(source)
    src = Path(source)
    jobs: list[Job] = []
    if kind == "batch":
        out_dir = Path(output) if output else src.parent / f"{src.name}{OUTPUT_TAG}"
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--output: {out_dir} is a file, but a folder of videos needs an output folder")
        if out_dir.suffix.lower() in VIDEO_EXTENSIONS:
            raise UserError(f"--output: INPUT {src} is a folder of videos, so OUTPUT must be a folder, got {out_dir}")
        videos = sorted(f for f in src.iterdir() if f.is_file() and not f.name.startswith(".")
                        and f.suffix.lower() in VIDEO_EXTENSIONS)
        for video in videos:
            jobs.append(Job(str(video), out_dir / _default_name(video.stem, video.suffix, spec), video.name))
    else:
        if kind == "sequence":
            folder = src.parent if _is_pattern(source) else src
            stem, suffix, beside, label = folder.name, "", folder.parent, folder.name or source
        else:
            stem, suffix, beside, label = src.stem, src.suffix, src.parent, src.name or source
        if output is None:
            target = beside / _default_name(stem, suffix, spec)
        else:
            target = Path(output)
            if spec.kind == "video" and (target.is_dir() or output.endswith(("/", "\\"))):
                target = target / _default_name(stem, suffix, spec)
        jobs.append(Job(source, target, label))
    if self_check:
        for job in jobs:
            job.output = mark_self_check(job.output)
    seen: dict[Path, str] = {}
    for job in jobs:
        key = job.output.resolve()
        if key in seen:
            raise UserError(f"{seen[key]} and {job.label} would both be written to {job.output}; rename one of them "
                            "or choose a --codec that keeps their file types")
        seen[key] = job.label
        if _is_pattern(job.source):
            continue
        if Path(job.source).exists() and key == Path(job.source).resolve():
            raise UserError(f"--output {job.output} is the input itself; choose another name")
    return kind, jobs


def _position(value: str | None) -> int | str | None:
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() else text


def probe_job(job: Job, *, start: int | str | None, end: int | str | None, fps: Fraction | None) -> None:
    """Probe the input and resolve its frame range (raises a one-line error for bad input)."""
    from uav.io import reader

    info = reader.probe(job.source)
    # iter_frames checks the range (and variable frame rate) without decoding anything
    reader.iter_frames(job.source, start=start, end=end)
    rate = fps or info.fps
    first = reader.parse_frame_position(start, info.fps, info.start_timecode) or 0
    stop = reader.parse_frame_position(end, info.fps, info.start_timecode)
    job.frames = (info.num_frames if stop is None else stop) - first
    job.width, job.height, job.fps, job.has_audio = info.width, info.height, Fraction(rate), info.has_audio


def _missing_dirs(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return list(reversed(missing))


def preflight_output(job: Job, *, codec: str, pix_fmt: str | None, crf: int | None, scale: int = 4) -> None:
    """Open (and abort) the real writer once: unknown codecs, bad pixel formats, wrong suffixes and
    unwritable folders fail here, before any model is loaded."""
    from uav.io.writer import VideoWriter

    writer = VideoWriter(job.output, fps=job.fps, width=job.width * scale, height=job.height * scale, codec=codec,
                         pix_fmt=pix_fmt, crf=crf)
    writer.abort()


# ---------------------------------------------------------------------------- model
def resolve_device(device: str) -> str | None:
    """``auto`` -> ``None`` (the upscaler picks CUDA when present); otherwise check the device exists."""
    import torch

    if device == "auto":
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device: expected auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                            f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {device}: Apple MPS is not available here; use --device cpu")
    return device


def find_weights(weights: Path | None, *, self_check: bool) -> Path | None:
    """The weights folder to load: ``--weights``, else the first default location.

    ``None`` means "build a tiny random release" (``--self-check`` without ``--weights``).
    Only looks at folders; nothing is loaded here.
    """
    from uav.weights import release
    from uav.weights import describe_folder, is_tiny_random

    if weights is not None:
        folder = weights.expanduser()
        if not folder.is_dir():
            raise release.ReleaseError(
                f"--weights: folder {folder} does not exist; download the Upscale-A-Video release (see docs/weights.md)")
    elif self_check:
        return None
    else:
        found = release.locate_weights()
        if found is None:
            looked = ", ".join(str(d) for d in release.default_weights_dirs())
            raise release.ReleaseError(
                f"no Upscale-A-Video weights found (looked in {looked}); download the release (docs/weights.md) and "
                f"pass --weights DIR or set {release.WEIGHTS_ENV}, or run with --self-check to test the installation "
                "with tiny random networks")
        folder = found
    if self_check and not is_tiny_random(folder):
        raise UserError(f"--self-check runs tiny random networks, but {folder} holds {describe_folder(folder)}; "
                        "drop --weights to let --self-check build its own, or drop --self-check to upscale")
    return folder


def build_tiny_release(stack: contextlib.ExitStack) -> Path:
    """A tiny random release in a temporary folder that lives as long as ``stack``."""
    from uav.weights import make_tiny_release

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uav-selfcheck-"))) / "tiny_random"
    return make_tiny_release(folder)


# ---------------------------------------------------------------------------- command
@app.command("upscale")
@with_setting_options()
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
        help="h264, h265, prores_hq, prores_4444, png or tiff (png/tiff write an image folder).", metavar="CODEC",
        rich_help_panel=_IO)] = "h264",
    pix_fmt: PixFmtOpt = None,
    crf: CrfOpt = None,
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
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    executor: ExecutorOpt = "local",
    ray_address: AddressOpt = None,
    gpus_per_worker: GpusOpt = None,
    workers: WorkersOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check everything (settings, plugins, inputs, weights folder, outputs) and show what would "
                          "run; write nothing and load no model.", rich_help_panel=_IO)] = False,
    captioner_option: CaptionerOptionOpt = None,
    *,
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
    quiet_libraries(debug)
    console = stderr_console(quiet=quiet)
    with handle_errors(debug=debug, as_json=as_json), contextlib.ExitStack() as stack:
        summary = _run(
            input, output, console=console, stack=stack, quiet=quiet, self_check=self_check,
            settings_options=setting_values, captioner_options=captioner_option, start=_position(start),
            end=_position(end), codec=codec,
            pix_fmt=pix_fmt, crf=crf, fps=fps, weights=weights, vae=vae or "3d", device=device, dtype=dtype,
            run_on=None if dry_run else build_executor(executor, ray_address=ray_address,
                                                       gpus_per_worker=gpus_per_worker, workers=workers, debug=debug),
            dry_run=dry_run,
        )
        if as_json:
            print_json(summary)
    if summary.get("failed"):
        typer.echo(f"error: {summary['failed_line']}", err=True)
        raise typer.Exit(EXIT_PARTIAL_FAILURE)


def _run(source: str, output: str | None, *, console: Any, stack: contextlib.ExitStack, quiet: bool,
         self_check: bool, settings_options: dict[str, Any], start: int | str | None, end: int | str | None,
         captioner_options: list[str] | None = None,
         codec: str, pix_fmt: str | None, crf: int | None, fps: str | None, weights: Path | None, vae: str,
         device: str, dtype: str, run_on: Any = None, dry_run: bool = False) -> dict[str, Any]:
    from uav import __version__

    started = time.perf_counter()
    if vae not in ("3d", "video"):
        raise UserError(f"--vae: expected 3d or video, got {vae!r}")
    if dtype not in ("auto", "fp32", "fp16", "bf16"):
        raise UserError(f"--dtype: expected auto, fp32, fp16 or bf16, got {dtype!r}")
    settings = settings_from_options(settings_options, captioner_options)
    if settings.seed is None:
        # draw it here so the summary can say how to reproduce the run
        settings = settings.replace(seed=random.randrange(2**31))
    rate: Fraction | None = None
    if fps is not None:
        from uav.io.rates import parse_fps

        try:
            rate = parse_fps(fps, name="--fps")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    # the workers' devices are theirs to check: the driver may have no GPU
    device_name = resolve_device(device) if run_on is None else (None if device == "auto" else device)

    from uav.weights import is_tiny_random, self_check_announced, self_check_clip

    folder = find_weights(weights, self_check=self_check)
    tiny = folder is None or is_tiny_random(folder)
    # random networks never produce a file that could pass for an upscale: *_selfcheck_random.*
    kind, jobs = plan_jobs(source, output, codec, self_check=tiny)
    if not jobs:
        raise UserError(f"{source}: folder holds no videos")
    for job in jobs:
        probe_job(job, start=start, end=end, fps=rate)
    created: list[Path] = []
    for job in jobs:
        created += [d for d in _missing_dirs(job.output) if d not in created]
    stack.callback(_remove_empty, created)  # folders made for outputs that never came
    for job in jobs:
        preflight_output(job, codec=codec, pix_fmt=pix_fmt, crf=crf)
    if settings.auto_prompt:
        from uav.captioning import check_captioner

        # a wrong captioner folder fails here, before the upscaler's weights load
        check_captioner(settings.captioner, dict(settings.captioner_options))

    from rich.markup import escape

    if dry_run:
        return _dry_run_summary(jobs, console=console, quiet=quiet, settings=settings, folder=folder, tiny=tiny,
                                vae=vae, device=device, dtype=dtype, kind=kind, started=started)

    from uav import VideoUpscaler

    if tiny:
        self_check_banner(console)
    built = folder is None
    if folder is None:
        with console.status("building a tiny random release for the self-check ..."):
            folder = build_tiny_release(stack)
    if run_on is not None:
        writer_options = {"codec": codec, **({"pix_fmt": pix_fmt} if pix_fmt else {}),
                          **({"crf": crf} if crf is not None else {}),
                          **({"fps": rate} if rate is not None and kind == "sequence" else {})}
        records, failed, run = render_batch(jobs, executor=run_on, weights=folder, device=device_name,
                                            dtype=None if dtype == "auto" else dtype, vae=vae, settings=settings,
                                            writer_options=writer_options, start=start, end=end, console=console,
                                            quiet=quiet)
        if records:
            created.clear()  # keep the folders that hold outputs
        return {"ok": not failed, "uav_version": __version__, "self_check": tiny,
                "notice": SELF_CHECK_BANNER if tiny else None,
                "weights": "(temporary tiny random release)" if built else str(folder), "device": device,
                "dtype": dtype, "vae": vae, "input_kind": kind, "settings": settings.to_dict(), "outputs": records,
                "executor": run_on.name, "jobs": run["jobs"], "failed": [r.to_dict() for r in failed],
                "failed_line": failure_line(failed) if failed else None,
                "seconds": round(time.perf_counter() - started, 3)}
    with console.status(f"loading weights from {escape(str(folder))} ..."), self_check_announced():
        upscaler = VideoUpscaler.from_pretrained(folder, device=device_name, dtype=None if dtype == "auto" else dtype,
                                                 vae=vae)  # type: ignore[arg-type]
    if upscaler.device.type == "cpu" and dtype == "fp16":
        console.print("[yellow]note:[/yellow] fp16 on the CPU is slow and not always supported; fp32 or bf16 "
                      "is the better choice there")
    writer_options: dict[str, Any] = {"codec": codec}
    if pix_fmt is not None:
        writer_options["pix_fmt"] = pix_fmt
    if crf is not None:
        writer_options["crf"] = crf
    if rate is not None and kind == "sequence":
        writer_options["fps"] = rate

    results = []
    for n, job in enumerate(jobs, 1):
        label = job.label if len(jobs) == 1 else f"[{n}/{len(jobs)}] {job.label}"
        t0 = time.perf_counter()
        video, job_start, job_end, job_options = job.source, start, end, writer_options
        cut = self_check_clip(job.source, start=start, end=end, fps=rate) if self_check else None
        if cut is not None:  # random networks prove the install as well on a small clip, in about a minute
            if not quiet:
                console.print(escape(cut.note))
            video, job_start, job_end, job_options = cut.frames, None, None, {**writer_options, **cut.writer_options}
            job.frames, job.height, job.width = cut.frames.shape[:3]
        with ProgressReporter(console, label=label, frames=job.frames, steps=settings.num_inference_steps,
                              flow=bool(settings.propagation_steps) and job.frames > 1) as progress:
            try:
                written = upscaler.upscale(video, output=job.output, settings=settings, callback=progress,
                                           writer_options=job_options, start=job_start, end=job_end)
            except ValueError as exc:
                message = str(exc)
                raise UserError(message if job.label in message or len(jobs) == 1 else f"{job.label}: {message}") \
                    from exc
        seconds = time.perf_counter() - t0
        scale = upscaler.upscale_factor
        caption = upscaler.last_caption
        if caption is not None and not quiet:
            console.print(f"prompt (from {escape(caption.captioner)}, frame {caption.frame}): "
                          f"{escape(caption.text)}")
        results.append({
            "input": job.source, "output": str(written), "frames": job.frames,
            "input_size": [job.width, job.height], "output_size": [job.width * scale, job.height * scale],
            "fps": str(job.fps), "audio": job.has_audio, "seconds": round(seconds, 3),
            "frames_per_second": round(job.frames / seconds, 3) if seconds > 0 else None,
            "stage_seconds": progress.stage_seconds,
            # what --prompt auto made of the clip: pass it back as --prompt to reuse or edit it
            "caption": None if caption is None else caption.text,
            "captioner": None if caption is None else caption.captioner,
            "caption_frame": None if caption is None else caption.frame,
        })
        if not quiet:
            console.print(f"[green]wrote[/green] {escape(str(written))}  ({job.frames} frames, {job.width * scale}x"
                          f"{job.height * scale}, {seconds:.1f} s, {job.frames / max(seconds, 1e-9):.2f} frames/s)"
                          + ("  [bold red]SELF-CHECK output: NOT an upscale[/bold red]" if tiny else ""))
    created.clear()  # everything was written: keep the folders
    return {
        "ok": True,
        "uav_version": __version__,
        "self_check": tiny,
        "notice": SELF_CHECK_BANNER if tiny else None,
        "weights": "(temporary tiny random release)" if built else str(folder),
        "device": str(upscaler.device),
        "dtype": str(next(upscaler.unet.parameters()).dtype).replace("torch.", ""),
        "vae": vae,
        "input_kind": kind,
        "settings": settings.to_dict(),
        "outputs": results,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _dry_run_summary(jobs: list[Job], *, console: Any, quiet: bool, settings: Any, folder: Path | None, tiny: bool,
                     vae: str, device: str, dtype: str, kind: str, started: float) -> dict[str, Any]:
    """``--dry-run``: the checks a run makes before loading a model, then what it would write.

    Inputs were probed and outputs checked by the caller (folders it made for them are
    removed again: nothing stays written); here every component the settings name is
    resolved through the registry and the weights folder is checked for completeness.
    """
    from rich.markup import escape

    from uav import __version__
    from uav.weights import find_release

    settings.check_components()
    if folder is not None and not tiny:
        missing = find_release(folder).missing(vae=vae)  # type: ignore[arg-type]
        if missing:
            raise UserError(f"weights folder {folder} lacks {', '.join(missing)} (see docs/weights.md)")
    outputs = [{"input": job.source, "output": str(job.output), "frames": job.frames,
                "input_size": [job.width, job.height], "output_size": [job.width * 4, job.height * 4],
                "fps": str(job.fps), "audio": job.has_audio} for job in jobs]
    if not quiet:
        for o in outputs:
            console.print(escape(f"would write {o['output']}  ({o['frames']} frames, {o['output_size'][0]}x"
                                 f"{o['output_size'][1]}) from {o['input']}"))
        console.print("dry run: every check passed; nothing was written")
    return {"ok": True, "dry_run": True, "uav_version": __version__, "self_check": tiny,
            "weights": "(a tiny random release would be built)" if folder is None else str(folder),
            "device": device, "dtype": dtype, "vae": vae, "input_kind": kind, "settings": settings.to_dict(),
            "outputs": outputs, "seconds": round(time.perf_counter() - started, 3)}


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            pass
