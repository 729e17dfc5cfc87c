"""Two cuts sharing a media folder never overwrite each other's renders (issue #13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import MANIFEST_NAME, UPSCALED_KEY, plan_timeline, upscale_timeline  # noqa: E402
from uav_otio.api import plan_file  # noqa: E402
from uav_otio.manifest import PARTIAL_MARK, Manifest, OutputOwnershipError, clean_partials  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("otio_owner_media"))


def _cut(m, name: str, start: int, dur: int, **clip_kw) -> otio.schema.Timeline:
    """One clip of A001 at ``[start, start + dur)`` (media frames)."""
    tl = otio.schema.Timeline(name)
    track = otio.schema.Track("V1")
    track.append(F.clip("SH010", F.ext_ref(m["a"], 60, F.TC_START), F.TC_START + start, dur, **clip_kw))
    tl.tracks.append(track)
    return tl


def _save(tl, path: Path) -> Path:
    otio.adapters.write_to_file(tl, str(path))
    return path


def _upscaled_file(timeline_path: Path) -> Path:
    tl = otio.adapters.read_from_file(str(timeline_path))
    (clip,) = list(tl.find_clips())
    return Path(otio.url_utils.filepath_from_url(clip.media_references()[UPSCALED_KEY].target_url))


def _levels(path: Path) -> list[int]:
    frames, _ = F.read_movie(path)
    return [int(round(float(f.mean()))) for f in frames]


def _expected_levels(start: int, end: int) -> list[int]:
    return [F.level(i) for i in range(start, end)]


def test_two_cuts_sharing_a_media_dir_keep_their_own_frames(media, tmp_path):
    """The issue's reproduction: A then B, same source, different used ranges, one --media-dir."""
    a = _save(_cut(media, "A", 0, 10), tmp_path / "A.otio")
    b = _save(_cut(media, "B", 30, 10), tmp_path / "B.otio")
    shared = tmp_path / "shared"
    upscale_timeline(a, tmp_path / "a.otio", shared, renderer=F.SpyRenderer(), handles=0)
    upscale_timeline(b, tmp_path / "b.otio", shared, renderer=F.SpyRenderer(), handles=0)

    file_a, file_b = _upscaled_file(tmp_path / "a.otio"), _upscaled_file(tmp_path / "b.otio")
    assert file_a != file_b
    assert file_a.name == "A001_uav.mov"  # the first keeps the documented name
    assert file_b.name == f"A001_{F.TC_START + 30}_uav.mov"  # the second gets the range-qualified one
    assert _levels(file_a) == _expected_levels(0, 10)  # a.otio still shows A's frames
    assert _levels(file_b) == _expected_levels(30, 40)

    outputs = json.loads((shared / MANIFEST_NAME).read_text())["outputs"]
    assert outputs[file_a.name]["owners"] == [str((tmp_path / "a.otio").resolve())]
    assert outputs[file_b.name]["owners"] == [str((tmp_path / "b.otio").resolve())]

    # Reruns of either cut render nothing and keep their files.
    for src, out in ((a, "a.otio"), (b, "b.otio")):
        spy = F.SpyRenderer()
        upscale_timeline(src, tmp_path / out, shared, renderer=spy, handles=0)
        assert spy.calls == []
    assert _levels(file_a) == _expected_levels(0, 10)


def test_the_same_cut_twice_shares_one_file(media, tmp_path):
    a = _save(_cut(media, "A", 0, 10), tmp_path / "A.otio")
    shared = tmp_path / "shared"
    upscale_timeline(a, tmp_path / "a1.otio", shared, renderer=F.SpyRenderer(), handles=0)
    spy = F.SpyRenderer()
    upscale_timeline(a, tmp_path / "a2.otio", shared, renderer=spy, handles=0)
    assert spy.calls == []  # identical job: reused, not re-rendered
    assert _upscaled_file(tmp_path / "a1.otio") == _upscaled_file(tmp_path / "a2.otio")
    entry = json.loads((shared / MANIFEST_NAME).read_text())["outputs"]["A001_uav.mov"]
    assert entry["owners"] == sorted(str((tmp_path / n).resolve()) for n in ("a1.otio", "a2.otio"))


