"""``uav plugins``: list the installed plugins and the components they register."""

from __future__ import annotations

import json
from typing import Any

import typer

from uav.cli.app import app
from uav.registry import KINDS, PluginInfo, Registry


def plugins_report(registry: Registry, *, details: bool = False) -> dict[str, Any]:
    """The JSON document ``uav plugins --json`` prints.

    ``plugins`` lists every plugin (loaded, failed or blocked) with its distribution,
    version, status, errors and components; ``components`` maps each kind to the
    names that select its installed components. With ``details``,
    ``component_details`` lists each component's plugin and description.
    """
    report: dict[str, Any] = {
        "plugins": [info.to_dict() for info in registry.list_plugins()],
        "components": {kind: registry.names(kind) for kind in KINDS},
    }
    if details:
        report["component_details"] = [
            {"kind": c.kind, "name": c.name, "plugin": c.plugin, "description": c.summary}
            for c in registry.components()
        ]
    return report


_STATUS_STYLE = {"ok": "green", "partial": "yellow", "failed": "bold red", "blocked": "dim"}


def _render_table(plugins: list[PluginInfo]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="uav plugins", show_lines=True)
    table.add_column("Plugin", no_wrap=True)
    table.add_column("Distribution")
    table.add_column("Version", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    # Names wrap only between names, never inside one: each is the exact selector.
    table.add_column("Registers (kind: names)", min_width=28, overflow="fold")
    for info in plugins:
        lines = Text("\n").join([Text.assemble((f"{kind}: ", "bold"), ", ".join(names))
                                  for kind, names in info.components.items()]
                                 + [Text(f"error: {error}", style="red") for error in info.errors])
        if info.status == "blocked":
            lines.append("blocked by UAV_BLOCK_PLUGINS / blocked=", style="dim")
        table.add_row(
            info.name,
            info.distribution or "-",
            info.version or "-",
            Text(info.status, style=_STATUS_STYLE.get(info.status, "")),
            lines,
        )
    return table


def _render_components(registry: Registry) -> Any:
    from rich.table import Table

    table = Table(title="uav components", show_lines=False)
    table.add_column("Kind", no_wrap=True)
    table.add_column("Name (selector)", no_wrap=True)
    table.add_column("Plugin", no_wrap=True)
    table.add_column("Description")
    for info in registry.components():
        table.add_row(info.kind, info.name, info.plugin, info.summary)
    return table


@app.command("plugins")
def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of a table."),
    details: bool = typer.Option(False, "--details", help="Also list every component with its description."),
) -> None:
    """List installed plugins, their distribution and version, and what each registers.

    Components are shown under the exact names used to select them (e.g.
    `--flow dis`); `prefix:*` stands for a family such as
    `diffusers:EulerDiscreteScheduler`. Plugins that failed to load are listed with
    their error; block plugins with `UAV_BLOCK_PLUGINS=name1,name2`.
    """
    registry = Registry()
    if as_json:
        typer.echo(json.dumps(plugins_report(registry, details=details), indent=2))
        return
    from rich.console import Console

    console = Console()
    plugins = registry.list_plugins()
    table = _render_table(plugins)
    if any(name.endswith(":*") for kind in KINDS for name in registry.names(kind)):
        table.caption = "prefix:* is a family: select e.g. diffusers:EulerDiscreteScheduler"
    console.print(table)
    if details:
        console.print(_render_components(registry))
    failed = [p.name for p in plugins if p.status in ("failed", "partial")]
    if failed:
        console.print(f"[yellow]{len(failed)} plugin(s) had errors: {', '.join(failed)}[/yellow]")
