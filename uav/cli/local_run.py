"""``uav upscale`` in this process: the weights loaded once, each job upscaled in turn,
and the run's summary (the executor paths are :mod:`uav.cli.executor_options` and
:mod:`uav.cli.scene_runs`)."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from uav.cli.common import SELF_CHECK_BANNER, ProgressReporter, UserError
from uav.cli.jobs import Job
from uav.cli.preflight import delivery_report

__all__ = ["local_summary", "run_record"]


def run_record(*, tiny: bool, built: bool, folder: Path, device: str, dtype: str, vae: str, kind: str,
                settings: Any, started: float) -> dict[str, Any]:
    """The summary fields every kind of run shares."""
    from uav import __version__

    return {"uav_version": __version__, "self_check": tiny, "notice": SELF_CHECK_BANNER if tiny else None,
            "weights": "(temporary tiny random release)" if built else str(folder), "device": device,
            "dtype": dtype, "vae": vae, "input_kind": kind, "settings": settings.to_dict(),
            "seconds": round(time.perf_counter() - started, 3)}


def local_summary(jobs: list[Job], *, rate: Fraction | None, self_check: bool, folder: Path, built: bool,
                   tiny: bool, device: str, device_name: Any, dtype: str, dtype_name: Any, vae: str, kind: str,
                   settings: Any, writer_options: dict[str, Any], start: Any, end: Any, console: Any, quiet: bool,
                   split: Any, started: float, created: list[Path]) -> dict[str, Any]:
    """Render here, one job after another, and build the run's summary."""
    from rich.markup import escape

    from uav import VideoUpscaler
    from uav.weights import self_check_announced

    with console.status(f"loading weights from {escape(str(folder))} ..."), self_check_announced():
        upscaler = VideoUpscaler.from_pretrained(folder, device=device_name, dtype=dtype_name,
                                                 vae=vae)  # type: ignore[arg-type]
    if upscaler.device.type == "cpu" and dtype == "fp16":
        console.print("[yellow]note:[/yellow] fp16 on the CPU is slow and not always supported; fp32 or bf16 "
                      "is the better choice there")
    results = [_render_here(upscaler, job, n, jobs, settings=settings, writer_options=writer_options, start=start,
                            end=end, rate=rate, self_check=self_check, tiny=tiny, console=console, quiet=quiet)
               for n, job in enumerate(jobs, 1)]
    created.clear()  # everything was written: keep the folders
    record = run_record(tiny=tiny, built=built, folder=folder, device=str(upscaler.device),
                         dtype=str(next(upscaler.unet.parameters()).dtype).replace("torch.", ""), vae=vae,
                         kind=kind, settings=settings, started=started)
    return {"ok": True, **record, "outputs": results, "seconds": record.pop("seconds")}


def _render_here(upscaler: Any, job: Job, n: int, jobs: list[Job], *, settings: Any, writer_options: dict[str, Any],
                 start: Any, end: Any, rate: Fraction | None, self_check: bool, tiny: bool, console: Any,
                 quiet: bool) -> dict[str, Any]:
    """Upscale one job in this process; its record for the summary."""
    from rich.markup import escape

    from uav.weights import self_check_clip

    label = job.label if len(jobs) == 1 else f"[{n}/{len(jobs)}] {job.label}"
    t0 = time.perf_counter()
    video, job_start, job_end, job_options = job.source, start, end, writer_options
    cut = self_check_clip(job.source, start=start, end=end, fps=rate) if self_check else None
    if cut is not None:  # random networks prove the install as well on a small clip, in about a minute
        if not quiet:
            console.print(escape(cut.note))
        video, job_start, job_end, job_options = cut.frames, None, None, {**writer_options, **cut.writer_options}
        job.frames, job.height, job.width = cut.frames.shape[:3]
    if not quiet:
        _announce_plan(console, upscaler, job, settings)
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
    record = _output_record(upscaler, job, written, seconds, progress.stage_seconds, console=console, quiet=quiet)
    if not quiet:
        scale = upscaler.upscale_factor
        console.print(f"[green]wrote[/green] {escape(str(written))}  ({job.frames} frames, {job.width * scale}x"
                      f"{job.height * scale}, {seconds:.1f} s, {job.frames / max(seconds, 1e-9):.2f} frames/s)"
                      + ("  [bold red]SELF-CHECK output: NOT an upscale[/bold red]" if tiny else ""))
    return record


def _output_record(upscaler: Any, job: Job, written: Path, seconds: float, stage_seconds: Any, *, console: Any,
                   quiet: bool) -> dict[str, Any]:
    from rich.markup import escape

    scale = upscaler.upscale_factor
    caption = upscaler.last_caption
    plan = upscaler.last_memory_plan
    if caption is not None and not quiet:
        console.print(f"prompt (from {escape(caption.captioner)}, frame {caption.frame}): {escape(caption.text)}")
    return {
        **job.record((job.width * scale, job.height * scale), written), "seconds": round(seconds, 3),
        "frames_per_second": round(job.frames / seconds, 3) if seconds > 0 else None,
        "stage_seconds": stage_seconds,
        # what --prompt auto made of the clip: pass it back as --prompt to reuse or edit it
        "caption": None if caption is None else caption.text,
        "captioner": None if caption is None else caption.captioner,
        "caption_frame": None if caption is None else caption.frame,
        **delivery_report(written, job),
        # what --vram (auto: the device's free memory) chose, and the predicted peak
        "memory": None if plan is None else plan.to_dict(),
    }


def _announce_plan(console: Any, upscaler: Any, job: Job, settings: Any) -> None:
    """Print what the memory plan chooses for ``job`` (one line; nothing without a GPU budget)."""
    from rich.markup import escape

    plan = upscaler.plan_memory((1, 3, job.frames, job.height, job.width), settings)
    if plan.budget.gib is not None:
        console.print(escape(plan.describe()))
