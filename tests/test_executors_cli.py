"""``--executor ray`` on ``uav timeline upscale`` and ``uav upscale``: same files, same
timeline, same manifest as ``local``; failures, kills and a missing Ray.

One local Ray cluster (num_cpus=2) serves the module; renders use the tiny random
release on 32x24 clips of two frames with one step, so each costs seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import opentimelineio as otio
import pytest
import torch
from typer.testing import CliRunner

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import otio_fixtures as F  # noqa: E402
from conftest import torch_threads  # noqa: E402
from natural_clips import write_natural_clips  # noqa: E402

import uav.cli  # noqa: E402
from uav.cli.app import app  # noqa: E402
from uav.io.reader import read_frames  # noqa: E402
from uav.weights.tiny import make_tiny_release, moving_pattern  # noqa: E402
from uav_otio.render import PARTIAL_MARK, atomic_output  # noqa: E402

RENDER = ["--device", "cpu", "--steps", "1", "--seed", "3"]
uav.cli._load_commands()  # the whole `uav` app, as the console script builds it


# ---------------------------------------------------------------------------- renderers the workers import
class FailOnSecond:
    """A timeline renderer that raises on the output of clip ``SH2`` and writes the others."""

    def __call__(self, job: Any, settings: dict[str, Any], output_path: Path, progress: Any = None) -> None:
        if "SH2" in job.clip_names:
            raise RuntimeError("this shot cannot be rendered")
        frames = F.read_job_frames(job)
        with atomic_output(output_path) as tmp:
            F.write_movie(tmp, [f.repeat(2, 0).repeat(2, 1) for f in frames], job.fps)


class SlowRenderer:
    """Writes a temporary file, then reports a frame every 0.3 s (time to kill it mid-job)."""

    def __call__(self, job: Any, settings: dict[str, Any], output_path: Path, progress: Any = None) -> None:
        frames = F.read_job_frames(job)
        with atomic_output(output_path) as tmp:
            tmp.write_bytes(b"\0" * 1024)
            for k in range(len(frames)):
                time.sleep(0.3)
                if progress:
                    progress(k + 1, len(frames))
            F.write_movie(tmp, frames, job.fps)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # workers import the renderers above by name (``--renderer test_executors_cli:...``)
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    paths = []
    for k in range(3):
        frames = list(moving_pattern(4, F.H, F.W, seed=k))
        F.write_movie(root / f"M{k}.mov", frames)
        paths.append(root / f"M{k}.mov")
    return paths


@pytest.fixture()
def cut(media, tmp_path):
    tl = otio.schema.Timeline("three shots")
    track = otio.schema.Track("V1")
    track.extend([F.clip(f"SH{k + 1}", F.ext_ref(p, 4), 1, 2) for k, p in enumerate(media)])
    tl.tracks.append(track)
    path = tmp_path / "cut.otio"
    otio.adapters.write_to_file(tl, str(path))
    return path


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def several_threads():
    # what a user's machine runs locally; a Ray worker reserving one CPU starts with one thread,
    # and PyTorch's single-threaded CPU kernels round differently
    with torch_threads(max(2, torch.get_num_threads())):
        yield


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    """Three real-looking clips (64x48, 8 frames): the sample pattern, a landscape, a sky."""
    return write_natural_clips(tmp_path_factory.mktemp("natural") / "clips")


def _manifest(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "uav_manifest.json").read_text())
    text = json.dumps(data["outputs"]).replace(str(folder.parent), "<run>")
    outputs = json.loads(text)
    for entry in outputs.values():
        entry.pop("rendered_at", None)
    return outputs


def _timeline(path: Path) -> str:
    return path.read_text().replace(str(path.parent), "<run>")


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if PARTIAL_MARK in p.name or ".uavtmp-" in p.name]


# ---------------------------------------------------------------------------- timelines
@pytest.mark.slow
def test_timeline_on_ray_matches_local(ray_cluster, weights, cut, tmp_path, several_threads):
    common = ["timeline", "upscale", cut, "--weights", weights, "--handles", "0", *RENDER]
    local = run(*common, "-o", tmp_path / "local" / "cut_uav.otio", "--media-dir", tmp_path / "local" / "media")
    assert local.exit_code == 0, local.output
    remote = run(*common, "-o", tmp_path / "ray" / "cut_uav.otio", "--media-dir", tmp_path / "ray" / "media",
                 "--executor", "ray", "--workers", "2", "--json")
    assert remote.exit_code == 0, remote.output
    summary = json.loads(remote.stdout)
    assert summary["ok"] and summary["executor"] == "ray" and summary["failed"] == []
    assert len(summary["jobs"]) == 3 and {j["status"] for j in summary["jobs"]} == {"done"}
    assert {j["worker"] for j in summary["jobs"]} <= {"w1", "w2"}

    manifest = _manifest(tmp_path / "local" / "media")
    assert len(manifest) == 3 and _manifest(tmp_path / "ray" / "media") == manifest
    for name in manifest:
        a = read_frames(tmp_path / "local" / "media" / name)
        b = read_frames(tmp_path / "ray" / "media" / name)
        assert a.shape == (2, 4 * F.H, 4 * F.W, 3) and np.array_equal(a, b), name
    assert _timeline(tmp_path / "ray" / "cut_uav.otio") == _timeline(tmp_path / "local" / "cut_uav.otio")

    # a rerun on Ray renders nothing
    again = run(*common, "-o", tmp_path / "ray" / "cut_uav.otio", "--media-dir", tmp_path / "ray" / "media",
                "--executor", "ray", "--workers", "2", "--json")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["rendered"] == [] and len(summary["cached"]) == 3 and summary["jobs"] == []


@pytest.mark.slow
def test_timeline_job_that_raises_is_reported_and_the_rest_finish(ray_cluster, cut, tmp_path):
    media_dir = tmp_path / "media"
    res = run("timeline", "upscale", cut, "-o", tmp_path / "out.otio", "--media-dir", media_dir, "--handles", "0",
              "--renderer", "test_executors_cli:FailOnSecond", "--executor", "ray", "--workers", "2", "--json")
    assert res.exit_code == 3, res.output
    summary = json.loads(res.stdout)
    assert summary["ok"] is False and len(summary["rendered"]) == 2
    (failed,) = summary["failed"]
    assert failed["error"] == "RuntimeError: this shot cannot be rendered"
    assert failed["output"] not in summary["rendered"]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 job(s) failed" in errors[0] and "this shot cannot be rendered" in errors[0]
    assert sorted(_manifest(media_dir)) == sorted(summary["rendered"])
    assert not (media_dir / failed["output"]).exists() and _leftovers(media_dir) == []
    # the failed clip keeps its original media in the written timeline
    tl = otio.adapters.read_from_file(str(tmp_path / "out.otio"))
    active = {c.name: c.active_media_reference_key for c in tl.find_clips()}
    assert active["SH2"] != active["SH1"] == active["SH3"]


@pytest.mark.slow
def test_killed_worker_job_is_redone_and_a_rerun_renders_nothing(ray_cluster, cut, tmp_path):
    from uav.executors import make_executor
    from uav_otio import plan_file, render_plan

    media_dir = tmp_path / "media"
    killed: dict[str, Any] = {}

    def on_event(event: Any) -> None:
        if getattr(event, "kind", None) == "progress" and event.done >= 1 and not killed:
            killed.update(job=event.job.name, worker=event.worker, partials=_leftovers(media_dir))
            os.kill(event.pid, signal.SIGKILL)

    _, plan = plan_file(cut, media_dir=media_dir, handles=0)
    report = render_plan(plan, "test_executors_cli:SlowRenderer", executor=make_executor("ray", workers=2),
                         on_event=on_event)
    assert killed and killed["partials"], "the kill must land mid-job"
    assert len(report.rendered) == 3 and report.failed == []
    redone = next(r for r in report.runs if r.job.name == killed["job"])
    assert redone.attempts == 2 and redone.worker != killed["worker"]
    assert _leftovers(media_dir) == [] and len(_manifest(media_dir)) == 3

    again = render_plan(plan_file(cut, media_dir=media_dir, handles=0)[1], "test_executors_cli:SlowRenderer",
                        executor=make_executor("ray", workers=2))
    assert again.rendered == [] and len(again.cached) == 3 and again.runs == []


# ---------------------------------------------------------------------------- folders
@pytest.mark.slow
def test_folder_on_ray_matches_local(ray_cluster, weights, media, tmp_path, several_threads):
    folder = tmp_path / "videos"
    folder.mkdir()
    for p in media[:2]:
        F.write_movie(folder / f"{p.stem}.mp4", list(moving_pattern(2, F.H, F.W, seed=int(p.stem[1:]))))
    common = ["upscale", folder, "--weights", weights, *RENDER, "--codec", "png"]
    local = run(*common, "-o", tmp_path / "local")
    assert local.exit_code == 0, local.output
    remote = run(*common, "-o", tmp_path / "ray", "--executor", "ray", "--workers", "2", "--json")
    assert remote.exit_code == 0, remote.output
    summary = json.loads(remote.stdout)
    assert summary["executor"] == "ray" and len(summary["outputs"]) == 2 and summary["failed"] == []
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir()) and len(names) == 2
    for name in names:
        a = read_frames(str(tmp_path / "local" / name / "%06d.png"))
        b = read_frames(str(tmp_path / "ray" / name / "%06d.png"))
        assert a.shape[0] == 2 and np.array_equal(a, b), name


@pytest.mark.slow
def test_natural_clips_on_ray_match_local_exactly(ray_cluster, weights, natural, tmp_path, several_threads):
    """The issue's case: real-looking clips, H.264 out (which turns a last-bit difference into
    visible blocks on random networks' noise), two Ray workers against the local loop."""
    common = ["upscale", natural[0].parent, "--steps", "1", "--seed", "1", "--weights", weights, "--device", "cpu"]
    local = run(*common, "-o", tmp_path / "local")
    assert local.exit_code == 0, local.output
    remote = run(*common, "-o", tmp_path / "ray", "--executor", "ray", "--workers", "2", "--json")
    assert remote.exit_code == 0, remote.output
    assert {o["worker"] for o in json.loads(remote.stdout)["outputs"]} == {"w1", "w2"}
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "ray").iterdir())
    for name in names:
        a, b = read_frames(tmp_path / "local" / name), read_frames(tmp_path / "ray" / name)
        assert a.shape == (8, 192, 256, 3) and np.array_equal(a, b), name


