"""``uav eval`` and ``uav compare``: score upscaled videos against a ground truth.

Both print a table (or, with ``--json``, one JSON object and nothing else on
stdout; on an error ``{"ok": false, "error": ...}``, as docs/cli.md says) and can
write an HTML report with temporal profiles, frame strips and crops. Their options
are declared once, as the fields of :class:`EvalOptions`. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from uav.cli.app import app
from uav.cli.common import fail, frame_position, handle_errors, one_line
from uav.cli.options import with_option_group

_METRICS = "Metrics"
_REPORT = "Report"

RefOpt = Annotated[
    Path, typer.Option("--ref", help="Ground-truth video or image sequence (folder or pattern).", rich_help_panel=_METRICS)
]
# Range checks happen in _check_options, not through click's min=, so that a bad value
# is one `error:` line (and a JSON error document with --json) like every other error.
CropOpt = Annotated[
    int,
    typer.Option("--crop-border", help="Pixels removed from every side for PSNR/SSIM/LPIPS (often the scale); >= 0.",
                 rich_help_panel=_METRICS),
]
EwarpOpt = Annotated[
    bool, typer.Option("--ewarp/--no-ewarp", help="Compute the flow warping error E*warp (x 1e-3).", rich_help_panel=_METRICS)
]
FlowOpt = Annotated[
    str, typer.Option("--flow", help="Flow estimator for E*warp (see `uav plugins`): dis, farneback, raft, ...",
                      rich_help_panel=_METRICS)
]
FlowOnOpt = Annotated[
    str, typer.Option("--flow-on", help="Estimate E*warp's flow on the 'output' itself or on the 'reference'.",
                      rich_help_panel=_METRICS)
]
LpipsOpt = Annotated[
    Optional[Path], typer.Option("--lpips-weights", help="LPIPS weights file; enables LPIPS (needs `pip install 'uav[lpips]'`).",
                                 rich_help_panel=_METRICS)
]
LpipsNetOpt = Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: alex, vgg or squeeze.", rich_help_panel=_METRICS)]
LpipsBackboneOpt = Annotated[
    Optional[Path], typer.Option("--lpips-backbone", help="torchvision backbone weights, if --lpips-weights lacks them.",
                                 rich_help_panel=_METRICS)
]
StartOpt = Annotated[
    Optional[str], typer.Option("--start", help="First frame (index or timecode), applied to every input.")
]
EndOpt = Annotated[Optional[str], typer.Option("--end", help="Frame after the last one (index or timecode, exclusive).")]
VfrOpt = Annotated[str, typer.Option("--vfr", help="Variable frame rate input: error, cfr or passthrough.")]
ResizeOpt = Annotated[
    bool, typer.Option("--resize-to-ref", help="Bicubic-resize inputs whose size differs from the reference (baselines).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")]
ReportOpt = Annotated[
    Optional[Path], typer.Option("--report", help="Write a self-contained HTML report to this file.", rich_help_panel=_REPORT)
]
RowOpt = Annotated[
    Optional[int], typer.Option("--profile-row", help="Row tracked by the temporal profile (default: middle).",
                                rich_help_panel=_REPORT)
]
ColumnOpt = Annotated[
    Optional[int], typer.Option("--profile-column", help="Track a column instead of a row.", rich_help_panel=_REPORT)
]


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """The options ``uav eval`` and ``uav compare`` share, declared once.

    Each field's annotation is its command-line option; :data:`_with_eval_options`
    turns the fields into the parameters of both commands.
    """

    ref: RefOpt
    crop_border: CropOpt = 0
    ewarp: EwarpOpt = True
    flow: FlowOpt = "dis"
    flow_on: FlowOnOpt = "output"
    lpips_weights: LpipsOpt = None
    lpips_net: LpipsNetOpt = "alex"
    lpips_backbone: LpipsBackboneOpt = None
    start: StartOpt = None
    end: EndOpt = None
    vfr: VfrOpt = "error"
    resize_to_ref: ResizeOpt = False
    as_json: JsonOpt = False
    report: ReportOpt = None
    profile_row: RowOpt = None
    profile_column: ColumnOpt = None


#: gives ``uav eval`` and ``uav compare`` every :class:`EvalOptions` option, as one ``options`` argument
_with_eval_options = with_option_group(EvalOptions, "options")


def _read(path: Path, options: EvalOptions) -> np.ndarray:
    from uav.io.reader import read_frames  # noqa: PLC0415 - heavy import only when a command runs

    return read_frames(path, start=frame_position(options.start), end=frame_position(options.end), vfr=options.vfr)


def _labels(paths: list[Path]) -> list[str]:
    """The paths as typed, made unique when the same one is given twice."""
    labels: list[str] = []
    for p in paths:
        label, n = str(p), 2
        while label in labels:
            label, n = f"{p}#{n}", n + 1
        labels.append(label)
    return labels


def _check_options(options: EvalOptions) -> None:
    """Reject bad option values before any frame is read."""
    if options.crop_border < 0:
        raise ValueError(f"--crop-border: expected an integer >= 0; got {options.crop_border}")
    if options.flow_on not in ("output", "reference"):
        raise ValueError(f"--flow-on: expected 'output' or 'reference'; got {options.flow_on!r}")
    for flag, value in (("--profile-row", options.profile_row), ("--profile-column", options.profile_column)):
        if value is not None and value < 0:
            raise ValueError(f"{flag}: expected an integer >= 0; got {value}")
    if options.profile_row is not None and options.profile_column is not None:
        raise ValueError("--profile-row and --profile-column: give at most one")
    if options.report is not None and options.report.is_dir():
        raise ValueError(f"--report: {str(options.report)!r} is a folder; give the HTML file to write, "
                         f"e.g. {str(options.report / 'report.html')!r}")


def _rate_text(fps: Fraction) -> str:
    return str(fps.numerator) if fps.denominator == 1 else f"{float(fps):.3f} ({fps})"


def _check_rates(paths: list[Path], labels: list[str], ref_path: Path) -> None:
    """Refuse to pair frames of videos that run at different rates.

    Frame k of a 30 fps clip and frame k of a 24 fps clip show different moments, so
    every metric would be computed on mismatched pictures. Image sequences carry no
    rate of their own (the reader assumes one), so they pair with anything.
    """
    from uav.io.reader import probe  # noqa: PLC0415

    ref_info = probe(ref_path)
    if ref_info.is_image_sequence:
        return
    for label, path in zip(labels, paths):
        info = probe(path)
        if not info.is_image_sequence and info.fps != ref_info.fps:
            raise ValueError(
                f"{label} is {_rate_text(info.fps)} fps but the reference is {_rate_text(ref_info.fps)} fps; "
                "frame-by-frame metrics need both at the same rate (convert one first)"
            )


def _match(frames: np.ndarray, ref: np.ndarray, label: str, resize: bool) -> np.ndarray:
    if frames.shape[0] != ref.shape[0]:
        raise ValueError(
            f"{label} has {frames.shape[0]} frames but the reference has {ref.shape[0]}; "
            "select the same range with --start/--end"
        )
    if frames.shape[1:3] != ref.shape[1:3]:
        if not resize:
            raise ValueError(
                f"{label} is {frames.shape[2]}x{frames.shape[1]} but the reference is {ref.shape[2]}x{ref.shape[1]}; "
                "pass --resize-to-ref to compare a lower-resolution baseline"
            )
        import cv2  # noqa: PLC0415

        h, w = ref.shape[1:3]
        frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])
    # Mixed 8/16-bit inputs need no conversion: the metrics scale each by its own range.
    return frames


def _run(paths: list[Path], options: EvalOptions) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """Score every video; returns (label -> VideoMetrics, label -> frames, reference frames)."""
    from uav.eval import LPIPSMetric, evaluate_video, resolve_flow_estimator  # noqa: PLC0415

    estimator = resolve_flow_estimator(options.flow) if options.ewarp else None
    lpips = None
    if options.lpips_weights:
        lpips = LPIPSMetric(options.lpips_weights, net=options.lpips_net, backbone=options.lpips_backbone)
    labels = _labels(paths)
    _check_rates(paths, labels, options.ref)
    ref = _read(options.ref, options)
    results: dict[str, Any] = {}
    clips: dict[str, np.ndarray] = {}
    for label, path in zip(labels, paths):
        frames = _match(_read(path, options), ref, label, options.resize_to_ref)
        results[label] = evaluate_video(
            frames, ref, crop_border=options.crop_border, ewarp=options.ewarp, flow=estimator,  # type: ignore[arg-type]
            flow_on=options.flow_on, lpips=lpips,  # type: ignore[arg-type]
        )
        clips[label] = frames
    return results, clips, ref


def _print_table(results: dict[str, Any], ref: Path, command: str) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    show_lpips = any(m.lpips is not None for m in results.values())
    table = Table(title=f"uav {command} — reference {ref}")
    table.add_column("video", overflow="fold")
    for col in ("PSNR", "PSNR-Y", "SSIM", "SSIM-Y") + (("LPIPS",) if show_lpips else ()) + ("E*warp (x1e-3)", "frames"):
        table.add_column(col, justify="right", no_wrap=True)

    def fmt(v: float | None, digits: int) -> str:
        if v is None:
            return "-"
        return "inf" if np.isinf(v) else f"{v:.{digits}f}"

    for label, m in results.items():
        row = [label, fmt(m.psnr, 2), fmt(m.psnr_y, 2), fmt(m.ssim, 4), fmt(m.ssim_y, 4)]
        if show_lpips:
            row.append(fmt(m.lpips, 4))
        row += [fmt(m.ewarp, 3), str(m.frames)]
        table.add_row(*row)
    Console().print(table)
    crop = next(iter(results.values())).crop_border
    if crop:
        Console().print(f"PSNR/SSIM with {crop} border pixels cropped; Y = BT.601 luma")


def _write_report(
    path: Path,
    results: dict[str, Any],
    clips: dict[str, np.ndarray],
    ref: np.ndarray,
    ref_label: str,
    row: int | None,
    column: int | None,
) -> Path:
    from uav.eval import report as R  # noqa: PLC0415

    videos = {**clips, f"reference: {ref_label}": ref}
    H, W = ref.shape[1:3]
    if row is None and column is None:
        row = H // 2
    if row is not None and row >= H:
        raise ValueError(f"--profile-row: {row} is outside frames of height {H}")
    if column is not None and column >= W:
        raise ValueError(f"--profile-column: {column} is outside frames of width {W}")
    time_scale = max(1, min(4, 256 // max(1, ref.shape[0])))
    where = f"row {row}" if row is not None else f"column {column}"
    ch, cw = max(1, H // 4), max(1, W // 4)
    box = (H // 2 - ch // 2, H // 2 - ch // 2 + ch, W // 2 - cw // 2, W // 2 - cw // 2 + cw)
    images = [
        (f"temporal profile of {where} (time runs {'down' if row is not None else 'right'})",
         R.profile_figure(videos, row=row, column=column, time_scale=time_scale)),
        ("frames", R.frame_strip(videos, count=4)),
        (f"centre crop y {box[0]}:{box[1]}, x {box[2]}:{box[3]} at frame 0, zoom 2",
         R.crop_figure(videos, frame=0, box=box, zoom=2)),
    ]
    return R.write_report(path, metrics=results, images=images, title="uav evaluation",
                          notes=f"reference: {ref_label}; {ref.shape[0]} frames of {W}x{H}")


def _json_document(results: dict[str, Any], single: bool) -> dict[str, Any]:
    if single:
        return next(iter(results.values())).to_dict()
    dicts = {label: m.to_dict() for label, m in results.items()}
    keys = ["psnr", "psnr_y", "ssim", "ssim_y", "ewarp"]
    if any("lpips" in d for d in dicts.values()):
        keys.append("lpips")
    doc: dict[str, Any] = {"videos": list(dicts)}
    doc.update({k: {label: d.get(k) for label, d in dicts.items()} for k in keys})
    doc["per_frame"] = {label: d["per_frame"] for label, d in dicts.items()}
    return doc


def _execute(command: str, paths: list[Path], options: EvalOptions) -> None:
    with handle_errors(as_json=options.as_json):
        try:
            _check_options(options)
            results, clips, ref_frames = _run(paths, options)
            if options.report is not None:
                written = _write_report(options.report, results, clips, ref_frames, str(options.ref),
                                        options.profile_row, options.profile_column)
                typer.echo(f"report written to {written}", err=True)
        except (TypeError, ImportError) as exc:
            # a frame array of the wrong kind, or the optional lpips package missing: the
            # user's to fix (handle_errors would call them internal errors)
            raise fail(one_line(exc), as_json=options.as_json) from None
    if options.as_json:
        typer.echo(json.dumps(_json_document(results, command == "eval"), allow_nan=False))
        return
    _print_table(results, options.ref, command)


@app.command("eval")
@_with_eval_options
def eval_command(
    output: Annotated[Path, typer.Argument(help="Upscaled video or image sequence to score.")],
    options: EvalOptions,
) -> None:
    """Score OUTPUT against --ref: PSNR and SSIM (RGB and Y), E*warp (x 1e-3) and optionally LPIPS.

    With --json, prints one JSON object with keys psnr, psnr_y, ssim, ssim_y, ewarp
    (null with --no-ewarp), lpips (with --lpips-weights) and per_frame (per-frame
    lists; per_frame.ewarp has one entry per frame pair). PSNR of identical frames
    is infinite and written as null.
    """
    _execute("eval", [output], options)


@app.command("compare")
@_with_eval_options
def compare_command(
    videos: Annotated[list[Path], typer.Argument(help="Videos or image sequences to compare.")],
    options: EvalOptions,
) -> None:
    """Score several videos against the same --ref, side by side.

    With --json, prints one JSON object: "videos" (the labels, in order), then
    psnr, psnr_y, ssim, ssim_y, ewarp (and lpips) each mapping label -> value, and
    per_frame mapping label -> per-frame lists. --report puts every video's
    temporal profile next to the reference's.
    """
    _execute("compare", list(videos), options)
