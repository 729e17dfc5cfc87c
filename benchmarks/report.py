"""The results: ``bench.json`` and the markdown table ``bench.md`` that names the card."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from benchmarks.clocks import GIB, host_peak_rss_mib

__all__ = ["Report", "jsonable", "markdown_table", "summarise"]


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
        _atomic_write(self.out / "bench.json", json.dumps(jsonable(self.data), indent=1) + "\n")
        _atomic_write(self.out / "bench.md", markdown_table(self.data))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types left (non-finite floats become ``None``, dtypes their names)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
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
        bits = [f"speedup {_fmt(wl.get('speedup'))} (default vs baseline)",
                f"peak_mem_ratio {_fmt(wl.get('peak_mem_ratio'))}",
                f"max |Δ| latents {_fmt(wl.get('max_abs_diff_latents'), 4)}",
                f"bf16_speedup {_fmt(wl.get('bf16_speedup'))}",
                f"fast_speedup {_fmt(wl.get('fast_speedup'))}", f"uniform_speedup {_fmt(wl.get('uniform_speedup'))}",
                f"predicted_peak_gib {_fmt(wl.get('predicted_peak_gib'))}",
                f"measured_peak_gib {_fmt(wl.get('measured_peak_gib'))}", f"compile_s {_fmt(wl.get('compile_s'), 1)}",
                f"GPU host syncs per default step {_fmt(wl.get('gpu_host_syncs_per_step'))}"]
        if wl.get("compile"):
            bits.append(f"compile {wl['compile']}")
        if wl.get("layout"):
            bits.append(f"layout {wl['layout'].get('chosen')}")
        if wl.get("unet_tflop_per_window") is not None:
            bits.append(f"{_fmt(wl['unet_tflop_per_window'], 1)} TFLOP per CFG window")
        lines.append(f"- {name}: " + ", ".join(bits))
        ab = wl.get("ablation")
        if ab:
            lines.append(f"  - bf16 with one U-Net call per window: "
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
