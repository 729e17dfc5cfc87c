"""``uav weights``: where weights are looked for, verify a release folder, convert it to safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from uav.cli.app import app
from uav.cli.common import UserError, handle_errors, one_line, print_json, quiet_libraries, stderr_console

weights_app = typer.Typer(
    name="weights",
    help="Find, verify and convert the Upscale-A-Video weights folder (see docs/weights.md).",
    no_args_is_help=False,
    invoke_without_command=True,
)
app.add_typer(weights_app, name="weights")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]

#: what each part of the release is for, in the order ``uav weights`` lists them
PARTS = {
    "unet": "U-Net (unet/unet_video.*) - required",
    "vae_3d": "VAE, default decoder (vae/vae_3d.*) - required for --vae 3d",
    "vae_video": "VAE, temporal decoder (vae/vae_video.*) - required for --vae video",
    "raft": "RAFT flow (propagator/raft-things.*) - optional; without it --flow auto uses dis",
    "text_encoder": "CLIP text encoder (text_encoder/) - required for prompts",
    "tokenizer": "CLIP tokenizer (tokenizer/) - required for prompts",
    "scheduler": "DDIM config (scheduler/) - optional; SD x4 defaults otherwise",
    "low_res_scheduler": "DDPM config (low_res_scheduler/) - optional; SD x4 defaults otherwise",
}


def describe_folder(path: Path) -> dict[str, Any]:
    """Plain-data description of one candidate folder (never loads a network)."""
    from uav import weights

    entry: dict[str, Any] = {"path": str(path), "exists": path.is_dir()}
    if not path.is_dir():
        return entry
    rel = weights.find_release(path)
    entry.update(parts=rel.summary(), missing=rel.missing(vae="3d"), missing_video_vae=rel.missing(vae="video"),
                 usable=not rel.missing(vae="3d"), tiny_random=rel.tiny_random, holds=rel.holds())
    return entry


def search_report() -> dict[str, Any]:
    """Where weights are looked for, in order, and which folder ``uav upscale`` would use."""
    from uav import weights

    dirs = weights.default_weights_dirs()
    found = weights.locate_weights()
    return {
        "env_var": weights.WEIGHTS_ENV,
        "search_order": [describe_folder(d) for d in dirs],
        "selected": str(found) if found is not None else None,
    }


@weights_app.callback()
def weights_main(ctx: typer.Context, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Without a sub-command: list where weights are looked for and what each folder holds."""
    if ctx.invoked_subcommand is not None:
        return
    with handle_errors(debug=debug, as_json=as_json):
        report = search_report()
    if as_json:
        print_json(report)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = stderr_console()
    out = Console(highlight=False)
    out.print(f"Weights are looked for in this order (set [bold]{report['env_var']}[/bold] or pass --weights DIR):")
    for n, entry in enumerate(report["search_order"], 1):
        if not entry["exists"]:
            out.print(f"  {n}. {escape(entry['path'])}  [dim](not there)[/dim]")
            continue
        state = ("[green]usable[/green]" if entry["usable"]
                 else f"[yellow]not usable: holds {escape(entry['holds'])}[/yellow]")
        if entry["tiny_random"]:
            state += " [bold red](tiny RANDOM self-check weights)[/bold red]"
        out.print(f"  {n}. {escape(entry['path'])}  {state}")
        table = Table(show_header=False, box=None, padding=(0, 1, 0, 6))
        for key, what in PARTS.items():
            value = entry["parts"].get(key)
            table.add_row("[green]ok[/green]" if value else "[red]--[/red]", what, escape(value or ""))
        out.print(table)
    if report["selected"]:
        out.print(f"uav upscale will use: [bold]{escape(report['selected'])}[/bold]")
    else:
        console.print("No usable weights found. Download the Upscale-A-Video release into "
                      "pretrained_models/upscale_a_video (see docs/weights.md), or test the installation with "
                      "`uav upscale INPUT --self-check`.")


