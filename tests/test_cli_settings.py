"""The command line's shared settings options, one-line usage errors, and timeline values refused at plan time."""

from __future__ import annotations

import json
import re
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
from uav.cli.options import SETTING_FLAGS, param_name  # noqa: E402
from uav.settings import UpscaleSettings  # noqa: E402


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "╭" not in result.output  # no boxed panel
    return lines[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("cli_settings_media"))


@pytest.fixture()
def cut(media, tmp_path):
    path = tmp_path / "cut.otio"
    otio.adapters.write_to_file(F.simple_cut(media), str(path))
    return path


# ---------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("args, pattern", [
    (["upscale", "x.mp4", "--noise-level", "1.5"], r"--noise-level must be an integer in \[0, 350\], got '1.5'"),
    (["upscale", "x.mp4", "--steps", "nan"], r"--steps must be an integer >= 1, got 'nan'"),
    (["upscale", "x.mp4", "--guidance-scale", "lots"], r"--guidance-scale must be a number > 0, got 'lots'"),
    (["upscale", "x.mp4", "--propagation-steps", ",,"], r"--propagation-steps must be a list of integer step"),
    (["upscale", "x.mp4", "--scheduler", "diffusers:__class__"], r"--scheduler: unknown diffusers scheduler"),
    (["upscale", "x.mp4", "--seed", str(2**64)], r"--seed: seed must be in \[0, 2\*\*64\)"),
    (["upscale", "x.mp4", "--no-such-flag"], r"uav upscale: No such option: --no-such-flag .*--help"),
    (["upscale", "x.mp4", "--prompt"], r"Option '--prompt' requires an argument"),
    (["upscale", "x.mp4", "--crf", "high"], r"uav upscale: Invalid value for '--crf'.*integer"),
    (["timeline", "upscale", "cut.otio", "-o", "o.otio", "--media-dir", "m", "--start", "1"],
     r"uav timeline upscale: No such option: --start"),
    (["timeline", "plan", "cut.otio", "--handles", "-1"], r"'--handles'"),
    (["nosuchcommand"], r"No such command 'nosuchcommand'"),
])
def test_usage_errors_are_one_line(args, pattern, tmp_path):
    line = _one_error_line(invoke(*args))
    assert re.search(pattern, line), line


@pytest.mark.parametrize("args", [
    ["upscale", "x.mp4", "--json", "--no-such-flag"],
    ["upscale", "x.mp4", "--json", "--crf", "high"],
    ["timeline", "plan", "cut.otio", "--json", "--handles", "-1"],
])
def test_usage_errors_of_a_json_run_are_json_too(args):
    result = invoke(*args)
    line = _one_error_line(result)
    doc = json.loads(result.stdout)
    assert result.exit_code == 2 and doc == {"ok": False, "error": line.removeprefix("error: ")}


def test_usage_errors_without_json_print_nothing_on_stdout():
    result = invoke("upscale", "x.mp4", "--no-such-flag", "--", "--json")
    assert result.exit_code == 2 and result.stdout == ""


def test_version():
    from uav import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"uav {__version__}"


