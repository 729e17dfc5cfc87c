"""Checks of the model and output options before anything loads: ``--device``, ``--dtype``,
``--vae``, ``--codec`` and the weights folder.

``uav upscale`` and ``uav timeline upscale`` both check their options here, so that a
bad value is refused with the same line in both, before a model loads or a frame is read.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uav.cli.common import UserError

if TYPE_CHECKING:  # the writer (and PyAV) load only when a codec is checked
    from uav.io.codecs import CodecSpec

__all__ = [
    "DTYPES",
    "VAES",
    "build_tiny_release",
    "check_vae",
    "codec_spec",
    "delivery_report",
    "find_weights",
    "parse_dtype",
    "resolve_device",
]

#: ``--dtype`` values (``auto``: fp16 on CUDA, fp32 on the CPU)
DTYPES = ("auto", "fp32", "fp16", "bf16")
#: ``--vae`` values
VAES = ("3d", "video")


def parse_dtype(value: str, aliases: Mapping[str, str] | None = None) -> str | None:
    """``--dtype``: ``None`` for ``auto`` (the upscaler decides), else the dtype's name.

    ``aliases`` maps further spellings onto :data:`DTYPES` (``float32`` -> ``fp32``) for
    commands that accepted them once.
    """
    name = (aliases or {}).get(value, value)
    if name not in DTYPES:
        raise UserError(f"--dtype: expected auto, fp32, fp16 or bf16, got {value!r}")
    return None if name == "auto" else name


def check_vae(value: str) -> str:
    """``--vae``: ``3d`` (published) or ``video``."""
    if value not in VAES:
        raise UserError(f"--vae: expected 3d or video, got {value!r}")
    return value


def codec_spec(codec: str) -> CodecSpec:
    """The writer's :class:`~uav.io.codecs.CodecSpec` for ``--codec``; an unknown name is one line."""
    from uav.io.codecs import CODECS

    if codec not in CODECS:
        raise UserError(f"--codec: unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    return CODECS[codec]


def resolve_device(device: str) -> str | None:
    """``auto`` -> ``None`` (the upscaler picks CUDA when present); otherwise ``device``, once
    :func:`uav.arguments.check_device` has found it here (its refusal named ``--device``)."""
    import torch

    from uav.arguments import check_device

    if device == "auto":
        return None
    try:
        torch.device(device)
    except RuntimeError:
        raise UserError(f"--device: expected auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    # its InputError (a ValueError) is a user error to every command's handle_errors
    check_device(device, subject=f"--device {device}", use_cpu="--device cpu")
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


def delivery_report(written: Path, job: Any) -> dict[str, Any]:
    """What ``--json`` says of a written output beyond its size: the colour tags it carries
    and those its format cannot (``color``), and where its provenance record is."""
    from uav.io import probe
    from uav.io.metadata import color_tags
    from uav.io.output_info import color_report
    from uav.io.provenance import read_provenance

    source = probe(job.source, fps=job.fps)
    _, where = read_provenance(written)
    return {"color": color_report(written, color_tags(source)), "provenance": where}
