"""New-user snags (issue #23 item 14, core parts): a clean install, honest docs and an
honest ``uav doctor``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import uav.cli
from uav.cli.app import app
from uav.weights import make_tiny_release

ROOT = Path(__file__).resolve().parents[1]
uav.cli._load_commands()


def test_the_wheel_builds_without_setuptools_warnings_and_ships_the_configs(tmp_path):
    import shutil

    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    source = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("uav", "plugins", "integrations"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for path in ROOT.iterdir():
        if path.is_file():
            shutil.copy2(path, source / path.name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    log = res.stdout + res.stderr
    assert "Warning" not in log and "absent from the `packages`" not in log, log
    [wheel] = (tmp_path / "dist").glob("uav-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("unet_video_config.json", "vae_3d_config.json", "vae_video_config.json"):
        assert f"uav/weights/release_configs/{config}" in names


def test_no_dependency_is_listed_twice():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_docs_name_modules_that_exist_and_every_command():
    training = (ROOT / "docs" / "training.md").read_text()
    for path in re.findall(r"`(uav/[\w/]+\.py)`", training):
        assert (ROOT / path).is_file(), path
    headings = [line for line in (ROOT / "docs" / "cli.md").read_text().splitlines() if line.startswith("## ")]
    commands = [name for name in uav.cli.app.registered_commands] + list(uav.cli.app.registered_groups)
    names = {c.name or c.callback.__name__ for c in commands if not getattr(c, "hidden", False)}
    assert {"upscale", "weights", "doctor", "plugins", "caption", "train", "eval", "compare", "timeline"} <= names
    for command in names:
        assert any(f"`uav {command}" in h for h in headings), command


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("w") / "tiny")


@pytest.mark.parametrize("how", ["--weights", "UAV_WEIGHTS"])
def test_doctor_says_a_random_release_is_not_ready(tiny, how, monkeypatch):
    monkeypatch.delenv("UAV_WEIGHTS", raising=False)
    args = ["doctor", "--weights", str(tiny)] if how == "--weights" else ["doctor"]
    env = {"UAV_WEIGHTS": str(tiny)} if how == "UAV_WEIGHTS" else {}
    res = CliRunner().invoke(app, args, env=env)
    text = " ".join(res.stdout.split())
    assert res.exit_code == 0 and "ready to upscale" not in text.replace("not ready to upscale", "")
    assert f"{tiny} is a tiny RANDOM self-check release, not the Upscale-A-Video weights" in text
    report = json.loads(CliRunner().invoke(app, [*args, "--json"], env=env).stdout)
    assert any("self-check release" in p for p in report["problems"])
