"""``uav timeline`` keeps its contracts (issue #23, timeline items 7, 8, 9, 12, 14):
``plan``, ``upscale --dry-run`` and the run refuse the same things with the same line;
``--json`` errors are JSON; hostile bundles are refused before anything is unpacked;
several timelines in one file are chosen with ``--timeline``; adapters keep quiet
unless ``--debug``; ``--help`` says what a run does."""

from __future__ import annotations

import json
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
from uav.cli.app import app  # noqa: E402
from uav_otio import plan_file  # noqa: E402

RT, TR = otio.opentime.RationalTime, otio.opentime.TimeRange
SPY = "otio_fixtures:SpyRenderer"
_ADAPTERS = set(otio.adapters.available_adapter_names())


def run(*args):
    return CliRunner().invoke(app, ["timeline", *map(str, args)])


def one_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


def one_clip(path: Path, ref, start: int, dur: int, rate: float = F.FPS, **metadata) -> Path:
    tl = otio.schema.Timeline("cut")
    track = otio.schema.Track("V1")
    clip = otio.schema.Clip("SH010", ref, TR(RT(start, rate), RT(dur, rate)))
    if metadata:
        clip.metadata["uav"] = metadata
    track.append(clip)
    tl.tracks.append(track)
    otio.adapters.write_to_file(tl, str(path))
    return path