def test_an_owner_may_replace_its_own_render(media, tmp_path):
    """Changing a shot's settings and rendering the same output again updates its file in place."""
    shared = tmp_path / "shared"
    src = _save(_cut(media, "A", 0, 10), tmp_path / "A.otio")
    upscale_timeline(src, tmp_path / "a.otio", shared, renderer=F.SpyRenderer(), handles=0)
    spy = F.SpyRenderer()
    upscale_timeline(src, tmp_path / "a.otio", shared, renderer=spy, handles=0, overrides={"noise_level": 50})
    assert [c["output"] for c in spy.calls] == ["A001_uav.mov"]
    assert sorted(p.name for p in shared.glob("*.mov")) == ["A001_uav.mov"]


def test_a_file_another_timeline_relies_on_is_not_replaced(media, tmp_path):
    """Another cut with other settings gets its own file; a shared file survives a changed model."""
    shared = tmp_path / "shared"
    src = _save(_cut(media, "A", 0, 10), tmp_path / "A.otio")
    upscale_timeline(src, tmp_path / "a.otio", shared, renderer=F.SpyRenderer(), handles=0)
    before = (shared / "A001_uav.mov").read_bytes()

    spy = F.SpyRenderer()
    upscale_timeline(src, tmp_path / "b.otio", shared, renderer=spy, handles=0, overrides={"noise_level": 50})
    assert [c["output"] for c in spy.calls] and spy.calls[0]["output"] != "A001_uav.mov"
    assert (shared / "A001_uav.mov").read_bytes() == before

    # Same job for b (so the same name) but another model: refused before anything renders.
    spy = F.SpyRenderer()
    with pytest.raises(OutputOwnershipError) as err:
        upscale_timeline(src, tmp_path / "c.otio", shared, renderer=spy, handles=0, model={"weights": "other"})
    message = str(err.value)
    assert "\n" not in message
    assert str((tmp_path / "a.otio").resolve()) in message and str((tmp_path / "c.otio").resolve()) in message
    assert spy.calls == [] and (shared / "A001_uav.mov").read_bytes() == before
    assert not (tmp_path / "c.otio").exists()


