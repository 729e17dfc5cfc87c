#!/usr/bin/env python3
"""GPU benchmark of the Upscale-A-Video loop: the published structure against ours (issue 7).

One command measures, per workload and side by side on one card:

* ``baseline``: the published loop replayed (:mod:`baseline`): fp16 U-Net with explicit
  attention, one U-Net call per window call (duplicates included), fp32 VAE, 3-frame
  decode chunks, host-side uint8 conversion;
* ``ours``: the library path (:func:`uav.sampling.loop.denoise`): bf16 U-Net on SDPA, all
  windows of a step in one batched call (``window_batch``), the faster of NCHW /
  channels-last / cuDNN autotuning measured on one window, bf16 VAE with SDPA kept off
  its O(n²) fallback, uint8 conversion on the GPU with the copy overlapped;
* ``ours_uniform``: ``ours`` with the opt-in ``uniform`` window rule (2 windows per
  16 frames instead of 3; different numerics, so reported apart);
* ``fast``: DPM-Solver++ (the ``uav_schedulers`` adapter), 10 steps, guidance on the
  first 5 only, propagation at 7/8/9 (different numerics, reported as ``fast_speedup``);
* optionally (``--compile``, a separate process so a slow compile cannot lose the rest)
  ``ours`` with ``torch.compile``.

The networks are the real-size ones, built from the release configs with random
weights. Denoising is timed on ``--steps-timed`` steps after one warm-up step and scaled
to 30; propagation is timed for real and counted 3 times; decode is timed on
``--decode-frames`` frames after one warm-up chunk and scaled to the clip. Results go to
``<out>/bench.json`` (rewritten after every stage, so a timeout keeps what finished) and
``<out>/bench.md``.

Usage::

    python benchmarks/bench.py [--device cuda] [--tiny] [--steps-timed N] [--out DIR]
                               [--workloads lr192x352 lr270x480] [--smoke] [--budget-s S]
    python benchmarks/bench.py --compile --out DIR        # adds the torch.compile stage
    python benchmarks/bench.py --memory-model             # bytes of a 1-minute 480p clip
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# `baseline` is this folder's module; the library and its plugins may also run from a checkout
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
for _p in (ROOT, ROOT / "plugins"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

Tensor = torch.Tensor
PARITY = ROOT / "tests" / "data" / "parity"
RELEASE_CONFIGS = PARITY / "release_configs"
GIB = 2**30
MIB = 2**20

#: dense bf16/fp16 tensor-core peaks from the vendors' datasheets, TFLOP/s
DATASHEET_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
)

#: every optional stage, for ``--skip``
OPTIONAL_STAGES = ("flops", "layout", "fast", "uniform", "ablation")


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


# ----------------------------------------------------------------------------- imports
_UAV: dict[str, Any] = {}


def load_uav() -> dict[str, Any]:
    """Import the library modules the harness needs (no video I/O, no OpenTimelineIO).

    diffusers imports transformers / peft / accelerate when they are installed; if that
    chain fails on a machine whose versions do not match, retry with them hidden, since
    the models only need diffusers' own building blocks.
    """
    if _UAV:
        return _UAV
    try:
        _UAV.update(_import_uav())
    except Exception as first:  # noqa: BLE001 - any import-time incompatibility
        print(f"[bench] importing uav failed ({type(first).__name__}: {first}); retrying with transformers, "
              "peft and accelerate hidden from diffusers", flush=True)
        for name in list(sys.modules):
            if name.split(".")[0] in ("diffusers", "uav", "baseline", "transformers", "peft", "accelerate"):
                del sys.modules[name]
        for name in ("transformers", "peft", "accelerate"):
            sys.modules[name] = None  # type: ignore[assignment]  # find_spec() then reports it absent
        _UAV.update(_import_uav())
        _UAV["import_note"] = f"transformers/peft/accelerate hidden after: {type(first).__name__}: {first}"
    # casting random-weight models with .to() makes diffusers warn once per cast
    _UAV["diffusers"].utils.logging.set_verbosity_error()
    return _UAV


def _import_uav() -> dict[str, Any]:
    import diffusers

    import baseline
    from uav.models import AutoencoderKLVideo, UNetVideoModel
    from uav.sampling.decode import decode_chunks
    from uav.sampling.loop import denoise
    from uav.sampling.propagation import propagate_latents
    from uav.sampling.schedulers import OfficialDDIM, low_res_add_noise
    from uav.sampling.windows import official_segment_plan, uniform_segment_plan

    return dict(diffusers=diffusers, baseline=baseline, UNetVideoModel=UNetVideoModel,
                AutoencoderKLVideo=AutoencoderKLVideo, decode_chunks=decode_chunks, denoise=denoise,
                propagate_latents=propagate_latents, OfficialDDIM=OfficialDDIM,
                low_res_add_noise=low_res_add_noise, official_segment_plan=official_segment_plan,
                uniform_segment_plan=uniform_segment_plan)


# ----------------------------------------------------------------------------- small tools
class Budget:
    """Wall-clock budget: optional stages are skipped once ``limit_s`` has passed (0 = none)."""

    def __init__(self, limit_s: float) -> None:
        self.start = time.perf_counter()
        self.limit_s = float(limit_s)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self, grace_s: float = 0.0) -> bool:
        """Whether ``limit_s`` (plus ``grace_s``, for stages that should run a little longer) has passed."""
        return self.limit_s > 0 and self.elapsed() > self.limit_s + grace_s


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what it keeps resident)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def host_peak_rss_mib() -> float | None:
    """This process's peak resident set size so far, MiB (Linux/macOS)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MIB if sys.platform == "darwin" else 1024)


def datasheet_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known card, by name; ``None`` for unknown cards."""
    for key, value in DATASHEET_TFLOPS:
        if key in device_name:
            return value
    return None


class UNetClock:
    """Times every U-Net forward with CUDA events (wall clock on CPU), adding no syncs."""

    def __init__(self, unet: torch.nn.Module, device: torch.device) -> None:
        self.device = device
        self.spans: list[tuple[Any, Any]] = []
        self._start: Any = None
        self._handles = [unet.register_forward_pre_hook(self._pre), unet.register_forward_hook(self._post)]

    def _mark(self) -> Any:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _pre(self, *_: Any) -> None:
        self._start = self._mark()

    def _post(self, *_: Any) -> None:
        self.spans.append((self._start, self._mark()))

    def reset(self) -> None:
        self.spans.clear()

    def total_s(self) -> float:
        sync(self.device)
        if self.device.type == "cuda":
            return sum(a.elapsed_time(b) for a, b in self.spans) / 1000.0
        return sum(b - a for a, b in self.spans)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class GpuMemory:
    """Peak allocated GPU bytes over a region, relative to what was allocated at its start."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.base = 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)

    def peak_delta(self) -> int | None:
        if not self.cuda:
            return None
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device) - self.base)


def timed_repeats(device: torch.device, fn: Callable[[], Any], warmup: int, timed: int,
                  clock: UNetClock | None = None) -> tuple[float, float | None]:
    """Run ``fn`` ``warmup`` then ``timed`` times; mean seconds per timed call and the
    mean U-Net seconds inside it (when a clock is given)."""
    if timed < 1:
        raise ValueError(f"timed must be >= 1, got {timed}")
    for _ in range(warmup):
        fn()
    sync(device)
    if clock is not None:
        clock.reset()
    t0 = time.perf_counter()
    for _ in range(timed):
        fn()
    sync(device)
    elapsed = (time.perf_counter() - t0) / timed
    return elapsed, (clock.total_s() / timed if clock is not None else None)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Turn cuDNN autotuning on or off for a block (the published run leaves it off)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def set_conv_layout(model: torch.nn.Module, channels_last: bool) -> None:
    """Store every 2-D convolution weight channels-last (or back to contiguous).

    ``Module.to(memory_format=...)`` refuses the U-Net's 5-D Conv3d weights, so only
    the per-frame (``Conv2d``) weights are converted; PyTorch then runs those
    convolutions NHWC.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)


@contextlib.contextmanager
def no_quadratic_attention(device: torch.device) -> Iterator[None]:
    """Keep SDPA off its math fallback, whose ``(h·w)²`` scores would not fit at 1080p."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        yield


