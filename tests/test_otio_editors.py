"""Timelines as editors export them: odd rates, broken files, EDL rates, chatty adapters,
look-alike clip names, leftovers (issue #13)."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
from uav.cli.app import app  # noqa: E402
from uav_otio import UPSCALED_KEY, plan_timeline, upscale_timeline  # noqa: E402
from uav_otio.timeline_files import TimelineReadError, parse_adapter_options, read_timeline  # noqa: E402

RT, TR = otio.opentime.RationalTime, otio.opentime.TimeRange


def run(*args):
    return CliRunner().invoke(app, ["timeline", *map(str, args)])


def _one_error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


def _movie_at(path: Path, fps: Fraction, n: int = 30) -> Path:
    F.write_movie(path, [np.full((F.H, F.W, 3), F.level(i), np.uint8) for i in range(n)], fps)
    return path


def _one_clip_timeline(path: Path, rate: float, n: int, start: int, dur: int, name: str = "SH010"):
    tl = otio.schema.Timeline("odd rate")
    track = otio.schema.Track("V1")
    ref = otio.schema.ExternalReference(target_url=path.resolve().as_uri(), available_range=TR(RT(0, rate), RT(n, rate)))
    track.append(otio.schema.Clip(name=name, media_reference=ref, source_range=TR(RT(start, rate), RT(dur, rate))))
    tl.tracks.append(track)
    return tl


# --------------------------------------------------------------------------- #
# timecode never stops a render
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fps", [Fraction(277, 12), Fraction(15), Fraction(25, 2)], ids=["277/12", "15", "12.5"])
def test_rates_smpte_cannot_count_still_render(tmp_path, fps):
    movie = _movie_at(tmp_path / "aigc_1.mp4", fps)
    tl = _one_clip_timeline(movie, float(fps), 30, 4, 10)
    plan = plan_timeline(tl, handles=2)
    data = json.loads(json.dumps(plan.to_dict()))  # the plan serialises (it used to raise here)
    job = data["jobs"][0]
    # (at 277/12 OTIO would round to a nominal 24 and count frames; uav refuses to mislabel them)
    assert job["timecode"] is None and job["range"]["start_seconds"] == pytest.approx(2 / float(fps))
    assert any("SMPTE timecode cannot count" in w for w in plan.warnings)

    result = upscale_timeline(tl, tmp_path / "o.otio", tmp_path / "media", renderer=F.SpyRenderer(), handles=2)
    assert result.written and result.relinked == 1
    clip = next(iter(result.timeline.find_clips()))
    source = clip.media_references()[UPSCALED_KEY].metadata["uav"]["source"]
    assert source["timecode"] is None and source["start_seconds"] == pytest.approx(2 / float(fps))


def test_cli_upscale_at_15_fps_writes_the_timeline(tmp_path):
    movie = _movie_at(tmp_path / "old_movie_1.mp4", Fraction(15))
    src = tmp_path / "cut.otio"
    otio.adapters.write_to_file(_one_clip_timeline(movie, 15.0, 30, 0, 12), str(src))
    res = run("upscale", src, "-o", tmp_path / "out.otio", "--media-dir", tmp_path / "m", "--renderer",
              "otio_fixtures:SpyRenderer", "--json")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out.otio").is_file()


# --------------------------------------------------------------------------- #
# rates written in different precisions
# --------------------------------------------------------------------------- #


def test_23976_clip_over_ntsc_media_plans_exactly_the_media(tmp_path):
    movie = _movie_at(tmp_path / "ntsc.mov", Fraction(24000, 1001), 232)
    tl = otio.schema.Timeline("ntsc")
    track = otio.schema.Track("V1")
    ref = otio.schema.ExternalReference(target_url=movie.resolve().as_uri(),
                                        available_range=TR(RT(0, 24000 / 1001), RT(232, 24000 / 1001)))
    track.append(otio.schema.Clip(name="all", media_reference=ref, source_range=TR(RT(0, 23.976), RT(232, 23.976))))
    tl.tracks.append(track)
    plan = plan_timeline(tl, handles=0)
    assert plan.jobs[0].frames == 232 and plan.warnings == []


# --------------------------------------------------------------------------- #
# files adapters cannot read: one line naming file and adapter
# --------------------------------------------------------------------------- #

BAD_FILES = {
    "truncated.xml": '<?xml version="1.0"?>\n<xmeml version="5"><sequence><name>cut</name><media>',
    "entity.xml": '<?xml version="1.0"?>\n<xmeml version="5"><sequence><name>&undefined;</name></sequence></xmeml>',
    "bomb.xml": ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                 + "".join(f'<!ENTITY lol{i} "' + (f"&lol{i - 1 if i > 1 else ''};" * 10) + '">' for i in range(1, 10))
                 + ']>\n<xmeml version="5"><sequence><name>&lol9;</name></sequence></xmeml>'),
    "garbage.edl": "TITLE: x\n001  A001 V C 01:00:00:00 zz:00:01:00 00:00:00:00 00:00:01:00\n",
    "dissolve.edl": ("TITLE: x\nFCM: NON-DROP FRAME\n\n"
                     "001  A001     V     C        01:00:00:00 01:00:01:00 00:00:00:00 00:00:01:00\n"
                     "001  B002     V     D    024 01:00:00:00 01:00:01:00 00:00:01:00 00:00:02:00\n"),
    "bad.otio": '{"OTIO_SCHEMA": "Timeline.1", "tracks": ',
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_timelines_are_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_text(BAD_FILES[name])
    line = _one_error_line(run("plan", path))
    assert str(path) in line
    res = run("upscale", path, "-o", tmp_path / "o.otio", "--media-dir", tmp_path / "m", "--renderer",
              "otio_fixtures:SpyRenderer")
    _one_error_line(res)
    assert not (tmp_path / "m").exists() and not (tmp_path / "o.otio").exists()


def test_read_errors_name_the_adapter(tmp_path):
    path = tmp_path / "truncated.xml"
    path.write_text(BAD_FILES["truncated.xml"])
    with pytest.raises(TimelineReadError, match="fcp_xml adapter"):
        read_timeline(path)


def test_deeply_nested_json_is_refused_before_parsing(tmp_path):
    path = tmp_path / "deep.otio"
    path.write_text("[" * 200_000 + "]" * 200_000)
    # A separate process: if the guard failed, the reader's crash must not take pytest down.
    code = ("import sys; from uav.cli import main; sys.argv = ['uav', 'timeline', 'plan', sys.argv[1]]; main()")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nests deeper than" in lines[0] and str(path) in lines[0]


def test_brackets_inside_strings_do_not_count(tmp_path):
    tl = otio.schema.Timeline("x" + "[" * 1000)
    tl.tracks.append(otio.schema.Track("V1"))
    path = tmp_path / "ok.otio"
    otio.adapters.write_to_file(tl, str(path))
    assert read_timeline(path).timeline.name.endswith("[" * 10)


# --------------------------------------------------------------------------- #
# adapters that print
# --------------------------------------------------------------------------- #


def test_json_output_is_only_json_when_adapters_print(tmp_path, monkeypatch):
    src = tmp_path / "cut.otio"
    otio.adapters.write_to_file(_one_clip_timeline(_movie_at(tmp_path / "a.mov", Fraction(24)), 24.0, 30, 0, 10),
                                str(src))
    real_read, real_write = otio.adapters.read_from_file, otio.adapters.write_to_file

    def chatty_read(*a, **k):
        print("[Reader] Building timeline tracks...")
        return real_read(*a, **k)

    def chatty_write(*a, **k):
        print("Unable find slot_id")
        return real_write(*a, **k)

    monkeypatch.setattr(otio.adapters, "read_from_file", chatty_read)
    monkeypatch.setattr(otio.adapters, "write_to_file", chatty_write)
    res = run("plan", src, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["jobs"]
    res = run("upscale", src, "-o", tmp_path / "o.otio", "--media-dir", tmp_path / "m", "--renderer",
              "otio_fixtures:SpyRenderer", "--json", "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] is True
    assert "Building timeline tracks" not in res.output  # adapters' chatter is for --debug (issue #23)
    res = run("plan", src, "--json", "--debug")
    assert json.loads(res.stdout)["jobs"] and "Building timeline tracks" in res.stderr


# --------------------------------------------------------------------------- #
# EDL rates and adapter options
# --------------------------------------------------------------------------- #

EDL_25 = (
    "TITLE: cut at 25\nFCM: NON-DROP FRAME\n\n"
    "001  A001     V     C        00:00:00:00 00:00:00:24 01:00:00:00 01:00:00:24\n"
    "* FROM CLIP NAME: SH010\n"
)


def test_edl_at_25_fps_needs_and_takes_rate(tmp_path):
    edl = tmp_path / "cut25.edl"
    edl.write_text(EDL_25)
    line = _one_error_line(run("plan", edl))
    assert "cmx_3600" in line and "--rate" in line and str(edl) in line
    res = run("plan", edl, "--rate", "25", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["skipped"][0]["clip"] == "V1/SH010" or data["skipped"][0]["clip"].endswith("SH010")
    loaded = read_timeline(edl, rate=25)
    assert next(iter(loaded.timeline.find_clips())).source_range.duration == RT(24, 25)


def test_adapter_options_pass_through(tmp_path):
    assert parse_adapter_options(["rate=25", "ignore_timecode_mismatch=true", "name=cut a"]) == {
        "rate": 25, "ignore_timecode_mismatch": True, "name": "cut a"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_adapter_options(["nokey"])
    edl = tmp_path / "cut25.edl"
    edl.write_text(EDL_25)
    res = run("plan", edl, "--adapter-option", "rate=25", "--json")
    assert res.exit_code == 0, res.output
    line = _one_error_line(run("plan", edl, "--adapter-option", "=5"))
    assert "--adapter-option" in line


# --------------------------------------------------------------------------- #
# look-alike clip names, missing adapters, leftovers
# --------------------------------------------------------------------------- #


def test_clips_named_alike_are_told_apart(tmp_path):
    movie = _movie_at(tmp_path / "m.mov", Fraction(24), 60)
    tl = otio.schema.Timeline("avid")
    tl.global_start_time = RT(86400, 24)
    track = otio.schema.Track("V1")
    for i in range(3):
        ref = otio.schema.ExternalReference(target_url=movie.resolve().as_uri(), available_range=TR(RT(0, 24), RT(60, 24)))
        track.append(otio.schema.Clip(name="TimelineMobSlot/m.mov", media_reference=ref,
                                      source_range=TR(RT(10 * i, 24), RT(5, 24))))
    tl.tracks.append(track)
    plan = plan_timeline(tl, handles=0)
    labels = [u.label for u in plan.uses]
    assert len(set(labels)) == 3
    assert labels[1] == "V1/TimelineMobSlot/m.mov (V1 item 1 @ 01:00:00:05)"
    clips = plan.to_dict()["clips"]
    assert [(c["track"], c["index"], c["record_timecode"]) for c in clips] == [
        ("V1", 0, "01:00:00:00"), ("V1", 1, "01:00:00:05"), ("V1", 2, "01:00:00:10")]


def test_missing_adapter_names_the_package(tmp_path):
    path = tmp_path / "cut.drp"
    path.write_text("not a resolve project")
    line = _one_error_line(run("plan", path))
    assert "otio-drp-adapter" in line and "'otio' extra" not in line.split("installed adapters")[0]


def test_bad_otioz_and_failed_runs_leave_nothing(tmp_path):
    bad = tmp_path / "cut.otioz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    media = tmp_path / "media"
    _one_error_line(run("upscale", bad, "-o", tmp_path / "o.otio", "--media-dir", media, "--renderer",
                        "otio_fixtures:SpyRenderer"))
    assert not media.exists()

    src = tmp_path / "cut.otio"
    otio.adapters.write_to_file(_one_clip_timeline(_movie_at(tmp_path / "a.mov", Fraction(24)), 24.0, 30, 0, 10),
                                str(src))

    def broken(job, settings, path, progress=None):
        raise RuntimeError("GPU fell off")

    with pytest.raises(RuntimeError, match="fell off"):
        upscale_timeline(src, tmp_path / "o.otio", tmp_path / "new" / "media", renderer=broken)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("adapter,suffix,module", [("fcpx_xml", ".fcpxml", "otio_fcpx_xml_adapter"),
                                                   ("kdenlive", ".kdenlive", "otio_kdenlive_adapter")])
def test_fcpxml_and_kdenlive_read_through_the_otio_extra(tmp_path, adapter, suffix, module):
    pytest.importorskip(module)
    media = F.media_set(tmp_path / "media")
    path = tmp_path / f"cut{suffix}"
    otio.adapters.write_to_file(F.simple_cut(media), str(path), adapter_name=adapter)
    res = run("plan", path, "--json", "--handles", "0")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # the kdenlive adapter's banner went to stderr
    ranges = {Path(j["media"]["path"]).name: (j["range"]["start"], j["range"]["end"]) for j in data["jobs"]}
    # the source ranges survive the editor's format exactly (these adapters drop a track's
    # "enabled" flag, so the disabled V2 clip of C003 comes back as a job too)
    assert ranges["A001.mov"] == (F.TC_START + 10, F.TC_START + 30) and ranges["B002.mov"] == (5, 25)
