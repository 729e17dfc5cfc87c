"""Plugin discovery, selection by name, failure isolation, blocking and ``uav plugins``."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path

import click
import pytest
import torch
import typer
from typer.testing import CliRunner

import uav.registry.discovery as manager_mod
from uav.protocols import ColorCorrector
from uav.registry import (
    BUILTIN_PLUGINS,
    Registry,
    UnknownComponentError,
    UnknownKindError,
    build_plugin_manager,
    hookimpl,
)

BUILTIN_NAMES = {
    "flow": {"raft", "dis", "farneback"},
    "color": {"none", "wavelet", "adain"},
    "scheduler": {"ddim-official", "ddim", "dpmsolver++", "unipc", "euler", "euler-a", "heun", "diffusers:*"},
    "tiling": {"official", "feather"},
    "segments": {"official", "uniform"},
    "captioner": {"blip-local", "llava-local"},
}


def make_distribution(root: Path, dist: str, version: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """Write modules and a ``*.dist-info`` with ``[uav]`` entry points under ``root``
    (what ``pip install`` leaves in site-packages, minus the copying)."""
    for rel, code in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    eps = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[uav]\n{eps}", encoding="utf-8")


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """Two third-party distributions on sys.path: a working 'invert' colour corrector and
    a plugin that raises on import. Yields their unique plugin/module names."""
    tag = uuid.uuid4().hex[:8]
    good_mod, bad_mod = f"uav_invert_{tag}", f"uav_broken_{tag}"
    good, bad = f"invert-{tag}", f"broken-{tag}"
    make_distribution(
        tmp_path, f"uav-invert-{tag}", "0.3.1", {good: good_mod},
        {f"{good_mod}.py": '''
            from uav.registry import hookimpl

            class Invert:
                def __call__(self, output, reference):
                    return -output

            def make_invert(**options):
                """Negates the clip."""
                return Invert(**options)

            @hookimpl
            def register_color_correctors(register):
                register("invert", make_invert)
        '''},
    )
    make_distribution(
        tmp_path, f"uav-broken-{tag}", "9.9", {bad: bad_mod},
        {f"{bad_mod}.py": '''
            raise RuntimeError("boom: this plugin cannot be imported")
        '''},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("UAV_BLOCK_PLUGINS", raising=False)
    yield {"good": good, "bad": bad, "good_mod": good_mod, "dist": f"uav-invert-{tag}"}
    sys.modules.pop(good_mod, None)
    sys.modules.pop(bad_mod, None)


def test_builtins_come_from_the_installed_entry_points(monkeypatch):
    monkeypatch.delenv("UAV_BLOCK_PLUGINS", raising=False)
    registry = Registry()
    for kind, names in BUILTIN_NAMES.items():
        assert names <= set(registry.names(kind)), kind
    infos = {p.name: p for p in registry.list_plugins()}
    for name in ("flow", "color", "schedulers", "tiling", "segments"):
        info = infos[name]
        assert info.status == "ok"
        assert info.source == "entry-point", "built-ins must come through the uav entry-point group"
        assert info.distribution == "uav" and info.version
    assert infos["flow"].components == {"flow": ("dis", "farneback", "raft")}


def test_builtins_fall_back_to_direct_import_without_entry_points(monkeypatch):
    monkeypatch.delenv("UAV_BLOCK_PLUGINS", raising=False)
    monkeypatch.setattr(manager_mod.importlib.metadata, "entry_points", lambda **kw: [])
    registry = Registry(build_plugin_manager())
    for kind, names in BUILTIN_NAMES.items():
        assert names <= set(registry.names(kind)), kind
    sources = {p.name: p.source for p in registry.list_plugins()}
    assert {sources[name] for name in BUILTIN_PLUGINS} == {"builtin"}


def test_third_party_plugin_is_discovered_listed_and_used_by_name(third_party):
    registry = Registry()
    assert "invert" in registry.names("color")
    fix = registry.get("color", "invert")
    assert isinstance(fix, ColorCorrector)
    clip = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(fix(clip, clip[..., :2, :2]), -clip)

    infos = {p.name: p for p in registry.list_plugins()}
    good = infos[third_party["good"]]
    assert good.status == "ok"
    assert good.distribution == third_party["dist"] and good.version == "0.3.1"
    assert good.module == third_party["good_mod"]
    assert good.components == {"color": ("invert",)}


def test_broken_plugin_is_reported_by_name_and_skipped(third_party, caplog):
    registry = Registry()
    infos = {p.name: p for p in registry.list_plugins()}
    bad = infos[third_party["bad"]]
    assert bad.status == "failed"
    assert bad.components == {}
    assert any("boom: this plugin cannot be imported" in e for e in bad.errors)
    assert third_party["bad"] in caplog.text
    # Everything else still works.
    assert registry.get("color", "invert") is not None
    assert set(registry.names("flow")) >= BUILTIN_NAMES["flow"]
    # An unknown name mentions the failed plugin, as a hint.
    with pytest.raises(UnknownComponentError, match=third_party["bad"]):
        registry.get("color", "nonexistent")


def test_block_plugins_by_environment_variable(third_party, monkeypatch):
    monkeypatch.setenv("UAV_BLOCK_PLUGINS", f"{third_party['good']}, flow")
    registry = Registry()
    assert "invert" not in registry.names("color")
    assert registry.names("flow") == []
    with pytest.raises(UnknownComponentError, match=r"installed: \(none\)"):
        registry.get("flow", "dis")
    infos = {p.name: p for p in registry.list_plugins()}
    assert infos["flow"].status == "blocked"
    assert infos[third_party["good"]].status == "blocked"
    # The built-in fallback must not re-import a blocked built-in.
    assert "uav_flow" not in {p.module for p in registry.list_plugins() if p.status == "ok"}
    # An explicit blocked= replaces the environment variable.
    assert "dis" in Registry(blocked=[]).names("flow")


def test_unknown_names_and_kinds_list_the_installed_ones(monkeypatch):
    monkeypatch.delenv("UAV_BLOCK_PLUGINS", raising=False)
    registry = Registry(load_entrypoints=False)
    with pytest.raises(UnknownComponentError) as info:
        registry.get("flow", "pwc")
    message = str(info.value)
    assert "unknown flow estimator 'pwc'" in message
    assert "dis, farneback, raft" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownKindError, match="flow, color, scheduler, tiling, segments, captioner"):
        registry.names("upscaler")
    with pytest.raises(ValueError):  # also a ValueError, as the API promises
        registry.get("colour", "sepia")
    with pytest.raises(TypeError, match="must be a str"):
        registry.get("flow", 3)
    # One spelling per kind (settings fields map onto kinds in uav.components); names ignore case.
    with pytest.raises(UnknownKindError, match="unknown component kind 'color_fix'"):
        registry.names("color_fix")
    assert type(registry.get("flow", "DIS")).__name__ == "DISFlow"


def test_family_names_pass_the_variant():
    registry = Registry(load_entrypoints=False)
    sched = registry.get("scheduler", "diffusers:EulerDiscreteScheduler")
    assert type(sched.scheduler).__name__ == "EulerDiscreteScheduler"
    with pytest.raises(ValueError, match="unknown diffusers scheduler class 'NoSuchScheduler'; available: .*DDIMScheduler"):
        registry.get("scheduler", "diffusers:NoSuchScheduler")
    assert ("scheduler", "diffusers:UniPCMultistepScheduler") in registry
    assert ("scheduler", "nope") not in registry


class _ClashingPlugin:
    @hookimpl
    def register_flow_estimators(self, register):
        register("dis", lambda **kw: "impostor")
        register("zero", lambda **kw: "zero-flow")


class _FailingHookPlugin:
    @hookimpl
    def register_color_correctors(self, register):
        register("half-done", lambda **kw: None)
        raise RuntimeError("registration exploded")

    @hookimpl
    def register_tiling_strategies(self, register):
        register("ok-tiling", lambda **kw: "tiling")


def test_registration_errors_and_name_clashes_are_isolated():
    pm = build_plugin_manager(load_entrypoints=False, blocked=[])
    pm.register(_ClashingPlugin(), name="clasher")
    pm.register(_FailingHookPlugin(), name="failing")
    registry = Registry(pm)
    # The built-in keeps its name; the clasher's other component is kept.
    assert type(registry.get("flow", "dis")).__name__ == "DISFlow"
    assert registry.get("flow", "zero") == "zero-flow"
    # A hook that raises loses that hook's registrations only.
    assert "half-done" not in registry.names("color")
    assert registry.get("tiling", "ok-tiling") == "tiling"
    infos = {p.name: p for p in registry.list_plugins()}
    assert infos["clasher"].status == "partial"
    assert any("'dis' is already registered by plugin 'flow'" in e for e in infos["clasher"].errors)
    assert infos["failing"].status == "partial"
    assert any("registration exploded" in e for e in infos["failing"].errors)
    assert infos["failing"].source == "manual"


def test_bad_registrations_are_rejected():
    class BadName:
        @hookimpl
        def register_captioners(self, register):
            register("", lambda **kw: None)

    class BadFactory:
        @hookimpl
        def register_captioners(self, register):
            register("x", "not callable")

    pm = build_plugin_manager(load_entrypoints=False, blocked=[])
    pm.register(BadName(), name="badname")
    pm.register(BadFactory(), name="badfactory")
    registry = Registry(pm)
    infos = {p.name: p for p in registry.list_plugins()}
    assert any("non-empty str" in e for e in infos["badname"].errors)
    assert any("must be callable" in e for e in infos["badfactory"].errors)
    assert registry.names("captioner") == ["blip-local", "llava-local"]


def test_each_registry_owns_its_manager():
    a = Registry(load_entrypoints=False)
    b = Registry(load_entrypoints=False)
    assert a.plugin_manager is not b.plugin_manager
    a.plugin_manager.register(_ClashingPlugin(), name="late")  # does not leak into b
    assert "zero" not in b.names("flow")


def _invoke_plugins(args: list[str]):
    import uav.cli.plugins  # noqa: F401  (attaches the command)
    from uav.cli.app import app

    # With a single command typer runs it as the root command; with several it is a group.
    # (typer may bundle its own click, so look for sub-commands rather than a click class)
    argv = ["plugins", *args] if getattr(typer.main.get_command(app), "commands", None) else args
    return CliRunner().invoke(app, argv, env={"COLUMNS": "200"})


def test_cli_lists_plugins_with_distribution_version_and_names(third_party):
    result = _invoke_plugins([])
    assert result.exit_code == 0, result.output
    out = result.output
    for name in ("raft", "dis", "farneback", "wavelet", "adain", "ddim-official", "dpmsolver++",
                 "feather", "uniform", "blip-local", "diffusers:*", "invert"):
        assert name in out
    assert third_party["dist"] in out and "0.3.1" in out
    assert third_party["bad"] in out and "failed" in out and "boom" in out


def test_cli_json(third_party):
    result = _invoke_plugins(["--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert "invert" in doc["components"]["color"]
    assert set(doc["components"]["flow"]) >= BUILTIN_NAMES["flow"]
    plugins = {p["name"]: p for p in doc["plugins"]}
    assert plugins[third_party["good"]]["components"] == {"color": ["invert"]}
    assert plugins[third_party["good"]]["version"] == "0.3.1"
    assert plugins[third_party["bad"]]["status"] == "failed"
    assert plugins["flow"]["distribution"] == "uav"


def test_cli_details_lists_each_component_with_its_description():
    result = _invoke_plugins(["--details"])
    assert result.exit_code == 0, result.output
    assert "uav components" in result.output
    assert "Published DDIM update" in result.output
    doc = json.loads(_invoke_plugins(["--json", "--details"]).stdout)
    rows = {(c["kind"], c["name"]): c for c in doc["component_details"]}
    assert rows[("flow", "dis")]["plugin"] == "flow"
    assert rows[("flow", "dis")]["description"].startswith("OpenCV DIS flow")
