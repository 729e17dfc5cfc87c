"""Rendering through an injected renderer, relinking, and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import MANIFEST_NAME, UPSCALED_KEY, plan_timeline, upscale_timeline  # noqa: E402
from uav_otio.render import PARTIAL_MARK, atomic_output  # noqa: E402

DEFAULT = otio.schema.Clip.DEFAULT_MEDIA_KEY


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("otio_render_media"))


def _save(tl, path):
    otio.adapters.write_to_file(tl, str(path))
    return path


def _partials(folder):
    return [p for p in Path(folder).iterdir() if PARTIAL_MARK in p.name]


@pytest.mark.parametrize("name", sorted(F.GOLDEN))
def test_golden_timelines_render_relink_and_keep_timing(media, tmp_path, name):
    tl_in = F.GOLDEN[name](media)
    src = _save(tl_in, tmp_path / f"{name}.otio")
    before = F.ranges_in_parent(otio.adapters.read_from_file(str(src)))
    spy = F.SpyRenderer()
    result = upscale_timeline(src, tmp_path / "out" / "cut_uav.otio", tmp_path / "media", renderer=spy)

    plan = result.plan
    assert [c["output"] for c in spy.calls] == [j.output_name for j in plan.jobs]
    out = otio.adapters.read_from_file(str(tmp_path / "out" / "cut_uav.otio"))
    assert F.ranges_in_parent(out) == before  # clip and track timing unchanged

    rendered = {u.clip.name: u for u in plan.uses}
    skipped = {s.label.split("/")[-1] for s in plan.skipped}
    originals = {c.name: c.media_reference for c in tl_in.find_clips()}
    for c in out.find_clips():
        refs = c.media_references()
        if c.name in rendered:
            use, job = rendered[c.name], rendered[c.name].job
            assert c.active_media_reference_key == UPSCALED_KEY
            new = refs[UPSCALED_KEY]
            assert new.target_url.startswith("file:///")
            path = Path(otio.url_utils.filepath_from_url(new.target_url))
            assert path.is_absolute() and path.is_file() and path.name == job.output_name
            assert new.available_range == job.media_range
            # the whole used range lies inside the rendered media, in the clip's media time
            assert new.available_range.start_time.value <= use.used_start
            assert new.available_range.end_time_exclusive().value >= use.used_end
            assert refs[DEFAULT].is_equivalent_to(originals[c.name])  # the original is kept
            meta = new.metadata["uav"]
            assert meta["settings_hash"] == job.settings_hash
            assert meta["settings"]["noise_level"] == job.settings["noise_level"]
            assert "model" in meta
            frames, info = F.read_movie(path)
            assert len(frames) == job.frames
            assert info["timecode"] == job.timecode
            assert info["fps"] == 24
            assert (info["width"], info["height"]) == (2 * F.W, 2 * F.H)
        else:
            assert c.name in skipped
            assert UPSCALED_KEY not in refs
    assert result.relinked == len(plan.uses)


def test_frames_rendered_are_used_range_plus_handles(media, tmp_path):
    src = _save(F.simple_cut(media), tmp_path / "cut.otio")
    spy = F.SpyRenderer()
    upscale_timeline(src, tmp_path / "o.otio", tmp_path / "media", renderer=spy, handles=5)
    by_out = {c["output"]: c for c in spy.calls}
    a = by_out["A001_uav.mov"]
    # SH010 uses media frames 86410..86429 (file frames 10..29); 5 handles each side
    assert (a["start"], a["end"], a["frames"]) == (F.TC_START + 5, F.TC_START + 35, 30)
    assert a["levels"] == [F.level(i) for i in range(5, 35)]  # the right source frames were read
    b = by_out["B002_uav.mov"]
    assert b["frames"] == 30 and b["levels"] == [F.level(i) for i in range(0, 30)]
    assert sum(c["frames"] for c in spy.calls) == 30 + 30


def test_image_sequence_frames_and_output(media, tmp_path):
    spy = F.SpyRenderer()
    upscale_timeline(F.image_sequence(media), tmp_path / "o.otio", tmp_path / "media", renderer=spy, handles=1)
    (call,) = spy.calls
    assert call["levels"] == [F.level(i) for i in range(7, 15)]
    frames, info = F.read_movie(tmp_path / "media" / "plate_uav.mov")
    assert len(frames) == 8 and info["timecode"] == "00:00:00:07"


def test_each_clip_settings_reach_the_renderer(media, tmp_path):
    spy = F.SpyRenderer()
    upscale_timeline(F.markers_with_settings(media), tmp_path / "o.otio", tmp_path / "media", renderer=spy,
                     overrides={"seed": 3})
    by_clip = {tuple(c["clips"]): c["settings"] for c in spy.calls}
    hero, plain = by_clip[("hero",)], by_clip[("plain",)]
    assert (hero["prompt"], hero["noise_level"], hero["guidance_scale"], hero["steps"]) == ("a red car", 60, 4.0, 20)
    assert (hero["color_fix"], hero["propagation_steps"], hero["seed"]) == ("wavelet", [3, 5], 3)
    assert (plain["prompt"], plain["noise_level"], plain["steps"], plain["seed"]) == ("", 80, 20, 3)


def test_rerun_renders_nothing_and_rewrites_the_timeline(media, tmp_path):
    src = _save(F.shared_source(media), tmp_path / "cut.otio")
    out = tmp_path / "cut_uav.otio"
    first = F.SpyRenderer()
    upscale_timeline(src, out, tmp_path / "media", renderer=first)
    assert len(first.calls) == 3
    text = out.read_text()
    out.unlink()
    again = F.SpyRenderer()
    result = upscale_timeline(src, out, tmp_path / "media", renderer=again)
    assert again.calls == []
    assert [r.status for r in result.report.results] == ["cached"] * 3
    assert out.read_text() == text


def test_changed_settings_rerender_only_that_clip(media, tmp_path):
    src = tmp_path / "cut.otio"
    tl = F.simple_cut(media)
    _save(tl, src)
    upscale_timeline(src, tmp_path / "o.otio", tmp_path / "media", renderer=F.SpyRenderer())
    tl.tracks[0][1].metadata["uav"] = {"prompt": "new look"}
    _save(tl, src)
    spy = F.SpyRenderer()
    result = upscale_timeline(src, tmp_path / "o.otio", tmp_path / "media", renderer=spy)
    assert [c["output"] for c in spy.calls] == ["B002_uav.mov"]
    assert spy.calls[0]["settings"]["prompt"] == "new look"
    manifest = json.loads((tmp_path / "media" / MANIFEST_NAME).read_text())
    assert manifest["outputs"]["B002_uav.mov"]["settings"]["prompt"] == "new look"
    new = next(c for c in result.timeline.find_clips() if c.name == "SH020").media_reference
    assert new.metadata["uav"]["settings"]["prompt"] == "new look"


def test_changed_model_or_missing_output_rerenders(media, tmp_path):
    src = _save(F.simple_cut(media), tmp_path / "cut.otio")
    upscale_timeline(src, tmp_path / "o.otio", tmp_path / "media", renderer=F.SpyRenderer(), model={"weights": "w1"})
    spy = F.SpyRenderer()
    upscale_timeline(src, tmp_path / "o.otio", tmp_path / "media", renderer=spy, model={"weights": "w2"})
    assert len(spy.calls) == 2
    (tmp_path / "media" / "A001_uav.mov").unlink()
    with open(tmp_path / "media" / "B002_uav.mov", "ab") as fh:
        fh.write(b"x")  # a file that no longer matches its record
    spy = F.SpyRenderer()
    upscale_timeline(src, tmp_path / "o.otio", tmp_path / "media", renderer=spy, model={"weights": "w2"})
    assert sorted(c["output"] for c in spy.calls) == ["A001_uav.mov", "B002_uav.mov"]
    spy = F.SpyRenderer()
    upscale_timeline(src, tmp_path / "o.otio", tmp_path / "media", renderer=spy, model={"weights": "w2"}, force=True)
    assert len(spy.calls) == 2


def test_interrupted_render_leaves_no_partial_file_and_resumes(media, tmp_path):
    src = _save(F.shared_source(media), tmp_path / "cut.otio")
    mdir = tmp_path / "media"
    names = [j.output_name for j in plan_timeline(F.shared_source(media)).jobs]
    assert len(names) == 3
    spy = F.SpyRenderer(fail_on=names[1])
    with pytest.raises(KeyboardInterrupt):
        upscale_timeline(src, tmp_path / "o.otio", mdir, renderer=spy)
    assert (mdir / names[0]).is_file()
    assert not (mdir / names[1]).exists() and not (mdir / names[2]).exists()
    assert _partials(mdir) == []
    assert list(json.loads((mdir / MANIFEST_NAME).read_text())["outputs"]) == [names[0]]
    assert not (tmp_path / "o.otio").exists()

    spy = F.SpyRenderer()
    result = upscale_timeline(src, tmp_path / "o.otio", mdir, renderer=spy)
    assert [c["output"] for c in spy.calls] == names[1:]
    assert result.relinked == 4
    assert sorted(json.loads((mdir / MANIFEST_NAME).read_text())["outputs"]) == sorted(names)


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import otio_fixtures as F
from uav_otio import upscale_timeline
upscale_timeline({src!r}, {out!r}, {mdir!r}, renderer=F.SpyRenderer(hang_on={hang!r}))
"""


