"""Scenes as jobs: each scene rendered to a segment of its own, resumably, anywhere; the driver joins.

A :class:`SceneRun` turns one output's scene list into executor :class:`~uav.executors.Job`
objects, one per scene, whose output is a *segment* in a hidden folder beside the
output (``.NAME.uav-scenes/``), named after what makes it (the scene's range and
settings, the source, the encoding, the model). The segment is written atomically
by whoever renders the scene (this process, or a Ray worker); the driver records
each finished scene in ``state.json`` in that folder and, when every scene is done,
joins the segments into the output (:mod:`uav.scenes.join`) and removes the folder.

Killed at any point, a run leaves its finished segments; the next run of the same
command reuses every segment whose name still matches and renders only the rest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from uav.executors.base import Job, JobResult
from uav.executors.renderers import UpscaleJobRenderer
from uav.scenes.detect import Scene

__all__ = ["SCENES_DIR_MARK", "STATE_NAME", "SceneJobRenderer", "SceneRun", "scene_folder"]

#: the hidden folder beside an output that holds its scene segments until they are joined
SCENES_DIR_MARK = ".uav-scenes"
#: the driver's record of finished scenes, inside that folder
STATE_NAME = "state.json"


def scene_folder(output: str | Path) -> Path:
    """``.NAME.uav-scenes`` beside ``output``."""
    out = Path(output)
    return out.parent / f".{out.name}{SCENES_DIR_MARK}"


@dataclass
class SceneRun:
    """One output rendered scene by scene.

    Args:
        label: names the output in job names and messages.
        source: the input (a video file or image-sequence pattern).
        output: the final output (file, or folder for png/tiff).
        scenes: the scenes, covering the rendered range exactly once.
        settings: each scene's settings (``UpscaleSettings.to_dict()`` form), in scene order.
        info: the source's :class:`~uav.io.info.VideoInfo`.
        codec: the output's codec (segments use it too).
        model: what identifies the renderer (weights, vae, dtype ...), part of each segment's name.
        writer_options: :class:`~uav.io.writer.VideoWriter` options of the output (codec, pix_fmt, crf, fps).
    """

    label: str
    source: str
    output: Path
    scenes: Sequence[Scene]
    settings: Sequence[Mapping[str, Any]]
    info: Any
    codec: str
    model: Mapping[str, Any] = field(default_factory=dict)
    writer_options: Mapping[str, Any] = field(default_factory=dict)
    #: the output's start timecode when the caller knows it (default: carried from the source)
    timecode: str | None = None
    #: each scene's caption (``prompt=auto``), read from the segments' side files when they are joined
    captions_kept: list[dict[str, Any] | None] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return scene_folder(self.output)

    @property
    def is_sequence(self) -> bool:
        from uav.io.codecs import CODECS

        return CODECS[self.codec].kind == "sequence"

    @property
    def fps(self) -> Fraction:
        return Fraction(self.writer_options.get("fps") or self.info.fps)

    def jobs(self) -> list[Job]:
        """One job per scene, writing its segment."""
        suffix = "" if self.is_sequence else Path(self.output).suffix
        width = max(4, len(str(len(self.scenes))))
        jobs = []
        for scene, settings in zip(self.scenes, self.settings):
            name = f"{scene.index:0{width}d}-{self._key(scene, settings)}{suffix}"
            jobs.append(Job(name=f"{self.label} {scene.name}", source=self.source, output=self.folder / name,
                            start=scene.start, end=scene.end, frames=scene.frames, settings=dict(settings),
                            payload=None))
        return jobs

    def _key(self, scene: Scene, settings: Mapping[str, Any]) -> str:
        src = Path(self.source)
        stat = src.stat() if src.is_file() else None
        text = json.dumps({"source": str(src.resolve()), "size": stat.st_size if stat else None,
                           "mtime": stat.st_mtime_ns if stat else None, "start": scene.start, "end": scene.end,
                           "settings": dict(settings), "writer": dict(self.writer_options), "model": dict(self.model)},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ state
    def prepare(self) -> tuple[list[Job], list[Job]]:
        """``(jobs to render, jobs whose segment an earlier run finished)``; stale segments are removed."""
        jobs = self.jobs()
        self.folder.mkdir(parents=True, exist_ok=True)
        finished = self._finished()
        keep = {Path(j.output).name for j in jobs} | {STATE_NAME}
        keep |= {f"{Path(j.output).name}.caption.json" for j in jobs}
        for entry in self.folder.iterdir():
            if entry.name not in keep:  # another run's segment, or a killed one's temporary
                _remove(entry)
        done = [j for j in jobs if Path(j.output).name in finished and Path(j.output).exists()]
        todo = [j for j in jobs if j not in done]
        self._write_state({Path(j.output).name for j in done})
        return todo, done

    def record(self, result: JobResult) -> None:
        """Note a finished scene in ``state.json`` (the driver alone writes it)."""
        if result.ok:
            self._write_state(self._finished() | {Path(result.job.output).name})

    def _finished(self) -> set[str]:
        """The segments ``state.json`` records as done (none when it is missing or unreadable)."""
        try:
            state = json.loads((self.folder / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        return {row["segment"] for row in state.get("scenes", []) if row.get("status") == "done"}

    def _write_state(self, done: set[str]) -> None:
        rows = []
        for scene, job in zip(self.scenes, self.jobs()):
            segment = Path(job.output).name
            rows.append({"index": scene.index, "name": scene.name, "start": scene.start, "end": scene.end,
                         "segment": segment, "status": "done" if segment in done else "pending"})
        data = {"source": str(self.source), "output": str(self.output), "scenes": rows}
        tmp = self.folder / f".{STATE_NAME}.{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.folder / STATE_NAME)

    def captions(self) -> list[dict[str, Any] | None]:
        """The caption each ``prompt=auto`` scene was rendered with (``None`` for a written prompt)."""
        out = []
        for job in self.jobs():
            side = Path(f"{job.output}.caption.json")
            out.append(json.loads(side.read_text(encoding="utf-8")) if side.is_file() else None)
        return out

    # ------------------------------------------------------------------ the output
    def join(self) -> Path:
        """Join the segments into the output (atomically) and remove the scene folder."""
        from uav.io.metadata import carry_timecode
        from uav.scenes.join import join_segments, link_sequence

        segments = [Path(j.output) for j in self.jobs()]
        self.captions_kept = self.captions()
        frames = [s.frames for s in self.scenes]
        first = self.scenes[0].start
        audio = self.info.path if self.info.has_audio and not self.info.is_image_sequence else None
        if self.is_sequence:
            from uav.io.codecs import CODECS, output_path

            folder, pattern = output_path(self.output, CODECS[self.codec])
            written = link_sequence(segments, folder, pattern=pattern or "%06d.png", frames=frames,
                                    audio_source=audio, audio_start=first, fps=self.fps)
        else:
            timecode = self.timecode or (None if self.info.is_image_sequence else carry_timecode(
                self.info.start_timecode, first, self.info.fps))
            written = join_segments(segments, self.output, fps=self.fps, frames=frames, audio_source=audio,
                                    audio_start=first, timecode=timecode)
        shutil.rmtree(self.folder, ignore_errors=True)
        return written


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class SceneJobRenderer(UpscaleJobRenderer):
    """:class:`~uav.executors.renderers.UpscaleJobRenderer` that also keeps a ``prompt=auto``
    scene's caption beside its segment (``SEGMENT.caption.json``), for the driver's summary."""

    def __call__(self, job: Job, progress: Callable[[int, int], None] | None = None) -> None:
        super().__call__(job, progress)
        caption = getattr(self.upscaler, "last_caption", None)
        if caption is not None and Path(job.output).parent.name.endswith(SCENES_DIR_MARK):
            side = Path(f"{job.output}.caption.json")
            tmp = side.with_name(f".{side.name}.{os.getpid()}")
            tmp.write_text(json.dumps(caption.to_dict()), encoding="utf-8")
            os.replace(tmp, side)


def run_scene_jobs(runs: Sequence[SceneRun], other: Sequence[Job], factory: Any, *, executor: Any = None,
                   split: Any = None, writer_options: Mapping[str, Any] | None = None,
                   on_event: Any = None) -> Iterator[tuple[str, Any]]:
    """Render every scene of ``runs`` (and the plain ``other`` jobs) on ``executor``; join each run when
    its last scene is in.

    Yields ``("reused", job)`` for segments an earlier run finished, ``("result", JobResult)``
    for each job as it finishes, and ``("joined", run)`` / ``("join-failed", (run, error))``
    for each output.
    """
    from uav.executors.batch import render_jobs

    owner: dict[str, SceneRun] = {}
    waiting: dict[int, set[str]] = {}
    todo: list[Job] = list(other)
    for run in runs:
        pending, done = run.prepare()
        for job in done:
            yield "reused", job
        owner.update({j.name: run for j in pending})
        waiting[id(run)] = {j.name for j in pending}
        todo += pending
    failed: set[int] = set()
    for run in [r for r in runs if not waiting[id(r)]]:
        yield from _join(run)
    for result in render_jobs(todo, factory, executor=executor, split=split, writer_options=writer_options,
                              on_event=on_event):
        yield "result", result
        run = owner.get(result.job.name)
        if run is None:
            continue
        run.record(result)
        waiting[id(run)].discard(result.job.name)
        if not result.ok:
            failed.add(id(run))
        elif not waiting[id(run)] and id(run) not in failed:
            yield from _join(run)


def _join(run: SceneRun) -> Iterator[tuple[str, Any]]:
    try:
        run.join()
    except (OSError, ValueError) as exc:
        yield "join-failed", (run, f"{type(exc).__name__}: {exc}")
        return
    yield "joined", run


class _GivenUpscaler(SceneJobRenderer):
    """Renders scene jobs with an upscaler already loaded in this process, forwarding its progress events."""

    def __init__(self, upscaler: Any, writer_options: Mapping[str, Any], events: Any = None) -> None:  # noqa: D107
        self.upscaler = upscaler
        self.weights = None
        self.writer_options = dict(writer_options)
        self.events = events

    def __call__(self, job: Job, progress: Callable[[int, int], None] | None = None) -> None:
        from uav.settings import UpscaleSettings

        self.upscaler.upscale(job.source, output=job.output, settings=UpscaleSettings.from_dict(job.settings),
                              callback=self.events, writer_options=self.writer_options, start=job.start, end=job.end)


def upscale_scenes(upscaler: Any, source: str | Path, output: str | Path, *, settings: Any,
                   writer_options: Mapping[str, Any], start: int | None = None, end: int | None = None,
                   callback: Any = None, **detection: Any) -> list[Scene]:
    """Upscale ``source[start:end]`` into ``output`` scene by scene, in this process, with ``upscaler``.

    The cuts are detected (``detection``: :func:`uav.scenes.detect.detect_scenes`'s options);
    a range without a cut is one ordinary render. Segments of an interrupted call are
    reused by the next one with the same arguments. Returns the scenes.

    Raises:
        SceneError: the segments could not be joined.
    """
    from uav.executors import LocalExecutor
    from uav.io.reader import probe
    from uav.scenes.detect import SceneError, detect_scenes

    scenes = detect_scenes(source, start=start, end=end, **detection)
    if len(scenes) == 1:
        upscaler.upscale(str(source), output=output, settings=settings, callback=callback,
                         writer_options=dict(writer_options), start=start, end=end)
        return scenes
    options = dict(writer_options)
    run = SceneRun(label=Path(output).name, source=str(source), output=Path(output), scenes=scenes,
                   settings=[settings.to_dict()] * len(scenes), info=probe(source), codec=options.get("codec", "h264"),
                   model={"source": getattr(upscaler, "source", None)}, writer_options=options,
                   timecode=options.get("timecode"))
    factory = functools.partial(_GivenUpscaler, upscaler, options, callback)
    for kind, item in run_scene_jobs([run], [], factory, executor=LocalExecutor(stop_on_error=True)):
        if kind == "join-failed":
            raise SceneError(f"{output}: joining its scenes: {item[1]}")
    return scenes
