"""Per-shot settings: precedence, markers, TOML shot lists and validation."""

from __future__ import annotations

import sys
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import plan_timeline  # noqa: E402
from uav_otio.shots import (  # noqa: E402
    DEFAULT_SETTINGS,
    ShotSettingsError,
    load_shot_list,
    parse_marker_settings,
    resolve_clip_settings,
    to_upscale_settings,
    validate_settings,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("otio_shots_media"))


def _write(tmp_path, text, name="shots.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _settings(plan, clip_name):
    return next(u for u in plan.uses if u.clip.name == clip_name).settings


def test_precedence_cli_over_toml_over_markers_over_clip_over_timeline(media, tmp_path):
    tl = F.markers_with_settings(media)
    hero = tl.tracks[0][0]
    # timeline: noise 80, steps 20; clip metadata: noise 70, guidance 4; marker: noise 60, prompt, wavelet, prop
    s, origin = resolve_clip_settings(hero, timeline=tl)
    assert s["noise_level"] == 60 and origin["noise_level"].startswith("marker name")
    assert s["guidance_scale"] == 4.0 and origin["guidance_scale"] == "clip metadata uav"
    assert s["steps"] == 20 and origin["steps"] == "timeline metadata uav"
    assert s["prompt"] == "a red car"
    assert s["color_fix"] == "wavelet" and origin["color_fix"].startswith("marker comment")
    assert s["propagation_steps"] == [3, 5]
    assert s["negative_prompt"] == DEFAULT_SETTINGS["negative_prompt"] and origin["negative_prompt"] == "default"

    shots = load_shot_list(_write(tmp_path, '[[shot]]\nclip = "hero"\nnoise_level = 50\nprompt = "from toml"\n'))
    s, origin = resolve_clip_settings(hero, timeline=tl, shot_list=shots)
    assert (s["noise_level"], s["prompt"]) == (50, "from toml")
    assert "entry #1" in origin["noise_level"]

    s, origin = resolve_clip_settings(hero, timeline=tl, shot_list=shots, overrides={"noise_level": 40})
    assert s["noise_level"] == 40 and origin["noise_level"] == "command-line overrides"
    assert s["prompt"] == "from toml"


def test_each_clip_gets_its_own_settings_in_the_plan(media, tmp_path):
    shots = load_shot_list(_write(tmp_path, '[[shot]]\nmedia = "C003.mov"\nseed = 7\n'))
    plan = plan_timeline(F.markers_with_settings(media), shot_list=shots)
    hero, plain = _settings(plan, "hero"), _settings(plan, "plain")
    assert (hero["noise_level"], hero["seed"]) == (60, 10)
    assert (plain["noise_level"], plain["steps"], plain["seed"], plain["prompt"]) == (80, 20, 7, "")


def test_shot_list_matches_by_marker_name_and_specificity(media, tmp_path):
    tl = F.simple_cut(media)
    sh20 = tl.tracks[0][1]
    sh20.markers.append(otio.schema.Marker(name="hero", marked_range=F.TR(F.RT(6, 24), F.RT(0, 24))))
    shots = load_shot_list(_write(tmp_path, """
[[shot]]
clip = "SH020"
prompt = "clip wins"

[[shot]]
marker = "hero"
prompt = "marker"
noise_level = 33

[[shot]]
media = "B002.mov"
prompt = "media"
steps = 12

[[shot]]
clip = "nobody"
prompt = "unused"
"""))
    plan = plan_timeline(tl, shot_list=shots)
    s = _settings(plan, "SH020")
    assert (s["prompt"], s["noise_level"], s["steps"]) == ("clip wins", 33, 12)
    assert _settings(plan, "SH010")["prompt"] == ""
    assert any("entry #4" in w and "matched no clip" in w for w in plan.warnings)


def test_skip_setting_lists_the_clip_as_skipped(media):
    tl = F.simple_cut(media)
    tl.tracks[0][0].markers.append(
        otio.schema.Marker(name="uav: skip=yes", marked_range=F.TR(F.RT(F.TC_START + 12, 24), F.RT(0, 24))))
    plan = plan_timeline(tl)
    assert [u.clip.name for u in plan.uses] == ["SH020"]
    assert any(s.label == "V1/SH010" and s.reason.startswith("skip = true (from marker name") for s in plan.skipped)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("uav: prompt=a cat, on a sofa; noise_level=60", {"prompt": "a cat, on a sofa", "noise_level": "60"}),
        ("UAV:noise_level = 5 ;", {"noise_level": "5"}),
        ('uav: prompt="x; y"; steps=3', {"prompt": "x; y", "steps": "3"}),
        ("uav:", {}),
        ("just a note", None),
        ("", None),
    ],
)
def test_parse_marker_settings(text, expected):
    assert parse_marker_settings(text) == expected