@pytest.mark.slow
def test_natural_timeline_on_ray_matches_local_exactly(ray_cluster, weights, natural, tmp_path, several_threads):
    tl = otio.schema.Timeline("natural")
    track = otio.schema.Track("V1")
    track.extend([F.clip(p.stem, F.ext_ref(p, 8), 1, 5) for p in natural])
    tl.tracks.append(track)
    otio.adapters.write_to_file(tl, str(tmp_path / "cut.otio"))
    common = ["timeline", "upscale", tmp_path / "cut.otio", "--weights", weights, "--handles", "0",
              "--device", "cpu", "--steps", "1", "--seed", "1"]
    for where, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        res = run(*common, "-o", tmp_path / where / "cut_uav.otio", "--media-dir", tmp_path / where / "media", *extra)
        assert res.exit_code == 0, res.output
    manifest = _manifest(tmp_path / "local" / "media")
    assert len(manifest) == 3 and _manifest(tmp_path / "ray" / "media") == manifest
    for name in manifest:
        a, b = read_frames(tmp_path / "local" / "media" / name), read_frames(tmp_path / "ray" / "media" / name)
        assert a.shape == (5, 192, 256, 3) and np.array_equal(a, b), name


def test_ray_workers_compute_with_the_drivers_threads(ray_cluster, tmp_path, several_threads):
    from uav.executors.ray import RenderWorker, driver_threads

    class ThreadsRenderer:
        def __call__(self, job: Any, progress: Any = None) -> None:
            Path(job.output).write_text(str(torch.get_num_threads()))

    actor = ray_cluster.remote(RenderWorker).options(num_cpus=1).remote(ThreadsRenderer, "w", False,
                                                                        driver_threads())
    from uav.executors import Job

    out = tmp_path / "threads.txt"
    try:
        assert ray_cluster.get(actor.render.remote(Job("t", "-", out)))[0] == "done"
        assert int(out.read_text()) == torch.get_num_threads() > 1
    finally:
        ray_cluster.kill(actor)