# ----------------------------------------------------------------------------- the report
class Report:
    """``bench.json`` + ``bench.md`` under ``out``, rewritten atomically after each stage."""

    def __init__(self, out: Path, data: dict[str, Any] | None = None) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = data if data is not None else {}

    @classmethod
    def load(cls, out: Path) -> "Report":
        path = out / "bench.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        return cls(out, data)

    def save(self) -> None:
        _atomic_write(self.out / "bench.json", json.dumps(_jsonable(self.data), indent=1) + "\n")
        _atomic_write(self.out / "bench.md", markdown_table(self.data))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    return str(value)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(data: dict[str, Any]) -> str:
    """The results as a markdown table naming the card (what ``gpu_run.sh`` prints last)."""
    s = data.get("settings", {})
    frames = s.get("frames", "?")
    if isinstance(frames, list):
        frames = "/".join(str(f) for f in frames)
    lines = [
        f"# uav benchmark — {data.get('device', '?')} (torch {data.get('torch', '?')}"
        f"{', tiny models' if data.get('tiny') else ''})",
        "",
        f"{frames} frames, {s.get('steps', '?')} steps, guidance {s.get('guidance', '?')}, "
        f"noise {s.get('noise_level', '?')}, propagation at {s.get('propagation_steps', '?')}; "
        f"{s.get('steps_timed', '?')} timed steps scaled to {s.get('steps', '?')}, decode timed on "
        f"{s.get('decode_frames', '?')} frames and scaled. Peak = resident weights + measured working set.",
        "",
        "| workload | config | s/frame | fps | speedup | peak GiB | mem ratio | U-Net s/step | TFLOP/s | MFU "
        "| flow s | U-Net s | loop s | prop s | decode s | io s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, wl in data.get("workloads", {}).items():
        base = wl.get("configs", {}).get("baseline", {})
        for cname, c in wl.get("configs", {}).items():
            if "s_per_frame" not in c:
                continue
            st = c.get("stages_s", {})
            sp = (base.get("s_per_frame") / c["s_per_frame"]) if base.get("s_per_frame") else None
            mr = (c["peak_mem_gib"] / base["peak_mem_gib"]) if c.get("peak_mem_gib") and base.get("peak_mem_gib") \
                else None
            lines.append(
                f"| {name} | {cname} | {_fmt(c['s_per_frame'])} | {_fmt(c.get('fps'), 3)} | {_fmt(sp)} | "
                f"{_fmt(c.get('peak_mem_gib'))} | {_fmt(mr)} | {_fmt(c.get('unet_s_per_step'), 3)} | "
                f"{_fmt(c.get('unet_tflops'), 1)} | {_fmt(c.get('mfu'), 3)} | {_fmt(st.get('flow'))} | "
                f"{_fmt(st.get('unet'))} | {_fmt(st.get('loop_other'))} | {_fmt(st.get('propagation'))} | "
                f"{_fmt(st.get('decode'))} | {_fmt(st.get('io'))} |"
            )
    lines.append("")
    for name, wl in data.get("workloads", {}).items():
        bits = [f"speedup {_fmt(wl.get('speedup'))}", f"peak_mem_ratio {_fmt(wl.get('peak_mem_ratio'))}",
                f"fast_speedup {_fmt(wl.get('fast_speedup'))}", f"uniform_speedup {_fmt(wl.get('uniform_speedup'))}"]
        if wl.get("layout"):
            bits.append(f"layout {wl['layout'].get('chosen')}")
        if wl.get("unet_tflop_per_window") is not None:
            bits.append(f"{_fmt(wl['unet_tflop_per_window'], 1)} TFLOP per CFG window")
        lines.append(f"- {name}: " + ", ".join(bits))
        ab = wl.get("ablation")
        if ab:
            lines.append(f"  - ours with one U-Net call per window: "
                         f"{_fmt(ab.get('ours_window_batch1_step_s'), 3)} s/step, "
                         f"peak {_fmt(ab.get('ours_window_batch1_peak_mem_gib'))} GiB")
        for note in wl.get("notes", []):
            lines.append(f"  - {note}")
        for cname, c in wl.get("configs", {}).items():
            if c.get("errors"):
                lines.append(f"  - {cname} errors: " + "; ".join(f"{k}: {v.splitlines()[-1] if v else v}"
                                                                   for k, v in c["errors"].items()))
        if wl.get("errors"):
            lines.append("  - errors: " + "; ".join(f"{k}: {v.splitlines()[-1] if v else v}"
                                                    for k, v in wl["errors"].items()))
    comp = data.get("compile")
    if comp:
        lines.append(f"- torch.compile ({comp.get('mode')}, {comp.get('workload')}): status {comp.get('status')}, "
                     f"compile {_fmt(comp.get('compile_s'), 1)} s, step {_fmt(comp.get('compiled_step_s'), 3)} s vs "
                     f"eager {_fmt(comp.get('eager_step_s'), 3)} s (x{_fmt(comp.get('step_speedup'))}); "
                     f"s/frame {_fmt(comp.get('s_per_frame'))}, speedup vs baseline {_fmt(comp.get('speedup'))}")
    if "smoke_ok" in data:
        real = data.get("smoke_real_models", {})
        lines.append(f"- smoke step: {'ok' if data['smoke_ok'] else 'FAILED'} ({_fmt(data.get('smoke_s'), 1)} s); "
                     f"real-size outputs finite: {real.get('ok', '?')}")
    peak = data.get("matmul_bf16_tflops")
    if peak:
        lines.append(f"- bf16 8192³ matmul measured {_fmt(peak, 0)} TFLOP/s; datasheet "
                     f"{_fmt(data.get('datasheet_bf16_tflops'), 0)} TFLOP/s (MFU column uses the datasheet)")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- models & inputs
@dataclass
class Models:
    """The networks of one run: one random initialisation, cast per configuration."""

    unet_base: torch.nn.Module
    unet_ours: torch.nn.Module
    vae_base: dict[str, torch.nn.Module] = field(default_factory=dict)
    vae_ours: dict[str, torch.nn.Module] = field(default_factory=dict)


@dataclass(frozen=True)
class Dtypes:
    unet_base: torch.dtype
    unet_ours: torch.dtype
    vae_base: torch.dtype
    vae_ours: torch.dtype

    @classmethod
    def for_device(cls, device: torch.device) -> "Dtypes":
        if device.type == "cuda":
            return cls(torch.float16, torch.bfloat16, torch.float32, torch.bfloat16)
        # CPU runs only exercise the code (tests); half-precision CPU kernels are slow or missing.
        return cls(torch.float32, torch.float32, torch.float32, torch.float32)


def _config(name: str, tiny: bool) -> dict[str, Any]:
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
        unet = uav["UNetVideoModel"].from_config(_config("unet", tiny))
    unet.eval().requires_grad_(False)
    ours = copy.deepcopy(unet).to(dtypes.unet_ours)
    return unet.to(dtypes.unet_base), ours


def build_vae(kind: str, device: torch.device, tiny: bool, dtypes: Dtypes) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A VAE (``kind`` ``"3d"`` or ``"video"``) with random weights: (baseline copy, ours copy)."""
    uav = load_uav()
    torch.manual_seed(1)
    with torch.device(device):
        vae = uav["AutoencoderKLVideo"].from_config(_config(f"vae_{kind}", tiny))
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
    return json.loads((PARITY / "scheduler_config_ddim_x4.json").read_text())


# ----------------------------------------------------------------------------- measurements
def count_window_flops(unet: torch.nn.Module, inputs: Inputs, window: int) -> int:
    """FLOPs of one CFG U-Net call on one ``window``-frame window (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    dtype = next(unet.parameters()).dtype
    w = min(window, inputs.x_t.shape[2])
    sample = torch.cat([inputs.x_t[:, :, :w]] * 2).to(dtype)
    lr = torch.cat([inputs.noisy_lr[:, :, :w]] * 2).to(dtype)
    labels = torch.full((2,), 120, dtype=torch.long, device=sample.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, torch.tensor(500, device=sample.device), lr, encoder_hidden_states=inputs.text.to(dtype),
             class_labels=labels)
    return int(counter.get_total_flops())


def measure_matmul_tflops(device: torch.device, n: int = 8192) -> float | None:
    """Achieved bf16 TFLOP/s of an ``n³`` matmul (CUDA only)."""
    if device.type != "cuda":
        return None
    a = torch.randn((n, n), device=device, dtype=torch.bfloat16)
    b = torch.randn((n, n), device=device, dtype=torch.bfloat16)
    dt, _ = timed_repeats(device, lambda: a @ b, warmup=3, timed=10)
    del a, b
    return 2 * n**3 / dt / 1e12


def window_call(unet: torch.nn.Module, inputs: Inputs, window: int) -> Callable[[], Tensor]:
    """A closure running one CFG window through ``unet`` (for the layout test)."""
    dtype = next(unet.parameters()).dtype
    w = min(window, inputs.x_t.shape[2])
    sample = torch.cat([inputs.x_t[:, :, :w]] * 2).to(dtype)
    lr = torch.cat([inputs.noisy_lr[:, :, :w]] * 2).to(dtype)
    text = inputs.text.to(dtype)
    labels = torch.full((2,), 120, dtype=torch.long, device=sample.device)
    t = torch.tensor(500, device=sample.device)

    def run() -> Tensor:
        with torch.no_grad():
            return unet(sample, t, lr, encoder_hidden_states=text, class_labels=labels).sample

    return run


def choose_layout(unet: torch.nn.Module, inputs: Inputs, device: torch.device, window: int) -> dict[str, Any]:
    """Time one window in each memory layout / autotuning variant; apply and return the fastest."""
    variants = [("nchw", False, False), ("nchw+cudnn_benchmark", False, True),
                ("channels_last+cudnn_benchmark", True, True)]
    if device.type != "cuda":
        variants = [("nchw", False, False), ("channels_last", True, False)]
    times: dict[str, float] = {}
    run = window_call(unet, inputs, window)
    for name, cl, bench in variants:
        set_conv_layout(unet, cl)
        with cudnn_benchmark(bench):
            times[name], _ = timed_repeats(device, run, warmup=1, timed=1)
    chosen = min(times, key=times.__getitem__)
    spec = {n: (cl, b) for n, cl, b in variants}[chosen]
    set_conv_layout(unet, spec[0])
    return {"window_s": times, "chosen": chosen, "channels_last": spec[0], "cudnn_benchmark": spec[1]}


@dataclass
class DenoiseTiming:
    step_s: float  # wall seconds per step
    unet_s: float  # U-Net seconds per step (CUDA events)
    peak_delta: int | None
    finite: bool
    unet_calls_per_step: int


def time_baseline_denoise(unet: torch.nn.Module, inputs: Inputs, settings: Settings,
                          device: torch.device, steps_timed: int) -> DenoiseTiming:
    """The published loop: fp16 latents, one call per window call, explicit attention."""
    uav = load_uav()
    bl = uav["baseline"]
    dtype = next(unet.parameters()).dtype
    sched = uav["OfficialDDIM"](ddim_config())
    timesteps = [int(t) for t in sched.set_timesteps(settings.steps)]
    plan = uav["official_segment_plan"](inputs.x_t.shape[2], settings.window)
    state = {"lat": inputs.x_t.to(dtype), "i": 0}
    lr_in = torch.cat([inputs.noisy_lr] * 2).to(dtype)
    text = inputs.text.to(dtype)

    def step() -> None:
        i = state["i"]
        state["lat"] = bl.published_step(unet, sched, state["lat"], lr_in, text, index=i, timestep=timesteps[i],
                                         calls=plan.calls, noise_level=settings.noise_level,
                                         guidance_scale=settings.guidance)
        state["i"] = i + 1

    clock = UNetClock(unet, device)
    mem = GpuMemory(device)
    mem.start()
    try:
        with torch.no_grad(), bl.eager_attention(), cudnn_benchmark(False):
            step_s, unet_s = timed_repeats(device, step, warmup=1, timed=steps_timed, clock=clock)
    finally:
        clock.remove()
    return DenoiseTiming(step_s, unet_s or 0.0, mem.peak_delta(), bool(torch.isfinite(state["lat"]).all()),
                         len(plan.calls))


def time_library_denoise(unet: torch.nn.Module, scheduler: Any, inputs: Inputs, plan: Any, settings: Settings,
                         device: torch.device, steps_timed: int, *, guided: bool = True, cudnn_bench: bool = False,
                         warmup: int = 1, window_batch: int | None = None) -> DenoiseTiming:
    """``uav.sampling.loop.denoise`` one step at a time (float32 latents, as the library keeps them)."""
    uav = load_uav()
    timesteps = [int(t) for t in scheduler.timesteps]
    text = inputs.text if guided else inputs.text[1:]
    wb = window_batch or len(plan.windows)
    state = {"lat": inputs.x_t.clone(), "i": getattr(scheduler, "_bench_index", 0)}

    def step() -> None:
        i = state["i"]
        state["lat"] = uav["denoise"](unet, scheduler, state["lat"], inputs.noisy_lr, text,
                                      noise_level=settings.noise_level, guidance_scale=settings.guidance, plan=plan,
                                      timesteps=[timesteps[i]], window_batch=wb)
        state["i"] = i + 1

    clock = UNetClock(unet, device)
    mem = GpuMemory(device)
    mem.start()
    try:
        with torch.no_grad(), cudnn_benchmark(cudnn_bench):
            step_s, unet_s = timed_repeats(device, step, warmup=warmup, timed=steps_timed, clock=clock)
    finally:
        clock.remove()
    # stateful schedulers (DPM-Solver) must see their steps in order across calls
    scheduler._bench_index = state["i"]
    calls = math.ceil(len(plan.windows) / wb)
    return DenoiseTiming(step_s, unet_s or 0.0, mem.peak_delta(), bool(torch.isfinite(state["lat"]).all()), calls)


def time_propagation(inputs: Inputs, settings: Settings, device: torch.device) -> float:
    """Seconds of one ``propagate_latents`` call on the whole clip (float32 x0, as in the loop)."""
    uav = load_uav()
    x0 = inputs.x_t.float()
    ff, fb = inputs.flows
    dt, _ = timed_repeats(device, lambda: uav["propagate_latents"](x0, ff, fb, fuse_scale=settings.fuse_scale),
                          warmup=1, timed=2)
    return dt


@dataclass
class DecodeTiming:
    decode_s_per_frame: float
    io_s_per_frame: float
    frames_timed: int
    peak_delta: int | None
    finite: bool
    note: str = ""


def time_decode(vae: torch.nn.Module, inputs: Inputs, settings: Settings, device: torch.device, *,
                published: bool, frames_limit: int, cudnn_bench: bool = False) -> DecodeTiming:
    """Decode 3-frame chunks (the first one untimed) and hand them to the host as uint8 frames.

    ``published``: after each chunk a float copy goes to the host and is converted there,
    truncating (as the published script); decode and I/O are timed apart. Otherwise the
    conversion runs on the GPU and the uint8 frames are copied into pinned buffers on a
    side stream, overlapping the next chunk's decode; the whole loop is timed and the
    I/O share is the wait for the last copy, the part not hidden behind decode. The VAE's
    attention is kept off SDPA's quadratic-memory fallback when a fused kernel takes it.
    """
    try:
        return _decode_pass(vae, inputs, settings, device, published=published, frames_limit=frames_limit,
                            cudnn_bench=cudnn_bench, guarded=not published)
    except RuntimeError as exc:
        if published or "kernel" not in str(exc).lower():
            raise
        timing = _decode_pass(vae, inputs, settings, device, published=published, frames_limit=frames_limit,
                              cudnn_bench=cudnn_bench, guarded=False)
        timing.note += f"; no fused SDPA kernel for the VAE attention ({exc}), default dispatch used"
        return timing


def _decode_pass(vae: torch.nn.Module, inputs: Inputs, settings: Settings, device: torch.device, *,
                 published: bool, frames_limit: int, cudnn_bench: bool, guarded: bool) -> DecodeTiming:
    uav = load_uav()
    # same shape and scale as final latents; the cost of the decoder does not depend on values
    chunks = uav["decode_chunks"](vae, inputs.x_t, inputs.lr, chunk=settings.decode_chunk)
    cuda = device.type == "cuda"
    copy_stream = torch.cuda.Stream(device) if cuda and not published else None
    slots: list[tuple[Tensor, Tensor, Any] | None] = [None, None]  # (pinned, source, done event)
    io_s = decode_s = 0.0
    timed_frames = 0
    n_chunk = 0
    last: Tensor | None = None
    finite = True
    mem = GpuMemory(device)
    guard = no_quadratic_attention(device) if guarded else contextlib.nullcontext()

    def to_host(frames: Tensor) -> None:
        if published:
            uav["baseline"].published_to_uint8(frames)
            return
        u8 = ((frames[0] + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous()
        if copy_stream is None:
            return
        k = n_chunk % 2
        slot = slots[k]
        if slot is not None:
            slot[2].synchronize()  # the copy that last used this pinned buffer is finished
        pinned = slot[0] if slot is not None and slot[0].shape == u8.shape else \
            torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True)
        ready = torch.cuda.Event()
        ready.record()
        done = torch.cuda.Event()
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(ready)
            pinned.copy_(u8, non_blocking=True)
            done.record(copy_stream)
        slots[k] = (pinned, u8, done)  # holding u8 keeps its memory from reuse until the copy is done

    mem.start()
    with torch.no_grad(), cudnn_benchmark(cudnn_bench), guard:
        # warm-up chunk: kernels load and cuDNN picks algorithms
        _, frames = next(chunks)
        to_host(frames)
        finite = bool(torch.isfinite(frames).all())
        n_chunk += 1
        sync(device)
        if copy_stream is not None:
            copy_stream.synchronize()
        loop_start = time.perf_counter()
        for _, frames in chunks:
            if published:
                sync(device)
                decode_s += time.perf_counter() - loop_start
                t1 = time.perf_counter()
                to_host(frames)
                io_s += time.perf_counter() - t1
                loop_start = time.perf_counter()
            else:
                to_host(frames)
            last = frames
            timed_frames += frames.shape[2]
            n_chunk += 1
            if frames_limit and timed_frames >= frames_limit:
                break
        if not published:
            # I/O overlaps decode; only the last copy's drain is left as I/O time
            sync(device)
            t1 = time.perf_counter()
            if copy_stream is not None:
                copy_stream.synchronize()
            io_s = time.perf_counter() - t1
            decode_s = t1 - loop_start
    if timed_frames == 0 or last is None:
        raise RuntimeError("decode: no chunk left to time after the warm-up chunk (clip too short)")
    finite = finite and bool(torch.isfinite(last).all())
    note = "" if published else "uint8 conversion on the GPU, copies to pinned memory on a side stream"
    return DecodeTiming(decode_s / timed_frames, io_s / timed_frames, timed_frames, mem.peak_delta(), finite, note)


def build_fast_scheduler(steps: int) -> tuple[Any, str]:
    """DPM-Solver++ for the fast preset: through the ``uav_schedulers`` adapter when importable,
    else diffusers' ``DPMSolverMultistepScheduler`` behind a minimal x0 / step wrapper."""
    cfg = ddim_config()
    try:
        from uav_schedulers.adapter import DiffusersSchedulerAdapter, build_diffusers_scheduler

        sched = DiffusersSchedulerAdapter(
            build_diffusers_scheduler("DPMSolverMultistepScheduler", cfg, algorithm_type="dpmsolver++"))
        how = "uav_schedulers.adapter (registry name dpmsolver++)"
    except Exception as exc:  # noqa: BLE001 - the plugin may be mid-change; the timing does not depend on it
        from diffusers import DPMSolverMultistepScheduler

        accepted = {"beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type",
                    "steps_offset", "trained_betas"}
        sched = _DirectSolver(DPMSolverMultistepScheduler.from_config(
            {k: v for k, v in cfg.items() if k in accepted}, algorithm_type="dpmsolver++"))
        how = f"diffusers DPMSolverMultistepScheduler directly (adapter unavailable: {type(exc).__name__}: {exc})"
    sched.set_timesteps(steps)
    return sched, how


class _DirectSolver:
    """Enough of :class:`uav.protocols.DenoisingScheduler` around a diffusers solver for timing."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.float()

    @property
    def timesteps(self) -> Tensor:
        return self.scheduler.timesteps

    def set_timesteps(self, n: int, device: Any = None) -> Tensor:
        self.scheduler.set_timesteps(n, device=device)
        return self.timesteps

    def predict_x0(self, v: Tensor, t: int, sample: Tensor) -> Tensor:
        a = float(self.alphas_cumprod[int(t)])
        return a**0.5 * sample - (1 - a) ** 0.5 * v

    def step(self, v: Tensor, t: int, sample: Tensor, x0: Tensor) -> Tensor:
        return self.scheduler.step(v, t, sample).prev_sample


def clip_stages(t: DenoiseTiming, d: DecodeTiming, *, frames: int, steps: int, flow_s: float | None,
                prop_s: float | None, n_prop: int) -> dict[str, float | None]:
    """Per-stage seconds for the whole clip from per-step, per-call and per-frame timings."""
    return {"flow": flow_s, "unet": t.unet_s * steps, "loop_other": (t.step_s - t.unet_s) * steps,
            "propagation": (prop_s or 0.0) * n_prop, "decode": d.decode_s_per_frame * frames,
            "io": d.io_s_per_frame * frames}


def summarise(frames: int, stages: dict[str, float | None], resident: int, peak_delta: int | None,
              **extra: Any) -> dict[str, Any]:
    """A configuration's totals from its per-stage seconds (``None`` stages count 0)."""
    total = sum(v for v in stages.values() if v is not None)
    out = {"s_per_frame": total / frames, "fps": frames / total if total else None, "total_s": total,
           "stages_s": stages, "resident_gib": resident / GIB,
           "peak_mem_gib": (resident + peak_delta) / GIB if peak_delta is not None else None,
           "working_set_gib": peak_delta / GIB if peak_delta is not None else None,
           "host_peak_rss_mib": host_peak_rss_mib()}
    out.update(extra)
    return out


# ----------------------------------------------------------------------------- one workload
class StageErrors:
    """Collects one traceback per failed stage; a failed stage never stops the others."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.errors: dict[str, str] = {}

    @contextlib.contextmanager
    def stage(self, name: str, verbose: bool = True) -> Iterator[None]:
        t0 = time.perf_counter()
        if verbose:
            print(f"[bench]   {name} ...", flush=True)
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - record and go on
            kind = "out of memory" if isinstance(exc, torch.cuda.OutOfMemoryError) else type(exc).__name__
            self.errors[name] = f"{kind}: {traceback.format_exc(limit=8)}"
            print(f"[bench]   {name} FAILED: {kind}: {exc}", flush=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            if verbose:
                print(f"[bench]   {name} done in {time.perf_counter() - t0:.1f} s", flush=True)


def run_workload(wl: Workload, models: Models, dtypes: Dtypes, settings: Settings, device: torch.device,
                 report: Report, key: str, budget: Budget, skip: Sequence[str] = (),
                 peak_tflops: float | None = None) -> dict[str, Any]:
    """Measure every configuration of one workload, saving the report after each stage."""
    uav = load_uav()
    entry: dict[str, Any] = report.data.setdefault(key, {}).setdefault(wl.name, {})
    entry.update(device=report.data.get("device"), lr=[wl.height, wl.width], out=list(wl.out_size),
                 frames=wl.frames, vae=f"vae_{wl.vae}", configs={})
    configs = entry["configs"]
    errs = StageErrors(device)
    T = wl.frames
    n_steps, n_prop = settings.steps, len(settings.propagation_steps)
    plan = uav["official_segment_plan"](T, settings.window)
    uniform = uav["uniform_segment_plan"](T, settings.window, overlap=0)
    entry["windows"] = {"official_calls": [list(c) for c in plan.calls],
                        "official_unique": [list(w) for w in plan.windows],
                        "uniform_overlap0": [list(w) for w in uniform.windows]}

    def save() -> None:
        if errs.errors:
            entry["errors"] = dict(errs.errors)
        report.save()

    inputs: Inputs | None = None
    with errs.stage("inputs+flow"):
        inputs = make_inputs(wl, device, models.unet_ours.config.cross_attention_dim, settings)
        entry["flow"] = {"seconds": inputs.flow_s, "note": inputs.flow_note}
    if inputs is None:
        save()
        return entry
    flow_s = inputs.flow_s

    flops: int | None = None
    if "flops" not in skip and not budget.exhausted():
        with errs.stage("flops"):
            flops = count_window_flops(models.unet_ours, inputs, settings.window)
            entry["unet_tflop_per_window"] = flops / 1e12
    save()

    layout = {"chosen": "nchw", "channels_last": False, "cudnn_benchmark": False, "measured": False}
    if "layout" not in skip and not budget.exhausted():
        with errs.stage("layout"):
            layout = {**choose_layout(models.unet_ours, inputs, device, settings.window), "measured": True}
    entry["layout"] = layout
    save()

    def mfu_fields(t: DenoiseTiming, windows_per_step: int) -> dict[str, Any]:
        if flops is None or not t.unet_s:
            return {}
        achieved = flops * windows_per_step / t.unet_s / 1e12
        return {"unet_tflops": achieved, "mfu": achieved / peak_tflops if peak_tflops else None}

    prop_s: float | None = None
    with errs.stage("propagation"):
        prop_s = time_propagation(inputs, settings, device)
        entry["propagation_s_per_call"] = prop_s

    per_clip = dict(frames=T, steps=n_steps, flow_s=flow_s, prop_s=prop_s, n_prop=n_prop)

    # ---------------------------------------------------------------- baseline
    base_t: DenoiseTiming | None = None
    with errs.stage("baseline.denoise"):
        base_t = time_baseline_denoise(models.unet_base, inputs, settings, device, settings.steps_timed)
    base_d: DecodeTiming | None = None
    with errs.stage("baseline.decode"):
        base_d = time_decode(models.vae_base[wl.vae], inputs, settings, device, published=True,
                             frames_limit=settings.decode_frames)
    if base_t is not None and base_d is not None:
        resident = module_bytes(models.unet_base) + module_bytes(models.vae_base[wl.vae])
        peak = _max_opt(base_t.peak_delta, base_d.peak_delta)
        configs["baseline"] = summarise(
            T, clip_stages(base_t, base_d, **per_clip), resident, peak, unet_s_per_step=base_t.unet_s,
            step_s=base_t.step_s, unet_calls_per_step=base_t.unet_calls_per_step,
            denoise_working_set_gib=_gib(base_t.peak_delta), decode_working_set_gib=_gib(base_d.peak_delta),
            finite=base_t.finite and base_d.finite, decode_frames_timed=base_d.frames_timed,
            dtypes={"unet": dtypes.unet_base, "vae": dtypes.vae_base},
            description="published structure: one U-Net call per window call, explicit attention, fp16 U-Net, "
                        "fp32 VAE, 3-frame decode chunks, host-side uint8",
            **mfu_fields(base_t, len(plan.calls)))
    save()

    # ---------------------------------------------------------------- ours
    ours_t: DenoiseTiming | None = None
    ours_wb = len(plan.windows)
    with errs.stage("ours.denoise"):
        while ours_t is None:
            sched = uav["OfficialDDIM"](ddim_config())
            sched.set_timesteps(n_steps)
            oom = False
            try:
                ours_t = time_library_denoise(models.unet_ours, sched, inputs, plan, settings, device,
                                              settings.steps_timed, cudnn_bench=layout["cudnn_benchmark"],
                                              window_batch=ours_wb)
            except torch.cuda.OutOfMemoryError:
                if ours_wb == 1:
                    raise
                oom = True
            if oom:
                # fewer windows per call: the same numbers with a smaller working set
                entry.setdefault("notes", []).append(f"ours: window_batch={ours_wb} ran out of memory; halved")
                ours_wb = max(1, ours_wb // 2)
                torch.cuda.empty_cache()
    ours_d: DecodeTiming | None = None
    with errs.stage("ours.decode"):
        # cuDNN autotuning of the decoder's full-resolution (3-D) convolutions would cost seconds
        # per shape for 6 timed frames; both decoders use the default heuristics
        ours_d = time_decode(models.vae_ours[wl.vae], inputs, settings, device, published=False,
                             frames_limit=settings.decode_frames)
    ours_resident = module_bytes(models.unet_ours) + module_bytes(models.vae_ours[wl.vae])
    if ours_t is not None and ours_d is not None:
        peak = _max_opt(ours_t.peak_delta, ours_d.peak_delta)
        configs["ours"] = summarise(
            T, clip_stages(ours_t, ours_d, **per_clip), ours_resident, peak, unet_s_per_step=ours_t.unet_s,
            step_s=ours_t.step_s, unet_calls_per_step=ours_t.unet_calls_per_step,
            denoise_working_set_gib=_gib(ours_t.peak_delta),
            decode_working_set_gib=_gib(ours_d.peak_delta), finite=ours_t.finite and ours_d.finite,
            decode_frames_timed=ours_d.frames_timed, dtypes={"unet": dtypes.unet_ours, "vae": dtypes.vae_ours},
            description=f"library loop (uav.sampling.loop.denoise), window_batch={ours_wb} "
                        f"(all windows of a step in one call, duplicates folded), SDPA, layout {layout['chosen']}, "
                        f"{_name(dtypes.unet_ours)} U-Net, {_name(dtypes.vae_ours)} VAE, decode without the O(n^2) "
                        f"SDPA fallback, GPU uint8 + overlapped copy; same numerics as the baseline",
            decode_note=ours_d.note, **mfu_fields(ours_t, len(plan.windows)))
    _ratios(entry)
    save()

    # ---------------------------------------------------------------- fast preset
    # the fast preset is one of the keys: it keeps running a little past the budget
    if "fast" not in skip and not budget.exhausted(grace_s=30.0) and ours_d is not None:
        with errs.stage("fast.denoise"):
            sched, how = build_fast_scheduler(settings.fast_steps)
            cfg_t = time_library_denoise(models.unet_ours, sched, inputs, plan, settings, device, 1, guided=True,
                                         cudnn_bench=layout["cudnn_benchmark"], window_batch=ours_wb)
            nocfg_t = time_library_denoise(models.unet_ours, sched, inputs, plan, settings, device, 1, guided=False,
                                           cudnn_bench=layout["cudnn_benchmark"], window_batch=ours_wb)
            n_cfg, n_all = settings.fast_cfg_steps, settings.fast_steps
            n_plain = n_all - n_cfg
            unet_total = cfg_t.unet_s * n_cfg + nocfg_t.unet_s * n_plain
            step_total = cfg_t.step_s * n_cfg + nocfg_t.step_s * n_plain
            peak = _max_opt(_max_opt(cfg_t.peak_delta, nocfg_t.peak_delta), ours_d.peak_delta)
            configs["fast"] = summarise(
                T, {"flow": flow_s, "unet": unet_total, "loop_other": step_total - unet_total,
                    "propagation": (prop_s or 0.0) * len(settings.fast_propagation_steps),
                    "decode": ours_d.decode_s_per_frame * T, "io": ours_d.io_s_per_frame * T},
                ours_resident, peak, unet_s_per_step=unet_total / n_all, step_s=step_total / n_all,
                finite=cfg_t.finite and nocfg_t.finite, scheduler=how,
                description=f"ours + DPM-Solver++ {n_all} steps, guidance {settings.guidance} on the first {n_cfg} "
                            f"steps and none after, propagation at {list(settings.fast_propagation_steps)}; "
                            "different numerics (a preset, not a replay)",
                guided_step_s=cfg_t.step_s, unguided_step_s=nocfg_t.step_s)
        _ratios(entry)
        save()

    # ---------------------------------------------------------------- uniform windows
    if "uniform" not in skip and not budget.exhausted() and ours_d is not None:
        with errs.stage("uniform.denoise"):
            sched = uav["OfficialDDIM"](ddim_config())
            sched.set_timesteps(n_steps)
            uni_t = time_library_denoise(models.unet_ours, sched, inputs, uniform, settings, device,
                                         max(1, settings.steps_timed - 1), cudnn_bench=layout["cudnn_benchmark"],
                                         window_batch=min(ours_wb, len(uniform.windows)))
            peak = _max_opt(uni_t.peak_delta, ours_d.peak_delta)
            configs["ours_uniform"] = summarise(
                T, clip_stages(uni_t, ours_d, **per_clip), ours_resident, peak, unet_s_per_step=uni_t.unet_s,
                step_s=uni_t.step_s, finite=uni_t.finite,
                description=f"ours with the opt-in uniform window rule, overlap 0: windows "
                            f"{[list(w) for w in uniform.windows]} (vs {len(plan.windows)} official); different "
                            "numerics (a hard window seam)",
                **mfu_fields(uni_t, len(uniform.windows)))
        _ratios(entry)
        save()

    # ---------------------------------------------------------------- ablation: what batching buys
    if "ablation" not in skip and not budget.exhausted():
        with errs.stage("ablation.unbatched"):
            sched = uav["OfficialDDIM"](ddim_config())
            sched.set_timesteps(n_steps)
            ab = time_library_denoise(models.unet_ours, sched, inputs, plan, settings, device, 1,
                                      cudnn_bench=layout["cudnn_benchmark"], window_batch=1)
            peak = _max_opt(ab.peak_delta, ours_d.peak_delta if ours_d is not None else None)
            entry["ablation"] = {
                "ours_window_batch1_step_s": ab.step_s, "ours_window_batch1_unet_s": ab.unet_s,
                "ours_window_batch1_peak_mem_gib": (ours_resident + peak) / GIB if peak is not None else None,
                "note": "ours with one U-Net call per window: what bf16 + SDPA + layout give without batching, "
                        "and the peak memory of that lower-memory setting"}
        save()
    return entry


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _gib(value: int | None) -> float | None:
    return None if value is None else value / GIB


def _max_opt(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def _ratios(entry: dict[str, Any]) -> None:
    """The issue's per-workload keys: speedup / peak_mem_ratio (ours), fast_*, uniform_*."""
    configs = entry.get("configs", {})
    base = configs.get("baseline")
    if not base:
        return
    for cname, prefix in (("ours", ""), ("fast", "fast_"), ("ours_uniform", "uniform_")):
        c = configs.get(cname)
        if not c:
            continue
        entry[f"{prefix}speedup"] = base["s_per_frame"] / c["s_per_frame"]
        if c.get("peak_mem_gib") and base.get("peak_mem_gib"):
            entry[f"{prefix}peak_mem_ratio"] = c["peak_mem_gib"] / base["peak_mem_gib"]
        bu = base["stages_s"].get("unet", 0.0) + base["stages_s"].get("loop_other", 0.0)
        cu = c["stages_s"].get("unet", 0.0) + c["stages_s"].get("loop_other", 0.0)
        if cu:
            entry[f"{prefix}denoise_speedup"] = bu / cu


# ----------------------------------------------------------------------------- smoke
def smoke_real_models(models: Models, device: torch.device, workloads: Sequence[Workload]) -> dict[str, Any]:
    """One small call of each real-size network in each dtype: outputs must be finite."""
    uav = load_uav()
    out: dict[str, Any] = {}
    g = torch.Generator().manual_seed(5)
    sample = torch.randn((2, 4, 8, 32, 48), generator=g).to(device)
    lr = torch.randn((2, 3, 8, 32, 48), generator=g).clamp(-1, 1).to(device)
    text = torch.randn((2, 77, models.unet_ours.config.cross_attention_dim), generator=g).to(device)
    labels = torch.full((2,), 120, dtype=torch.long, device=device)
    t = torch.tensor(500, device=device)
    with torch.no_grad():
        for name, unet, ctx in (("unet_base_eager", models.unet_base, uav["baseline"].eager_attention()),
                                ("unet_ours_sdpa", models.unet_ours, contextlib.nullcontext())):
            dt = next(unet.parameters()).dtype
            with ctx:
                y = unet(sample.to(dt), t, lr.to(dt), encoder_hidden_states=text.to(dt), class_labels=labels).sample
            out[name] = {"finite": bool(torch.isfinite(y).all()), "abs_max": float(y.float().abs().max())}
        z = torch.randn((1, 4, 3, 16, 24), generator=g).to(device)
        img = torch.randn((1, 3, 3, 16, 24), generator=g).clamp(-1, 1).to(device)
        for kind in sorted({w.vae for w in workloads}):
            for name, vae in ((f"vae_{kind}_base", models.vae_base[kind]), (f"vae_{kind}_ours", models.vae_ours[kind])):
                dt = next(vae.parameters()).dtype
                y = vae.decode(z.to(dt) / 0.08333, img.to(dt)).sample
                out[name] = {"finite": bool(torch.isfinite(y).all()), "abs_max": float(y.float().abs().max())}
    sync(device)
    out["ok"] = all(v["finite"] for v in out.values() if isinstance(v, dict))
    return out


# ----------------------------------------------------------------------------- compile stage
def run_compile(args: argparse.Namespace, device: torch.device, settings: Settings) -> int:
    """``ours`` with ``torch.compile``: compile time, then the step time beside eager ``ours``.

    Runs in its own process (``gpu_run.sh`` bounds it with ``timeout``) and merges its
    result into ``bench.json`` in ``--out``, saving after each phase. The eager step time
    is the main run's ``ours`` (same card, minutes earlier) when present, else measured here.
    """
    report = Report.load(Path(args.out))
    name = args.workloads[0]
    wl = (TINY_WORKLOADS if args.tiny else WORKLOADS)[name]
    comp: dict[str, Any] = {"workload": name, "mode": args.compile_mode, "status": "started",
                            "device": _device_name(device)}
    report.data.setdefault("device", comp["device"])
    report.data["compile"] = comp
    report.save()
    uav = load_uav()
    dtypes = Dtypes.for_device(device)
    torch.manual_seed(0)
    with torch.device(device):
        unet = uav["UNetVideoModel"].from_config(_config("unet", args.tiny))
    unet = unet.eval().requires_grad_(False).to(dtypes.unet_ours)
    inputs = make_inputs(wl, device, unet.config.cross_attention_dim, settings)
    plan = uav["official_segment_plan"](wl.frames, settings.window)
    done = report.data.get("workloads", {}).get(name, {})
    layout = done.get("layout", {})
    cl = bool(layout.get("channels_last", False))
    bench_flag = bool(layout.get("cudnn_benchmark", device.type == "cuda"))
    set_conv_layout(unet, cl)
    comp["layout"] = layout.get("chosen", "nchw+cudnn_benchmark" if bench_flag else "nchw")
    ours = done.get("configs", {}).get("ours")
    wb = len(plan.windows)

    def scheduler() -> Any:
        sched = uav["OfficialDDIM"](ddim_config())
        sched.set_timesteps(settings.steps)
        return sched

    if ours and ours.get("step_s"):
        comp["eager_step_s"] = ours["step_s"]
        comp["eager_source"] = "main run (ours)"
    else:
        eager = time_library_denoise(unet, scheduler(), inputs, plan, settings, device, args.steps_timed,
                                     cudnn_bench=bench_flag, window_batch=wb)
        comp["eager_step_s"] = eager.step_s
        comp["eager_source"] = "measured in this process"
    report.save()
    for knob in ("recompile_limit", "cache_size_limit"):  # the name changed across releases
        if isinstance(getattr(torch._dynamo.config, knob, None), int):
            setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 32))
    compiled = torch.compile(unet, mode=args.compile_mode, dynamic=False)
    sched = scheduler()
    t0 = time.perf_counter()
    first = time_library_denoise(compiled, sched, inputs, plan, settings, device, 1, cudnn_bench=bench_flag,
                                 warmup=0, window_batch=wb)
    comp["first_step_s"] = time.perf_counter() - t0
    comp["compile_s"] = max(0.0, first.step_s - comp["eager_step_s"])
    comp["status"] = "compiled"
    report.save()
    timed = time_library_denoise(compiled, sched, inputs, plan, settings, device, args.steps_timed,
                                 cudnn_bench=bench_flag, warmup=1, window_batch=wb)
    comp.update(compiled_step_s=timed.step_s, compiled_unet_s=timed.unet_s,
                step_speedup=comp["eager_step_s"] / timed.step_s, finite=timed.finite, status="done")
    base = done.get("configs", {}).get("baseline")
    if ours:
        stages = dict(ours["stages_s"])
        stages["unet"] = timed.unet_s * settings.steps
        stages["loop_other"] = (timed.step_s - timed.unet_s) * settings.steps
        total = sum(v for v in stages.values() if v is not None)
        comp["s_per_frame"] = total / wl.frames
        comp["stages_s"] = stages
        if base:
            comp["speedup"] = base["s_per_frame"] / comp["s_per_frame"]
            if ours.get("peak_mem_gib") and base.get("peak_mem_gib"):
                comp["note"] = "ours with the compiled U-Net step; decode, flow, propagation as measured for ours"
    report.save()
    print(f"[bench] compile: {comp['compile_s']:.1f} s, step {timed.step_s:.3f} s vs eager "
          f"{comp['eager_step_s']:.3f} s", flush=True)
    return 0


# ----------------------------------------------------------------------------- memory model
def _clip_state(frames: int, th: int, tw: int, window: int, stride: int) -> dict[str, dict[str, int]]:
    """Clip-length GPU tensors of one tile (``th x tw`` latent pixels) of the current loop."""
    n = frames * th * tw
    calls = len(range(0, frames, stride)) if frames > window else 1
    cover = calls * min(window, frames) / frames  # window frames per clip frame
    one = n * 4 * 4  # one fp32 4-channel clip-length tensor
    alive = {  # held from the start of the tile to its end
        "initial_latents_fp32 (caller's copy)": one,
        "clean_low_res_fp32": n * 3 * 4,
        "noisy_low_res_fp32": n * 3 * 4,
        "cfg_low_res_fp16": n * 3 * 2 * 2,
        "flows_fp32 (forward + backward)": (frames - 1) * th * tw * 2 * 2 * 4,
        "latents_fp32": one,
        "cfg_latents_fp16": n * 4 * 2 * 2,
        "window_predictions_fp16": int(n * cover * 4 * 2 * 2),
    }
    merge = {"window_predictions_fp32_copies": int(n * cover * 4 * 2 * 4), "merged_v_fp32": 2 * one}
    step_end = {"merged_v_fp32 (kept by the CFG chunks)": 2 * one,
                "guided_v + x0 + two scheduler temporaries + next latents (fp32)": 5 * one}
    return {"alive": alive, "merge": merge, "step_end": step_end}


def _peak(state: dict[str, dict[str, int]]) -> int:
    base = sum(state["alive"].values())
    return base + max(sum(state["merge"].values()), sum(state["step_end"].values()))


def memory_model(frames: int = 1800, height: int = 480, width: int = 854, *, card_gib: float = 24.0,
                 activations_gib: float = 6.0, window: int = 8, stride: int = 6) -> dict[str, Any]:
    """Bytes the current whole-clip loop keeps for a clip, per tile on the GPU and on the host.

    Defaults: one minute of 854x480 at 30 fps (1800 frames) with the published settings
    (fp16 U-Net, fp32 VAE, guidance on, official windows, tiles as the published rule cuts
    480x854). Counts the tensors of ``VideoUpscaler._generate`` and
    ``uav.sampling.loop.denoise`` that span the whole clip and are alive at once during
    the window merge or at the end of a step; the weights and the U-Net's per-window
    activations (``activations_gib``: the baseline's denoise working set in bench.json)
    come on top. ``max_frames_on_card`` is the longest clip whose peak fits ``card_gib``.
    """
    from uav.sampling.tiling import official_tile_plan

    tiles = official_tile_plan(height, width)
    areas = [((t.region[1] - t.region[0]) * (t.region[3] - t.region[2]), t.region) for t in tiles]
    r = max(areas)[1]
    th, tw = r[1] - r[0], r[3] - r[2]
    weights = {"unet_fp16": 691_036_436 * 2, "vae_3d_fp32": 55_325_927 * 4}
    fixed = sum(weights.values()) + activations_gib * GIB
    state = _clip_state(frames, th, tw, window, stride)
    peak_state = _peak(state)
    lo, hi = 0, 1
    while fixed + _peak(_clip_state(hi + 1, th, tw, window, stride)) <= card_gib * GIB and hi < 10**7:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # largest frame count whose peak fits the card
        mid = (lo + hi) // 2
        if fixed + _peak(_clip_state(mid + 1, th, tw, window, stride)) <= card_gib * GIB:
            lo = mid
        else:
            hi = mid
    max_frames = lo + 1 if fixed + _peak(_clip_state(lo + 1, th, tw, window, stride)) <= card_gib * GIB else 0
    hw = height * width
    host = {
        "low_res_clip_fp32": frames * hw * 3 * 4,
        "low_res_noise_fp32": frames * hw * 3 * 4,
        "initial_latents_fp32": frames * hw * 4 * 4,
        "flows_fp32": (frames - 1) * hw * 2 * 2 * 4,
        "finished_tile_latents_fp32": sum(frames * a * 16 for a, _ in areas),
    }
    clip_state = {**state["alive"], **{f"merge: {k}": v for k, v in state["merge"].items()},
                  **{f"step end: {k}": v for k, v in state["step_end"].items()}}
    return {
        "frames": frames, "low_res": [height, width], "tiles": len(tiles), "largest_tile": [th, tw],
        "gpu_weights_bytes": weights, "gpu_clip_state_bytes": clip_state,
        "gpu_clip_state_peak_gib": peak_state / GIB, "activations_gib": activations_gib,
        "gpu_peak_gib": (peak_state + fixed) / GIB, "gpu_bytes_per_frame": peak_state / frames,
        "card_gib": card_gib, "max_frames_on_card": max_frames,
        "host_bytes": host, "host_total_gib": sum(host.values()) / GIB,
    }


# ----------------------------------------------------------------------------- main
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny test configs and 1/8-size clips (seconds on a CPU)")
    p.add_argument("--steps-timed", type=int, default=2, help="timed denoising steps per configuration (>= 1)")
    p.add_argument("--decode-frames", type=int, default=6,
                   help="frames whose decode is timed after the warm-up chunk (0 = every remaining frame)")
    p.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results/local)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--smoke", action="store_true",
                   help="first run every stage on tiny models on the same device, and check the real networks "
                        "give finite outputs; stop if a core stage fails")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="skip optional stages once this many seconds have passed (0 = no limit)")
    p.add_argument("--skip", nargs="*", default=[], choices=list(OPTIONAL_STAGES), help="optional stages to skip")
    p.add_argument("--compile", action="store_true",
                   help="only the torch.compile stage (first workload), merged into an existing bench.json")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode for --compile")
    p.add_argument("--memory-model", action="store_true", help="print the 1-minute 480p memory model and exit")
    args = p.parse_args(argv)
    if args.steps_timed < 1:
        p.error(f"--steps-timed must be >= 1, got {args.steps_timed}")
    if args.decode_frames < 0:
        p.error(f"--decode-frames must be >= 0, got {args.decode_frames}")
    if args.out is None:
        args.out = os.environ.get("OUT") or str(HERE / "results" / "local")
    return args


