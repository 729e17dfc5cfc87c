"""Kill -9 in the middle of a run, run the same command again: it resumes from the last checkpoint
and its losses (and final weights) equal those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from train_fixtures import SUBPROCESS_ENV, events, state_of, tiny_args, training_setup

ARGS = dict(steps=6, checkpoint_every=2, grad_accum=2, ema_decay=0.9, num_workers=1, warmup_steps=2,
            lr_schedule="cosine")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return training_setup(tmp_path_factory.mktemp("train_resume"))


def _command(setup, output):
    root, init, data, degradations = setup
    return [sys.executable, "-m", "uav.train", "unet", *tiny_args(data, output, init, degradations, **ARGS)]


def _env():
    return {**os.environ, **SUBPROCESS_ENV}


def _checkpoint_steps(output):
    log = output / "log.jsonl"
    if not log.is_file():
        return []
    steps = []
    for line in log.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if doc.get("event") == "checkpoint":
            steps.append(doc["step"])
    return steps


@pytest.mark.slow
def test_resume_after_sigkill_repeats_the_uninterrupted_run(setup):
    root = setup[0]
    straight, killed = root / "straight", root / "killed"
    done = subprocess.run(_command(setup, straight), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    proc = subprocess.Popen(_command(setup, killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _checkpoint_steps(killed) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its data worker, mid-run
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "release").exists()
    stopped_at = max(_checkpoint_steps(killed))
    assert 2 <= stopped_at < ARGS["steps"]

    again = subprocess.run(_command(setup, killed), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    resume = events(killed, "resume")
    assert [r["step"] for r in resume] == [stopped_at]
    expected = {s["step"]: s for s in events(straight, "step")}
    got = {s["step"]: s for s in events(killed, "step")}
    assert sorted(got) == sorted(expected) == list(range(1, ARGS["steps"] + 1))
    for step in expected:
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-4, abs=1e-6), step
        assert got[step]["lr"] == pytest.approx(expected[step]["lr"], rel=1e-9)
        assert got[step]["samples"] == expected[step]["samples"] == step * ARGS["grad_accum"]
    # optimizer, scheduler and EMA state came back too: the released (EMA) weights agree
    a = state_of(straight / "release" / "unet" / "unet_video.safetensors")
    b = state_of(killed / "release" / "unet" / "unet_video.safetensors")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
