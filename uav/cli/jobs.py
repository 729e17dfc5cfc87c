"""``uav upscale``'s jobs: every input paired with its output, probed and test-opened.

:func:`plan_jobs` decides what INPUT is (a video, an image sequence, a folder of
videos) and where each result goes; :func:`probe_job` reads each input's facts and
resolves its frame range; :func:`preflight_output` opens the real writer once. All of
it runs before any model loads, so a mistake costs seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from uav.cli.common import SELF_CHECK_SUFFIX, UserError
from uav.cli.preflight import codec_spec

__all__ = [
    "OUTPUT_TAG",
    "VIDEO_EXTENSIONS",
    "Job",
    "input_kind",
    "mark_self_check",
    "missing_dirs",
    "plan_jobs",
    "preflight_output",
    "probe_job",
    "probe_jobs",
    "remove_empty",
]

#: file suffixes treated as videos when INPUT is a folder (anything FFmpeg reads works as a single INPUT)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".mxf", ".wmv", ".flv", ".3gp")
OUTPUT_TAG = "_uav"


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

    def record(self, output_size: tuple[int, int], written: Path | None = None) -> dict[str, Any]:
        """What a run's summary says of this job's output (``written``, default :attr:`output`)."""
        return {"input": self.source, "output": str(written or self.output), "frames": self.frames,
                "input_size": [self.width, self.height], "output_size": list(output_size), "fps": str(self.fps),
                "audio": self.has_audio}


# ---------------------------------------------------------------------------- planning
def _is_pattern(text: str) -> bool:
    """An image pattern (``frames/%05d.png``): a ``%d`` name that is not an existing file."""
    import re

    return bool(re.search(r"%0?\d*d", Path(text).name)) and not Path(text).is_file()


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
    # broken links and pipes count as what their names say: they are reported, not skipped
    files = [f for f in path.iterdir() if not f.is_dir() and not f.name.startswith(".")]
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS + (".exr",)]
    if videos and images:
        raise UserError(f"{path}: folder holds both videos ({videos[0].name}, ...) and images ({images[0].name}, "
                        "...); pass one video, a folder of only videos, or an image pattern such as "
                        f"{path / '%05d.png'}")
    return "batch" if videos else "sequence"


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
    spec = codec_spec(codec)
    kind = input_kind(source)
    src = Path(source)
    jobs: list[Job] = []
    if kind == "batch":
        out_dir = Path(output) if output else src.parent / f"{src.name}{OUTPUT_TAG}"
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--output: {out_dir} is a file, but a folder of videos needs an output folder")
        if out_dir.suffix.lower() in VIDEO_EXTENSIONS:
            raise UserError(f"--output: INPUT {src} is a folder of videos, so OUTPUT must be a folder, got {out_dir}")
        videos = sorted(f for f in src.iterdir() if not f.is_dir() and not f.name.startswith(".")
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
    from uav.io.paths import same_file

    seen: dict[Path, str] = {}
    for job in jobs:
        key = job.output.resolve()
        if key in seen:
            raise UserError(f"{seen[key]} and {job.label} would both be written to {job.output}; rename one of them "
                            "or choose a --codec that keeps their file types")
        seen[key] = job.label
        if not _is_pattern(job.source) and same_file(job.source, job.output):
            raise UserError(f"--output {job.output} is the input itself; choose another name")
    return kind, jobs


def probe_jobs(jobs: list[Job], *, start: int | str | None, end: int | str | None, fps: Fraction | None) -> None:
    """Probe every input; one bad input of a batch refuses the whole batch before anything
    renders, with one line naming every bad input (a broken link and a damaged file alike).

    Raises:
        UserError: the inputs that cannot be used, each with its reason.
    """
    if len(jobs) == 1:
        probe_job(jobs[0], start=start, end=end, fps=fps)
        return
    bad = []
    for job in jobs:
        try:
            probe_job(job, start=start, end=end, fps=fps)
        except ValueError as exc:
            text = str(exc)
            bad.append(text if job.label in text else f"{job.label}: {text}")
    if bad:
        raise UserError(f"{len(bad)} of {len(jobs)} inputs cannot be used, so nothing was upscaled: "
                        + " | ".join(bad) + " — fix or move them and run again")


def probe_job(job: Job, *, start: int | str | None, end: int | str | None, fps: Fraction | None) -> None:
    """Probe the input and resolve its frame range (raises a one-line error for bad input)."""
    from uav.io import reader

    info = reader.probe(job.source)
    # iter_frames checks the range (and variable frame rate) without decoding anything
    try:
        reader.iter_frames(job.source, start=start, end=end)
    except reader.VideoInputError as exc:
        if not info.variable_frame_rate:
            raise
        # the reader's hint names the API's vfr= argument; on the command line the fix is a re-encode
        raise reader.VideoInputError(exc.path, exc.problem, f"uav upscale needs a constant frame rate: re-encode it "
                                     f"first, e.g. ffmpeg -i {exc.path.name} -fps_mode cfr -r {info.fps} "
                                     f"{exc.path.stem}_cfr.mp4") from None
    rate = fps or info.fps
    first = reader.parse_frame_position(start, info.fps, info.start_timecode) or 0
    stop = reader.parse_frame_position(end, info.fps, info.start_timecode)
    job.frames = (info.num_frames if stop is None else stop) - first
    job.width, job.height, job.fps, job.has_audio = info.width, info.height, Fraction(rate), info.has_audio


def missing_dirs(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return list(reversed(missing))


def preflight_output(job: Job, *, codec: str, pix_fmt: str | None, crf: int | None, compression: str | None,
                     start_number: int | str | None, start: int | str | None, fps: Fraction | None,
                     size: tuple[int, int]) -> None:
    """Open (and abort) the real writer and its encoder once at the output's ``size``: unknown
    codecs, bad pixel formats, wrong suffixes, sizes the encoder refuses, a bad ``--compression``
    or ``--start-number`` and unwritable folders fail here, before any model is loaded."""
    from uav.io import reader
    from uav.io.metadata import resolve_start_number
    from uav.io.writer import VideoWriter

    if start_number is not None:
        info = reader.probe(job.source, fps=fps)
        first = reader.parse_frame_position(start, info.fps, info.start_timecode) or 0
        try:
            resolve_start_number(start_number, info, first)
        except ValueError as exc:
            raise UserError(f"--start-number: {exc}") from None
        if codec_spec(codec).kind != "sequence":
            raise UserError(f"--start-number numbers image sequences; codec {codec} writes one file")
    writer = VideoWriter(job.output, fps=job.fps, width=size[0], height=size[1], codec=codec,
                         pix_fmt=pix_fmt, crf=crf, compression=compression)
    writer.abort()


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders (innermost first) that are still empty: those made for outputs that never came."""
    for folder in reversed(folders):
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            pass
