"""``uav upscale --scenes``: each input's scene list, and the run that renders scenes as jobs.

:func:`plan_scenes` decides, before any model loads, which outputs are rendered scene
by scene: those whose input holds a cut (``--scenes auto``, the default) or whose
scene list (``--scenes FILE``) gives several scenes or per-scene settings. An input
without a cut is rendered exactly as without ``--scenes``: the published result.
:func:`render_with_scenes` hands every scene to the executor (local or Ray) and joins
each output's segments on this process, the driver, as soon as its last scene is in.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from uav.cli.common import UserError

__all__ = ["SCENE_MODES", "plan_scenes", "render_with_scenes", "scene_rows"]

#: the words ``--scenes`` takes besides a file
SCENE_MODES = ("auto", "none")


def plan_scenes(jobs: list[Any], mode: str, *, settings: Any, given: Collection[str], start: Any, end: Any,
                fps: Any, vae: str, codec: str, console: Any = None) -> dict[str, Any]:
    """``{job label: SceneRun}`` for the outputs rendered scene by scene (none for ``none``).

    Raises:
        UserError: an unreadable scene list, scenes that do not cover the range, bad per-scene settings.
    """
    from uav.io import reader
    from uav.scenes.detect import SceneError, detect_scenes
    from uav.scenes.lists import read_scene_list
    from uav.scenes.run import SceneRun
    from uav.scenes.settings import scene_settings

    if mode == "none":
        return {}
    if mode != "auto" and len(jobs) > 1:
        raise UserError(f"--scenes {mode}: a scene list describes one clip, but INPUT holds {len(jobs)} videos; "
                        "give one video, or --scenes auto")
    runs: dict[str, Any] = {}
    for job in jobs:
        info = reader.probe(job.source) if fps is None else reader.probe(job.source, fps=fps)
        first = reader.parse_frame_position(start, info.fps, info.start_timecode) or 0
        stop = first + job.frames
        try:
            if mode == "auto":
                scenes, warnings = detect_scenes(job.source, start=start, end=end, fps=fps), []
            else:
                scenes, warnings = read_scene_list(mode, info=info, first=first, stop=stop)
            per_scene = [scene_settings(settings, s, given=given, vae=vae).to_dict() for s in scenes]
        except SceneError as exc:
            raise UserError(str(exc) if len(jobs) == 1 else f"{job.label}: {exc}") from None
        for line in warnings:
            if console is not None:
                console.print(f"[yellow]warning:[/yellow] {line}", markup=True, highlight=False)
        if len(scenes) > 1 or any(s.settings for s in scenes):
            runs[job.label] = SceneRun(label=job.label, source=str(job.source), output=Path(job.output),
                                       scenes=scenes, settings=per_scene, info=info, codec=codec,
                                       model={"vae": vae})
    return runs


def check_scene_mode(value: str) -> str:
    """``--scenes``: ``auto``, ``none`` or an existing file."""
    if value in SCENE_MODES:
        return value
    if not Path(value).is_file():
        raise UserError(f"--scenes: expected auto, none or a scene list file (.toml, .otio, .edl ...), got {value!r} "
                        "(no such file)")
    return value


def scene_rows(run: Any) -> list[dict[str, Any]]:
    """The ``scenes`` of a dry run's output: index, name, range, and the settings a scene changes."""
    return [{**s.to_dict(run.info.fps, run.info.start_timecode)} for s in run.scenes]


def render_with_scenes(jobs: list[Any], runs: Mapping[str, Any], *, executor: Any, weights: Any, device: Any,
                       dtype: Any, vae: str, settings: Any, writer_options: dict[str, Any], start: Any, end: Any,
                       console: Any, quiet: bool, split: Any = None,
                       model: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    """Render ``jobs`` (those in ``runs`` scene by scene) on ``executor``; join as outputs complete.

    Returns ``(per-output records, failed results, run summary)`` like
    :func:`uav.cli.executor_options.render_batch`; each scene output's record lists its scenes.
    """
    from rich.markup import escape

    from uav.executors import Job, LocalExecutor
    from uav.executors.base import FAILED, JobResult
    from uav.executors.progress import RunProgress
    from uav.scenes.run import SceneJobRenderer, run_scene_jobs

    for run in runs.values():
        run.writer_options = dict(writer_options)
        run.model = {**run.model, **(model or {}), "weights": str(weights)}
    plain = [Job(name=j.label, source=str(j.source), output=j.output, start=start, end=end, frames=j.frames,
                 settings=settings.to_dict()) for j in jobs if j.label not in runs]
    factory = functools.partial(SceneJobRenderer, weights, device=device, dtype=dtype, vae=vae,
                                writer_options=writer_options)
    by_label = {j.label: j for j in jobs}
    scene_of = {job.name: (run, scene) for run in runs.values() for job, scene in zip(run.jobs(), run.scenes)}
    status: dict[str, dict[str, Any]] = {}
    records, failed = [], []
    total = sum(j.frames for j in jobs)
    with RunProgress(console, jobs=0, frames=total) as view:
        for kind, item in run_scene_jobs(list(runs.values()), plain, factory, executor=executor or LocalExecutor(),
                                         split=split, writer_options=writer_options, on_event=view):
            if kind == "reused":
                status[item.name] = {"status": "reused", "worker": None, "seconds": 0.0}
            elif kind == "result":
                view.add(item)
                if not item.ok:
                    failed.append(item)
                elif item.job.name in scene_of:
                    status[item.job.name] = {"status": "rendered", "worker": item.worker,
                                             "seconds": round(item.seconds, 3)}
                else:
                    records.append(_record(by_label[item.job.name], item.worker, item.seconds))
            elif kind == "joined":
                records.append(_scene_record(item, by_label[item.label], status))
                if not quiet:
                    console.print(f"[green]wrote[/green] {escape(str(item.output))}  ({by_label[item.label].frames} "
                                  f"frames in {len(item.scenes)} scenes)")
            else:
                run, error = item
                failed.append(JobResult(Job(run.label, run.source, run.output), FAILED, "driver", 0.0, 1,
                                        f"joining its scenes: {error}"))
    return records, failed, view.summary()


def _record(job: Any, worker: str, seconds: float) -> dict[str, Any]:
    return {**job.record((job.width * 4, job.height * 4)), "seconds": round(seconds, 3), "worker": worker}


def _scene_record(run: Any, job: Any, status: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    rows = []
    for scene_job, scene, caption in zip(run.jobs(), run.scenes, run.captions_kept):
        row = {**scene.to_dict(run.info.fps, run.info.start_timecode), **status.get(scene_job.name, {})}
        row["caption"] = None if caption is None else caption.get("caption")
        rows.append(row)
    seconds = sum(r.get("seconds") or 0.0 for r in rows)
    return {**_record(job, ",".join(sorted({r["worker"] for r in rows if r.get("worker")})) or "reused", seconds),
            "scenes": rows}
