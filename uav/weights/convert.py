"""Writing release folders and converting their pickled weights files to safetensors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import torch

from uav.models import AutoencoderKLVideo, UNetVideoModel
from uav.weights.files import PICKLE_SUFFIXES, ReleaseError, load_state_dict_file, save_state_dict, weights_files
from uav.weights.release import ReleaseFolder, find_release

Tensor = torch.Tensor

#: the weights files of a release, as (folder, stem); the text encoder is transformers' business
_RELEASE_WEIGHTS = (("unet", "unet_video"), ("vae", "vae_3d"), ("vae", "vae_video"), ("propagator", "raft-things"))


@dataclass
class Conversion:
    """What :func:`convert_release` did: files written, found already converted, originals removed."""

    written: list[Path] = field(default_factory=list)
    already_converted: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``uav weights convert --json``."""
        return {key: [str(p) for p in paths] for key, paths in vars(self).items()}


def _same(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k].cpu()) for k in a)


def convert_release(path: str | os.PathLike[str], *, remove_original: bool = False) -> Conversion:
    """Write ``.safetensors`` beside each ``.bin``/``.pth``/``.pt`` of a release folder.

    Every new file is read back and compared tensor by tensor. A ``.safetensors`` left by an
    earlier conversion is compared with its original instead of being rewritten, so
    ``remove_original`` after a plain conversion removes the originals it finds identical. An
    original is removed only when asked and only once its ``.safetensors`` twin is proven equal.

    Raises:
        ReleaseError: a file is unreadable or unusable, a conversion does not read back
            identically (the new file is removed), or an existing ``.safetensors`` differs from its
            original (neither is touched).
    """
    from safetensors.torch import load_file

    root = find_release(path).root
    done = Conversion()
    for folder, stem in _RELEASE_WEIGHTS:
        for src in weights_files(root / folder, stem):
            if src.suffix not in PICKLE_SUFFIXES:
                continue
            dst = src.with_suffix(".safetensors")
            state = load_state_dict_file(src)
            if dst.is_file():
                if not _same(state, load_state_dict_file(dst)):
                    raise ReleaseError(f"{dst} already exists and differs from {src}; remove the one that is wrong "
                                       "and convert again")
                done.already_converted.append(dst)
            else:
                save_state_dict(state, dst)
                if not _same(state, load_file(str(dst))):
                    dst.unlink()
                    raise ReleaseError(f"conversion of {src} did not read back identically; removed {dst}")
                done.written.append(dst)
            if remove_original:
                src.unlink()
                done.removed.append(src)
    return done


def convert_to_safetensors(path: str | os.PathLike[str], *, remove_original: bool = False) -> list[Path]:
    """:func:`convert_release`, returning only the newly written files."""
    return convert_release(path, remove_original=remove_original).written


def save_release(path: str | os.PathLike[str], *, unet: UNetVideoModel, vae: Mapping[str, AutoencoderKLVideo],
                 fmt: Literal["bin", "safetensors"] = "safetensors", raft_state: Mapping[str, Tensor] | None = None,
                 scheduler: Any = None, low_res_scheduler: Any = None) -> ReleaseFolder:
    """Write models into the official folder layout (for tests, fine-tunes and conversions)."""
    root = Path(path)
    (root / "unet").mkdir(parents=True, exist_ok=True)
    (root / "vae").mkdir(parents=True, exist_ok=True)
    (root / "unet" / "unet_video_config.json").write_text(json.dumps(dict(unet.config), indent=1, default=list))
    save_state_dict(unet.state_dict(), root / "unet" / f"unet_video.{fmt}")
    for variant, model in vae.items():
        (root / "vae" / f"vae_{variant}_config.json").write_text(json.dumps(dict(model.config), indent=1, default=list))
        save_state_dict(model.state_dict(), root / "vae" / f"vae_{variant}.{fmt}")
    if raft_state is not None:
        save_state_dict(raft_state, root / "propagator" / ("raft-things.pth" if fmt == "bin" else "raft-things.safetensors"))
    for name, sched in (("scheduler", scheduler), ("low_res_scheduler", low_res_scheduler)):
        if sched is not None:
            sched.save_config(str(root / name))
    return find_release(root)
