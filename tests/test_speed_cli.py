"""Issue 21's settings on the command line: ``uav upscale`` takes them; timelines refuse them in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

import uav.cli  # noqa: E402

uav.cli._load_commands()
from uav.cli.app import app  # noqa: E402


@pytest.mark.parametrize("flag, value", [("--preset", "fast"), ("--compile", "on"), ("--step-cache", "deepcache")])
def test_timelines_refuse_the_run_only_settings_in_one_line(tmp_path, flag, value):
    cut = tmp_path / "cut.otio"
    otio.adapters.write_to_file(F.simple_cut(F.media_set(tmp_path / "media")), str(cut))
    result = CliRunner().invoke(app, ["timeline", "plan", str(cut), flag, value])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {flag}: not a timeline setting yet; use it with `uav upscale`"]


def test_upscale_reads_the_new_settings_or_names_the_bad_one():
    result = CliRunner().invoke(app, ["upscale", "x.mp4", "--compile", "sometimes"])
    assert result.exit_code == 2 and "--compile" in result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["upscale", "x.mp4", "--preset", "turbo"])
    assert result.exit_code == 2 and "--preset" in result.stderr and "fast" in result.stderr
