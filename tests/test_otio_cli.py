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
    assert data["skipped"] == [{"clip": "V1/offline", "media": "", "reason": "missing media reference",
                                "track": "V1", "index": 2, "record_timecode": "00:00:00:20",
                                "record_seconds": 20 / 24}]


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


# --------------------------------------------------------------------------- #
# parity with ``uav upscale``
# --------------------------------------------------------------------------- #

#: ``uav upscale`` options a timeline decides itself (ranges and rates come from the
#: edit) or must not offer (random networks relinked into an edit); docs/timelines.md
#: explains each
NOT_FOR_TIMELINES = {"start": "--start", "end": "--end", "fps": "--fps", "self_check": "--self-check",
                     "temporal_split": "--temporal-split", "start_number": "--start-number"}
#: options whose help must read exactly as ``uav upscale``'s: same meaning, same default
SAME_HELP = ("scheduler", "tile_mode", "tile_size", "tile_overlap", "window_batch", "decode_chunk", "pix_fmt", "crf",
             "weights", "device", "dtype", "quiet", "json", "debug", "vae")


def _commands():
    import typer

    import uav.cli.upscale  # noqa: F401  (attaches ``uav upscale``)

    root = typer.main.get_command(app)
    return root.commands["upscale"], root.commands["timeline"].commands["upscale"]


def _options(command):
    # typer carries its own copy of click, so match on the parameter kind, not a class
    return {p.name: p for p in command.params if p.param_type_name == "option"}


def test_timeline_upscale_accepts_every_option_of_uav_upscale():
    single, timeline = _commands()
    theirs, ours = _options(single), _options(timeline)
    wanted = {name: p for name, p in theirs.items() if name not in NOT_FOR_TIMELINES}
    assert len(wanted) >= 25  # the introspection really sees uav upscale's options
    missing = sorted(set(wanted) - set(ours))
    assert missing == [], f"uav timeline upscale lacks {missing}"
    for name, p in wanted.items():
        q = ours[name]
        assert sorted(q.opts + q.secondary_opts) == sorted(p.opts + p.secondary_opts), name
        if name != "output":  # the output timeline (required), not a video: its type differs on purpose
            assert (q.is_flag, q.type_descriptor.annotation) == (p.is_flag, p.type_descriptor.annotation), name
    for name in SAME_HELP:
        key = "as_json" if name == "json" else name
        assert ours[key].help == theirs[key].help, name
    for name in NOT_FOR_TIMELINES:
        assert name in theirs and name not in ours


def test_the_exclusions_are_documented():
    doc = (Path(__file__).parents[1] / "docs" / "timelines.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Options shared with `uav upscale`"):]
    for option in NOT_FOR_TIMELINES.values():
        assert f"`{option}`" in section, option


def test_pipeline_overrides_reach_the_renderer_and_the_pipeline_settings(cut, tmp_path):
    from uav_otio.shots import to_upscale_settings

    out, mdir = tmp_path / "cut_uav.otio", tmp_path / "media"
    knobs = ["--tile-size", "128", "--tile-overlap", "16", "--tile", "on", "--tile-mode", "latent",
             "--window-batch", "2", "--decode-chunk", "2", "--scheduler", "ddim-official"]
    before = len(F.CALLS)
    res = run("upscale", cut, "-o", out, "--media-dir", mdir, "--renderer", SPY, *knobs)
    assert res.exit_code == 0, res.output
    calls = F.CALLS[before:]
    assert len(calls) == 2
    for call in calls:
        s = call["settings"]
        assert (s["tile_size"], s["tile_overlap"], s["tile"], s["tile_mode"]) == (128, 16, "on", "latent")
        assert (s["window_batch"], s["decode_chunk"], s["scheduler"]) == (2, 2, "ddim-official")
        pipeline = to_upscale_settings(s)
        assert (pipeline.tile_size, pipeline.tile_overlap, pipeline.tile, pipeline.tile_mode) == (128, 16, True, "latent")
        assert (pipeline.window_batch, pipeline.decode_chunk) == (2, 2)
    hero = next(c for c in calls if c["clips"] == ["hero"])
    assert hero["settings"]["noise_level"] == 60  # the clip's own settings are kept under the overrides

    before = len(F.CALLS)
    res = run("upscale", cut, "-o", out, "--media-dir", mdir, "--renderer", SPY, *knobs)
    assert res.exit_code == 0 and len(F.CALLS) == before  # same values: up to date
    res = run("upscale", cut, "-o", out, "--media-dir", mdir, "--renderer", SPY, *knobs, "--tile-size", "96")
    assert res.exit_code == 0, res.output
    assert [c["settings"]["tile_size"] for c in F.CALLS[before:]] == [96, 96]  # a changed knob re-renders