def test_malformed_marker_is_an_error_naming_the_clip(media):
    tl = F.simple_cut(media)
    tl.tracks[0][1].markers.append(otio.schema.Marker(name="uav: noise_level 60"))
    with pytest.raises(ShotSettingsError, match=r"clip 'V1/SH020'.*key=value"):
        plan_timeline(tl)


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"noise_level": 351}, r"noise_level .*\[0, 350\], got 351"),
        ({"noise_level": "lots"}, r"noise_level .*integer, got 'lots'"),
        ({"noise_level": 1.5}, r"noise_level .*integer"),
        ({"guidance_scale": 0.5}, r"guidance_scale .*>= 1, got 0.5"),
        ({"steps": 0}, r"steps .*>= 1, got 0"),
        ({"steps": True}, r"steps .*integer, got True"),
        ({"color_fix": "sepia"}, r"color_fix .*none, wavelet, adain, got 'sepia'"),
        ({"skip": "maybe"}, r"skip .*true or false"),
        ({"prompt": 3}, r"prompt .*string"),
        ({"propagation_steps": [1, -2]}, r"propagation_steps .*>= 0"),
        ({"steps": 10, "propagation_steps": [2, 10]}, r"propagation_steps .*\[0, 10\).*\[10\]"),
        ({"strength": 3}, r"unknown setting 'strength'"),
    ],
)
def test_bad_values_are_errors_naming_the_clip(media, values, pattern):
    tl = F.simple_cut(media)
    tl.tracks[0][1].metadata["uav"] = values
    with pytest.raises(ShotSettingsError, match=r"clip 'V1/SH020'") as info:
        plan_timeline(tl)
    assert info.match(pattern)
    assert "clip metadata uav" in str(info.value)


def test_propagation_checked_against_steps_from_another_layer(media):
    tl = F.simple_cut(media)
    tl.metadata["uav"] = {"steps": 8}
    tl.tracks[0][0].metadata["uav"] = {"propagation_steps": "5,7"}
    assert _settings(plan_timeline(tl), "SH010")["propagation_steps"] == [5, 7]
    tl.tracks[0][0].metadata["uav"] = {"propagation_steps": "5,8"}
    with pytest.raises(ShotSettingsError, match=r"SH010.*propagation_steps.*\[0, 8\) for steps=8, got \[8\]"):
        plan_timeline(tl)


def test_string_values_from_nle_metadata_are_converted():
    out = validate_settings({"noise_level": "60", "guidance_scale": "7.5", "skip": "false",
                             "propagation_steps": "[24, 26,28]", "color_fix": "AdaIN", "tiling": "true"})
    assert out == {"noise_level": 60, "guidance_scale": 7.5, "skip": False, "propagation_steps": [24, 26, 28],
                   "color_fix": "adain", "tile": "on"}  # tiling=true is the older spelling of tile=on


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("[[shot]]\nprompt = 'no match key'\n", r"exactly one of clip, marker or media"),
        ("[[shot]]\nclip = 'a'\nmedia = 'b'\n", r"exactly one of clip, marker or media"),
        ("[[shot]]\nclip = 'a'\nnoise = 3\n", r"unknown setting 'noise' in .*shots.toml shot list entry #1 \(clip = 'a'\)"),
        ("[[shot]]\nclip = 'a'\nsteps = -1\n", r"steps from .*entry #1 \(clip = .a.\): expected an integer >= 1, got -1"),
        ("[defaults]\nsteps = 3\n", r"unknown top-level key"),
        ("[[shot]\nclip=", r"not valid TOML"),
    ],
)
def test_bad_shot_lists(tmp_path, text, pattern):
    with pytest.raises(ShotSettingsError, match=pattern):
        load_shot_list(_write(tmp_path, text))


