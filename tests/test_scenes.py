"""Scene-aware splitting (#25): detection, scene lists, scenes as jobs, one frame-exact output.

The detection tests run on a 76-frame clip of four real-looking segments with hard cuts
at known frames (tests/scene_fixtures.py). Upscales use the tiny random release on a
32x24 version with short scenes given by a scene list, so each render costs seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest
from typer.testing import CliRunner

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import scene_fixtures as S  # noqa: E402
from io_helpers import read_audio  # noqa: E402

import uav.cli  # noqa: E402
from uav.cli.app import app  # noqa: E402
from uav.io import probe, read_frames  # noqa: E402
from uav.scenes.detect import detect_cuts  # noqa: E402
from uav.weights.tiny import make_tiny_release  # noqa: E402

uav.cli._load_commands()
RENDER = ["--device", "cpu", "--steps", "1", "--seed", "3"]
#: the small clip's scenes: cuts at 3 and 5
SMALL = (3, 2, 3)


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return S.make_cut_clip(tmp_path_factory.mktemp("clip") / "film.mov")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return S.make_cut_clip(tmp_path_factory.mktemp("small") / "small.mov", segments=SMALL, width=32, height=24)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_release(tmp_path_factory.mktemp("weights") / "tiny")


def scene_list(path: Path, bounds: list[tuple[int, int]], extra: dict[int, str] | None = None) -> Path:
    text = ""
    for k, (a, b) in enumerate(bounds):
        text += f'[[shot]]\nclip = "scene {k + 1:03d}"\nstart = {a}\nend = {b}\n{(extra or {}).get(k, "")}\n'
    path.write_text(text, encoding="utf-8")
    return path


def decoded(path: Path) -> np.ndarray:
    return read_frames(path)


def render(*args: object) -> tuple[Path, dict]:
    """Run ``uav upscale ARGS --json``; the output path (tiny weights add _selfcheck_random) and the summary."""
    res = run("upscale", *args, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    return Path(summary["outputs"][0]["output"]), summary


# ---------------------------------------------------------------------------- detection
@pytest.mark.parametrize("detector", ["adaptive", "histogram"])
def test_cuts_are_found_within_one_frame_and_none_inside_a_segment(clip, detector):
    found = detect_cuts(clip, detector=detector)
    truth = S.cuts_of()
    assert len(found) == len(truth), (found, truth)  # no false cut inside a segment, none missed
    assert all(abs(f - t) <= 1 for f, t in zip(found, truth)), (found, truth)


def test_detection_in_a_range_counts_source_frames(clip):
    assert detect_cuts(clip, start=10, end=70, min_scene=5) == [20, 38, 60]


def test_scenes_command_lists_cuts_with_timecodes_and_writes_a_shot_list(clip, tmp_path):
    from uav_otio.shots import load_shot_list  # the timeline integration's own reader is the consumer

    res = run("scenes", clip, "-o", tmp_path / "film.toml", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [c["frame"] for c in summary["cuts"]] == [20, 38, 60]
    assert [c["timecode"] for c in summary["cuts"]] == ["01:00:00:20", "01:00:01:14", "01:00:02:12"]
    shots = load_shot_list(tmp_path / "film.toml")
    assert [(e.match_kind, e.match_value, e.start, e.end) for e in shots.entries] == [
        ("clip", "scene 001", 0, 20), ("clip", "scene 002", 20, 38), ("clip", "scene 003", 38, 60),
        ("clip", "scene 004", 60, 76)]


@pytest.mark.parametrize("suffix", [".otio", ".edl"])
def test_scenes_command_writes_a_timeline_the_adapters_read(clip, tmp_path, suffix):
    out = tmp_path / f"film{suffix}"
    res = run("scenes", clip, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    timeline = otio.adapters.read_from_file(str(out), **({"rate": 24} if suffix == ".edl" else {}))
    clips = list(timeline.video_tracks()[0].find_clips())
    ranges = [(c.name, c.source_range.start_time.to_timecode(24), c.source_range.duration.to_frames()) for c in clips]
    assert ranges == [("scene 001", "01:00:00:00", 20), ("scene 002", "01:00:00:20", 18),
                      ("scene 003", "01:00:01:14", 22), ("scene 004", "01:00:02:12", 16)]


def test_scenes_command_errors_are_one_line(clip, tmp_path):
    res = run("scenes", clip, "--detector", "nope")
    assert res.exit_code == 2 and res.stderr.startswith("error: --detector nope: unknown scene detector 'nope'")
    res = run("scenes", clip, "-o", tmp_path / "x.docx")
    assert res.exit_code == 2 and "no installed OpenTimelineIO adapter writes .docx" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_scenes_kind_is_a_plugin_kind():
    from uav.registry import Registry

    registry = Registry()
    assert {"adaptive", "content", "threshold", "histogram", "hash"} <= set(registry.names("scenes"))
    assert [p.name for p in registry.list_plugins() if "scenes" in p.components] == ["scenes"]


# ---------------------------------------------------------------------------- scene lists
@pytest.mark.parametrize("bounds, message", [
    ([(0, 3), (4, 8)], "'scene 001' ends at frame 3 and leaves a gap before 'scene 002', which starts at 4"),
    ([(0, 4), (3, 8)], "'scene 001' ends at frame 4 and overlaps 'scene 002', which starts at 3"),
    ([(0, 3), (3, 6)], "the scenes cover frames 0-6 but the input is frames 0-8"),
])
def test_a_scene_list_must_cover_the_clip_once(small, weights, tmp_path, bounds, message):
    res = run("upscale", small, "--weights", weights, "--dry-run", "--scenes", scene_list(tmp_path / "s.toml", bounds))
    assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_dry_run_shows_the_detected_scenes(clip, weights, tmp_path):
    res = run("upscale", clip, "--weights", weights, "--dry-run", "--json", "-o", tmp_path / "o.mov")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["outputs"][0]
    assert [(s["start"], s["end"]) for s in out["scenes"]] == [(0, 20), (20, 38), (38, 60), (60, 76)]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- one frame-exact output
@pytest.mark.slow
def test_each_scene_equals_that_scene_upscaled_alone(small, weights, tmp_path):
    scenes = scene_list(tmp_path / "s.toml", [(0, 3), (3, 5), (5, 8)], {1: "noise_level = 60"})
    out, summary = render(small, "--weights", weights, *RENDER, "--scenes", scenes, "-o", tmp_path / "out.mov")
    assert [s["status"] for s in summary["outputs"][0]["scenes"]] == ["rendered"] * 3
    whole = decoded(out)
    for k, (a, b) in enumerate([(0, 3), (3, 5), (5, 8)]):
        extra = ["--noise-level", "60"] if k == 1 else []
        alone, _ = render(small, "--weights", weights, *RENDER, *extra, "--start", a, "--end", b, "--scenes", "none",
                          "-o", tmp_path / f"alone{k}.mov")
        assert np.array_equal(whole[a:b], decoded(alone)), f"scene {k + 1}"
    src, dst = probe(small), probe(out)
    assert (dst.num_frames, dst.fps, dst.start_timecode) == (src.num_frames, src.fps, src.start_timecode)
    assert (dst.color_space, dst.color_primaries, dst.color_trc, dst.color_range) == (
        src.color_space, src.color_primaries, src.color_trc, src.color_range)
    a_in, rate_in, _ = read_audio(small)
    a_out, rate_out, _ = read_audio(out)
    assert rate_in == rate_out and len(a_in) == len(a_out) and np.allclose(a_in, a_out, atol=1e-3)
    with av.open(str(out)) as c:  # every scene starts on a keyframe: no frame refers across a cut
        keys = [p.pts for p in c.demux(c.streams.video[0]) if p.is_keyframe and p.size]
        tb = c.streams.video[0].time_base
    assert sorted(round(k * tb * 24) for k in keys) == [0, 3, 5]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # segments removed


@pytest.mark.slow
def test_a_clip_without_cuts_gives_the_unsplit_result(small, weights, tmp_path):
    single = scene_list(tmp_path / "one.toml", [(0, 8)])
    outs = {name: render(small, "--weights", weights, *RENDER, "--scenes", mode, "-o", tmp_path / f"{name}.mov")[0]
            for name, mode in (("auto", "auto"), ("none", "none"), ("file", single))}
    # auto finds no cut in 8 frames (scenes are >= 15 frames); one scene renders as one clip
    assert np.array_equal(decoded(outs["auto"]), decoded(outs["none"]))
    assert np.array_equal(decoded(outs["file"]), decoded(outs["none"]))


@pytest.mark.slow
def test_png_output_joins_the_scenes_into_one_sequence(small, weights, tmp_path):
    scenes = scene_list(tmp_path / "s.toml", [(0, 3), (3, 5), (5, 8)])
    out, _ = render(small, "--weights", weights, *RENDER, "--scenes", scenes, "--codec", "png", "-o",
                    tmp_path / "frames")
    names = sorted(p.name for p in out.iterdir())
    # each segment's own provenance record is not an image: one joined record describes the sequence
    assert names == [f"{k:06d}.png" for k in range(8)] + ["audio.wav", "uav.json"]
    record = json.loads((out / "uav.json").read_text())
    assert record["source"]["start_frame"] == 0 and record["source"]["end_frame"] == 8
    assert record["source"]["frames"] == 8
    assert [s["source"]["frames"] for s in record["scenes"]] == [3, 2, 3]


@pytest.mark.slow
def test_joined_video_carries_the_provenance_of_its_scenes(small, weights, tmp_path):
    from uav.io.provenance import read_provenance

    scenes = scene_list(tmp_path / "s.toml", [(0, 3), (3, 8)])
    out, _ = render(small, "--weights", weights, *RENDER, "--scenes", scenes, "-o", tmp_path / "out.mov")
    record, where = read_provenance(out)
    assert where == "metadata"
    assert record["source"]["frames"] == 8 and len(record["scenes"]) == 2


# ---------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_kill_9_after_a_scene_then_rerun_renders_only_the_rest(small, weights, tmp_path):
    scenes = scene_list(tmp_path / "s.toml", [(0, 3), (3, 5), (5, 8)])
    out = tmp_path / "out_selfcheck_random.mov"  # tiny random weights mark their outputs
    command = [sys.executable, "-c", "import uav.cli; uav.cli.main()", "upscale", str(small), "--weights",
               str(weights), *RENDER, "--scenes", str(scenes), "-o", str(tmp_path / "out.mov"), "--json", "-q"]
    state = tmp_path / f".{out.name}.uav-scenes" / "state.json"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    done_at_kill: list[str] = []
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            rows = json.loads(state.read_text())["scenes"]
        except (OSError, ValueError, KeyError):
            rows = []
        done_at_kill = [r["name"] for r in rows if r["status"] == "done"]
        if done_at_kill:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(60)
    proc.stdout.close()
    proc.stderr.close()
    assert done_at_kill and len(done_at_kill) < 3 and not out.exists()
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    rows = json.loads(again.stdout)["outputs"][0]["scenes"]
    assert [r["name"] for r in rows if r["status"] == "reused"] == done_at_kill
    assert [r["status"] for r in rows if r["name"] not in done_at_kill] == ["rendered"] * (3 - len(done_at_kill))
    assert probe(out).num_frames == 8 and not state.parent.exists()
    assert [p.name for p in tmp_path.iterdir() if ".uavtmp" in p.name] == []


# ---------------------------------------------------------------------------- distribution
@pytest.mark.slow
def test_two_ray_workers_give_the_same_file_as_the_local_executor(small, weights, tmp_path, one_thread):
    ray = pytest.importorskip("ray")
    scenes = scene_list(tmp_path / "s.toml", [(0, 3), (3, 5), (5, 8)])
    common = [small, "--weights", weights, *RENDER, "--scenes", scenes]
    local, _ = render(*common, "-o", tmp_path / "local.mov")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote, summary = render(*common, "-o", tmp_path / "ray.mov", "--executor", "ray", "--workers", "2")
    finally:
        ray.shutdown()
    assert np.array_equal(decoded(local), decoded(remote))
    # the scenes went to the Ray workers (which of the two took each depends on who was ready first)
    assert summary["executor"] == "ray"
    assert {s["worker"] for s in summary["outputs"][0]["scenes"]} <= {"w1", "w2"}


# ---------------------------------------------------------------------------- timelines
@pytest.mark.slow
def test_timeline_upscale_cuts_a_pre_edited_clip_into_its_scenes(weights, tmp_path):
    media = S.make_cut_clip(tmp_path / "edited.mov", segments=(16, 16, 16), width=32, height=24)
    rate = 24
    available = otio.opentime.TimeRange(otio.opentime.RationalTime(86400, rate), otio.opentime.RationalTime(48, rate))
    used = otio.opentime.TimeRange(otio.opentime.RationalTime(86400 + 16, rate), otio.opentime.RationalTime(32, rate))
    timeline = otio.schema.Timeline("pre-edited")
    track = otio.schema.Track("V1")
    track.append(otio.schema.Clip("SH010", otio.schema.ExternalReference(media.as_uri(), available), used))
    timeline.tracks.append(track)
    otio.adapters.write_to_file(timeline, str(tmp_path / "cut.otio"))
    res = run("timeline", "upscale", tmp_path / "cut.otio", "-o", tmp_path / "out.otio", "--media-dir",
              tmp_path / "media", "--weights", weights, *RENDER, "--handles", "0", "--scenes", "auto", "--json", "-q")
    assert res.exit_code == 0, res.output
    rendered = [p for p in (tmp_path / "media").iterdir() if p.suffix == ".mov"]
    # the same path as uav upscale --scenes auto on the clip's range: scenes 16-32 and 32-48
    alone, summary = render(media, "--weights", weights, *RENDER, "--start", 16, "--end", 48, "--scenes", "auto",
                            "--codec", "prores_hq", "-o", tmp_path / "alone.mov")
    assert [(s["start"], s["end"]) for s in summary["outputs"][0]["scenes"]] == [(16, 32), (32, 48)]
    assert len(rendered) == 1 and np.array_equal(decoded(rendered[0]), decoded(alone))
    assert probe(rendered[0]).start_timecode == "01:00:00:16"


@pytest.mark.slow
def test_prompt_auto_captions_each_scene_on_its_own(small, weights, tmp_path):
    from captioner_models import make_tiny_blip

    from uav.captioning import caption_clip

    blip = make_tiny_blip(tmp_path / "blip")
    options = {"model": str(blip), "max_new_tokens": 4}
    auto = 'prompt = "auto"\ncaptioner = "blip-local"\ncaption_frame = "middle"'
    scenes = scene_list(tmp_path / "s.toml", [(0, 3), (3, 5), (5, 8)], {1: auto, 2: auto})
    _, summary = render(small, "--weights", weights, *RENDER, "--scenes", scenes, "-o", tmp_path / "o.mov",
                        "--captioner-option", f"model={blip}", "--captioner-option", "max_new_tokens=4")
    rows = summary["outputs"][0]["scenes"]
    expected = [caption_clip(small, "blip-local", options, frame="middle", start=a, end=b).text
                for a, b in ((3, 5), (5, 8))]
    assert [r["caption"] for r in rows] == [None, *expected] and all(expected)


# ---------------------------------------------------------------------------- the join alone
@pytest.mark.parametrize("codec, suffix", [("h264", ".mp4"), ("h265", ".mov"), ("prores_hq", ".mov"),
                                           ("h264", ".mkv")])
def test_join_copies_every_segment_packet_for_packet(small, tmp_path, codec, suffix):
    from uav.io import write_video
    from uav.scenes.join import join_segments

    frames = S.scene_frames(SMALL, 32, 24)
    bounds = [(0, 3), (3, 5), (5, 8)]
    segments = [write_video(tmp_path / f"seg{k}{suffix}", iter(frames[a:b]), fps=24, codec=codec)
                for k, (a, b) in enumerate(bounds)]
    out = join_segments(segments, tmp_path / f"out{suffix}", fps=S.FPS, frames=[b - a for a, b in bounds],
                        audio_source=small, audio_start=0, timecode="01:00:00:00")
    # the same decoded frames as the segments: no second encode
    assert np.array_equal(decoded(out), np.concatenate([decoded(s) for s in segments]))
    info = probe(out)
    assert (info.num_frames, info.fps, info.has_audio) == (8, 24, True)
    assert info.start_timecode == "01:00:00:00"
    assert [p.name for p in tmp_path.iterdir() if ".uavtmp" in p.name] == []


def test_join_refuses_a_segment_encoded_differently(tmp_path):
    from uav.io import write_video
    from uav.scenes.detect import SceneError
    from uav.scenes.join import join_segments

    frames = S.scene_frames(SMALL, 32, 24)
    a = write_video(tmp_path / "a.mov", iter(frames[:3]), fps=24, codec="h264")
    b = write_video(tmp_path / "b.mov", iter(frames[3:]), fps=24, codec="prores_hq")
    with pytest.raises(SceneError, match="encoded differently"):
        join_segments([a, b], tmp_path / "out.mov", fps=S.FPS, frames=[3, 5])
    assert not (tmp_path / "out.mov").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.mov", "b.mov"]


# ---------------------------------------------------------------------------- reading scene lists
def test_a_timeline_gives_scenes_and_its_markers_give_their_settings(clip, tmp_path):
    from uav.scenes.lists import read_scene_list, scene_timeline
    from uav.scenes.detect import scenes_from_cuts

    info = probe(clip)
    timeline = scene_timeline(scenes_from_cuts([20, 38, 60], 0, 76), info=info)
    second = timeline.video_tracks()[0][1]
    second.markers.append(otio.schema.Marker("uav: noise_level=60; prompt=a sunset", otio.opentime.TimeRange(
        second.source_range.start_time, otio.opentime.RationalTime(1, 24))))
    timeline.metadata["uav"] = {"steps": 20}
    otio.adapters.write_to_file(timeline, str(tmp_path / "s.otio"))
    scenes, warnings = read_scene_list(tmp_path / "s.otio", info=info, first=0, stop=76)
    assert [(s.start, s.end) for s in scenes] == [(0, 20), (20, 38), (38, 60), (60, 76)] and warnings == []
    assert scenes[1].settings == {"steps": 20, "noise_level": 60, "prompt": "a sunset"}
    assert scenes[0].settings == {"steps": 20}


def test_shot_list_entries_without_a_range_apply_to_their_scenes(clip, tmp_path):
    from uav.scenes.lists import read_scene_list

    path = scene_list(tmp_path / "s.toml", [(0, 20), (20, 38), (38, 60), (60, 76)], {2: "seed = 7"})
    path.write_text(path.read_text() + '[[shot]]\nmedia = "film.mov"\nnoise_level = 30\n\n'
                    '[[shot]]\nclip = "scene 002"\nprompt = "a pan"\n\n[[shot]]\nmarker = "hero"\nsteps = 5\n')
    scenes, warnings = read_scene_list(path, info=probe(clip), first=0, stop=76)
    assert [s.settings for s in scenes] == [{"noise_level": 30}, {"noise_level": 30, "prompt": "a pan"},
                                            {"noise_level": 30, "seed": 7}, {"noise_level": 30}]
    assert warnings == [f"{path}: shot list entry #7 (marker = 'hero') matched no scene"]


def test_bad_per_scene_settings_name_the_scene(small, weights, tmp_path):
    for extra, message in (("noise_level = 500", "noise_level"), ("skip = true", "'scene 002': skip = true"),
                           ('vae = "video"', "'scene 002': vae = 'video'")):
        path = scene_list(tmp_path / "s.toml", [(0, 3), (3, 5), (5, 8)], {1: extra})
        res = run("upscale", small, "--weights", weights, "--dry-run", "--scenes", path)
        assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
