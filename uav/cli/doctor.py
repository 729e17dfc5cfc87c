"""``uav doctor``: what this installation can do (versions, GPUs, FFmpeg, weights, plugins)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Annotated, Any

import typer

from uav.cli.app import app
from uav.cli.common import handle_errors, print_json, quiet_libraries

#: distributions whose versions the report lists
PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "safetensors", "huggingface_hub", "av", "numpy",
            "opencv-python-headless", "pillow", "opentimelineio", "pluggy", "typer", "rich")
#: FFmpeg encoders behind the writer's codecs
ENCODERS = {"h264": "libx264", "h265": "libx265", "prores_hq": "prores_ks", "prores_4444": "prores_ks",
            "png": "png", "tiff": "tiff", "audio (aac)": "aac"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _memory_total() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def torch_report() -> dict[str, Any]:
    """torch build, CUDA availability, each GPU's name and memory, MPS, CPU threads."""
    import torch

    report: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu_threads": torch.get_num_threads(),
    }
    if report["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpu: dict[str, Any] = {"index": index, "name": props.name, "total_memory": int(props.total_memory),
                                   "capability": f"{props.major}.{props.minor}",
                                   "bf16": bool(torch.cuda.is_bf16_supported()) if index == 0 else None}
            try:
                free, _ = torch.cuda.mem_get_info(index)
                gpu["free_memory"] = int(free)
            except RuntimeError:  # a busy or exclusive-mode GPU: total memory is still useful
                gpu["free_memory"] = None
            report["gpus"].append(gpu)
    return report


def ffmpeg_report() -> dict[str, Any]:
    """PyAV, the FFmpeg it carries (library versions) and which encoders the writer can use."""
    import av

    libs = {name: ".".join(str(p) for p in version) for name, version in av.library_versions.items()}
    available = set(av.codecs_available)
    return {
        "pyav": av.__version__,
        "ffmpeg": str(getattr(av, "ffmpeg_version_info", "") or "") or None,
        "libraries": libs,
        "encoders": {codec: encoder in available for codec, encoder in ENCODERS.items()},
    }


def plugins_report() -> list[dict[str, Any]]:
    """Each plugin's name, status and component counts (``uav plugins`` has the details)."""
    from uav.registry import default_registry

    out = []
    for info in default_registry().list_plugins():
        out.append({"name": info.name, "status": info.status, "version": info.version,
                    "components": {kind: list(names) for kind, names in info.components.items()},
                    "errors": list(info.errors)})
    return out


def doctor_report() -> dict[str, Any]:
    """Everything ``uav doctor`` prints, as plain data; ``problems`` lists what stops an upscale."""
    import uav
    from uav.cli.weights import search_report

    report: dict[str, Any] = {
        "uav": uav.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "memory_total": _memory_total(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch": torch_report(),
        "ffmpeg": ffmpeg_report(),
        "weights": search_report(),
        "plugins": plugins_report(),
    }
    problems, notes = [], []
    if report["weights"]["selected"] is None:
        problems.append("no Upscale-A-Video weights found: see docs/weights.md (or run `uav upscale INPUT "
                        "--self-check` to test the installation)")
    elif any(e.get("tiny_random") and e["path"] == report["weights"]["selected"]
             for e in report["weights"]["search_order"]):
        problems.append(f"{report['weights']['selected']} holds tiny RANDOM self-check networks, not the release")
    if not report["ffmpeg"]["encoders"]["h264"]:
        problems.append("this FFmpeg has no libx264: use --codec prores_hq, png or tiff")
    if not report["torch"]["cuda_available"] and not report["torch"]["mps_available"]:
        notes.append("no GPU: the released model runs on the CPU but very slowly (minutes per frame)")
    for plugin in report["plugins"]:
        if plugin["status"] in ("failed", "partial"):
            problems.append(f"plugin {plugin['name']} {plugin['status']}: {'; '.join(plugin['errors'])}")
    report["problems"] = problems
    report["notes"] = notes
    return report


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="uav doctor", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("uav", report["uav"])
    table.add_row("Python", f"{report['python']} ({report['platform']})")
    table.add_row("CPU / RAM", f"{report['cpu_count']} cores, {_gib(report['memory_total'])}; torch uses "
                               f"{report['torch']['cpu_threads']} threads")
    t = report["torch"]
    table.add_row("torch", f"{t['version']} (CUDA build: {t['cuda_build'] or 'none'})")
    if t["gpus"]:
        for gpu in t["gpus"]:
            table.add_row(f"GPU {gpu['index']}", f"{gpu['name']}, {_gib(gpu['total_memory'])} total, "
                                                 f"{_gib(gpu.get('free_memory'))} free, compute {gpu['capability']}")
    else:
        table.add_row("GPU", "[yellow]none available[/yellow]" + (" (Apple MPS available)" if t["mps_available"]
                                                                   else ""))
    f = report["ffmpeg"]
    encoders = ", ".join(f"{c} {'ok' if ok else 'MISSING'}" for c, ok in f["encoders"].items())
    table.add_row("PyAV / FFmpeg", f"PyAV {f['pyav']}, FFmpeg {f['ffmpeg'] or '?'} (libavcodec "
                                   f"{f['libraries'].get('libavcodec', '?')})")
    table.add_row("encoders", encoders)
    table.add_row("packages", ", ".join(f"{k} {v or '[red]missing[/red]'}" for k, v in report["packages"].items()
                                        if k not in ("torch", "av")))
    w = report["weights"]
    for entry in w["search_order"]:
        if not entry["exists"]:
            state = "[dim]not there[/dim]"
        elif entry["tiny_random"]:
            state = "[bold red]tiny RANDOM self-check weights[/bold red]"
        elif entry["usable"]:
            state = "[green]usable[/green]"
        else:
            state = f"[yellow]incomplete: missing {', '.join(entry['missing'])}[/yellow]"
        table.add_row("weights", f"{escape(entry['path'])}: {state}")
    plugins = ", ".join(f"{p['name']} ({p['status']})" for p in report["plugins"]) or "none"
    table.add_row("plugins", plugins)
    console.print(table)
    for note in report["notes"]:
        console.print(f"[dim]note:[/dim] {note}")
    for problem in report["problems"]:
        console.print(f"[yellow]problem:[/yellow] {escape(problem)}")
    if not report["problems"]:
        console.print("[green]ready to upscale[/green]")


@app.command("doctor")
def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.")] = False,
) -> None:
    """Check the installation: versions, GPUs and memory, FFmpeg, weights found, plugins.

    Problems that would stop an upscale are listed at the end; the exit code is 0 either way.
    """
    quiet_libraries(debug)
    with handle_errors(debug=debug, as_json=as_json):
        report = doctor_report()
    if as_json:
        print_json(report)
    else:
        _print(report)