def test_missing_shot_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="shot list"):
        load_shot_list(tmp_path / "nope.toml")


def test_pipeline_knobs_are_shot_settings_and_reach_upscale_settings(media):
    out = validate_settings({"scheduler": "ddim-official", "tile": "ON", "tile_mode": "Latent", "tile_size": "128",
                             "tile_overlap": 32, "window_batch": "2", "decode_chunk": 4})
    assert out == {"scheduler": "ddim-official", "tile": "on", "tile_mode": "latent", "tile_size": 128,
                   "tile_overlap": 32, "window_batch": 2, "decode_chunk": 4}
    tl = F.simple_cut(media)
    tl.tracks[0][0].metadata["uav"] = {"tile_size": 96, "tile": "off"}
    s, origin = resolve_clip_settings(tl.tracks[0][0], timeline=tl, overrides={"tile_overlap": 16, "tile": True})
    assert (s["tile_size"], s["tile_overlap"], s["tile"]) == (96, 16, "on")
    assert origin["tile"] == "command-line overrides" and origin["tile_size"] == "clip metadata uav"
    pipeline = to_upscale_settings(s)
    assert (pipeline.tile_size, pipeline.tile_overlap, pipeline.tile) == (96, 16, True)
    defaults = to_upscale_settings(DEFAULT_SETTINGS)
    assert (defaults.tile, defaults.tile_size, defaults.decode_chunk, defaults.scheduler) == (None, 256, 3, "ddim-official")


def test_older_tiling_switch_obeys_layer_precedence(media):
    tl = F.simple_cut(media)
    tl.metadata["uav"] = {"tile": "on"}
    tl.tracks[0][0].metadata["uav"] = {"tiling": "false"}  # a higher layer: its switch wins
    s, origin = resolve_clip_settings(tl.tracks[0][0], timeline=tl)
    assert s["tile"] == "off" and s["tiling"] is None and origin["tile"] == "clip metadata uav"
    assert to_upscale_settings(s).tile is False
    s, _ = resolve_clip_settings(tl.tracks[0][0], timeline=tl, overrides={"tiling": "feather"})
    assert (to_upscale_settings(s).tiling, to_upscale_settings(s).tile) == ("feather", False)
    with pytest.raises(ShotSettingsError, match="tiling from .* switches tiling on but tile is 'off'"):
        validate_settings({"tiling": True, "tile": "off"})


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"tile": "maybe"}, r"tile from here: expected one of auto, on, off, got 'maybe'"),
        ({"tile_mode": "spiral"}, r"tile_mode from here: expected one of pipeline, latent"),
        ({"tile_size": 4}, r"tile_size from here: expected an integer in \[8, 65536\], got 4"),
        ({"window_batch": 0}, r"window_batch from here: expected an integer in \[1, 1024\], got 0"),
        ({"decode_chunk": "x"}, r"decode_chunk from here: expected an integer, got 'x'"),
        ({"vae": "4d"}, r"vae from here: expected one of 3d, video, got '4d'"),
        ({"tile_size": 64, "tile_overlap": 64}, r"tile_overlap from here must be below tile_size=64, got 64"),
    ],
)
def test_bad_pipeline_knobs(values, pattern):
    with pytest.raises(ShotSettingsError, match=pattern):
        validate_settings(values, where="here")


def test_tile_overlap_checked_against_the_merged_tile_size(media):
    tl = F.simple_cut(media)
    tl.metadata["uav"] = {"tile_overlap": 100}
    with pytest.raises(ShotSettingsError, match=r"SH010.*tile_overlap from timeline metadata uav .*tile_size from "
                                                r"command-line overrides.* must be below tile_size=96, got 100"):
        plan_timeline(tl, overrides={"tile_size": 96})
