"""Property-based fuzzing of every front door (issue #14).

The contract, for any input: exit 0 with a valid output, or exit 2 with exactly one
``error:`` line, no traceback, and no new files. Library entry points either return
or raise one of the documented user errors with a one-line message.

CI runs a small fixed-seed profile (``derandomize``, a few hundred examples in all);
``UAV_FUZZ=long bash scripts/test.sh tests/test_fuzz.py`` runs a longer random one by hand.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import opentimelineio as otio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import otio_fixtures as F  # noqa: E402
from make_sample_clip import make_sample_clip  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
import uav.cli.upscale  # noqa: E402,F401
import uav.cli.weights  # noqa: E402,F401
from uav.cli.app import app  # noqa: E402
from uav.settings import SettingsError, UpscaleSettings  # noqa: E402
from uav.weights import make_tiny_release  # noqa: E402
from uav_otio.shots import ShotSettingsError, load_shot_list, parse_marker_settings  # noqa: E402

LONG = os.environ.get("UAV_FUZZ") == "long"
settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile("long" if LONG else "ci")


def few(n: int) -> settings:
    """Fewer examples for the expensive properties on CI; the loaded profile's count when long."""
    return settings(max_examples=1000 if LONG else n)


# text that looks like what people type: numbers, lists, names, junk and the odd unicode
ATOMS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", ",,", "24,26,28", "1.5", "nan", "inf", "-0", "true", "yes", "off", "auto", "none",
                     "wavelet", "wavlet", "adain", "dis", "raft", "magic", "diffusers:__class__",
                     "diffusers:DDIMScheduler", "diffusers:NoSuch", "ddim-official", "feather", "latent", "on",
                     "3d", "video", "[1, 2]", "'quoted'", "a=b", "; ;", "\u00e9\u00e8", "\x00"]),
    st.text(max_size=12),
)
KEYS = st.sampled_from(["prompt", "negative_prompt", "added_prompt", "noise_level", "guidance_scale", "steps",
                        "propagation_steps", "color_fix", "seed", "flow", "scheduler", "segments", "tiling", "tile",
                        "tile_mode", "tile_size", "tile_overlap", "window_batch", "decode_chunk", "decode_tile",
                        "w_lr", "eta", "fuse_scale", "not_a_setting"])


def _one_line_error(exc: BaseException) -> None:
    assert "\n" not in str(exc).strip(), str(exc)


def _cli_contract(res, folder: Path, before: list[str]) -> None:
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 0:
        return
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert sorted(str(p) for p in folder.rglob("*")) == before, "a failed command left files behind"


# --------------------------------------------------------------------------- the schema


@given(st.dictionaries(KEYS, ATOMS, max_size=6))
@pytest.mark.slow
def test_settings_from_strings_accepts_or_names_the_problem(data):
    try:
        s = UpscaleSettings.from_strings(data)
    except SettingsError as exc:
        _one_line_error(exc)
    else:
        s.validate()  # what was accepted is valid
        assert UpscaleSettings.from_mapping(s.to_dict()) == s  # and round-trips


@given(st.text(max_size=80), st.lists(st.tuples(KEYS, ATOMS), max_size=5))
def test_marker_text_parses_or_names_the_problem(prefix, pairs):
    text = "uav: " + "; ".join(f"{k}={v}" for k, v in pairs) if pairs else prefix
    try:
        parsed = parse_marker_settings(text)
    except (ShotSettingsError, ValueError) as exc:
        _one_line_error(exc)
    else:
        assert parsed is None or isinstance(parsed, dict)


@given(st.lists(st.tuples(KEYS, st.one_of(ATOMS, st.integers(-(2**70), 2**70), st.booleans(),
                                          st.lists(st.integers(-5, 40), max_size=4))), max_size=5),
       st.sampled_from(["clip", "marker", "media", "nothing"]))
def test_toml_shot_lists_load_or_name_the_problem(tmp_path_factory, pairs, match):
    lines = ["[[shot]]"] + ([f'{match} = "SH010"'] if match != "nothing" else [])
    for key, value in pairs:
        lines.append(f"{key} = {json.dumps(value) if not isinstance(value, str) else json.dumps(value)}")
    path = tmp_path_factory.mktemp("toml") / "shots.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        load_shot_list(path)
    except (ShotSettingsError, ValueError, OSError) as exc:
        _one_line_error(exc)


