"""``uav timeline plan`` and ``uav timeline upscale``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
from uav.cli.app import app  # noqa: E402
from uav_otio import UPSCALED_KEY  # noqa: E402

SPY = "otio_fixtures:SpyRenderer"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("otio_cli_media"))


@pytest.fixture()
def cut(media, tmp_path):
    tl = F.markers_with_settings(media)
    tl.tracks[0].append(F.clip("offline", otio.schema.MissingReference(), 0, 5))
    path = tmp_path / "cut.otio"
    otio.adapters.write_to_file(tl, str(path))
    return path


def run(*args):
    return CliRunner().invoke(app, ["timeline", *map(str, args)])


def test_timeline_is_a_registered_command():
    import uav.cli

    assert "timeline" in uav.cli._COMMAND_MODULES


def test_plan_table(cut):
    res = run("plan", cut, "--handles", "3")
    assert res.exit_code == 0, res.output
    out = res.output
    for col in ("clip", "media", "range", "frames", "settings", "output"):
        assert col in out
    assert "B002_uav.mov" in out and "C003_uav.mov" in out
    assert "prompt='a red car'" in out
    assert "skipped: missing media reference" in out
    assert "2 job(s), 29 frame(s) to render, 1 item(s) skipped, handles 3" in out  # 16 + 13


def test_plan_json_with_overrides_and_shots(cut, tmp_path):
    shots = tmp_path / "shots.toml"
    shots.write_text('[[shot]]\nclip = "plain"\nprompt = "from the shot list"\n')
    res = run("plan", cut, "--json", "--shots", shots, "--noise-level", "5", "--propagation-steps", "1,2",
              "--media-dir", tmp_path / "m")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    settings = {tuple(j["clips"]): j["settings"] for j in data["jobs"]}
    assert settings[("hero",)]["noise_level"] == 5 and settings[("plain",)]["noise_level"] == 5
    assert settings[("plain",)]["prompt"] == "from the shot list"
    assert settings[("hero",)]["propagation_steps"] == [1, 2]
    assert data["jobs"][0]["output_path"].startswith(str(tmp_path / "m"))
    assert data["skipped"] == [{"clip": "V1/offline", "media": "", "reason": "missing media reference"}]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noise-level", "500"], "noise_level from command-line overrides: expected an integer in [0, 350], got 500"),
        (["--color-fix", "sepia"], "color_fix from command-line overrides"),
        (["--steps", "4", "--propagation-steps", "4"], "propagation_steps"),
    ],
)
def test_bad_overrides_exit_2_with_a_message(cut, args, message):
    res = run("plan", cut, *args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_bad_clip_settings_name_the_clip(media, tmp_path):
    tl = F.simple_cut(media)
    tl.tracks[0][0].metadata["uav"] = {"noise_level": 999}
    path = tmp_path / "bad.otio"
    otio.adapters.write_to_file(tl, str(path))
    res = run("plan", path)
    assert res.exit_code == 2 and "clip 'V1/SH010'" in res.output and "999" in res.output


def test_missing_input_is_a_clear_error(tmp_path):
    res = run("plan", tmp_path / "nope.otio")
    assert res.exit_code == 2 and "does not exist" in res.output


def test_upscale_then_rerun_renders_nothing(cut, tmp_path):
    out, mdir = tmp_path / "out" / "cut_uav.otio", tmp_path / "media"
    before = len(F.CALLS)
    res = run("upscale", cut, "-o", out, "--media-dir", mdir, "--handles", "4", "--renderer", SPY, "--seed", "9")
    assert res.exit_code == 0, res.output
    calls = F.CALLS[before:]
    assert sorted(c["output"] for c in calls) == ["B002_uav.mov", "C003_uav.mov"]
    assert all(c["settings"]["seed"] == 9 for c in calls)
    assert {c["output"]: c["frames"] for c in calls} == {"B002_uav.mov": 18, "C003_uav.mov": 14}
    assert "2 rendered (32 frames), 0 up to date, 2 clip(s) relinked, 1 skipped" in res.output
    tl = otio.adapters.read_from_file(str(out))
    assert [c.active_media_reference_key for c in tl.find_clips()] == [UPSCALED_KEY, UPSCALED_KEY, "DEFAULT_MEDIA"]

    before = len(F.CALLS)
    res = run("upscale", cut, "-o", out, "--media-dir", mdir, "--handles", "4", "--renderer", SPY, "--seed", "9",
              "--json")
    assert res.exit_code == 0, res.output
    assert len(F.CALLS) == before
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["rendered"] == [] and sorted(summary["cached"]) == ["B002_uav.mov", "C003_uav.mov"]
    assert summary["written"] == [str(out)]

    # a changed override re-renders everything it touches
    res = run("upscale", cut, "-o", out, "--media-dir", mdir, "--handles", "4", "--renderer", SPY, "--seed", "8")
    assert res.exit_code == 0 and len(F.CALLS) == before + 2


def test_upscale_requires_output_and_media_dir(cut):
    res = run("upscale", cut)
    assert res.exit_code == 2
    assert "--output" in res.output or "Missing option" in res.output


def test_bad_renderer_spec(cut, tmp_path):
    res = run("upscale", cut, "-o", tmp_path / "o.otio", "--media-dir", tmp_path, "--renderer", "nope")
    assert res.exit_code == 2 and "module:callable" in res.output