def test_help_shows_no_type_tags_on_settings_options():
    result = CliRunner().invoke(app, ["upscale", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "0-350" in result.stdout and "auto|on|off" in result.stdout
    assert not re.search(r"--noise-level\s+(INTEGER|TEXT)", result.stdout)


# ---------------------------------------------------------------------------- the shared option set
def _options(command):
    return {p.name: p for p in command.params if p.param_type_name == "option"}


def test_every_command_takes_the_same_settings_options():
    import typer

    root = typer.main.get_command(app)
    commands = [root.commands["upscale"], root.commands["timeline"].commands["upscale"],
                root.commands["timeline"].commands["plan"]]
    declared = [_options(c) for c in commands]
    for field, flag in SETTING_FLAGS.items():
        assert field in UpscaleSettings.field_names()
        options = [d[param_name(field)] for d in declared]
        assert all(o.opts == [flag] for o in options), field
        # the same help, but for the default it shows: a timeline's shots are seeded 10, not at random
        helps = {re.sub(r"\\\[default: [^]]*\]", "", o.help) for o in options}
        assert len(helps) == 1 and len({(o.metavar, o.default) for o in options}) == 1, field
    seeds = [re.search(r"\[default: ([^]]*)\]", d["seed"].help).group(1) for d in declared]
    assert seeds == ["random", "10, fixed per shot", "10, fixed per shot"]


# ---------------------------------------------------------------------------- timelines: refused at plan time
@pytest.mark.parametrize("metadata, pattern", [
    ({"flow": "magic"}, r"flow from clip metadata uav: expected one of raft, dis, farneback, got 'magic'"),
    ({"scheduler": "diffusers:NoSuchScheduler"}, r"scheduler from clip metadata uav: unknown diffusers scheduler "
                                                 r"class 'NoSuchScheduler'"),
    ({"seed": 1e30}, r"seed from clip metadata uav: expected an integer in \[0, 2\*\*64\)"),
    ({"seed": "2**80"}, r"seed from clip metadata uav: expected an integer, got '2\*\*80'"),
    ({"color_fix": "wavlet"}, r"color_fix from clip metadata uav: expected one of none, wavelet, adain"),
])
def test_timeline_values_the_render_would_refuse_fail_the_plan(cut, metadata, pattern):
    tl = otio.adapters.read_from_file(str(cut))
    tl.tracks[0][0].metadata["uav"] = metadata
    bad = cut.with_name("bad.otio")
    otio.adapters.write_to_file(tl, str(bad))
    line = _one_error_line(invoke("timeline", "plan", bad))
    assert re.search(pattern, line), line


def test_marker_seed_expression_fails_the_plan(cut):
    tl = otio.adapters.read_from_file(str(cut))
    tl.tracks[0][0].markers.append(otio.schema.Marker(name="uav: seed=2**80"))
    bad = cut.with_name("bad.otio")
    otio.adapters.write_to_file(tl, str(bad))
    line = _one_error_line(invoke("timeline", "plan", bad))
    assert "seed from marker name 'uav: seed=2**80': expected an integer" in line


@pytest.mark.parametrize("toml, pattern", [
    ('skip = "yes"', r"skip from .*entry #1 .*: expected true or false, got 'yes'"),
    ("seed = 99999999999999999999", r"seed from .*entry #1 .*: expected an integer in \[0, 2\*\*64\)"),
    ('noise_level = "60"', r"noise_level from .*entry #1 .*: expected an integer, got '60'"),
    ('propagation_steps = ",,"', r"propagation_steps from .*entry #1"),
])
def test_toml_values_have_their_own_types(cut, tmp_path, toml, pattern):
    shots = tmp_path / "shots.toml"
    shots.write_text(f'[[shot]]\nclip = "SH010"\n{toml}\n', encoding="utf-8")
    line = _one_error_line(invoke("timeline", "plan", cut, "--shots", shots))
    assert re.search(pattern, line), line


def test_toml_booleans_and_marker_words_both_work(cut, tmp_path):
    shots = tmp_path / "shots.toml"
    shots.write_text('[[shot]]\nclip = "SH010"\nskip = true\n', encoding="utf-8")
    result = invoke("timeline", "plan", cut, "--shots", shots, "--json")
    assert result.exit_code == 0, result.output
    assert "SH010" in result.stdout and '"skipped"' in result.stdout


def test_timeline_older_tiling_switch_is_not_taken_for_a_strategy_name(cut):
    result = invoke("timeline", "plan", cut, "--tiling", "true", "--json")
    assert result.exit_code == 0, result.output
    assert '"tile": "on"' in result.stdout
    line = _one_error_line(invoke("timeline", "plan", cut, "--tiling", "spiral"))
    assert "--tiling: tiling from command-line overrides: expected one of official, feather" in line
