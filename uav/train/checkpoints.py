"""Resumable training checkpoints, written atomically, and the EMA of the trained weights.

A checkpoint is a folder ``checkpoints/step-00000040/`` holding only what changes during a
run: the trained parameters, their EMA, the optimizer and LR-scheduler states, the RNG
states and ``state.json`` (step, data position, stage, names of the trained parameters).
It is built under a hidden temporary name, every file is flushed to disk, and the folder
is renamed into place: a run killed at any instant (``kill -9``) leaves either the
complete checkpoint or none. ``checkpoints/latest`` names the newest one; if it is stale
or missing, the newest complete folder is used.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

Tensor = torch.Tensor
_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.json"


class EMA:
    """Exponential moving average of parameters, in float32.

    The effective decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so early averages are not dominated by the starting weights.
    """

    def __init__(self, parameters: Iterable[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        self.decay = float(decay)
        self.params = list(parameters)
        self.shadow = {name: p.detach().float().clone() for name, p in self.params}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameter values into the average."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in self.params:
            self.shadow[name].mul_(d).add_(p.detach().float(), alpha=1 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> None:
        """Write the averages into ``parameters`` (matched by name)."""
        for name, p in parameters:
            p.copy_(self.shadow[name].to(p.device, p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} parameter(s), e.g. {sorted(missing)[:3]}")
        self.updates = int(state["updates"])
        for name in self.shadow:
            self.shadow[name] = state["shadow"][name].float().to(self.shadow[name].device)


def rng_state() -> dict[str, Any]:
    """The global Python, NumPy and torch (CPU and CUDA) random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    _fsync_file(tmp)
    os.replace(tmp, path)


@dataclass
class Checkpoint:
    """A complete checkpoint folder and its ``state.json``."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def tensors(self, name: str) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path / name))

    def load(self, name: str) -> Any:
        return torch.load(str(self.path / name), map_location="cpu", weights_only=False)


def save_checkpoint(root: str | os.PathLike[str], step: int, *, trained: dict[str, Tensor], ema: EMA | None,
                    optimizer: Any, scheduler: Any, state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically and prune all but the ``keep`` newest."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in trained.items()}, str(tmp / "trained.safetensors"))
        if ema is not None:
            save_file({k: v.contiguous().cpu() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "ema_updates": None if ema is None else ema.updates, "rng": rng_state()}, tmp / "training_state.pt")
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1, default=str))
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():  # the same step written again (a resumed run re-saving its last step)
            stale = root / f".old-step-{step:08d}-{os.getpid()}"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _write_text_atomic(root / "latest", final.name + "\n")
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def list_checkpoints(root: str | os.PathLike[str]) -> list[Checkpoint]:
    """The complete checkpoints under ``root``, oldest first (leftover temporary folders are removed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for entry in root.iterdir():
        if entry.name.startswith((".tmp-step-", ".old-step-")) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            continue
        if not _STEP_DIR.match(entry.name) or not (entry / STATE_FILE).is_file():
            continue
        try:
            state = json.loads((entry / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        out.append(Checkpoint(entry, state))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(root: str | os.PathLike[str]) -> Checkpoint | None:
    """The checkpoint ``root/latest`` names, or the newest complete one; ``None`` when there is none."""
    found = list_checkpoints(root)
    if not found:
        return None
    pointer = Path(root) / "latest"
    if pointer.is_file():
        name = pointer.read_text().strip()
        for c in found:
            if c.path.name == name and c.step == found[-1].step:
                return c
    return found[-1]
