"""Planning: which media ranges a timeline needs, with handles, merging and skips."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import plan_timeline  # noqa: E402
from uav_otio.plan import probe_media, url_to_path  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("otio_plan_media"))


def _jobs(plan):
    return {(j.media.path.name, j.start, j.end): j for j in plan.jobs}


def _job_of(plan, clip_name):
    for use in plan.uses:
        if use.clip.name == clip_name:
            return use.job
    raise AssertionError(f"{clip_name} not planned")


def test_simple_cut_ranges_are_used_range_plus_handles_clamped(media):
    plan = plan_timeline(F.simple_cut(media), handles=12)
    a = _job_of(plan, "SH010")
    # used [86410, 86430); handles reach back to 86398 but the media starts at 86400
    assert (a.start, a.end, a.frames) == (F.TC_START, F.TC_START + 42, 42)
    assert a.first_index == 0 and a.end_index == 42
    assert a.timecode == "01:00:00:00"
    b = _job_of(plan, "SH020")
    assert (b.start, b.end) == (0, 37)
    assert b.timecode == "00:00:00:00"
    uses = {u.clip.name: (u.used_start, u.used_end) for u in plan.uses}
    assert uses == {"SH010": (F.TC_START + 10, F.TC_START + 30), "SH020": (5, 25)}


def test_handles_option_and_zero_handles(media):
    plan = plan_timeline(F.simple_cut(media), handles=3)
    assert (_job_of(plan, "SH010").start, _job_of(plan, "SH010").end) == (F.TC_START + 7, F.TC_START + 33)
    plan0 = plan_timeline(F.simple_cut(media), handles=0)
    assert [(j.start, j.end) for j in plan0.jobs] == [(F.TC_START + 10, F.TC_START + 30), (5, 25)]
    with pytest.raises(ValueError, match="handles"):
        plan_timeline(F.simple_cut(media), handles=-1)


def test_audio_and_disabled_items_are_skipped_with_reasons(media):
    plan = plan_timeline(F.simple_cut(media))
    reasons = {s.label: s.reason for s in plan.skipped}
    assert reasons["A1/dialog"] == "audio track, not video"
    assert "V2" in reasons["V2/off"] and "disabled" in reasons["V2/off"]
    assert {u.clip.name for u in plan.uses} == {"SH010", "SH020"}


def test_cross_dissolve_overlap_counts(media):
    plan = plan_timeline(F.cross_dissolve(media), handles=0)
    uses = {u.clip.name: (u.used_start, u.used_end) for u in plan.uses}
    # outgoing clip runs 6 frames (out_offset) past its cut, incoming starts 4 (in_offset) early
    assert uses["out"] == (F.TC_START + 20, F.TC_START + 46)
    assert uses["in"] == (26, 50)
    plan12 = plan_timeline(F.cross_dissolve(media), handles=12)
    assert (_job_of(plan12, "in").start, _job_of(plan12, "in").end) == (14, 60)  # clamped at the media's end


def test_nested_stack_uses_only_the_visible_part(media):
    plan = plan_timeline(F.nested_stack(media), handles=0)
    (use,) = plan.uses
    assert (use.used_start, use.used_end) == (5, 15)
    plan = plan_timeline(F.nested_stack(media), handles=12)
    assert (plan.jobs[0].start, plan.jobs[0].end) == (0, 27)


def test_nested_stack_trimmed_away_clip_is_skipped(media):
    tl = F.nested_stack(media)
    stack = tl.tracks[0][1]
    stack[0].append(F.clip("hidden", F.ext_ref(media["b"]), 0, 10))  # at stack time 30..40
    plan = plan_timeline(tl)
    assert any(s.label.endswith("hidden") and "trimmed away" in s.reason for s in plan.skipped)


def test_speed_change_consumes_warped_media(media):
    plan = plan_timeline(F.speed_change(media), handles=0)
    uses = {u.clip.name: (u.used_start, u.used_end) for u in plan.uses}
    # 10 frames at 2x from frame 10 sample media 10, 12, ..., 28
    assert uses["fast"] == (10, 29)
    assert uses["freeze"] == (100, 101)


def test_reverse_time_warp(media):
    tl = otio.schema.Timeline("rev")
    c = F.clip("rev", F.ext_ref(media["e"], 120), 50, 10)
    c.effects.append(otio.schema.LinearTimeWarp(time_scalar=-1.0))
    tl.tracks.append(otio.schema.Track("V1", children=[c]))
    (use,) = plan_timeline(tl, handles=0).uses
    assert (use.used_start, use.used_end) == (41, 51)  # frames 50 down to 41


def test_missing_media_generators_are_skipped(media):
    plan = plan_timeline(F.missing_media(media))
    reasons = {s.label.split("/")[-1]: s.reason for s in plan.skipped}
    assert reasons["offline"] == "missing media reference"
    assert reasons["gone"].startswith("media file not found")
    assert reasons["bars"].startswith("generator (SMPTEBars)")
    assert [u.clip.name for u in plan.uses] == ["ok"]


def test_image_sequence_is_supported(media):
    plan = plan_timeline(F.image_sequence(media), handles=2)
    (job,) = plan.jobs
    assert job.media.kind == "image_sequence"
    assert (job.start, job.end) == (6, 16)
    assert job.media.frame_path(job.first_index).name == "plate.1007.png"
    assert job.output_name == "plate_uav.mov"
    assert job.audio_source is None


def test_shared_source_is_merged_so_no_frame_renders_twice(media):
    plan = plan_timeline(F.shared_source(media), handles=12)
    e_jobs = sorted((j for j in plan.jobs if j.media.path.name == "E005.mov"), key=lambda j: j.start)
    assert [(j.start, j.end) for j in e_jobs] == [(0, 37), (78, 112)]
    assert e_jobs[0].clip_names == ("E first", "E second")
    covered = [f for j in e_jobs for f in range(j.start, j.end)]
    assert len(covered) == len(set(covered))
    assert len({j.output_name for j in plan.jobs}) == len(plan.jobs)
    # without handles the two uses have a gap and stay apart
    plan0 = plan_timeline(F.shared_source(media), handles=0)
    assert sorted((j.start, j.end) for j in plan0.jobs if j.media.path.name == "E005.mov") == [
        (0, 10), (15, 25), (90, 100)]


def test_shared_source_with_different_settings_is_not_merged(media):
    tl = F.shared_source(media)
    tl.tracks[0][2].metadata["uav"] = {"noise_level": 10}  # "E second"
    plan = plan_timeline(tl, handles=12)
    first, second = _job_of(plan, "E first"), _job_of(plan, "E second")
    assert first is not second
    assert first.settings["noise_level"] == 120 and second.settings["noise_level"] == 10
    assert first.output_name != second.output_name


def test_media_without_available_range_is_probed_for_timecode(media):
    tl = otio.schema.Timeline("probe")
    ref = otio.schema.ExternalReference(target_url=str(media["a"]))  # a plain path, no range
    tl.tracks.append(otio.schema.Track("V1", children=[F.clip("p", ref, F.TC_START + 50, 5)]))
    (job,) = plan_timeline(tl, handles=12).jobs
    assert (job.start, job.end) == (F.TC_START + 38, F.TC_START + 60)
    assert job.first_index == 38
    info = probe_media(media["a"])
    assert (info.rate, info.start_frame, info.frames, info.width, info.height) == (24.0, F.TC_START, 60, F.W, F.H)


def test_relative_urls_resolve_against_base_dir(media):
    tl = otio.schema.Timeline("rel")
    ref = otio.schema.ExternalReference(target_url="B002.mov", available_range=F.TR(F.RT(0, 24), F.RT(60, 24)))
    tl.tracks.append(otio.schema.Track("V1", children=[F.clip("r", ref, 0, 5)]))
    assert plan_timeline(tl).skipped[0].reason.startswith("media file not found")
    (job,) = plan_timeline(tl, base_dir=media["b"].parent).jobs
    assert job.media.path == media["b"].resolve()


def test_url_to_path_forms(tmp_path):
    assert url_to_path("file:///tmp/a%20b.mov") == Path("/tmp/a b.mov")
    assert url_to_path("file://localhost/tmp/x.mov") == Path("/tmp/x.mov")
    assert url_to_path("x.mov", tmp_path) == tmp_path / "x.mov"
    with pytest.raises(ValueError, match="scheme 'https'"):
        url_to_path("https://example.com/x.mov")


def test_plan_json_and_table_forms(media, tmp_path):
    plan = plan_timeline(F.missing_media(media), media_dir=tmp_path / "out")
    data = json.loads(json.dumps(plan.to_dict()))
    (job,) = data["jobs"]
    assert job["output"] == "B002_uav.mov"
    assert job["output_path"] == str(tmp_path / "out" / "B002_uav.mov")
    assert job["frames"] == job["range"]["end"] - job["range"]["start"] == 22
    assert job["settings"]["noise_level"] == 120 and len(job["settings_hash"]) == 16
    assert {s["reason"].split(" ")[0] for s in data["skipped"]} == {"missing", "media", "generator"}
    assert data["total_frames"] == 22
    rows = plan.rows()
    assert set(rows[0]) == {"clip", "media", "range", "frames", "settings", "output"}
    assert rows[0]["range"] == "00:00:00:00-00:00:00:22"
    assert any(r["output"].startswith("skipped: missing media reference") for r in rows)


def test_name_by_clip_and_extension(media):
    plan = plan_timeline(F.simple_cut(media), name_by="clip", ext="mp4")
    assert sorted(j.output_name for j in plan.jobs) == ["SH010_uav.mp4", "SH020_uav.mp4"]
    with pytest.raises(ValueError, match="name_by"):
        plan_timeline(F.simple_cut(media), name_by="reel")


def test_settings_hash_changes_with_settings_and_range(media):
    h = _job_of(plan_timeline(F.simple_cut(media)), "SH010").settings_hash
    assert h == _job_of(plan_timeline(F.simple_cut(media)), "SH010").settings_hash
    assert h != _job_of(plan_timeline(F.simple_cut(media), handles=3), "SH010").settings_hash
    assert h != _job_of(plan_timeline(F.simple_cut(media), overrides={"steps": 5}), "SH010").settings_hash


def test_not_a_timeline_is_a_type_error():
    with pytest.raises(TypeError, match="Timeline"):
        plan_timeline(otio.schema.Track())
