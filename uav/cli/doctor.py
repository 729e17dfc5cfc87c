"""``uav doctor``: what this installation can do (versions, GPUs, FFmpeg, weights, plugins),
and with ``--memory IN`` whether a clip fits the GPU at the given settings (:mod:`uav.memory`)."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uav.cli.app import app
from uav.cli.common import UserError, handle_errors, print_json, quiet_libraries
from uav.cli.options import DtypeOpt, VaeOpt, WeightsOpt, settings_from_options, with_setting_options
from uav.cli.preflight import check_vae, find_weights, parse_dtype

#: distributions whose versions the report lists
PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "safetensors", "huggingface_hub", "av", "numpy",
            "opencv-python-headless", "pillow", "opentimelineio", "pluggy", "typer", "rich", "openexr")
#: FFmpeg encoders behind the writer's codecs
ENCODERS = {"h264": "libx264", "h265": "libx265", "prores_hq": "prores_ks", "prores_4444": "prores_ks",
            "png": "png", "tiff": "tiff", "dpx": "dpx", "dnxhr": "dnxhd", "audio (aac)": "aac"}


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

    return [{"name": info.name, "status": info.status, "version": info.version,
             "components": {kind: list(names) for kind, names in info.components.items()},
             "errors": list(info.errors)} for info in default_registry().list_plugins()]


def doctor_report(weights: Path | None = None) -> dict[str, Any]:
    """Everything ``uav doctor`` prints, as plain data; ``problems`` lists what stops an upscale.
    ``weights``: the folder ``--weights`` names (default: the search order of ``uav upscale``)."""
    import uav
    from uav.cli.weights import describe_folder, search_report

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
    if weights is not None:
        entry = describe_folder(weights.expanduser())
        report["weights"] = {**report["weights"], "search_order": [entry],
                             "selected": entry["path"] if entry.get("usable") else None, "given": entry["path"]}
    problems, notes = [], []
    selected = report["weights"]["selected"]
    if any(e.get("tiny_random") and e["path"] == (selected or report["weights"].get("given"))
           for e in report["weights"]["search_order"]):
        where = selected or report["weights"]["given"]
        problems.append(f"{where} is a tiny RANDOM self-check release, not the Upscale-A-Video weights: it proves "
                        "the installation (its outputs are noise, named *_selfcheck_random.*) but cannot upscale; "
                        "get the release (docs/weights.md)")
    elif selected is None:
        what = f"usable Upscale-A-Video weights in {report['weights']['given']}" if weights is not None \
            else "Upscale-A-Video weights found"
        problems.append(f"no {what}: see docs/weights.md (or run `uav upscale INPUT --self-check` to test the "
                        "installation)")
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
    else:
        console.print(f"[red]not ready to upscale[/red]: {len(report['problems'])} problem(s) above")


_MEMORY = "Memory model (--memory)"


@app.command("doctor")
@with_setting_options()
def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.")] = False,
    memory: Annotated[Optional[Path], typer.Option(
        "--memory", metavar="IN", help="The settings a run of IN would choose for the card (those given explicitly "
        "are kept), their predicted peak GPU memory and host RAM (computed on the CPU in seconds; nothing loads); "
        "exit 4 if even the smallest settings do not fit.", rich_help_panel=_MEMORY)] = None,
    card_gib: Annotated[Optional[float], typer.Option(
        "--card-gib", min=0.0, metavar="GIB",
        help="GPU memory to fit in, GiB (default: --vram, else the first CUDA device's, else 24).",
        rich_help_panel=_MEMORY)] = None,
    weights: WeightsOpt = None,
    vae: VaeOpt = "3d",
    dtype: DtypeOpt = "auto",
    *,
    setting_values: dict[str, Optional[str]],
) -> None:
    """Check the installation: versions, GPUs and memory, FFmpeg, weights found, plugins.

    Problems that would stop an upscale are listed at the end; the exit code is 0 either way.
    With --memory IN: the settings a run of IN would choose for the card, their predicted
    peak GPU memory and host RAM instead (exit 0 when they fit, 4 when they do not).
    """
    quiet_libraries(debug)
    with handle_errors(debug=debug, as_json=as_json):
        report = doctor_report(weights) if memory is None else memory_report(
            memory, setting_values=setting_values, card_gib=card_gib, weights=weights, vae=vae or "3d", dtype=dtype)
    if as_json:
        print_json(report)
    elif memory is None:
        _print(report)
    else:
        _print_memory(report)
    if memory is not None:
        raise typer.Exit(0 if report["fits"] else EXIT_DOES_NOT_FIT)


#: ``uav doctor --memory``: the clip does not fit the card at these settings
EXIT_DOES_NOT_FIT = 4


def memory_report(source: Path, *, setting_values: dict[str, Optional[str]], card_gib: float | None,
                  weights: Path | None, vae: str, dtype: str) -> dict[str, Any]:
    """Everything ``uav doctor --memory`` prints, as plain data: the settings a run would
    choose for the card (:mod:`uav.memory_plan`), their predicted GPU peak and host RAM."""
    import torch

    from uav.io import probe
    from uav.memory_plan import plan_for_configs
    from uav.upscaler import default_dtypes, torch_dtype

    check_vae(vae)
    settings = settings_from_options(setting_values)
    info = probe(source)
    unet_cfg, vae_cfg, text_params, configs_from = release_configs(weights, vae)
    default_unet, default_vae = default_dtypes(torch.device("cuda"))
    unet_dtype = torch_dtype(parse_dtype(dtype), "--dtype") or default_unet
    notes = []
    budget = _card_budget(card_gib, settings, notes)
    plan = plan_for_configs(unet_cfg, vae_cfg, height=info.height, width=info.width, frames=info.num_frames,
                            settings=settings, budget=budget, unet_dtype=unet_dtype, vae_dtype=default_vae,
                            text_encoder_params=text_params)
    if not text_params:
        notes.append("the text encoder is not counted (no text_encoder/config.json; about 0.6 GiB in fp16)")
    estimate = plan.estimate
    assert estimate is not None  # a card always gives a budget
    host = host_report(plan, height=info.height, width=info.width, frames=info.num_frames)
    return {"ok": True, "input": str(source), "frames": info.num_frames, "input_size": [info.width, info.height],
            "output_size": [info.width * 4, info.height * 4], "card_gib": round(budget.gib or 0.0, 2),
            "limit_gib": round(budget.limit_gib or 0.0, 2), "fits": plan.fits,
            "advice": [] if plan.fits else estimate.advice(budget.limit_gib or 0.0), "configs": configs_from,
            "dtypes": {"unet": str(unet_dtype).replace("torch.", ""), "vae": str(default_vae).replace("torch.", "")},
            "chosen": plan.chosen, "changed": list(plan.changed), "throughput_cost": round(plan.throughput_cost or 0, 4),
            "plan": plan.describe(), "estimate": estimate.to_dict(), "host_peak_gib": round(host["peak_gib"], 3),
            "host": host, "notes": notes + list(plan.notes),
            "calibration": "traced on fake tensors, scaled by factors measured on an H200 (docs/performance.md)"}


def _card_budget(card_gib: float | None, settings: Any, notes: list[str]) -> Any:
    """The budget ``--card-gib`` (else ``--vram``, else the first CUDA device, else 24 GiB) gives."""
    import torch

    from uav.memory_plan import Budget

    if card_gib is not None:
        return Budget(card_gib, f"--card-gib {card_gib:g}")
    if settings.memory != "auto":
        return Budget(float(settings.memory), f"--vram {settings.memory:g}")
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        return Budget(total, f"cuda:0 ({total:.1f} GiB)")
    notes.append("no CUDA device here: sized for a 24 GiB card (--card-gib sets another)")
    return Budget(24.0, "no CUDA device: 24 GiB")


def host_report(plan: Any, *, height: int, width: int, frames: int) -> dict[str, Any]:
    """The host RAM a run with ``plan`` needs (:func:`uav.host_memory.host_memory`), as plain
    data: the networks the plan keeps on the host count too."""
    from uav.host_memory import host_memory
    from uav.memory import tile_regions

    e, where = plan.estimate, plan.placement
    on_host = {"text_encoder": where.text_encoder == "host", "vae": where.vae == "host",
               "unet": where.unet == "blocks"}
    weights = sum(gib for name, gib in e.weights_gib.items() if on_host.get(name)) * 2**30
    _, decode_regions = tile_regions(height, width, plan.settings)
    return host_memory(plan.settings, height=height, width=width, frames=frames, weights_bytes=int(weights),
                       tile_area=sum(h * w for h, w in decode_regions)).to_dict()


def release_configs(weights: Path | None, vae: str, *, folder: Path | None = None) -> tuple[Any, Any, int, str]:
    """``(unet config, vae config, text-encoder parameters, where they came from)``: the weights
    folder's (``folder`` when already found), else the published release's configs that ship
    with uav."""
    from uav.weights import release

    if folder is None:
        try:
            folder = find_weights(weights, self_check=False)
        except release.ReleaseError:
            if weights is not None:
                raise
            folder = None
    if folder is not None:
        rel = release.find_release(folder)
        if rel.unet_config is not None and vae in rel.vae_configs:
            return (release.read_config(rel.unet_config), release.read_config(rel.vae_configs[vae]),
                    _text_encoder_params(rel.text_encoder), str(folder))
        if weights is not None:
            raise UserError(f"--weights {folder}: no unet/ or {vae} VAE config (see docs/weights.md)")
    bundled = Path(release.__file__).parent / "release_configs"
    return (json.loads((bundled / "unet_video_config.json").read_text()),
            json.loads((bundled / f"vae_{vae}_config.json").read_text()), 0, "the published release's configs")


def _text_encoder_params(folder: Path | None) -> int:
    if folder is None or not (folder / "config.json").is_file():
        return 0
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder)))
    return sum(p.numel() for p in model.parameters())


def _print_memory(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    e = report["estimate"]
    w, h = report["input_size"]
    weights = ", ".join(f"{k} {v:.2f}" for k, v in e["weights_gib"].items())
    console.print(f"{escape(report['input'])}: {report['frames']} frames, {w}x{h} -> {4 * w}x{4 * h}")
    console.print(f"  {escape(report['plan'])}")
    console.print(f"  weights {weights} GiB; one U-Net call {e['denoise_gib']:.2f} GiB {tuple(e['shapes']['unet'])}; "
                  f"one decode piece {e['decode_gib']:.2f} GiB {tuple(e['shapes']['decode'])}"
                  + (f"; clip state on the GPU {e['clip_state_gib']:.2f} GiB" if e["clip_state_gib"] else ""))
    verdict = "[green]fits[/green]" if report["fits"] else "[red]does not fit[/red]"
    console.print(f"  predicted peak {e['peak_gib']:.1f} GiB (during {e['peak_stage']}): {verdict} on a "
                  f"{report['card_gib']:g} GiB card (limit {report['limit_gib']:g} GiB); host RAM about "
                  f"{report['host_peak_gib']:.1f} GiB")
    for line in report["advice"]:
        console.print(f"  try: {escape(line)}")
    for note in report["notes"]:
        console.print(f"[dim]note:[/dim] {escape(note)}")
