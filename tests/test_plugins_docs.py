"""The complete plugin example of docs/plugins.md, installed from the page and run."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from uav.registry import Registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_docs_example_plugin_installs_lists_and_runs(tmp_path, monkeypatch):
    module_blocks = [b for b in _blocks("python") if b.startswith("# uav_mean_match.py")]
    assert len(module_blocks) == 1, "docs/plugins.md must hold the uav_mean_match.py example"
    pyprojects = [tomllib.loads(b) for b in _blocks("toml")]
    project = next(p["project"] for p in pyprojects if "entry-points" in p.get("project", {}))
    entry_points = project["entry-points"]["uav"]
    usage = next(b for b in _blocks("python") if 'registry.get("color", "mean-match")' in b)

    # "Install" the documented distribution: its module and a dist-info built from the
    # documented pyproject, on a sys.path entry (what pip leaves in site-packages).
    (tmp_path / "uav_mean_match.py").write_text(module_blocks[0], encoding="utf-8")
    info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[uav]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()), encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("UAV_BLOCK_PLUGINS", raising=False)
    try:
        exec(compile(usage, f"{DOC}:usage", "exec"), {"__name__": "docs_example"})

        registry = Registry()
        plugin = {p.name: p for p in registry.list_plugins()}["mean-match"]
        assert plugin.status == "ok"
        assert (plugin.distribution, plugin.version) == ("uav-mean-match", "1.0.0")
        assert plugin.components == {"color": ("mean-match",)}
        with pytest.raises(ValueError, match="strength must lie in"):
            registry.get("color", "mean-match", strength=2.0)
    finally:
        sys.modules.pop("uav_mean_match", None)