# ---------------------------------------------------------------------------- temporal split
@pytest.mark.slow
def test_temporal_split_from_the_command_line(weights, tmp_path, one_thread):
    clip = tmp_path / "long.mp4"
    F.write_movie(clip, list(moving_pattern(10, F.H, F.W, seed=4)))
    common = ["upscale", clip, "--weights", weights, *RENDER, "--codec", "png", "--json"]
    whole = run(*common, "-o", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    split = run(*common, "-o", tmp_path / "split", "--temporal-split", "4:1")
    assert split.exit_code == 0, split.output
    summary = json.loads(split.stdout)
    assert summary["temporal_split"] == {"part_frames": 4, "overlap": 1} and summary["executor"] == "local"
    a = read_frames(str(Path(json.loads(whole.stdout)["outputs"][0]["output"]) / "%06d.png"))
    b = read_frames(str(Path(summary["outputs"][0]["output"]) / "%06d.png"))
    # the same frames, rendered as 3 overlapping parts blended at the seams: a different picture
    assert a.shape == b.shape and a.shape[0] == 10 and not np.array_equal(a, b)
    assert not any(".uav-parts" in p.name for p in tmp_path.rglob("*"))  # parts merged, then removed
    dry = run(*common, "-o", tmp_path / "dry", "--temporal-split", "4:1", "--dry-run")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["outputs"][0]["parts"] == [[0, 4], [3, 7], [6, 10]]


@pytest.mark.parametrize("value, message", [
    ("4:3", "error: --temporal-split: overlap must be in [0, part_frames // 2 = 2], got 3"),
    ("many", "error: --temporal-split: expected FRAMES or FRAMES:OVERLAP (e.g. 96:8), got 'many'"),
    ("1", "error: --temporal-split: part_frames must be >= 2, got 1"),
])
def test_temporal_split_values_are_checked(value, message, media, tmp_path):
    res = run("upscale", media[0], "--self-check", "-o", tmp_path / "o.mp4", "--temporal-split", value)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and lines == [message] and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("command", [["upscale", "{clip}"],
                                     ["timeline", "upscale", "{cut}", "-o", "{tmp}/o.otio", "--media-dir", "{tmp}/m"]])
def test_ray_absent_is_one_line_naming_the_extra(command, media, cut, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    args = [a.format(clip=media[0], cut=cut, tmp=tmp_path) for a in command]
    res = run(*args, "--executor", "ray", "--self-check" if args[0] == "upscale" else "--handles=0")
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip() and "SELF-CHECK" not in line]
    assert lines == ["error: the ray executor needs Ray, which is not installed: pip install 'uav[ray]'"]


def test_cluster_flags_need_the_ray_executor(media, tmp_path):
    res = run("upscale", media[0], "--self-check", "--workers", "2")
    assert res.exit_code == 2 and "error: --workers only apply with --executor ray" in res.stderr
    res = run("upscale", media[0], "--self-check", "--executor", "dask")
    assert res.exit_code == 2 and "--executor: expected one of local, ray, got 'dask'" in res.stderr


def test_render_plan_on_the_local_executor_reports_failures_too(cut, tmp_path):
    from uav.executors import LocalExecutor
    from uav_otio import plan_file, render_plan

    media_dir = tmp_path / "media"
    _, plan = plan_file(cut, media_dir=media_dir, handles=0)
    report = render_plan(plan, FailOnSecond(), executor=LocalExecutor())
    assert len(report.rendered) == 2 and [r.job.name for r in report.failed] == [plan.jobs[1].output_name]
    assert report.failed[0].error == "RuntimeError: this shot cannot be rendered"
    assert sorted(_manifest(media_dir)) == sorted(r.job.output_name for r in report.rendered)
    assert _leftovers(media_dir) == []
