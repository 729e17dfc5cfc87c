"""Shared fixtures: parity data (see tests/data/README.md) and the tiny fixture models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

PARITY = Path(__file__).parent / "data" / "parity"

# The published fixtures were produced with 2 intra-op threads; keep the same here so
# module-level comparisons are as close as the arithmetic allows.
torch.set_num_threads(2)


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
