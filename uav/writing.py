"""An upscaled clip written to a file: the source's metadata carried over, the run's
provenance record, deep formats fed float frames, frames encoded on a worker thread
(:meth:`uav.VideoUpscaler.upscale` with ``output=``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch

from uav.frames import to_float32, to_uint8
from uav.overlap import Consumer
from uav.settings import UpscaleSettings

if TYPE_CHECKING:
    from uav.upscaler import ClipInfo, VideoUpscaler

__all__ = ["write_output"]

Tensor = torch.Tensor


def write_output(upscaler: VideoUpscaler, chunks: Iterable[tuple[int, Tensor]], path: Path, lr: Tensor,
                 info: ClipInfo, options: Mapping[str, Any], settings: UpscaleSettings) -> Path:
    """Encode the decoded ``chunks`` of the low-res clip ``lr`` into ``path`` (atomically)."""
    from fractions import Fraction

    from uav.io.alpha import alpha_planes, with_alpha
    from uav.io.codecs import CODECS
    from uav.io.metadata import carry_over, resolve_start_number
    from uav.io.writer import VideoWriter

    options = dict(options)
    fps = options.pop("fps", None)
    fps = info.fps or Fraction(24) if fps is None else fps
    scale = upscaler.upscale_factor
    height, width = lr.shape[-2] * scale, lr.shape[-1] * scale
    if info.video is not None:
        # the output shows the same frames, so it carries the source's metadata over
        options = {**carry_over(info.video, info.start_frame, lr.shape[2]), **options}
    options["start_number"] = resolve_start_number(options.get("start_number"), info.video, info.start_frame)
    record = upscaler.provenance(settings, info, lr.shape[2], fps)
    options["provenance"] = {**record, **(options.get("provenance") or {})}
    spec = CODECS.get(options.get("codec", "h264"))
    alpha = None if spec is None else alpha_planes(info.video, info.start_frame, lr.shape[2], spec,
                                                    options.get("pix_fmt"), width, height)
    deep = _deep_output(options, alpha=alpha is not None)
    convert = to_float32 if deep else to_uint8
    writer = VideoWriter(path, fps=Fraction(fps), width=width, height=height, alpha=alpha is not None, **options,
                         **({"bit_depth": 32} if deep else {}))
    # frames encode on a worker thread (two chunks queued at most) while the next chunk decodes
    encoder: Consumer[Tensor] = Consumer(lambda chunk: [writer.write(with_alpha(f, alpha)) for f in convert(chunk)],
                                         maxsize=2, name="uav-encode")
    try:
        for _, chunk in chunks:
            encoder.submit(chunk)
        encoder.close()
    except BaseException:
        encoder.abort()
        writer.abort()
        raise
    return writer.close()


def _deep_output(options: dict[str, Any], *, alpha: bool = False) -> bool:
    """Whether the output holds more than 8 bits (then it gets float frames, and its pixel
    format is pinned: the writer's default for deep frames could be another one; with
    ``alpha``, the codec's format that keeps it)."""
    from uav.io.codecs import CODECS

    spec = CODECS.get(options.get("codec", "h264"))
    if spec is None or "bit_depth" in options:
        return False  # the writer names the unknown codec; an explicit depth is the caller's
    fmt = options.get("pix_fmt") or ((spec.alpha_pix_fmt if alpha else None) or spec.pix_fmt_8bit)
    if spec.bits(fmt) <= 8:
        return False
    options["pix_fmt"] = fmt
    return True
