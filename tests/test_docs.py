"""What the documentation names exists: repository paths, ``uav.*`` names, ``uav`` commands
and their flags, and the layout drawn in docs/architecture.md.

Read from docs/*.md and README.md: inline code, fenced blocks and link targets. A path
counts when its first part is an entry of the repository (``uav/``, ``tests/``, ``README.md``
...), so example paths (``clip.mp4``, ``pretrained_models/...``) are left alone; a command
is a ``uav <word>`` in code, checked against the typer app as ``--help`` shows it.
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

import uav.cli
from uav.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# what a clone holds at its top (git's own list): outputs a demo or a run left behind
# (out/, build/) are not the repository's, and the docs' example outputs live there
def _top() -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        return {line.split("/")[0] for line in listed.stdout.splitlines()}
    return {p.name for p in ROOT.iterdir() if p.name not in {".git", ".venv", ".hypothesis", "out"}}  # not a clone


TOP = _top()
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def _code(text: str) -> list[str]:
    """Inline code spans and the lines of fenced blocks (fences removed first)."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return re.findall(r"`([^`\n]+)`", prose) + [line for block in blocks for line in block.splitlines()]


def _named(doc: Path) -> list[str]:
    return _code(doc.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ paths
def _paths(doc: Path) -> list[tuple[str, Path]]:
    """(as written, where it must be) for every repository path the document names."""
    text = doc.read_text(encoding="utf-8")
    found = []
    for target in re.findall(r"\]\(([^)#\s]+)", text):  # links: relative to the document
        if "://" not in target and not target.startswith("mailto:"):
            found.append((target, doc.parent / target))
    for code in _named(doc):
        for token in re.findall(r"[\w./*:-]+", code):
            path = token.split("::")[0].rstrip(".,:;)")
            if path.partition("/")[0] in TOP and ("/" in path or path in TOP) and "*" not in path:
                found.append((token, ROOT / path))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_in_the_docs_exists(doc: Path) -> None:
    missing = [written for written, path in _paths(doc) if not path.exists()]
    assert missing == [], f"{doc.name} names paths that do not exist"


def test_named_tests_exist() -> None:
    for doc in DOCS:
        for code in _named(doc):
            for file, name in re.findall(r"(tests/\w+\.py)::(\w+)", code):
                assert f"def {name}(" in (ROOT / file).read_text(encoding="utf-8"), f"{doc.name}: {file}::{name}"


# ------------------------------------------------------------------------------ python names
def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_uav_name_in_the_docs_resolves(doc: Path) -> None:
    names = {m for code in _named(doc) for m in re.findall(r"(?<![\w./-])(uav(?:_otio)?(?:\.\w+)+)", code)}
    # a name followed by a file extension is a file, not a module (uav.toml)
    names = {n for n in names if not re.search(r"\.(md|py|toml|json|txt|mp4|mov|otio)$", n)}
    assert sorted(n for n in names if not _resolves(n)) == []


# ------------------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def root_command() -> Any:
    uav.cli._load_commands()
    return typer.main.get_command(app)


def _command_lines(doc: Path) -> list[str]:
    lines = []
    for code in _named(doc):
        code = code.strip().removeprefix("$ ")
        if re.match(r"uav [a-z]", code):
            lines.append(code.split("  #")[0].split(" # ")[0])
    return lines


def _check(root: Any, line: str) -> list[str]:
    """What in ``line`` (``uav ...``) the app does not have: a subcommand or a flag."""
    try:
        tokens = shlex.split(line.replace("\\", " "))[1:]
    except ValueError:
        tokens = line.split()[1:]
    command, path = root, ["uav"]
    while tokens and hasattr(command, "commands"):  # a group (typer bundles its own click)
        word = tokens[0].strip("[]")
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        if word not in command.commands:
            if command.invoke_without_command or not command.commands:
                break
            return [f"{' '.join(path)} has no subcommand {word!r}"]
        command, path = command.commands[word], [*path, word]
        tokens = tokens[1:]
    opts = {o for p in command.params if not getattr(p, "hidden", False) for o in (*p.opts, *p.secondary_opts)}
    opts.add("--help")
    flags = [t.strip("[],.)").split("=")[0] for t in tokens if re.match(r"\[?--?[a-zA-Z]", t)]
    return [f"{' '.join(path)} has no option {f}" for f in flags if f not in opts]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_uav_command_and_flag_in_the_docs_exists(doc: Path, root_command: Any) -> None:
    problems = [f"{line!r}: {p}" for line in _command_lines(doc) for p in _check(root_command, line)]
    assert problems == []


def test_the_command_check_catches_what_is_not_there(root_command: Any) -> None:
    assert _check(root_command, "uav upscale clip.mp4 --noise-level 60 -o out.mp4") == []
    assert _check(root_command, "uav timeline plan cut.otio --json") == []
    assert _check(root_command, "uav upscale clip.mp4 --noise 60") == ["uav upscale has no option --noise"]
    assert _check(root_command, "uav timeline render cut.otio") == ["uav timeline has no subcommand 'render'"]


# ------------------------------------------------------------------------------ the layout
def _layout() -> dict[str, str]:
    """docs/architecture.md's tree: repository path -> its description."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = FENCE.findall(text)[0]
    entries: dict[str, str] = {}
    parent = last = ""
    for line in tree.splitlines():
        indent = len(line) - len(line.lstrip())
        if indent > 2:  # the description of the entry above, continued
            path, about = last, line.strip()
        else:
            name, about = (line.split(None, 1) + [""])[:2]
            path = parent + name if indent else name
            parent = name if not indent and name.endswith("/") else parent
            entries[path.rstrip("/")], last = about.strip(), path
        if path.endswith("/"):  # a folder's line names its modules, and other files by path
            entries.update({f"{path}{m}": "" for m in re.findall(r"(?<![/\w])(\w+\.py)\b", about)})
        entries.update({full: "" for full in re.findall(r"\b((?:\w+/)+\w+\.py)\b", about)})
    return entries


def test_the_drawn_layout_exists_and_shows_every_core_module() -> None:
    entries = _layout()
    assert [p for p in entries if not (ROOT / p).exists()] == []
    core = {p.relative_to(ROOT).as_posix() for p in (ROOT / "uav").iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert sorted(core - set(entries)) == [], "modules of uav/ missing from docs/architecture.md"
    for folder in ("uav/models", "uav/sampling", "uav/io", "uav/registry", "uav/cli"):
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        assert sorted(modules - set(entries)) == [], f"modules of {folder} missing from docs/architecture.md"
