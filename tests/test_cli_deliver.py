"""``uav upscale`` into the finishing formats and ``uav info`` reading their provenance back,
with a tiny random release (the frames are noise; the files, numbering, tags and records
are what is checked)."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import uav.cli
from uav.cli import app
from uav.io import probe, write_video
from uav.io.provenance import settings_hash, weights_identity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from io_helpers import index_frame, make_clip  # noqa: E402

uav.cli._load_commands()
runner = CliRunner()
FAST = ["--steps", "1", "--guidance-scale", "1", "--negative-prompt", "", "--seed", "11"]


@pytest.fixture(scope="module")
def plates(tmp_path_factory) -> Path:
    """A 10-bit DPX plate numbered from 1001, at 25 fps."""
    frames = [index_frame(i).astype(np.float32) / 255 for i in range(3)]
    return write_video(tmp_path_factory.mktemp("plates") / "plate", frames, fps=25, codec="dpx", start_number=1001)


def run(*args: str):
    return runner.invoke(app, [*args], catch_exceptions=False)


def test_dpx_plate_to_exr_numbered_from_the_source(release: Path, plates: Path, tmp_path: Path) -> None:
    out = tmp_path / "plate_4x"
    res = run("upscale", str(plates), "-o", str(out), "--weights", str(release), "--codec", "exr", "--fps", "25",
              "--start", "1", "--start-number", "source", "--compression", "zip", "--json", "-q", *FAST)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    (record,) = summary["outputs"]
    written = Path(record["output"])
    assert written.name == "plate_4x_selfcheck_random"
    names = sorted(p.name for p in written.glob("*.exr"))
    assert names == ["plate_4x_selfcheck_random.0001002.exr", "plate_4x_selfcheck_random.0001003.exr"]
    assert record["provenance"] == "sidecar"
    assert set(record["color"]["not_carried"]) == {"color_space", "color_range"}
    # the float decoder output reaches the half floats: not 8-bit values
    from uav.io import read_frames

    values = read_frames(written).astype(np.float64)
    assert (np.abs(values * 255 - np.round(values * 255)) > 0.05).mean() > 0.3

    res = run("info", str(written), "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    prov = info["provenance"]
    assert info["compression"] == "zip" and info["pixel_type"] == "half" and info["first_frame_number"] == 1002
    assert prov["seed"] == 11 == summary["settings"]["seed"]
    assert prov["settings"] == summary["settings"] and prov["settings_hash"] == settings_hash(summary["settings"])
    assert prov["model"]["weights"]["hash"] == weights_identity(release)["hash"]
    assert prov["source"]["path"] == str(plates) and prov["source"]["start_frame"] == 1
    assert prov["source"]["end_frame"] == 3 and prov["source"]["fps"] == "25"
    text = run("info", str(written)).output
    assert "provenance (sidecar): uav 0.1.0" in text and "seed: 11" in text and "files from 1002" in text


def test_movie_to_dnxhr_mov_carries_tags_and_provenance(release: Path, tmp_path: Path) -> None:
    src = make_clip(tmp_path / "full.mov", num_frames=2, timecode="10:00:00:00", encoder="prores_ks",
                    pix_fmt="yuv422p10le")
    out = tmp_path / "full_4x.mov"
    res = run("upscale", str(src), "-o", str(out), "--weights", str(release), "--codec", "dnxhr", "--json", "-q",
              *FAST)
    assert res.exit_code == 0, res.output
    (record,) = json.loads(res.stdout)["outputs"]
    assert record["provenance"] == "metadata"
    assert record["color"]["not_carried"] == {}
    written = Path(record["output"])
    assert probe(written).start_timecode == "10:00:00:00"
    info = json.loads(run("info", str(written), "--json").stdout)
    assert info["codec"] == "dnxhd" and info["pix_fmt"] == "yuv422p10le"
    assert info["provenance"]["source"]["timecode"] == "10:00:00:00"
    assert info["provenance_in"] == "metadata"


@pytest.mark.parametrize("extra, message", [
    (["--codec", "exr", "--start-number", "timecode"], "--start-number: start number 'timecode': the source has no "
                                                       "timecode"),
    (["--codec", "exr", "--compression", "b44"], "exr compression must be one of piz, zip, dwaa, none"),
    (["--codec", "h264", "--start-number", "5"], "--start-number numbers image sequences"),
    (["--codec", "dnxhr_hq"], "dnxhr_hq needs frames of at least 256x120, got 256x112"),
])
def test_bad_finishing_options_are_one_line_and_write_nothing(release: Path, plates: Path, tmp_path: Path,
                                                              extra: list[str], message: str) -> None:
    if "dnxhr_hq" in extra:
        source = str(write_video(tmp_path / "small.mov", [np.zeros((28, 64, 3), np.uint8)], fps=24, codec="prores_hq"))
        out = tmp_path / "o.mov"
    else:
        source, out = str(plates), tmp_path / "o"
    res = runner.invoke(app, ["upscale", source, "-o", str(out), "--weights", str(release), *extra, *FAST])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["small.mov"] if "dnxhr_hq" in extra else [])


def test_info_of_foreign_and_missing_files(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "c.mp4", num_frames=1)
    res = run("info", str(src))
    assert res.exit_code == 0 and "provenance: none" in res.output
    res = runner.invoke(app, ["info", str(tmp_path / "nope.mov"), "--json"])
    assert res.exit_code == 2
    assert json.loads(res.stdout)["ok"] is False and "no such file" in res.output
    assert Fraction(json.loads(run("info", str(src), "--json").stdout)["fps"]) == 24


@pytest.mark.parametrize("codec, name", [("exr", "e"), ("dpx", "d"), ("png", "p"), ("tiff", "t"),
                                         ("dnxhr_hqx", "o.mxf"), ("dnxhr_444", "o.mov"), ("h264", "o.mp4"),
                                         ("h265", "o.mkv"), ("prores_hq", "o.mov")])
def test_uav_info_reads_the_record_of_every_format(tmp_path: Path, codec: str, name: str) -> None:
    record = {"uav_version": "9.9", "seed": 3, "settings_hash": "abc", "settings": {"noise_level": 50},
              "source": {"path": "in.mov", "start_frame": 10, "end_frame": 12}}
    frames = [np.full((128, 256, 3), 0.25 * i, np.float32) for i in range(2)]
    out = write_video(tmp_path / name, frames, fps=24, codec=codec, provenance=record, start_number=7)
    res = run("info", str(out), "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["provenance"] == record and info["frames"] == 2 and (info["width"], info["height"]) == (256, 128)
    assert info["provenance_in"] == ("metadata" if name.endswith((".mov", ".mp4", ".mkv")) else "sidecar")
    if "." not in name:
        assert info["first_frame_number"] == 7
    assert "seed: 3" in run("info", str(out)).output
