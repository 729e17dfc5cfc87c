"""Executors: the local one, the Ray one on a local cluster (num_cpus=2), temporal split.

Most Ray tests use :class:`SimulatedRenderer` (fixed cost, fault injection) so the
cluster's cost stays small; one cluster serves the whole module.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uav.executors import (
    CANCELLED,
    DONE,
    FAILED,
    ExecutorError,
    ExecutorUnavailable,
    Job,
    LocalExecutor,
    largest_first,
    make_executor,
    remove_partials,
)
from uav.executors.base import PARTIAL_MARKS
from uav.executors.batch import render_jobs
from uav.executors.progress import RunProgress
from uav.executors.simulate import SimulatedRenderer, throughput_model
from uav.executors.split import TemporalSplit, merge_frames


def _jobs(folder: Path, frames=(10, 30, 20, 5)) -> list[Job]:
    return [Job(f"j{k}", f"src{k}.mov", folder / f"j{k}.txt", frames=n, settings={"seed": k})
            for k, n in enumerate(frames)]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if any(m in p.name for m in PARTIAL_MARKS))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------------------- no Ray needed
def test_largest_first_keeps_ties_in_order(tmp_path):
    jobs = _jobs(tmp_path, (5, 9, 5, 9))
    assert [j.name for j in largest_first(jobs)] == ["j1", "j3", "j0", "j2"]


def test_local_executor_reports_a_failed_job_and_goes_on(tmp_path):
    jobs = _jobs(tmp_path)
    results = list(LocalExecutor().run(jobs, functools.partial(SimulatedRenderer, 0.0, fail_on=["j1"])))
    assert [(r.job.name, r.status) for r in results] == [("j0", DONE), ("j1", FAILED), ("j2", DONE), ("j3", DONE)]
    assert results[1].error == "RuntimeError: simulated failure in j1"
    assert not (tmp_path / "j1.txt").exists() and _leftovers(tmp_path) == []


def test_local_executor_stop_on_error_raises(tmp_path):
    with pytest.raises(RuntimeError, match="simulated failure"):
        list(LocalExecutor(stop_on_error=True).run(_jobs(tmp_path), functools.partial(SimulatedRenderer, 0.0,
                                                                                      fail_on=["j0"])))


def test_duplicate_outputs_are_refused(tmp_path):
    a, b = Job("a", "x", tmp_path / "o.mp4"), Job("b", "y", tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="both write"):
        list(LocalExecutor().run([a, b], SimulatedRenderer))


def test_remove_partials_touches_only_that_outputs_temporaries(tmp_path):
    names = [".a.uavtmp-1234.mp4", ".a.mp4.uavtmp-99", ".a.uav-partial-5.mp4", ".a.b.uavtmp-1.mp4", "a.mp4",
             ".b.uavtmp-2.mp4"]
    for n in names:
        (tmp_path / n).write_text("x")
    removed = sorted(p.name for p in remove_partials(tmp_path / "a.mp4"))
    assert removed == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


def test_make_executor_rejects_cluster_flags_for_local_and_unknown_names():
    with pytest.raises(ExecutorError, match="--workers only apply with --executor ray"):
        make_executor("local", workers=2)
    with pytest.raises(ExecutorError, match="expected one of local, ray"):
        make_executor("dask")


def test_ray_absent_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to import
    with pytest.raises(ExecutorUnavailable) as info:
        make_executor("ray")
    assert "pip install 'uav[ray]'" in str(info.value) and "\n" not in str(info.value)


def test_nothing_imports_ray_on_import():
    code = ("import sys, uav, uav.executors, uav.executors.batch, uav.executors.split, uav.executors.progress, "
            "uav.cli; assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_throughput_model_schedules_largest_first():
    est = throughput_model([4, 3, 3, 2], 2)
    assert est.seconds == 6 and est.efficiency == pytest.approx(1.0)
    est = throughput_model([10, 1, 1], 2, startup_s=1, overhead_s=0.5)
    assert est.seconds == pytest.approx(11.5)
    assert est.efficiency == pytest.approx((1 + 6) / 11.5)


def test_progress_summary_counts_results(tmp_path):
    jobs = _jobs(tmp_path, (4, 2))
    with RunProgress(None, jobs=3, frames=6) as progress:
        progress.skip()
        for r in LocalExecutor().run(jobs, functools.partial(SimulatedRenderer, 0.0, fail_on=["j1"]),
                                     on_event=progress):
            progress.add(r)
    summary = progress.summary()
    assert (summary["done"], summary["failed"], summary["cached"]) == (1, 1, 1)
    assert [j["status"] for j in summary["jobs"]] == [DONE, FAILED]
    assert summary["jobs"][0]["worker"] == "local" and json.dumps(summary)


# ---------------------------------------------------------------------------- temporal split
def test_split_ranges_overlap_and_cover():
    split = TemporalSplit(part_frames=10, overlap=3, min_frames=10)
    assert split.ranges(10) == [(0, 10)]
    assert split.ranges(25) == [(0, 10), (7, 17), (14, 25)]
    with pytest.raises(ValueError, match="overlap"):
        TemporalSplit(part_frames=10, overlap=6)


def test_merge_frames_blends_seams_with_the_window_rule():
    a = np.full((6, 2, 2, 3), 100, np.uint8)
    b = np.full((5, 2, 2, 3), 201, np.uint8)
    out = np.stack(list(merge_frames([a, b], [0, 4], 9)))
    assert out[:4].max() == 100 and out[6:].min() == 201
    assert (out[4:6] == 150).all()  # 0.5 * 100 + 0.5 * 201 = 150.5, rounded to even


def test_split_needs_a_seed(tmp_path):
    job = Job("long", "x.mov", tmp_path / "x.mp4", frames=50, settings={"seed": None})
    with pytest.raises(ValueError, match="fixed seed"):
        TemporalSplit(part_frames=10, overlap=2).split([job])


# ---------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_matches_local_and_uses_both_workers(ray_cluster, tmp_path):
    factory = functools.partial(SimulatedRenderer, 0.01)
    local = list(LocalExecutor().run(_jobs(tmp_path / "local"), factory))
    events = []
    remote = list(make_executor("ray", workers=2).run(_jobs(tmp_path / "ray"), factory, on_event=events.append))
    assert {r.job.name for r in remote} == {r.job.name for r in local} and all(r.ok for r in remote)
    for r in local:
        assert (tmp_path / "ray" / r.job.output.name).read_text() == r.job.output.read_text()
    starts = [e for e in events if e.kind == "start"]
    assert [e.job.name for e in starts[:2]] == ["j1", "j2"]  # largest first
    assert {e.worker for e in starts} == {"w1", "w2"}
    assert all(e.pid and e.node for e in starts)


@pytest.mark.slow
def test_killed_worker_job_is_redone_elsewhere(ray_cluster, tmp_path):
    killed: dict[str, object] = {}

    def on_event(e):
        # kill -9 the worker process rendering j1 once it is half way
        if e.kind == "progress" and e.job.name == "j1" and e.done >= 5 and not killed:
            killed.update(worker=e.worker, pid=e.pid, partials=_leftovers(tmp_path))
            os.kill(e.pid, signal.SIGKILL)

    results = list(make_executor("ray", workers=2).run(_jobs(tmp_path), functools.partial(SimulatedRenderer, 0.05),
                                                       on_event=on_event))
    assert killed and killed["partials"], "the kill must land mid-job, while its temporary file exists"
    by_name = {r.job.name: r for r in results}
    assert all(r.ok for r in results) and len(results) == 4
    assert by_name["j1"].attempts == 2 and by_name["j1"].worker != killed["worker"]
    assert (tmp_path / "j1.txt").read_text().startswith("0\n") and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_worker_that_raises_fails_that_job_only(ray_cluster, tmp_path):
    results = list(make_executor("ray", workers=2).run(
        _jobs(tmp_path), functools.partial(SimulatedRenderer, 0.01, fail_on=["j2"])))
    by_name = {r.job.name: r for r in results}
    assert by_name["j2"].status == FAILED and by_name["j2"].attempts == 1
    assert by_name["j2"].error == "RuntimeError: simulated failure in j2"
    assert all(by_name[n].ok for n in ("j0", "j1", "j3"))
    assert not (tmp_path / "j2.txt").exists() and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_job_that_kills_every_worker_fails_after_retries(ray_cluster, tmp_path):
    results = list(make_executor("ray", workers=2, max_retries=1).run(
        _jobs(tmp_path, (6, 4, 3)), functools.partial(SimulatedRenderer, 0.01, die_on=["j0"], die_once=False)))
    by_name = {r.job.name: r for r in results}
    assert by_name["j0"].status == FAILED and by_name["j0"].attempts == 2
    assert "worker died 2 time(s)" in by_name["j0"].error and "\n" not in by_name["j0"].error
    assert by_name["j1"].ok and by_name["j2"].ok and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_ctrl_c_cancels_cleanly(ray_cluster, tmp_path):
    seen = []

    def on_event(e):
        if e.kind == "progress" and e.done >= 3:
            seen.append(_leftovers(tmp_path))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        for _ in make_executor("ray", workers=2, grace_s=5).run(
                _jobs(tmp_path), functools.partial(SimulatedRenderer, 0.05), on_event=on_event):
            pass
    assert seen and seen[0], "the interrupt must land while temporary files exist"
    assert _leftovers(tmp_path) == [] and not any(tmp_path.glob("*.txt"))
    # the cluster (not ours) is still there for the next run
    assert ray_cluster.is_initialized()


@pytest.mark.slow
def test_factory_that_cannot_start_is_one_error(ray_cluster, tmp_path):
    with pytest.raises(ExecutorError,
                       match="no Ray worker could start: TypeError: .str. object cannot be interpreted"):
        list(make_executor("ray", workers=1).run(_jobs(tmp_path), functools.partial(SimulatedRenderer, startup_s="bad")))


@pytest.mark.slow
def test_split_jobs_render_as_parts_and_merge(ray_cluster, tmp_path):
    # parts of a simulated render are text files; the merge of real frames is tested above
    split = TemporalSplit(part_frames=8, overlap=2, min_frames=8)
    jobs = [Job("long", "x.mov", tmp_path / "long.txt", frames=20, settings={"seed": 1})]
    to_run, parts = split.split(jobs)
    assert [j.frames for j in to_run] == [8, 8, 8] and [j.start for j in to_run] == [0, 6, 12]
    assert all(j.name.startswith("long#part") for j in to_run)
    results = list(make_executor("ray", workers=2).run(to_run, functools.partial(SimulatedRenderer, 0.0)))
    assert all(r.ok for r in results) and len(parts["long"]) == 3
    # a rerun of the split finds the parts done and renders none of them again
    assert split.split(jobs)[0] == []


def test_render_jobs_reports_a_failed_part_as_its_job_failing(tmp_path):
    split = TemporalSplit(part_frames=8, overlap=2, min_frames=8)
    jobs = [Job("long", "x.mov", tmp_path / "long.txt", frames=20, settings={"seed": 1}),
            Job("short", "y.mov", tmp_path / "short.txt", frames=3)]
    results = list(render_jobs(jobs, functools.partial(SimulatedRenderer, 0.0, fail_on=["long#part2of3"]),
                               split=split))
    by_name = {r.job.name: r for r in results}
    assert set(by_name) == {"long", "short"} and by_name["short"].ok
    assert by_name["long"].status == FAILED and by_name["long"].error.startswith("part 2 of 3: RuntimeError")
    assert CANCELLED not in {r.status for r in results}