def test_killed_run_resumes_and_completes(media, tmp_path):
    src = _save(F.shared_source(media), tmp_path / "cut.otio")
    mdir = tmp_path / "media"
    out = tmp_path / "o.otio"
    names = [j.output_name for j in plan_timeline(F.shared_source(media)).jobs]
    script = _KILL_SCRIPT.format(tests=str(Path(__file__).parent), src=str(src), out=str(out), mdir=str(mdir),
                                 hang=names[2])
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        hung = f".{Path(names[2]).stem}{PARTIAL_MARK}"
        while not (mdir.exists() and any(p.name.startswith(hung) for p in _partials(mdir))):
            assert proc.poll() is None, "the render process ended before it could be killed"
            assert time.monotonic() < deadline, "the render never reached its third job"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [p.name for p in _partials(mdir)] and not (mdir / names[2]).exists()
    assert sorted(json.loads((mdir / MANIFEST_NAME).read_text())["outputs"]) == sorted(names[:2])
    assert not out.exists()

    spy = F.SpyRenderer()
    result = upscale_timeline(src, out, mdir, renderer=spy)
    assert [c["output"] for c in spy.calls] == [names[2]]
    assert _partials(mdir) == []  # the killed run's leftover is cleaned up
    assert [p.name for p in result.report.removed_partials]
    assert out.is_file() and result.relinked == 4


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "x.mov"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"new, half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and _partials(tmp_path) == []
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".mov" and tmp != target
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_renderer_that_writes_nothing_is_an_error(media, tmp_path):
    with pytest.raises(RuntimeError, match="without writing"):
        upscale_timeline(F.simple_cut(media), tmp_path / "o.otio", tmp_path / "m",
                         renderer=lambda job, settings, path, progress=None: None)


