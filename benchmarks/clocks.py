"""Measuring tools: wall-clock budget, CUDA-event U-Net clock, peak GPU memory, stage errors."""

from __future__ import annotations

import contextlib
import platform
import sys
import time
import traceback
from typing import Any, Callable, Iterator

import torch

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

__all__ = [
    "GIB", "MIB", "DATASHEET_TFLOPS", "Budget", "sync", "module_bytes", "host_peak_rss_mib", "datasheet_tflops",
    "device_name", "UNetClock", "GpuMemory", "timed_repeats", "cudnn_benchmark", "StageErrors",
    "measure_matmul_tflops",
]


def device_name(device: torch.device) -> str:
    """The card's name (CUDA) or the CPU's, as results name the machine."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


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


def measure_matmul_tflops(device: torch.device, n: int = 8192) -> float | None:
    """Achieved bf16 TFLOP/s of an ``n³`` matmul (CUDA only)."""
    if device.type != "cuda":
        return None
    a = torch.randn((n, n), device=device, dtype=torch.bfloat16)
    b = torch.randn((n, n), device=device, dtype=torch.bfloat16)
    dt, _ = timed_repeats(device, lambda: a @ b, warmup=3, timed=10)
    del a, b
    return 2 * n**3 / dt / 1e12
