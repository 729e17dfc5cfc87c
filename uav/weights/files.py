"""Weights files: read them without running code, check their tensors, write them atomically.

``.safetensors`` files are read as such; ``.bin``/``.pth``/``.pt`` only through
``torch.load(weights_only=True)``, so a pickle that holds anything but tensors is refused,
never executed. Every tensor read is checked (:func:`check_tensors`): weights must be
floating point and finite. A damaged or diverged checkpoint is refused here, naming the file
and the tensor, instead of producing a black or noisy video an hour later.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Mapping

import torch

Tensor = torch.Tensor

#: the suffixes a weights file may have, in order of preference (safetensors cannot run code)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
#: the suffixes read through ``torch.load(weights_only=True)``
PICKLE_SUFFIXES = (".bin", ".pth", ".pt")
#: integer buffers that legitimately sit among the weights (BatchNorm counters, CLIP position ids)
INTEGER_BUFFER_SUFFIXES = ("num_batches_tracked", "position_ids")
#: what the user sees when ``weights_only`` refuses a pickle
REFUSED = "refused: not a plain weights file"


class ReleaseError(ValueError):
    """A weights folder or file that is missing something or holds something unusable."""


def find_weights_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.<suffix>`` for the first suffix of :data:`WEIGHT_SUFFIXES` that exists."""
    return next(iter(weights_files(folder, stem)), None)


def weights_files(folder: Path, stem: str) -> list[Path]:
    """Every ``folder/stem.<suffix>`` that exists, preferred first."""
    return [folder / f"{stem}{s}" for s in WEIGHT_SUFFIXES if (folder / f"{stem}{s}").is_file()]


def is_refused_pickle(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is ``weights_only`` refusing a pickle of objects."""
    while exc is not None:
        if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def check_tensors(state: Mapping[str, Tensor], source: str | os.PathLike[str]) -> None:
    """Refuse a state dict whose weights are not floating point or not finite.

    Integer tensors are allowed only for the counters in :data:`INTEGER_BUFFER_SUFFIXES`.
    Finiteness is checked per tensor (one pass over the memory, far cheaper than the load
    itself).

    Raises:
        ReleaseError: naming ``source`` and the first offending tensor.
    """
    for key, value in state.items():
        if not torch.is_tensor(value):
            raise ReleaseError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point():
            if value.numel() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                kind = "NaN" if bool(torch.isnan(value).any()) else "infinite"
                raise ReleaseError(
                    f"{source}: tensor {key} holds {bad} {kind} value(s) of {value.numel()}: a damaged or diverged "
                    "checkpoint; get the file again")
        elif value.is_complex() or not key.endswith(INTEGER_BUFFER_SUFFIXES):
            dtype = str(value.dtype).replace("torch.", "")
            raise ReleaseError(
                f"{source}: tensor {key} is {dtype}; network weights must be floating point "
                "(float32, float16 or bfloat16; quantised checkpoints are not supported)")


def load_state_dict_file(path: str | os.PathLike[str], *, check: bool = True) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file, or a ``.bin``/``.pth`` through ``torch.load(weights_only=True)``.

    A ``{"state_dict": {...}}`` wrapper is unwrapped. With ``check`` (the default) the tensors go
    through :func:`check_tensors`.

    Raises:
        ReleaseError: the file is missing, unreadable, a refused pickle, not a state dict of
            tensors, or holds unusable tensors; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ReleaseError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated / pickled code: say which file
        if is_refused_pickle(exc):
            raise ReleaseError(f"cannot read weights file {path}: {REFUSED} (it holds pickled objects besides "
                               "tensors; nothing was run)") from exc
        raise ReleaseError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ReleaseError(f"weights file {path} does not hold a state dict of tensors")
    if check:
        check_tensors(obj, path)
    return dict(obj)


def save_state_dict(state: Mapping[str, Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a state dict (``.safetensors`` or ``.bin``) under a temporary name, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, tmp)
        else:
            torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