# --------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("fuzz_media"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("fuzz_clip") / "clip.mp4", frames=4, width=32, height=24)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return make_tiny_release(tmp_path_factory.mktemp("fuzz_release") / "release")


@few(25)
@given(st.lists(st.tuples(KEYS, ATOMS), min_size=1, max_size=4))
def test_timeline_plan_with_fuzzed_markers(media, tmp_path_factory, pairs):
    folder = tmp_path_factory.mktemp("plan")
    tl = F.simple_cut(media)
    first = next(iter(tl.find_clips()))
    first.markers.append(otio.schema.Marker(name="uav: " + "; ".join(f"{k}={v}" for k, v in pairs)))
    src = folder / "cut.otio"
    otio.adapters.write_to_file(tl, str(src))
    before = sorted(str(p) for p in folder.rglob("*"))
    res = CliRunner().invoke(app, ["timeline", "plan", str(src), "--json"])
    _cli_contract(res, folder, before)
    if res.exit_code == 0:
        json.loads(res.stdout)


FLAGS = st.sampled_from(["--noise-level", "--guidance-scale", "--steps", "--propagation-steps", "--color-fix",
                         "--seed", "--flow", "--scheduler", "--tile-size", "--tile-overlap", "--window-batch",
                         "--decode-chunk", "--decode-tile", "--tiling", "--tile", "--tile-mode", "--start", "--end",
                         "--fps", "--codec", "--crf", "--pix-fmt", "--vae", "--dtype", "--device", "--no-such-flag"])


@few(30)
@given(st.lists(st.tuples(FLAGS, ATOMS.filter(lambda v: "\x00" not in v)), min_size=1, max_size=4))
def test_upscale_dry_run_with_fuzzed_flags(clip, release, tmp_path_factory, flags):
    folder = tmp_path_factory.mktemp("up")
    args = ["upscale", str(clip), "-o", str(folder / "o.mp4"), "--weights", str(release), "--dry-run"]
    for flag, value in flags:
        args += [flag, value]
    before = sorted(str(p) for p in folder.rglob("*"))
    res = CliRunner().invoke(app, args)
    _cli_contract(res, folder, before)
    assert sorted(str(p) for p in folder.rglob("*")) == before  # a dry run never writes


@few(15)
@given(st.data())
def test_corrupted_media_is_refused_or_read(clip, release, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("media")
    raw = bytearray(clip.read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip", "zero"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 16))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = 0 if how == "zero" else raw[i] ^ 0xFF
    src = folder / "in.mp4"
    src.write_bytes(bytes(raw))
    before = sorted(str(p) for p in folder.rglob("*"))
    res = CliRunner().invoke(app, ["upscale", str(src), "-o", str(folder / "o.mp4"), "--weights", str(release),
                                   "--dry-run"])
    _cli_contract(res, folder, before)


def test_an_unknown_video_codec_tag_is_one_line(clip, release, tmp_path):
    # a damaged sample description leaves PyAV a stream without a codec context (seen by the fuzzer)
    src = tmp_path / "in.mp4"
    src.write_bytes(clip.read_bytes().replace(b"avc1", b"zzzz"))
    res = CliRunner().invoke(app, ["upscale", str(src), "-o", str(tmp_path / "o.mp4"), "--weights", str(release),
                                   "--dry-run"])
    assert res.exit_code == 2, res.output
    assert "video stream whose codec cannot be read" in res.output and "Traceback" not in res.output


@few(8)
@given(st.data())
@pytest.mark.slow
def test_corrupted_weight_folders_fail_verify_with_one_line(release, tmp_path_factory, data):
    import shutil

    folder = tmp_path_factory.mktemp("w")
    copy = folder / "release"
    shutil.copytree(release, copy)
    files = sorted(p for p in copy.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
    target = data.draw(st.sampled_from(files))
    raw = bytearray(target.read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip", "empty"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    elif how == "empty":
        raw = bytearray()
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))
    res = CliRunner().invoke(app, ["weights", "verify", str(copy)])
    assert "Traceback" not in res.output
    assert res.exit_code in (0, 2), res.output
    if res.exit_code == 2:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
