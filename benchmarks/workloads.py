"""What is measured: the clips (workloads), the sampling settings, the networks and their inputs.

The networks are the real-size ones, built from the release configs with random
weights (or the tiny test configs with ``tiny``); one random initialisation is cast
per configuration (:class:`Dtypes`).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from benchmarks.library import ROOT, load_uav

Tensor = torch.Tensor
PARITY = ROOT / "tests" / "data" / "parity"
RELEASE_CONFIGS = PARITY / "release_configs"

__all__ = [
    "PARITY", "Workload", "WORKLOADS", "TINY_WORKLOADS", "Settings", "Models", "Dtypes", "model_config",
    "ddim_config", "build_unet", "build_vae", "build_models", "Inputs", "synthetic_clip", "make_inputs",
]


@dataclass(frozen=True)
class Workload:
    """A clip to upscale: ``frames`` low-res frames of ``height x width``, decoded by ``vae``."""

    name: str
    frames: int
    height: int
    width: int
    vae: str  # "3d" or "video"

    @property
    def out_size(self) -> tuple[int, int]:
        return self.height * 4, self.width * 4


WORKLOADS: dict[str, Workload] = {
    "lr192x352": Workload("lr192x352", 16, 192, 352, "3d"),
    "lr270x480": Workload("lr270x480", 16, 270, 480, "video"),
}
#: the same names for the tiny models (CPU test, GPU smoke step): 13 frames, so the published
#: rule repeats its last window, at about 1/12 size with odd sizes kept odd
TINY_WORKLOADS: dict[str, Workload] = {
    "lr192x352": Workload("lr192x352", 13, 16, 24, "3d"),
    "lr270x480": Workload("lr270x480", 13, 18, 30, "video"),
}


@dataclass(frozen=True)
class Settings:
    """The sampling settings of the measured run (the issue's: published script defaults)."""

    steps: int = 30
    guidance: float = 6.0
    noise_level: int = 120
    propagation_steps: tuple[int, ...] = (24, 26, 28)
    fuse_scale: float = 0.5
    window: int = 8
    decode_chunk: int = 3
    steps_timed: int = 2
    decode_frames: int = 6
    fast_steps: int = 10
    fast_cfg_steps: int = 5
    fast_propagation_steps: tuple[int, ...] = (7, 8, 9)


@dataclass
class Models:
    """The networks of one run: one random initialisation, cast per configuration.

    ``unet_ours`` / ``vae_ours`` are the ``bf16`` preset's copies; the ``default`` row's
    (``unet_default`` / ``vae_default``) are in the library's default dtypes, the
    baseline's own modules when those dtypes agree.
    """

    unet_base: torch.nn.Module
    unet_ours: torch.nn.Module
    vae_base: dict[str, torch.nn.Module] = field(default_factory=dict)
    vae_ours: dict[str, torch.nn.Module] = field(default_factory=dict)
    unet_default: torch.nn.Module | None = None
    vae_default: dict[str, torch.nn.Module] = field(default_factory=dict)


@dataclass(frozen=True)
class Dtypes:
    """Network dtypes of the baseline, of the ``bf16`` preset (``ours``) and of ``default``.

    ``default`` is what :meth:`uav.VideoUpscaler.from_pretrained` picks on the device
    (:func:`uav.upscaler.default_dtypes`). On CUDA the ``bf16`` preset runs a bf16 U-Net
    and a bf16 VAE, which is benchmark-only (issue 11).
    """

    unet_base: torch.dtype
    unet_ours: torch.dtype
    vae_base: torch.dtype
    vae_ours: torch.dtype
    unet_default: torch.dtype = torch.float32
    vae_default: torch.dtype = torch.float32

    @classmethod
    def for_device(cls, device: torch.device) -> "Dtypes":
        unet_default, vae_default = load_uav()["default_dtypes"](device)
        if device.type == "cuda":
            return cls(torch.float16, torch.bfloat16, torch.float32, torch.bfloat16, unet_default, vae_default)
        # CPU runs only exercise the code (tests); half-precision CPU kernels are slow or missing.
        return cls(torch.float32, torch.float32, torch.float32, torch.float32, unet_default, vae_default)


def model_config(name: str, tiny: bool) -> dict[str, Any]:
    """The config of ``unet``, ``vae_3d`` or ``vae_video``: the release's, or the tiny test one."""
    if tiny:
        path = PARITY / ("unet_video_tiny_config.json" if name == "unet" else "vae_video_tiny_config.json")
        cfg = json.loads(path.read_text())
        if name == "vae_3d":
            cfg.update(up_block_types=["UpDecoderBlock3D"] * len(cfg["up_block_types"]), condition_img=False)
        return cfg
    return json.loads((RELEASE_CONFIGS / {"unet": "unet_video_config.json", "vae_3d": "vae_3d_config.json",
                                          "vae_video": "vae_video_config.json"}[name]).read_text())


def build_unet(device: torch.device, tiny: bool, dtypes: Dtypes) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The U-Net with random weights, built directly on ``device``: (baseline copy, ours copy)."""
    uav = load_uav()
    torch.manual_seed(0)
    with torch.device(device):
        unet = uav["UNetVideoModel"].from_config(model_config("unet", tiny))
    unet.eval().requires_grad_(False)
    ours = copy.deepcopy(unet).to(dtypes.unet_ours)
    return unet.to(dtypes.unet_base), ours


def build_vae(kind: str, device: torch.device, tiny: bool, dtypes: Dtypes) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A VAE (``kind`` ``"3d"`` or ``"video"``) with random weights: (baseline copy, ours copy)."""
    uav = load_uav()
    torch.manual_seed(1)
    with torch.device(device):
        vae = uav["AutoencoderKLVideo"].from_config(model_config(f"vae_{kind}", tiny))
    vae.eval().requires_grad_(False)
    ours = copy.deepcopy(vae).to(dtypes.vae_ours)
    return vae.to(dtypes.vae_base), ours


@dataclass
class Inputs:
    """Everything one workload feeds the loop, on the device, float32."""

    lr: Tensor  # clean low-res clip (1, 3, T, h, w) in [-1, 1]
    noisy_lr: Tensor  # after low_res_add_noise
    x_t: Tensor  # initial latents (1, 4, T, h, w)
    text: Tensor  # (2, 77, D) = [negative, positive]
    flows: tuple[Tensor, Tensor]  # (1, 2, T-1, h, w) each
    flow_s: float | None
    flow_note: str


def synthetic_clip(frames: int, height: int, width: int, seed: int = 0) -> Tensor:
    """A smooth texture panning 2 px per frame, ``(1, 3, T, h, w)`` in [-1, 1] (gives real flow)."""
    g = torch.Generator().manual_seed(seed)
    pan = 2 * frames
    coarse = torch.randn((1, 3, max(2, height // 8), max(2, (width + pan) // 8)), generator=g)
    big = torch.nn.functional.interpolate(coarse, size=(height, width + pan), mode="bicubic", align_corners=False)
    big = torch.tanh(big)
    clip = torch.stack([big[0, :, :, 2 * t:2 * t + width] for t in range(frames)], dim=1)
    return clip[None].contiguous()


def make_inputs(wl: Workload, device: torch.device, cross_attention_dim: int, settings: Settings) -> Inputs:
    """The clip, noise, text embeddings and flows of a workload (flow timed on the CPU)."""
    uav = load_uav()
    g = torch.Generator().manual_seed(1234)
    lr = synthetic_clip(wl.frames, wl.height, wl.width)
    noise = torch.randn(lr.shape, generator=g)
    x_t = torch.randn((1, 4, wl.frames, wl.height, wl.width), generator=g)
    text = torch.randn((2, 77, cross_attention_dim), generator=g)
    ddpm = json.loads((PARITY / "low_res_scheduler_config_ddpm_x4.json").read_text())
    noisy = uav["low_res_add_noise"](lr, noise, settings.noise_level, ddpm)
    flow_s: float | None = None
    try:
        from uav_flow.opencv import DISFlow

        frames = lr[0].permute(1, 0, 2, 3)
        t0 = time.perf_counter()
        forward, backward = DISFlow("medium")(frames, size=(wl.height, wl.width))
        flow_s = time.perf_counter() - t0
        note = "OpenCV DIS (medium) on the CPU, timed; the published RAFT needs weights we do not have"
    except Exception as exc:  # noqa: BLE001 - flow is one stage; keep the rest measurable
        forward = backward = torch.zeros((1, 2, wl.frames - 1, wl.height, wl.width))
        note = f"flow not measured ({type(exc).__name__}: {exc}); zero flows used for propagation"
    to = dict(device=device)
    return Inputs(lr.to(**to), noisy.to(**to), x_t.to(**to), text.to(**to),
                  (forward.float().to(**to), backward.float().to(**to)), flow_s, note)


def ddim_config() -> dict[str, Any]:
    """The release's DDIM scheduler config."""
    return json.loads((PARITY / "scheduler_config_ddim_x4.json").read_text())


def build_models(device: torch.device, tiny: bool, dtypes: Dtypes, workloads: Sequence[Workload]) -> Models:
    """The U-Net and every VAE the workloads decode with, one random initialisation each."""
    base, ours = build_unet(device, tiny, dtypes)
    models = Models(base, ours, unet_default=_in_dtype(base, dtypes.unet_default))
    for kind in sorted({w.vae for w in workloads}):
        models.vae_base[kind], models.vae_ours[kind] = build_vae(kind, device, tiny, dtypes)
        models.vae_default[kind] = _in_dtype(models.vae_base[kind], dtypes.vae_default)
    return models


def _in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` itself when it is in ``dtype`` (same weights, no second copy), else a cast copy."""
    if next(module.parameters()).dtype == dtype:
        return module
    return copy.deepcopy(module).to(dtype)