def test_quiet_and_json_output_modes(cut, tmp_path):
    args = ["upscale", cut, "-o", tmp_path / "o.otio", "--media-dir", tmp_path / "m", "--renderer", SPY]
    res = CliRunner().invoke(app, ["timeline", *map(str, args), "-q"])
    assert res.exit_code == 0, res.output
    assert "rendered" not in res.output and "rendering" not in res.output and "up to date" not in res.output
    res = CliRunner().invoke(app, ["timeline", *map(str, args), "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["ok"] is True and sorted(summary["cached"]) == ["B002_uav.mov", "C003_uav.mov"]


class _FakeUpscaler:
    """Stands in for ``VideoUpscaler`` at its boundary: records what it is given, sends the
    progress events the real one sends, and writes flat 4x frames through the real writer."""

    def __init__(self):
        self.calls = []

    def upscale(self, video, *, output, settings, callback, writer_options, start=None, end=None):
        from uav.io.writer import VideoWriter

        frames = (end - start) if isinstance(video, str) else len(video)
        self.calls.append({"settings": settings, "writer_options": dict(writer_options)})
        callback({"stage": "denoise", "index": 0, "total": settings.num_inference_steps, "tile": 0, "tiles": 1})
        with VideoWriter(output, fps=24, width=4 * F.W, height=4 * F.H, **writer_options) as writer:
            for _ in range(frames):
                writer.write(F.np.full((4 * F.H, 4 * F.W, 3), 128, F.np.uint8))
        callback({"stage": "decode", "frames": frames, "index": 0, "total": 1})
        return output


def test_default_renderer_gets_model_pipeline_and_writer_options(cut, tmp_path, monkeypatch):
    import av

    import uav

    loads, fake = [], _FakeUpscaler()

    def from_pretrained(weights, **kw):
        loads.append({"weights": weights, **kw})
        return fake

    monkeypatch.setattr(uav.VideoUpscaler, "from_pretrained", staticmethod(from_pretrained))
    weights = tmp_path / "release"
    weights.mkdir()
    out, mdir = tmp_path / "cut_uav.otio", tmp_path / "media"
    args = ["upscale", cut, "-o", out, "--media-dir", mdir, "--weights", weights, "--device", "cpu",
            "--dtype", "float16", "--codec", "h264", "--pix-fmt", "yuv444p", "--crf", "30", "--tile-size", "128",
            "--steps", "3", "--propagation-steps", "1"]
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert loads == [{"weights": weights, "device": "cpu", "dtype": "fp16", "vae": "3d"}]  # loaded once
    assert len(fake.calls) == 2
    for call in fake.calls:
        assert (call["settings"].tile_size, call["settings"].num_inference_steps) == (128, 3)
        assert {k: call["writer_options"][k] for k in ("codec", "pix_fmt", "crf")} == \
            {"codec": "h264", "pix_fmt": "yuv444p", "crf": 30}
    with av.open(str(mdir / "B002_uav.mov")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv444p")
    manifest = json.loads((mdir / "uav_manifest.json").read_text())
    assert {e["model"]["crf"] for e in manifest["outputs"].values()} == {30}
    assert "denoise steps" in res.output  # uav upscale's progress bars

    res = run(*args)
    assert res.exit_code == 0 and len(fake.calls) == 2  # nothing changed: nothing rendered
    args[args.index("--crf") + 1] = "28"
    res = run(*args)
    assert res.exit_code == 0 and len(fake.calls) == 4  # a changed encoding re-renders


@pytest.mark.parametrize(
    "args, message",
    [
        (["--codec", "png", "--ext", "mp4"], "--ext mp4: --codec png writes an image-sequence folder per job"),
        (["--codec", "h264", "--pix-fmt", "rgb24"], "pix_fmt 'rgb24' is not available for codec 'h264'"),
        (["--crf", "20"], "crf only applies to h264/h265"),
        (["--dtype", "fp8"], "--dtype: expected auto, fp32, fp16 or bf16, got 'fp8'"),
        (["--device", "tpu"], "--device: expected auto, cpu, cuda, cuda:N or mps"),
        (["--tile", "maybe"], "tile from command-line overrides: expected one of auto, on, off"),
        (["--tile-size", "64", "--tile-overlap", "64"], "must be below tile_size=64"),
        (["--scheduler", "nope"], "--scheduler:"),
    ],
)
def test_bad_model_and_pipeline_options_fail_before_loading(cut, tmp_path, args, message):
    res = run("upscale", cut, "-o", tmp_path / "o.otio", "--media-dir", tmp_path / "m", "--weights", tmp_path, *args)
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "m").exists()  # nothing was planned into the media folder


def test_debug_shows_the_traceback(cut, tmp_path):
    res = run("upscale", cut, "-o", tmp_path / "o.otio", "--media-dir", tmp_path / "m", "--weights", tmp_path,
              "--dtype", "fp8", "--debug")
    assert res.exit_code == 2 and "Traceback" in res.output and "error: --dtype" in res.output