def _resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch; use --device cpu --tiny")
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device must be cuda or cpu, got {name!r}")
    return device


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 when the smoke step fails, 1 on other failures."""
    args = parse_args(argv)
    if args.memory_model:
        print(json.dumps(memory_model(), indent=1))
        return 0
    device = _resolve_device(args.device)
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("the real-size networks need a GPU: pass --device cuda, or --tiny on a CPU")
    settings = Settings(steps_timed=args.steps_timed, decode_frames=args.decode_frames)
    if args.compile:
        return run_compile(args, device, settings)
    budget = Budget(args.budget_s)
    report = Report(Path(args.out))
    selected = [(TINY_WORKLOADS if args.tiny else WORKLOADS)[n] for n in args.workloads]
    uav = load_uav()
    peak = datasheet_tflops(_device_name(device))
    report.data.update(
        schema=1, device=_device_name(device), torch=torch.__version__, cuda=torch.version.cuda,
        diffusers=uav["diffusers"].__version__, python=platform.python_version(), tiny=args.tiny,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), datasheet_bf16_tflops=peak,
        settings={**_jsonable(asdict(settings)), "frames": sorted({w.frames for w in selected})}, workloads={},
        import_note=uav.get("import_note"))
    report.save()
    print(f"[bench] {report.data['device']}, torch {torch.__version__}, diffusers {report.data['diffusers']}, "
          f"out {args.out}", flush=True)

    if args.smoke:
        t0 = time.perf_counter()
        dtypes = Dtypes.for_device(device)
        tiny_models = _build_models(device, True, dtypes, selected)
        tiny_settings = Settings(steps_timed=1, decode_frames=3)
        for wl in [TINY_WORKLOADS[n] for n in args.workloads]:
            run_workload(wl, tiny_models, dtypes, tiny_settings, device, report, "smoke", Budget(0), skip=args.skip)
        core = ("inputs+flow", "baseline.denoise", "baseline.decode", "ours.denoise", "ours.decode")
        failed = {f"{wl}:{k}": v for wl, e in report.data["smoke"].items() if isinstance(e, dict)
                  for k, v in e.get("errors", {}).items() if k in core}
        report.data["smoke_s"] = time.perf_counter() - t0
        report.data["smoke_ok"] = not failed
        report.save()
        del tiny_models
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if failed:
            print("[bench] smoke step FAILED in core stages:\n" + "\n".join(f"{k}: {v}" for k, v in failed.items()),
                  flush=True)
            return 2
        print(f"[bench] smoke step ok ({report.data['smoke_s']:.1f} s)", flush=True)

    dtypes = Dtypes.for_device(device)
    t0 = time.perf_counter()
    models = _build_models(device, args.tiny, dtypes, selected)
    report.data["build_s"] = time.perf_counter() - t0
    report.data["params"] = {"unet": sum(p.numel() for p in models.unet_ours.parameters()),
                             **{f"vae_{k}": sum(p.numel() for p in v.parameters()) for k, v in models.vae_ours.items()}}
    checks = StageErrors(device)
    if args.smoke:
        with checks.stage("smoke_real_models"):
            report.data["smoke_real_models"] = smoke_real_models(models, device, selected)
    if "flops" not in args.skip:
        with checks.stage("matmul"):
            report.data["matmul_bf16_tflops"] = measure_matmul_tflops(device)
    if checks.errors:
        report.data["errors"] = checks.errors
    report.save()
    # every workload's core stages run even past --budget-s (which only drops optional
    # stages); gpu_run.sh bounds the whole process, and results are saved stage by stage
    for wl in selected:
        print(f"[bench] workload {wl.name}: {wl.frames} frames {wl.height}x{wl.width} -> "
              f"{wl.out_size[0]}x{wl.out_size[1]}, vae_{wl.vae} ({budget.elapsed():.0f} s elapsed)", flush=True)
        run_workload(wl, models, dtypes, settings, device, report, "workloads", budget, skip=args.skip,
                     peak_tflops=peak)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.data["elapsed_s"] = budget.elapsed()
    report.save()
    print(markdown_table(report.data), flush=True)
    ok = all("ours" in w.get("configs", {}) and "baseline" in w.get("configs", {})
             for w in report.data["workloads"].values())
    return 0 if ok else 1


def _build_models(device: torch.device, tiny: bool, dtypes: Dtypes, workloads: Sequence[Workload]) -> Models:
    base, ours = build_unet(device, tiny, dtypes)
    models = Models(base, ours)
    for kind in sorted({w.vae for w in workloads}):
        models.vae_base[kind], models.vae_ours[kind] = build_vae(kind, device, tiny, dtypes)
    return models


if __name__ == "__main__":
    sys.exit(main())
