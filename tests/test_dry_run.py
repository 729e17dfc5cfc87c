"""``--dry-run`` on ``uav upscale`` and ``uav timeline upscale``: every check, nothing written (issue #14)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import otio_fixtures as F  # noqa: E402
from make_sample_clip import make_sample_clip  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
import uav.cli.upscale  # noqa: E402,F401
from uav.cli.app import app  # noqa: E402
from uav.weights import make_tiny_release  # noqa: E402
from uav_otio import upscale_timeline  # noqa: E402

SPY = "otio_fixtures:SpyRenderer"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return make_tiny_release(tmp_path_factory.mktemp("dry_release") / "release")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("dry_clip") / "clip.mp4", frames=6, width=32, height=24)


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_upscale_dry_run_checks_and_writes_nothing(release, clip, tmp_path):
    before = tree(tmp_path)
    res = invoke("upscale", clip, "-o", tmp_path / "new" / "deeper" / "out.mp4", "--weights", release,
                 "--propagation-steps", "1,2", "--color-fix", "wavelet", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["dry_run"] is True and summary["ok"] is True
    [out] = summary["outputs"]
    assert out["frames"] == 6 and out["output_size"] == [128, 96]
    assert out["output"].endswith("out_selfcheck_random.mp4")  # the name a run on random weights would write
    assert tree(tmp_path) == before  # no folders, no temporaries, no output


@pytest.mark.parametrize("args,needle", [
    (["--color-fix", "wavlet"], "wavlet"),
    (["--flow", "magic"], "magic"),
    (["--scheduler", "diffusers:NoSuchScheduler"], "NoSuchScheduler"),
    (["--propagation-steps", "40"], "propagation"),
])
def test_upscale_dry_run_rejects_what_the_run_would(release, clip, tmp_path, args, needle):
    line = one_error(invoke("upscale", clip, "-o", tmp_path / "o.mp4", "--weights", release, "--dry-run", *args))
    assert needle in line
    assert list(tmp_path.iterdir()) == []


def test_upscale_dry_run_probes_inputs(release, clip, tmp_path):
    broken = tmp_path / "cut.mp4"
    broken.write_bytes(clip.read_bytes()[:-1])  # the last byte missing
    line = one_error(invoke("upscale", broken, "-o", tmp_path / "o.mp4", "--weights", release, "--dry-run"))
    assert str(broken) in line or "cut.mp4" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


def test_upscale_dry_run_checks_the_weights_folder(clip, tmp_path):
    incomplete = tmp_path / "weights"
    (incomplete / "unet").mkdir(parents=True)
    (incomplete / "unet" / "unet_video_config.json").write_text("{}")
    res = invoke("upscale", clip, "-o", tmp_path / "o.mp4", "--weights", incomplete, "--dry-run")
    one_error(res)
    assert not (tmp_path / "o.mp4").exists()


# --------------------------------------------------------------------------- timelines


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return F.media_set(tmp_path_factory.mktemp("dry_media"))


def _cut(media, tmp_path: Path, **clip_metadata) -> Path:
    tl = F.simple_cut(media)
    if clip_metadata:
        next(iter(tl.find_clips())).metadata["uav"] = clip_metadata
    path = tmp_path / "cut.otio"
    otio.adapters.write_to_file(tl, str(path))
    return path


def test_timeline_dry_run_shows_the_plan_and_writes_nothing(media, tmp_path):
    src = _cut(media, tmp_path)
    before = tree(tmp_path)
    res = invoke("timeline", "upscale", src, "-o", tmp_path / "out" / "cut_uav.otio", "--media-dir",
                 tmp_path / "m", "--renderer", SPY, "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["dry_run"] is True and sorted(r["output"] for r in data["render"]) == ["A001_uav.mov", "B002_uav.mov"]
    assert data["cached"] == [] and data["frames_to_render"] > 0
    assert data["would_write"] == [str(tmp_path / "out" / "cut_uav.otio")]
    assert tree(tmp_path) == before

    # after a real render the same dry run says everything is up to date
    upscale_timeline(src, tmp_path / "out" / "cut_uav.otio", tmp_path / "m", renderer=F.SpyRenderer())
    res = invoke("timeline", "upscale", src, "-o", tmp_path / "out" / "cut_uav.otio", "--media-dir",
                 tmp_path / "m", "--renderer", SPY, "--dry-run", "--json")
    data = json.loads(res.stdout)
    assert data["render"] == [] and sorted(data["cached"]) == ["A001_uav.mov", "B002_uav.mov"]


@pytest.mark.parametrize("metadata,needle", [({"flow": "magic"}, "magic"),
                                             ({"color_fix": "wavlet"}, "wavlet"),
                                             ({"scheduler": "diffusers:NoSuchScheduler"}, "NoSuchScheduler")])
def test_timeline_dry_run_rejects_bad_shot_settings(media, tmp_path, metadata, needle):
    src = _cut(media, tmp_path, **metadata)
    line = one_error(invoke("timeline", "upscale", src, "-o", tmp_path / "o.otio", "--media-dir", tmp_path / "m",
                            "--renderer", SPY, "--dry-run"))
    assert needle in line
    assert not (tmp_path / "m").exists() and not (tmp_path / "o.otio").exists()


def test_timeline_dry_run_reports_an_ownership_conflict(media, tmp_path):
    src = _cut(media, tmp_path)
    upscale_timeline(src, tmp_path / "a.otio", tmp_path / "m", renderer=F.SpyRenderer(), model={"weights": "one"})
    stamp = {p: os.stat(p).st_mtime_ns for p in (tmp_path / "m").iterdir()}
    line = one_error(invoke("timeline", "upscale", src, "-o", tmp_path / "c.otio", "--media-dir", tmp_path / "m",
                            "--renderer", SPY, "--dry-run"))
    assert "a.otio" in line and "c.otio" in line
    assert {p: os.stat(p).st_mtime_ns for p in (tmp_path / "m").iterdir()} == stamp
