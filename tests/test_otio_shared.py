"""The pieces the timeline integration shares instead of repeating: the planning options
of ``uav timeline plan`` / ``upscale`` (declared once) and the process liveness check of
manifest claims (the one :mod:`uav.io.atomic` cleans temporaries with)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentimelineio")
import typer  # noqa: E402

from uav.io.atomic import process_alive  # noqa: E402
from uav_otio.cli import app  # noqa: E402
from uav_otio.options import PlanningOptions  # noqa: E402

PLANNING_FLAGS = {"--handles", "--shots", "--name-by", "--ext", "--timeline-name", "--adapter", "--rate",
                  "--adapter-option", "--search-path"}


def _options(name: str) -> dict[str, object]:
    command = typer.main.get_command(app).commands[name]
    return {opt: p for p in command.params for opt in p.opts}


@pytest.mark.parametrize("name", ["plan", "upscale"])
def test_both_commands_take_every_planning_option_with_its_default(name):
    options = _options(name)
    assert PLANNING_FLAGS <= set(options)
    assert options["--handles"].default == 12
    assert options["--name-by"].default == "media"
    assert options["--ext"].default == "mov"
    assert options["--adapter-option"].multiple and options["--search-path"].multiple


def test_planning_options_become_the_api_parameter_objects():
    options = PlanningOptions(handles=3, adapter="cmx_3600", rate=25.0, search_path=[Path("a")],
                              adapter_option=["rate=25", "ignore_timecode_mismatch=true", "name=x"])
    reading, planning = options.reading(), options.planning(None)
    assert planning.handles == 3 and reading.adapter_name == "cmx_3600" and reading.rate == 25.0
    assert planning.search_paths == [Path("a")] and planning.ext == "mov"
    assert reading.adapter_options == {"rate": 25, "ignore_timecode_mismatch": True, "name": "x"}


def test_a_malformed_adapter_option_is_refused():
    with pytest.raises(ValueError, match="--adapter-option: expected KEY=VALUE"):
        PlanningOptions(adapter_option=["no equals sign"]).reading()


def test_process_alive_tells_a_finished_process_from_a_running_one():
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    assert not process_alive(child.pid)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


RUN_FLAGS = {"--pix-fmt", "--crf", "--compression", "--quiet", "--json", "--debug", "--executor", "--ray-address",
             "--gpus-per-worker", "--workers", "--captioner-option"}


def test_both_upscale_commands_take_every_run_option_with_its_default():
    import uav.cli

    uav.cli._load_commands()
    root = typer.main.get_command(uav.cli.app)
    for command in (root.commands["upscale"], root.commands["timeline"].commands["upscale"]):
        options = {opt: p for p in command.params for opt in p.opts}
        assert RUN_FLAGS <= set(options), command.name
        assert options["--executor"].default == "local" and options["--crf"].default is None
        assert options["--captioner-option"].multiple and options["--quiet"].is_flag