def vfr_movie(path: Path, n: int = 20) -> Path:
    """PNG frames 1/24 and 1/16 s apart, alternately: a variable frame rate."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream("png", rate=24)
        stream.width, stream.height, stream.pix_fmt = F.W, F.H, "rgb24"
        stream.time_base = Fraction(1, 24000)
        pts = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((F.H, F.W, 3), F.level(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, stream.time_base
            for packet in stream.encode(frame):
                c.mux(packet)
            pts += 1000 if i % 2 else 1500
        for packet in stream.encode():
            c.mux(packet)
    return path


def sequence_ref(folder: Path, n: int) -> otio.schema.ImageSequenceReference:
    return otio.schema.ImageSequenceReference(
        target_url_base=folder.resolve().as_uri() + "/", name_prefix="plate.", name_suffix=".png", start_frame=1001,
        frame_step=1, rate=F.FPS, frame_zero_padding=4, available_range=TR(RT(0, F.FPS), RT(n, F.FPS)))


# --------------------------------------------------------------------------- #
# item 8: one validation path for plan, --dry-run and the run
# --------------------------------------------------------------------------- #


def _gap_sequence(root: Path) -> tuple[Path, str]:
    folder = F.make_sequence(root / "plates", n=10)
    (folder / "plate.1005.png").unlink()
    return one_clip(root / "cut.otio", sequence_ref(folder, 10), 2, 6), "lacks plate.1005.png"


def _short_media(root: Path) -> tuple[Path, str]:
    F.make_movie(root / "short.mov", 20)  # the timeline says 40 frames, and the cut uses frames 10..29
    return one_clip(root / "cut.otio", F.ext_ref(root / "short.mov", 40), 10, 20), "holds 20 frames, but the timeline says 40"


def _vfr_media(root: Path) -> tuple[Path, str]:
    ref = otio.schema.ExternalReference(vfr_movie(root / "vfr.mov").as_uri())
    return one_clip(root / "cut.otio", ref, 2, 10), "has a variable frame rate"


def _too_many_steps(root: Path) -> tuple[Path, str]:
    F.make_movie(root / "a.mov", 20)
    src = one_clip(root / "cut.otio", F.ext_ref(root / "a.mov", 20), 2, 5)
    tl = otio.adapters.read_from_file(str(src))
    tl.find_clips()[0].markers.append(otio.schema.Marker("uav: steps=2000", TR(RT(2, F.FPS), RT(0, F.FPS))))
    otio.adapters.write_to_file(tl, str(src))
    return src, "steps from marker name 'uav: steps=2000'"


@pytest.mark.parametrize("case", [_gap_sequence, _short_media, _vfr_media, _too_many_steps],
                         ids=["sequence-gap", "media-shorter-than-said", "variable-frame-rate", "steps-over-1000"])
def test_plan_dry_run_and_run_refuse_alike(tmp_path, case):
    src, needle = case(tmp_path)
    out, media = tmp_path / "out" / "cut_uav.otio", tmp_path / "renders"
    lines = [one_error(run("plan", src, "--handles", 2)),
             one_error(run("upscale", src, "-o", out, "--media-dir", media, "--renderer", SPY, "--handles", 2,
                           "--dry-run")),
             one_error(run("upscale", src, "-o", out, "--media-dir", media, "--renderer", SPY, "--handles", 2))]
    assert lines[0] == lines[1] == lines[2]
    assert lines[0].startswith("error: clip 'V1/SH010': ") and needle in lines[0]
    assert not out.exists() and not media.exists()  # refused before anything rendered


def test_handles_stop_at_the_frames_a_short_file_holds(tmp_path):
    F.make_movie(tmp_path / "short.mov", 20)  # the timeline says 40; the cut uses frames 10..17
    src = one_clip(tmp_path / "cut.otio", F.ext_ref(tmp_path / "short.mov", 40), 10, 8)
    _, plan = plan_file(src, handles=12)
    (job,) = plan.jobs
    assert (job.start, job.end) == (0, 20)


def test_handles_stop_short_of_a_sequence_gap_only_by_failing(tmp_path):
    """A gap inside the handles is refused too (the render would read it); fewer handles plan."""
    src, _ = _gap_sequence(tmp_path)
    with pytest.raises(ValueError, match="lacks plate.1005.png"):
        plan_file(src, handles=2)
    tl = otio.adapters.read_from_file(str(src))
    tl.find_clips()[0].source_range = TR(RT(6, F.FPS), RT(3, F.FPS))
    otio.adapters.write_to_file(tl, str(src))
    _, plan = plan_file(src, handles=1)
    assert (plan.jobs[0].start, plan.jobs[0].end) == (5, 10)


# --------------------------------------------------------------------------- #
# item 9: JSON errors, and times a timeline cannot mean
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("content", [None, "not json", '{"OTIO_SCHEMA": "Timeline.1", "tracks": 3}'],
                         ids=["missing", "not-json", "broken-timeline"])
def test_plan_json_errors_are_a_json_document(tmp_path, content):
    path = tmp_path / "cut.otio"
    if content is not None:
        path.write_text(content)
    res = run("plan", path, "--json")
    line = one_error(res)
    assert json.loads(res.stdout) == {"ok": False, "error": line.removeprefix("error: ")}
    assert str(path) in line


def _set(tl: otio.schema.Timeline, where: str, value: float) -> None:
    clip = tl.find_clips()[0]
    if where == "clip rate":
        clip.source_range = TR(RT(2, value), RT(5, value))
    elif where == "clip start":
        clip.source_range = TR(RT(value, F.FPS), RT(5, F.FPS))
    elif where == "reference rate":
        clip.media_reference.available_range = TR(RT(0, value), RT(20, value))
    else:  # a transition's offset
        clip.parent().insert(1, otio.schema.Transition(in_offset=RT(2, value), out_offset=RT(2, F.FPS)))
        clip.parent().append(otio.schema.Clip("SH020", clip.media_reference.clone(), TR(RT(8, F.FPS), RT(5, F.FPS))))


_SUBJECTS = {"clip rate": "clip 'V1/SH010': its source range", "clip start": "clip 'V1/SH010': its source range",
             "reference rate": "clip 'V1/SH010': its media reference 'DEFAULT_MEDIA'",
             "transition": "transition '' in track 'V1': its in offset"}
_BAD = {"nan": float("nan"), "inf": float("inf"), "zero": 0.0}


@pytest.mark.parametrize("where,bad", [(w, b) for w in _SUBJECTS for b in _BAD if (w, b) != ("clip start", "zero")])
def test_nan_inf_and_zero_times_name_the_item(tmp_path, where, bad):
    subject, value = _SUBJECTS[where], _BAD[bad]
    F.make_movie(tmp_path / "a.mov", 20)
    src = one_clip(tmp_path / "cut.otio", F.ext_ref(tmp_path / "a.mov", 20), 2, 5)
    tl = otio.adapters.read_from_file(str(src))
    _set(tl, where, value)
    otio.adapters.write_to_file(tl, str(src))
    res = run("plan", src, "--json")
    line = one_error(res)
    assert line.startswith(f"error: {subject}") and "positive, finite frame rate" in line
    assert json.loads(res.stdout)["ok"] is False


# --------------------------------------------------------------------------- #
# item 12: hostile bundles, unwritable extensions
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/escape.txt", "media/../../escape.txt", "C:/escape.txt"])
def test_an_otioz_with_path_traversal_is_refused_before_anything(tmp_path, member, monkeypatch):
    import uav

    loads = []
    monkeypatch.setattr(uav.VideoUpscaler, "from_pretrained", lambda *a, **k: loads.append(a))
    F.make_movie(tmp_path / "a.mov", 20)
    tl = otio.adapters.read_from_file(str(one_clip(tmp_path / "cut.otio", F.ext_ref(tmp_path / "a.mov", 20), 2, 5)))
    bundle = tmp_path / "cut.otioz"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("content.otio", otio.adapters.write_to_string(tl, "otio_json"))
        z.writestr("version.txt", "1.0.0")
        z.writestr(member, "x")
    (tmp_path / "weights").mkdir()
    media = tmp_path / "renders"
    line = one_error(run("upscale", bundle, "-o", tmp_path / "o.otio", "--media-dir", media, "--weights",
                         tmp_path / "weights"))
    assert "not a safe .otioz bundle" in line and repr(member) in line and "nothing was unpacked" in line
    assert loads == [] and not media.exists() and not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mov", "cut.otio", "cut.otioz", "weights"]


def test_plan_refuses_an_extension_nothing_writes(tmp_path):
    F.make_movie(tmp_path / "a.mov", 20)
    src = one_clip(tmp_path / "cut.otio", F.ext_ref(tmp_path / "a.mov", 20), 2, 5)
    line = one_error(run("plan", src, "--ext", "avi"))
    assert line == "error: --ext avi: no movie codec uav writes makes .avi files; choose one of mkv, mov, mp4, mxf"
    assert run("plan", src, "--ext", "mkv").exit_code == 0
    assert "prores_hq output must end in .mov or .mkv" in one_error(
        run("upscale", src, "-o", tmp_path / "o.otio", "--media-dir", tmp_path / "m", "--weights", tmp_path, "--ext",
            "avi"))


# --------------------------------------------------------------------------- #
# item 14: help and errors that say what a run does
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("command", ["plan", "upscale"])
def test_help_gives_the_seed_the_plan_uses(tmp_path, command):
    res = CliRunner().invoke(app, ["timeline", command, "--help"], env={"COLUMNS": "250"})
    (line,) = [ln for ln in res.stdout.splitlines() if "--seed" in ln]
    assert "[default: 10, fixed per shot]" in line and "random]" not in line
    F.make_movie(tmp_path / "a.mov", 20)
    src = one_clip(tmp_path / "cut.otio", F.ext_ref(tmp_path / "a.mov", 20), 2, 5)
    _, plan = plan_file(src)
    assert plan.jobs[0].settings["seed"] == 10


def test_an_mlt_output_names_the_package_and_the_format_to_use(tmp_path):
    F.make_movie(tmp_path / "a.mov", 20)
    src = one_clip(tmp_path / "cut.otio", F.ext_ref(tmp_path / "a.mov", 20), 2, 5)
    line = one_error(run("upscale", src, "-o", tmp_path / "cut.mlt", "--media-dir", tmp_path / "m", "--renderer", SPY))
    assert "otio-mlt-adapter" in line and "write '.kdenlive' instead" in line


# --------------------------------------------------------------------------- #
# item 7: several timelines in one file, adapters' chatter behind --debug
# --------------------------------------------------------------------------- #


def two_timeline_aaf(root: Path) -> Path:
    """An AAF holding two top-level compositions, the first with a source clip whose slot
    its master mob lacks (the adapter prints "Unable find slot_id ..." and makes a gap)."""
    aaf2 = pytest.importorskip("aaf2")
    writer = pytest.importorskip("otio_aaf_adapter.adapters.aaf_adapter.aaf_writer")
    media = F.media_set(root / "media")
    cuts = [F.simple_cut(media), F.shared_source(media)]
    path = root / "two.aaf"
    with aaf2.open(str(path), "w") as f:
        for tl in cuts:
            for track in [t for t in tl.tracks if t.kind != otio.schema.TrackKind.Video or not t.enabled]:
                tl.tracks.remove(track)
            transcriber = writer.AAFFileTranscriber(input_otio=tl, aaf_file=f, prefer_file_mob_id=False,
                                                    use_empty_mob_ids=True, embed_essence=False, create_edgecode=False)
            for track in tl.tracks:
                writing = transcriber.track_transcriber(track)
                for item in track:
                    made = writing.transcribe(item)
                    if made:
                        writing.sequence.components.append(made)
    with aaf2.open(str(path), "rw") as f:
        first = next(iter(f.content.toplevel()))
        clip = next(c for s in first.slots for c in getattr(s.segment, "components", [])
                    if isinstance(c, aaf2.components.SourceClip))
        clip.slot_id = 99
    return path


@pytest.fixture(scope="module")
def aaf(tmp_path_factory) -> Path:
    if "AAF" not in _ADAPTERS:
        pytest.skip("the AAF adapter is not installed (uav's 'otio' extra)")
    return two_timeline_aaf(tmp_path_factory.mktemp("aaf"))


def test_several_timelines_name_themselves_and_timeline_picks_one(aaf):
    res = run("plan", aaf, "--json")
    line = one_error(res)
    assert line == f"error: {str(aaf)!r} holds 2 timelines ['simple cut', 'shared']; choose one with --timeline NAME"
    assert "Unable find slot_id" not in res.output  # the adapter's chatter stays behind --debug
    res = run("plan", aaf, "--timeline", "shared", "--json")
    assert res.exit_code == 0 and "Unable find slot_id" not in res.output
    assert sorted(j["output"] for j in json.loads(res.stdout)["jobs"]) == ["B002_uav.mov", "E005_0_uav.mov",
                                                                            "E005_78_uav.mov"]
    res = run("plan", aaf, "--timeline", "simple cut", "--json", "--debug")
    assert res.exit_code == 0 and "Unable find slot_id: 99" in res.stderr and "Unable" not in res.stdout
    assert one_error(run("plan", aaf, "--timeline", "nope")).endswith(
        "holds no timeline named 'nope'; its timelines: ['simple cut', 'shared']")


def test_a_collection_is_chosen_from_with_timeline_too(tmp_path):
    media = F.media_set(tmp_path / "media")
    coll = otio.schema.SerializableCollection(name="bin")
    coll.extend([F.simple_cut(media), F.nested_stack(media)])
    path = tmp_path / "bin.otio"
    otio.adapters.write_to_file(coll, str(path))
    assert "choose one with --timeline NAME" in one_error(run("plan", path))
    res = run("plan", path, "--timeline", "nested", "--json")
    assert res.exit_code == 0 and [j["output"] for j in json.loads(res.stdout)["jobs"]] == ["C003_uav.mov"]


@pytest.mark.skipif("kdenlive" not in _ADAPTERS, reason="the kdenlive adapter is not installed (uav's 'otio' extra)")
def test_an_adapter_banner_shows_only_with_debug(tmp_path):
    media = F.media_set(tmp_path / "media")
    path = tmp_path / "cut.kdenlive"
    otio.adapters.write_to_file(F.shared_source(media), str(path))
    quiet = run("plan", path, "--json")
    assert quiet.exit_code == 0 and "deprecated" not in quiet.output
    json.loads(quiet.stdout)
    loud = run("plan", path, "--json", "--debug")
    assert "deprecated" in loud.stderr and "deprecated" not in loud.stdout


def test_an_adapter_tripping_over_a_file_is_said_in_user_words(tmp_path):
    """The fcpx_xml reader unpacks a frameDuration without a '/' and fails with "not enough
    values to unpack"; the line says what that means and what to do."""
    if "fcpx_xml" not in _ADAPTERS:
        pytest.skip("the fcpx_xml adapter is not installed (uav's 'otio' extra)")
    golden = Path(__file__).parent / "data" / "otio_golden"
    bad = tmp_path / "cut.fcpxml"
    bad.write_text((golden / "fcpx.fcpxml").read_text().replace('frameDuration="100/2500s"', 'frameDuration="1s"'))
    res = run("plan", bad, "--json")
    line = one_error(res)
    assert line.startswith(f"error: cannot read timeline {str(bad)!r} with the fcpx_xml adapter: the file is not laid "
                           "out as this reader expects (its error: ValueError: not enough values to unpack")
    assert line.endswith("export it again, or name another reader with --adapter")
    assert json.loads(res.stdout)["ok"] is False


def test_a_zero_timebase_in_an_fcp_xml_names_the_timeline(tmp_path):
    if "fcp_xml" not in _ADAPTERS:
        pytest.skip("the fcp_xml adapter is not installed (uav's 'otio' extra)")
    golden = Path(__file__).parent / "data" / "otio_golden"
    bad = tmp_path / "cut.xml"
    bad.write_text((golden / "premiere.xml").read_text().replace("<timebase>24</timebase>", "<timebase>0</timebase>"))
    assert one_error(run("plan", bad)) == (
        "error: timeline 'Sequence 01': its global start time has frame rate 0; every time needs a finite value and a "
        "positive, finite frame rate: fix the item in the editor and export again")
