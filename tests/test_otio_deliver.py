"""Finishing formats through the timeline: a job rendered as an EXR/DPX folder, numbered by
the source's frames, relinked as an ``ImageSequenceReference`` that resolves to every frame
a clip uses; formats that cannot hold a sequence refuse with one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import UPSCALED_KEY, UpscalerRenderer, upscale_timeline  # noqa: E402
from uav_otio.timeline_files import write_timeline  # noqa: E402


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    from uav import VideoUpscaler
    from uav.weights import make_tiny_release

    root = make_tiny_release(tmp_path_factory.mktemp("otio_deliver") / "upscale_a_video")
    return VideoUpscaler.from_pretrained(root, device="cpu")


def _timeline(src: Path, seq: Path) -> otio.schema.Timeline:
    tl = otio.schema.Timeline("deliver")
    tl.metadata["uav"] = {"steps": 1, "guidance_scale": 1, "negative_prompt": "", "seed": 5}
    plate = F.image_sequence({"seq": seq}).tracks[0][0].deepcopy()  # media frames 8..13 = files 1009..1014
    plate.source_range = F.TR(F.RT(8, F.FPS), F.RT(2, F.FPS))
    tl.tracks.append(otio.schema.Track("V1", children=[
        F.clip("SH010", F.ext_ref(src, 30, F.TC_START), F.TC_START + 10, 3), plate]))
    return tl


def _frames_of(ref: otio.schema.ImageSequenceReference) -> list[Path]:
    rng = ref.available_range
    first = int(rng.start_time.value)
    return [Path(otio.url_utils.filepath_from_url(ref.target_url_for_image_number(ref.frame_for_time(
        F.RT(first + i, F.FPS)) - ref.start_frame))) for i in range(int(rng.duration.value))]


def test_exr_jobs_relink_as_image_sequences_numbered_by_source(upscaler, tmp_path: Path) -> None:
    src = F.make_movie(tmp_path / "D004.mov", 30, "01:00:00:00")
    seq = F.make_sequence(tmp_path / "plates")
    media = tmp_path / "media"
    result = upscale_timeline(_timeline(src, seq), tmp_path / "out.otio", media, ext="", handles=1,
                              renderer=UpscalerRenderer(upscaler=upscaler, codec="exr", compression="zip"))
    shot, plate = result.timeline.find_clips()
    movie_ref, plate_ref = shot.media_reference, plate.media_reference
    assert shot.active_media_reference_key == UPSCALED_KEY
    assert isinstance(movie_ref, otio.schema.ImageSequenceReference)
    # a movie's frames are numbered by media frame: its start timecode 01:00:00:00 is 86400
    assert (movie_ref.name_prefix, movie_ref.name_suffix, movie_ref.frame_zero_padding) == ("D004_uav.", ".exr", 7)
    assert movie_ref.start_frame == F.TC_START + 9 and movie_ref.rate == F.FPS
    names = sorted(p.name for p in (media / "D004_uav").glob("*.exr"))
    assert names == [f"D004_uav.{n:07d}.exr" for n in range(F.TC_START + 9, F.TC_START + 14)]
    # an image sequence's frames keep the plate's own file numbers (media frame 7 is plate.1008)
    assert plate_ref.start_frame == 1008 and plate_ref.name_prefix == "plate_uav."
    for ref, count in ((movie_ref, 5), (plate_ref, 4)):
        files = _frames_of(ref)
        assert len(files) == count and all(f.is_file() for f in files)
    meta = movie_ref.metadata["uav"]
    assert meta["uav_version"] and meta["seed"] == 5
    assert len(meta["weights"]["hash"]) == 16
    assert list(meta["source"]["range"]) == [F.TC_START + 9, F.TC_START + 14]
    header = json.loads((media / "D004_uav" / "uav.json").read_text())
    assert header["source"]["start_frame"] == F.TC_START + 9 and header["source"]["timecode"] == "01:00:00:09"
    from uav.io import probe

    info = probe(media / "D004_uav")
    assert info.start_timecode == "01:00:00:09" and info.num_frames == 5

    # the relinked .otio reads back with the sequences; an EDL or FCP XML cannot hold one: refused, one line each
    written, problems = write_timeline(result.timeline, tmp_path / "out.edl")
    assert [p.suffix for p in written] == [".otio"]
    (problem,) = problems
    assert problem.startswith("refused: cmx_3600 (.edl) cannot express image sequences: clip 'SH010'")
    assert "\n" not in problem and not (tmp_path / "out.edl").exists()
    _, problems = write_timeline(result.timeline, tmp_path / "out.xml")
    assert problems[0].startswith("refused: fcp_xml (.xml) cannot express image sequences")
    back = otio.adapters.read_from_file(str(tmp_path / "out.otio"))
    assert isinstance(back.find_clips()[0].media_reference, otio.schema.ImageSequenceReference)

    # a rerun finds the folders current (their sizes match the manifest) and renders nothing
    again = upscale_timeline(_timeline(src, seq), tmp_path / "out.otio", media, ext="", handles=1,
                             renderer=UpscalerRenderer(upscaler=upscaler, codec="exr", compression="zip"))
    assert not again.report.rendered and len(again.report.cached) == 2
    # a forced render replaces the folder whole
    forced = upscale_timeline(_timeline(src, seq), tmp_path / "out.otio", media, ext="", handles=1, force=True,
                              renderer=UpscalerRenderer(upscaler=upscaler, codec="dpx"))
    assert len(forced.report.rendered) == 2
    assert sorted(p.suffix for p in (media / "D004_uav").iterdir()) == [".dpx"] * 5 + [".json"]


def test_timeline_cli_refuses_an_extension_for_sequence_codecs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from uav.cli import _load_commands, app

    _load_commands()
    tl = tmp_path / "t.otio"
    otio.adapters.write_to_file(otio.schema.Timeline("t"), str(tl))
    args = ["timeline", "upscale", str(tl), "-o", str(tmp_path / "o.otio"), "--media-dir", str(tmp_path / "m"),
            "--weights", str(tmp_path)]
    res = CliRunner().invoke(app, [*args, "--codec", "exr", "--ext", "mp4"])
    assert res.exit_code == 2
    assert "error: --ext mp4: --codec exr writes an image-sequence folder per job" in res.output
    res = CliRunner().invoke(app, [*args, "--codec", "dnxhr", "--compression", "piz"])
    assert res.exit_code == 2 and "compression only applies to exr" in res.output
