"""Shared fixtures: parity data (see tests/data/README.md) and the tiny fixture models."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

PARITY = Path(__file__).parent / "data" / "parity"

# The published fixtures were produced with 2 intra-op threads; keep the same here so
# module-level comparisons are as close as the arithmetic allows.
torch.set_num_threads(2)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads, then give the old count back."""
    with contextlib.ExitStack() as restore:
        restore.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(count)
        yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test. Runs compared with each other (or with fixtures at 1e-5)
    are as exact on one thread, and on the shared test machine spinning OpenMP threads slow tiny
    models down by an order of magnitude; a Ray worker with one CPU runs one thread too."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random release saved to disk (``.../upscale_a_video``), one per test module: a module
    may change its files without touching another's."""
    from uav.weights import make_tiny_release

    return make_tiny_release(tmp_path_factory.mktemp("weights") / "upscale_a_video")


def parity_path(name: str) -> Path:
    return PARITY / name


def load_parity(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(PARITY / name))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a-b| / max |b| (the issues' parity metric)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture(scope="session")
def tiny_unet():
    from uav.models import UNetVideoModel

    model = UNetVideoModel.from_config(json.loads((PARITY / "unet_video_tiny_config.json").read_text()))
    model.load_state_dict(load_parity("unet_weights.safetensors"), strict=True)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_vae():
    from uav.models import AutoencoderKLVideo

    model = AutoencoderKLVideo.from_config(json.loads((PARITY / "vae_video_tiny_config.json").read_text()))
    model.load_state_dict(load_parity("vae_weights.safetensors"), strict=True)
    return model.eval().requires_grad_(False)