def test_a_file_uav_did_not_render_is_never_overwritten(media, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    foreign = shared / "A001_uav.mov"
    foreign.write_bytes(b"someone's grade")
    plan = plan_timeline(_cut(media, "A", 0, 10), media_dir=shared, handles=0)
    assert plan.jobs[0].output_name == f"A001_{F.TC_START}_uav.mov"
    upscale_timeline(_save(_cut(media, "A", 0, 10), tmp_path / "A.otio"), tmp_path / "a.otio", shared,
                     renderer=F.SpyRenderer(), handles=0)
    assert foreign.read_bytes() == b"someone's grade"
    assert _upscaled_file(tmp_path / "a.otio").name == f"A001_{F.TC_START}_uav.mov"


def test_name_by_clip_collisions_inside_one_run_get_distinct_files(media, tmp_path):
    """Three clips named alike (after sanitising: 'SH 010', 'SH_010', 'sh_010') stay three files."""
    tl = otio.schema.Timeline("clash")
    track = otio.schema.Track("V1")
    for i, name in enumerate(("SH 010", "SH_010", "sh_010")):
        track.append(F.clip(name, F.ext_ref(media["e"], 120), 30 * i, 10))
    tl.tracks.append(track)
    shared = tmp_path / "shared"
    result = upscale_timeline(tl, tmp_path / "o.otio", shared, renderer=F.SpyRenderer(), handles=0, name_by="clip")
    names = [j.output_name for j in result.plan.jobs]
    assert len({n.lower() for n in names}) == 3
    for job in result.plan.jobs:
        assert _levels(shared / job.output_name) == _expected_levels(job.start, job.end)


def test_plan_with_output_names_as_the_render_will(media, tmp_path):
    shared = tmp_path / "shared"
    src = _save(_cut(media, "A", 0, 10), tmp_path / "A.otio")
    upscale_timeline(src, tmp_path / "a.otio", shared, renderer=F.SpyRenderer(), handles=0)
    tl2 = _save(_cut(media, "A2", 0, 12), tmp_path / "A2.otio")
    # For its owner the file is free to replace; for anyone else it is taken.
    _, own = plan_file(tl2, media_dir=shared, handles=0, output=tmp_path / "a.otio")
    _, other = plan_file(tl2, media_dir=shared, handles=0, output=tmp_path / "x.otio")
    assert own.jobs[0].output_name == "A001_uav.mov"
    assert other.jobs[0].output_name == f"A001_{F.TC_START}_uav.mov"


def test_a_cut_that_drops_a_shot_lets_go_of_its_file(media, tmp_path):
    shared = tmp_path / "shared"
    src = _save(_cut(media, "A", 0, 10), tmp_path / "A.otio")
    upscale_timeline(src, tmp_path / "a.otio", shared, renderer=F.SpyRenderer(), handles=0)
    tl = otio.schema.Timeline("B")
    tl.tracks.append(otio.schema.Track("V1"))
    tl.tracks[0].append(F.clip("SH020", F.ext_ref(media["b"]), 5, 10))
    upscale_timeline(_save(tl, tmp_path / "B.otio"), tmp_path / "a.otio", shared, renderer=F.SpyRenderer(), handles=0)
    outputs = Manifest(shared).outputs
    assert outputs["A001_uav.mov"]["owners"] == []  # a.otio no longer points at it; the file stays
    assert outputs["B002_uav.mov"]["owners"] == [str((tmp_path / "a.otio").resolve())]
    assert (shared / "A001_uav.mov").is_file()


def test_concurrent_runs_keep_each_others_manifest_entries(media, tmp_path):
    """Two processes rendering into one folder at once: both entries survive (the manifest is locked)."""
    shared = tmp_path / "shared"
    script = (
        "import sys; sys.path.insert(0, {tests!r}); import otio_fixtures as F\n"
        "from uav_otio import upscale_timeline\n"
        "upscale_timeline({src!r}, {out!r}, {mdir!r}, renderer=F.SpyRenderer(), handles=0, name_by='clip')\n"
    )
    procs = []
    for i, start in enumerate((0, 20, 40)):
        tl = _cut(media, f"T{i}", start, 10)
        next(iter(tl.find_clips())).name = f"SH{i}"
        src = _save(tl, tmp_path / f"T{i}.otio")
        code = script.format(tests=str(Path(__file__).parent), src=str(src), out=str(tmp_path / f"t{i}.otio"),
                             mdir=str(shared))
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    outputs = json.loads((shared / MANIFEST_NAME).read_text())["outputs"]
    assert sorted(outputs) == ["SH0_uav.mov", "SH1_uav.mov", "SH2_uav.mov"]


def test_clean_partials_spares_a_live_process(tmp_path):
    from uav.io.atomic import temporary_path

    live = temporary_path(tmp_path / "x.mov")
    live.write_bytes(b"in flight")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    mine = temporary_path(tmp_path / "y.mov").name
    dead = tmp_path / mine.replace(f"-{os.getpid()}-", f"-{dead_pid}-")
    dead.write_bytes(b"left over")
    assert PARTIAL_MARK in dead.name
    assert clean_partials(tmp_path) == [dead]
    assert live.exists() and not dead.exists()


def test_cli_refusal_is_one_line_naming_both_timelines(media, tmp_path):
    from typer.testing import CliRunner

    import uav.cli.timeline  # noqa: F401  (attaches the sub-app)
    from uav.cli.app import app

    shared = tmp_path / "shared"
    src = _save(_cut(media, "A", 0, 10), tmp_path / "A.otio")
    upscale_timeline(src, tmp_path / "a.otio", shared, renderer=F.SpyRenderer(), handles=0,
                     model={"weights": "release-1"})
    before = (shared / "A001_uav.mov").read_bytes()
    res = CliRunner().invoke(app, ["timeline", "upscale", str(src), "-o", str(tmp_path / "c.otio"), "--media-dir",
                                   str(shared), "--handles", "0", "--renderer", "otio_fixtures:SpyRenderer"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "a.otio" in lines[0] and "c.otio" in lines[0] and "Traceback" not in res.output
    assert (shared / "A001_uav.mov").read_bytes() == before and not (tmp_path / "c.otio").exists()
