"""``uav info OUT``: what an output is and how uav made it, read back from the output itself."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from uav.cli.app import app
from uav.cli.common import handle_errors, print_json, quiet_libraries


def _lines(facts: dict[str, Any]) -> list[str]:
    """The human-readable report: the format first, then the provenance record."""
    size = f"{facts['width']}x{facts['height']}"
    first = facts.get("first_frame_number")
    numbering = f", files from {first}" if first is not None else ""
    extra = "".join(f", {k} {facts[k]}" for k in ("compression", "pixel_type") if facts.get(k))
    lines = [f"{facts['path']}: {facts['kind']} {facts['codec']} {facts['pix_fmt']} {size}, {facts['frames']} frames "
             f"at {facts['fps']} fps{numbering}{extra}",
             f"timecode: {facts['timecode'] or 'none'}",
             "colour: " + (", ".join(f"{k}={v}" for k, v in facts["color"].items()) or "untagged")]
    record = facts["provenance"]
    if record is None:
        lines.append("provenance: none (not written by uav, or written before uav recorded provenance)")
        return lines
    model = record.get("model") or {}
    weights = model.get("weights") or {}
    source = record.get("source") or {}
    caption = record.get("caption") or {}
    lines += [
        f"provenance ({facts['provenance_in']}): uav {record.get('uav_version')}",
        f"  weights: {weights.get('path', model.get('source'))} (hash {weights.get('hash', 'unknown')})",
        f"  model: unet {model.get('unet_dtype')}, vae {model.get('vae')}, device {model.get('device')}",
        f"  settings hash: {record.get('settings_hash')}",
        f"  prompt: {record.get('prompt')!r}" + (f" (caption by {caption.get('captioner')})" if caption else ""),
        f"  seed: {record.get('seed')}",
        f"  source: {source.get('path')} frames [{source.get('start_frame')}, {source.get('end_frame')})"
        + (f" from {source['timecode']}" if source.get("timecode") else ""),
    ]
    settings = record.get("settings") or {}
    lines += [f"  {key} = {value!r}" for key, value in sorted(settings.items())]
    return lines


@app.command("info")
def info_command(
    output: Annotated[str, typer.Argument(
        metavar="OUT", help="A video file, or an image-sequence folder or pattern, that uav wrote.",
        show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts and the provenance record as JSON.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.")] = False,
) -> None:
    """Print what OUT is (format, size, frames, rate, timecode, colour tags) and the provenance
    uav stored in it: version, weights and their hash, settings and their hash, prompt and
    caption, seed, source file and frame range.

    Examples:

      uav info clip_uav.mov

      uav info shot_uav/ --json
    """
    quiet_libraries(debug)
    with handle_errors(debug=debug, as_json=as_json):
        from uav.io.output_info import describe_output

        facts = describe_output(output)
        if as_json:
            print_json({"ok": True, **facts})
        else:
            for line in _lines(facts):
                typer.echo(line)