def verify_folder(path: Path, *, text: bool = True) -> dict[str, Any]:
    """Load every network of a release strictly; one entry per part with its status.

    Each entry has ``status`` (``ok``, ``missing`` or ``error``), and for loaded networks
    ``tensors`` (state-dict keys), ``parameters`` and ``bytes``. Loading checks every tensor
    (floating point, finite), so a damaged file is an ``error`` naming the file and tensor.
    """
    from uav import weights

    rel = weights.find_release(path)
    parts: dict[str, dict[str, Any]] = {}

    def record(name: str, source: Path | None, load: Any) -> None:
        if source is None:
            parts[name] = {"status": "missing"}
            return
        try:
            obj = load()
        except Exception as exc:  # report every part, then decide; the message names the file
            parts[name] = {"status": "error", "file": str(source), "error": one_line(exc)}
            return
        entry: dict[str, Any] = {"status": "ok", "file": str(source)}
        state = obj.state_dict() if hasattr(obj, "state_dict") else obj
        if isinstance(state, dict) and state:
            entry["tensors"] = len(state)
            entry["parameters"] = int(sum(v.numel() for v in state.values()))
            entry["bytes"] = int(sum(v.numel() * v.element_size() for v in state.values()))
            dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values()})
            entry["dtypes"] = dtypes
        parts[name] = entry

    record("unet", rel.unet_weights, lambda: weights.load_unet(rel, warn_random=False))
    for variant in ("3d", "video"):
        record(f"vae_{variant}", rel.vae_weights.get(variant), lambda v=variant: weights.load_vae(rel, v))
    record("raft", rel.raft_weights, lambda: weights.load_state_dict_file(rel.raft_weights))  # type: ignore[arg-type]
    if text:
        record("text_encoder", rel.text_encoder, lambda: weights.load_text_encoder(rel)[1])
    record("schedulers", rel.scheduler_config or rel.low_res_scheduler_config or rel.root,
           lambda: weights.load_schedulers(rel))
    if rel.scheduler_config is None and rel.low_res_scheduler_config is None:
        parts["schedulers"]["note"] = "no scheduler/ or low_res_scheduler/: the SD x4 upscaler defaults are used"
    required = ["unet", "vae_3d"] + (["text_encoder"] if text else [])
    problems = [f"{name}: {parts[name].get('error', parts[name]['status'])}" for name in parts
                if parts[name]["status"] == "error" or (name in required and parts[name]["status"] != "ok")]
    return {"path": str(rel.root), "tiny_random": rel.tiny_random, "holds": rel.holds(), "parts": parts,
            "ok": not problems, "problems": problems}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@weights_app.command("verify")
def verify_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Release folder to check.", show_default=False)],
    text: Annotated[bool, typer.Option("--text/--no-text", help="Also load the CLIP text encoder.")] = True,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Load U-Net, both VAEs, RAFT and the text encoder strictly; report tensors, parameters and sizes.

    Exits with code 2 when a required part (U-Net, 3d VAE, text encoder) is missing or broken.
    """
    quiet_libraries(debug)
    with handle_errors(debug=debug, as_json=as_json):
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder")
        report = verify_folder(folder, text=text)
    if as_json:
        print_json(report)
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        out = Console(highlight=False)
        table = Table(title=escape(f"uav weights verify {report['path']}"))
        for col in ("part", "status", "tensors", "parameters", "size", "dtype", "file / problem"):
            table.add_column(col, overflow="fold")
        for name, entry in report["parts"].items():
            status = entry["status"]
            style = {"ok": "green", "missing": "yellow", "error": "bold red"}[status]
            table.add_row(name, f"[{style}]{status}[/{style}]", str(entry.get("tensors", "")),
                          f"{entry['parameters']:,}" if "parameters" in entry else "",
                          _size(entry["bytes"]) if "bytes" in entry else "", ",".join(entry.get("dtypes", [])),
                          escape(entry.get("error") or entry.get("note") or entry.get("file", "")))
        out.print(table)
        if report["tiny_random"]:
            out.print("[bold red]This folder holds tiny RANDOM self-check networks: its output is NOT an upscale."
                      "[/bold red]")
    if not report["ok"]:
        typer.echo(f"error: {report['path']} is not usable: {'; '.join(report['problems'])}", err=True)
        raise typer.Exit(2)


@weights_app.command("convert")
def convert_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Release folder with .bin/.pth files.",
                                              show_default=False)],
    remove_original: Annotated[bool, typer.Option(
        "--remove-original", help="Delete each .bin/.pth once its .safetensors reads back identically.")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write .safetensors beside each .bin/.pth (U-Net, VAEs, RAFT), checked tensor by tensor.

    safetensors load faster and can never run code; uav prefers them when both exist. A
    .safetensors from an earlier conversion is compared with its original, so
    --remove-original later removes the originals proven identical.
    """
    from uav import weights

    with handle_errors(debug=debug, as_json=as_json):
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder")
        done = weights.convert_release(folder, remove_original=remove_original)
    if as_json:
        # removed_originals is what happened, not what was asked
        print_json({"path": str(folder), **done.to_dict(), "removed_originals": bool(done.removed)})
        return
    for path in done.written:
        typer.echo(f"wrote {path}")
    for path in done.already_converted:
        typer.echo(f"already converted: {path} (identical to its original)")
    for path in done.removed:
        typer.echo(f"removed {path}")
    if not done.written and not done.already_converted:
        typer.echo(f"nothing to convert in {folder}: every weights file is already .safetensors")