def test_rerun_on_the_relinked_timeline_uses_the_original_media(media, tmp_path):
    src = _save(F.simple_cut(media), tmp_path / "cut.otio")
    upscale_timeline(src, tmp_path / "pass1.otio", tmp_path / "media", renderer=F.SpyRenderer())
    spy = F.SpyRenderer()
    result = upscale_timeline(tmp_path / "pass1.otio", tmp_path / "pass2.otio", tmp_path / "media", renderer=spy)
    assert spy.calls == []  # same media, ranges and settings: all cached
    for c in result.timeline.find_clips():
        if c.name in ("SH010", "SH020"):
            assert set(c.media_references()) == {DEFAULT, UPSCALED_KEY}
            assert c.media_references()[DEFAULT].target_url.endswith(("A001.mov", "B002.mov"))


def test_downgrade_writes_one_reference_per_clip(media, tmp_path):
    out = tmp_path / "o.otio"
    upscale_timeline(F.simple_cut(media), out, tmp_path / "media", renderer=F.SpyRenderer(), downgrade=True)
    data = json.loads(out.read_text())
    clips = [c for c in data["tracks"]["children"][0]["children"] if c["OTIO_SCHEMA"].startswith("Clip")]
    assert {c["OTIO_SCHEMA"] for c in clips} == {"Clip.1"}
    assert all("media_references" not in c for c in clips)
    assert [c["media_reference"]["target_url"].rsplit("/", 1)[-1] for c in clips] == ["A001_uav.mov", "B002_uav.mov"]


def test_output_may_not_overwrite_the_input(media, tmp_path):
    src = _save(F.simple_cut(media), tmp_path / "cut.otio")
    with pytest.raises(ValueError, match="overwrite the input"):
        upscale_timeline(src, src, tmp_path / "media", renderer=F.SpyRenderer())
