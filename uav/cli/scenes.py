"""``uav scenes``: find the hard cuts of a clip, list them, write them as a timeline or a shot list.

The scene list it writes is what ``uav upscale IN --scenes FILE`` reads back (after
you edit prompts or move cuts), and what ``uav timeline`` reads as an edit (OTIO, or
EDL/XML through the adapters) or as a ``--shots`` shot list (TOML). See docs/scenes.md.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uav.cli.app import app
from uav.cli.common import UserError, frame_position, handle_errors, print_json, quiet_libraries, stderr_console


@app.command("scenes")
def scenes_command(
    input: Annotated[str, typer.Argument(
        metavar="INPUT", help="A video file or an image-sequence folder or pattern.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="FILE",
        help="Write the scenes: .toml (a shot list: uav upscale --scenes, uav timeline --shots), .otio, or any "
             "format an OpenTimelineIO adapter writes (.edl, .xml: pip install 'uav[otio]').")] = None,
    detector: Annotated[str, typer.Option(
        "--detector", help="Scene detector: adaptive (default), content, threshold, histogram, hash, or one a "
                           "plugin registers (uav plugins).")] = "adaptive",
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="The detector's sensitivity on its own scale (adaptive 3.0, content 27, threshold 12, "
                            "histogram 0.05, hash 0.395); lower finds more cuts.")] = None,
    min_scene: Annotated[int, typer.Option(
        "--min-scene", metavar="FRAMES", help="The shortest scene: no cut closer than this to the previous one.",
        min=1)] = 15,
    start: Annotated[Optional[str], typer.Option(help="First frame: an index or a timecode HH:MM:SS:FF.")] = None,
    end: Annotated[Optional[str], typer.Option(help="Frame after the last one (exclusive).")] = None,
    fps: Annotated[Optional[str], typer.Option(
        help="Frame rate of an image-sequence input (default 24).", metavar="RATE")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the cuts and scenes as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (and --json).")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.")] = False,
) -> None:
    """List the hard cuts of INPUT (frame and timecode) and optionally write its scene list.

    Examples:

      uav scenes film.mov

      uav scenes film.mov -o film.toml      (edit prompts, move cuts; then: uav upscale film.mov --scenes film.toml)

      uav scenes film.mov -o film.otio --detector content --threshold 30 --min-scene 24
    """
    quiet_libraries(debug)
    console = stderr_console(quiet=quiet)
    with handle_errors(debug=debug, as_json=as_json):
        summary = run_scenes(input, output, detector=detector, threshold=threshold, min_scene=min_scene,
                             start=frame_position(start), end=frame_position(end), fps=fps)
        if as_json:
            print_json(summary)
        elif not quiet:
            _print(summary, console)


def run_scenes(source: str, output: Path | None, *, detector: str, threshold: float | None, min_scene: int,
               start: int | str | None, end: int | str | None, fps: str | None) -> dict[str, Any]:
    """Detect, optionally write, and return the summary ``--json`` prints."""
    from uav.io import reader
    from uav.io.rates import parse_fps
    from uav.scenes.detect import build_detector, detect_scenes, timecode_of
    from uav.scenes.lists import write_scene_list

    started = time.perf_counter()
    rate = parse_fps(fps, name="--fps") if fps is not None else None
    build_detector(detector, threshold=threshold, min_scene=min_scene)  # a bad name fails before decoding
    if output is not None:
        _check_output(Path(source), output)
    info = reader.probe(source) if rate is None else reader.probe(source, fps=rate)
    scenes = detect_scenes(source, start=start, end=end, detector=detector, threshold=threshold,
                           min_scene=min_scene, fps=rate)
    written = None
    if output is not None:
        note = f"uav scenes --detector {detector}" + (f" --threshold {threshold:g}" if threshold is not None else "") \
            + f" --min-scene {min_scene}"
        written = str(write_scene_list(output, scenes, info=info, note=note))
    fps_value = Fraction(info.fps)
    return {
        "input": str(source), "fps": str(fps_value), "frames": info.num_frames, "start_timecode": info.start_timecode,
        "range": [scenes[0].start, scenes[-1].end], "detector": detector, "threshold": threshold,
        "min_scene": min_scene,
        "cuts": [{"frame": s.start, "timecode": timecode_of(s.start, fps_value, info.start_timecode)}
                 for s in scenes[1:]],
        "scenes": [s.to_dict(fps_value, info.start_timecode) for s in scenes],
        "output": written, "seconds": round(time.perf_counter() - started, 3),
    }


def _check_output(source: Path, output: Path) -> None:
    from uav.scenes.lists import _adapter_name

    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise UserError(f"--output {output} is the input itself; choose another name")
    if output.exists() and output.is_dir():
        raise UserError(f"--output {output} is a folder; give a file name such as {output / 'scenes.toml'}")
    if output.suffix.lower() != ".toml":
        _adapter_name(output, write=True)
    if not output.parent.exists():
        raise UserError(f"--output {output}: folder {output.parent} does not exist")


def _print(summary: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(summary['scenes'])} scene(s) in {escape(summary['input'])} ({summary['frames']} "
                        f"frames at {summary['fps']} fps)", title_justify="left")
    for column in ("scene", "first frame", "timecode", "frames"):
        table.add_column(column, justify="right" if column != "scene" else "left")
    for row in summary["scenes"]:
        table.add_row(escape(row["name"]), str(row["start"]), row.get("start_timecode") or "-", str(row["frames"]))
    console.print(table)
    cuts = ", ".join(f"{c['frame']} ({c['timecode']})" if c["timecode"] else str(c["frame"]) for c in summary["cuts"])
    console.print(f"cuts at frames: {cuts or 'none'}")
    if summary["output"]:
        console.print(f"[green]wrote[/green] {escape(summary['output'])}")
