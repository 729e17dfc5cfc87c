"""``uav caption``: print the automatic prompt of a clip, to read, edit and pass back as ``--prompt``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from uav.cli.app import app
from uav.cli.common import handle_errors, print_json, quiet_libraries


@app.command("caption")
def caption_command(
    input: Annotated[str, typer.Argument(
        metavar="INPUT", help="A video file, an image-sequence folder or pattern (frames/%05d.png), or an image.",
        show_default=False)],
    captioner: Annotated[str, typer.Option(
        "--captioner", help="Captioner plugin: llava-local (a LLaVA-style chat model, as the paper), blip-local, "
                            "or one a plugin registers (see `uav plugins`).")] = "llava-local",
    captioner_option: Annotated[Optional[list[str]], typer.Option(
        "--captioner-option", metavar="KEY=VALUE",
        help="A captioner option, repeatable: model=DIR (the local model folder, required by the built-ins), "
             "device=auto|cpu|cuda, dtype=auto|fp32|fp16|bf16, instruction=TEXT, max_new_tokens=N, ...")] = None,
    frame: Annotated[str, typer.Option(
        "--frame", help="The frame to caption: first (as the paper), middle, or an index N (counted from --start).",
    )] = "first",
    start: Annotated[Optional[str], typer.Option(
        help="First frame of the range the frame is chosen in (index or timecode HH:MM:SS:FF).")] = None,
    end: Annotated[Optional[str], typer.Option(
        help="Frame after the range (exclusive; index or timecode).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print {"caption": ..., "captioner": ..., "frame": ...} instead of the caption alone.')] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.")] = False,
) -> None:
    """Caption one frame of INPUT with a local vision-language model and print the caption alone.

    The caption is what `uav upscale --prompt` wants: edit it and pass it back.
    Nothing is downloaded; the model is loaded from the folder given as model=DIR.

    Examples:

      uav caption clip.mp4 --captioner-option model=models/llava-1.5-13b-hf

      uav caption clip.mp4 --captioner blip-local --captioner-option model=models/blip --frame middle --json
    """
    quiet_libraries(debug)
    with handle_errors(debug=debug, as_json=as_json):
        from uav.captioning import caption_clip, parse_caption_frame, parse_captioner_options

        options = parse_captioner_options(captioner_option)
        chosen = parse_caption_frame(frame)
        caption = caption_clip(input, captioner, options, frame=chosen, start=start, end=end)
        if as_json:
            print_json(caption.to_dict())
        else:
            typer.echo(caption.text)

