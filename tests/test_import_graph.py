"""The module import graph: no cycles, and the method's core never imports upward.

Read statically (``ast``) so the test sees every module, optional extras included,
without importing them. Only module-level imports count: an import inside a function
runs when it is called, which is how optional dependencies are kept lazy.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _packages() -> dict[str, Path]:
    roots = {"uav": ROOT / "uav", "uav_otio": ROOT / "integrations" / "uav_otio", "benchmarks": ROOT / "benchmarks"}
    for folder in sorted((ROOT / "plugins").iterdir()):
        if (folder / "__init__.py").exists():
            roots[folder.name] = folder
    return roots


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for name, root in _packages().items():
        for path in root.rglob("*.py"):
            parts = [name, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level.

    ``from pkg import sub`` depends on ``pkg.sub`` only (a package that re-exports its
    submodules is not in a cycle with them); ``from pkg import name`` depends on ``pkg``.
    """
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[mod].update(a.name for a in node.names if a.name in mods and a.name != mod)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
            if len(subs) < len(node.names) and target in mods and target != mod:
                graph[mod].add(target)
            graph[mod].update(s for s in subs if s != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_whole_project() -> None:
    graph = import_graph()
    assert len(graph) > 100
    assert "uav.models.transformer" in graph["uav.models.unet_video"]
    assert "uav.pipeline" in graph["uav.upscaler"]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("core", ["uav.models", "uav.sampling"])
def test_the_method_core_never_imports_upward(core: str) -> None:
    # the networks and the sampler know nothing of files, runs, CLIs or integrations
    allowed = ("uav.models", "uav.sampling", "uav.protocols", "uav.events")  # uav.events imports nothing of uav
    graph = import_graph()
    upward = {(mod, dep) for mod, deps in graph.items() if mod == core or mod.startswith(core + ".")
              for dep in deps if not dep.startswith(tuple(f"{a}." for a in allowed)) and dep not in allowed}
    assert upward == set()


def test_core_never_imports_a_plugin_package() -> None:
    # where a built-in's code lives (docs/architecture.md): core holds the method's numerics,
    # plugin packages register them and hold the adapters to other libraries; a plugin may
    # import core, never the other way round
    plugins = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    graph = import_graph()
    upward = {(mod, dep) for mod, deps in graph.items() if mod == "uav" or mod.startswith("uav.")
              for dep in deps if dep.split(".")[0] in plugins}
    assert upward == set()
    lazy = [p.relative_to(ROOT).as_posix() for p in (ROOT / "uav").rglob("*.py")
            if re.search(rf"^\s*(from|import) ({'|'.join(sorted(plugins))})\b", p.read_text(encoding="utf-8"), re.M)]
    assert lazy == []  # not even inside a function
