"""``uav train``: every option documented, bad input answered with one line and exit 2, and the
same script running unchanged under ``accelerate launch``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from train_fixtures import SUBPROCESS_ENV, events, make_clips, tiny_args, training_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return training_setup(tmp_path_factory.mktemp("train_cli"))


def _uav(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from uav.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **SUBPROCESS_ENV, "COLUMNS": "200"})


@pytest.mark.parametrize("stage", ["unet", "vae"])
def test_help_documents_every_option(stage):
    import typer.main

    from uav.cli.train import train_app

    command = typer.main.get_command(train_app).commands[stage]
    result = CliRunner().invoke(train_app, [stage, "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert result.exit_code == 0
    for param in command.params:
        assert param.help, f"{param.name} has no help text"
        if param.opts[0].startswith("--"):
            assert param.opts[0] in result.output, param.opts[0]
    assert ("--prompt-dropout" in result.output) == (stage == "unet")
    assert ("--perceptual-weight" in result.output) == (stage == "vae")


def test_stages_share_every_option_but_their_own_in_one_order():
    import typer.main

    from uav.cli.train import train_app

    group = typer.main.get_command(train_app)
    params = {stage: [(p.name, p.opts, p.default) for p in group.commands[stage].params] for stage in ("unet", "vae")}
    own = {"unet": ["prompt_dropout", "max_noise_level"], "vae": ["perceptual_weight"]}
    shared = {stage: [p for p in ps if p[0] not in own[stage]] for stage, ps in params.items()}
    assert shared["unet"] == shared["vae"] and len(shared["unet"]) == 32
    for stage, ps in params.items():
        # each stage's own options sit among the optimisation options, just after --cpu
        names = [p[0] for p in ps]
        at = names.index("cpu") + 1
        assert names[at:at + len(own[stage])] == own[stage]
        assert names[0] == "data" and names[-1] == "debug"


def test_uav_train_is_attached_to_the_main_cli():
    result = _uav("train", "--help")
    assert result.returncode == 0, result.stderr
    assert "unet" in result.stdout and "vae" in result.stdout


def _bad_inputs(root: Path, data: Path) -> dict[str, tuple[Path, str]]:
    empty = root / "empty"
    empty.mkdir(exist_ok=True)
    broken = root / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "clip.mp4").write_bytes(b"this is not a video" * 100)
    short = root / "short"
    make_clips(short, count=1, frames=3)
    return {
        "empty folder": (empty, "no clips in"),
        "unreadable clip": (broken, "cannot read clip clip.mp4"),
        "clip shorter than the window": (short, "has 3 frame(s), fewer than the window of 4"),
    }


@pytest.mark.slow
def test_bad_inputs_give_one_error_line_and_exit_2(setup):
    root, init, data, degradations = setup
    for name, (folder, message) in _bad_inputs(root, data).items():
        out = root / f"out_{name.replace(' ', '_')}"
        result = _uav("train", "unet", *tiny_args(folder, out, init, degradations))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (name, lines)
        assert not (out / "release").exists()


@pytest.mark.slow
def test_bad_options_give_one_error_line(setup):
    root, init, data, degradations = setup
    bad_toml = root / "bad.toml"
    bad_toml.write_text("video_prob = 0.0\n[first.blur]\nkernel_size = [3]\n")
    cases = [
        (tiny_args(data, root / "o1", init, bad_toml), "unknown key(s) ['kernel_size'] in [first.blur]"),
        (tiny_args(data, root / "o2", root / "nowhere", degradations), "init: "),
        (tiny_args(data, root / "o3", data, degradations), "is neither a release folder"),
        (tiny_args(data, root / "o4", init, degradations, crop=12), "multiple of 8"),
        (tiny_args(data, root / "o5", init, degradations, mixed_precision="fp8"), "mixed_precision"),
    ]
    for args, message in cases:
        result = _uav("train", "vae", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)


def _accelerate(setup, output: Path, processes: int) -> subprocess.CompletedProcess:
    root, init, data, degradations = setup
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    assert launcher, "accelerate is not installed (pip install 'uav[train]')"
    # one process: accelerate's --cpu launcher; several: torchrun (--multi_gpu), which our --cpu
    # turns into gloo DDP on the CPU
    mode = "--cpu" if processes == 1 else "--multi_gpu"
    cmd = [launcher, "launch", mode, "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "uav.train", "unet",
           *tiny_args(data, output, init, degradations, steps=2, checkpoint_every=1)]
    env = {**os.environ, **SUBPROCESS_ENV, "HF_HOME": str(root / "hf_home")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_runs_unchanged_under_accelerate_launch(setup):
    from uav import VideoUpscaler

    out = setup[0] / "accelerate_1"
    result = _accelerate(setup, out, 1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [s["step"] for s in events(out, "step")] == [1, 2]
    VideoUpscaler.from_pretrained(out / "release", device="cpu")


@pytest.mark.slow
def test_two_process_ddp_on_cpu(setup):
    out = setup[0] / "accelerate_2"
    result = _accelerate(setup, out, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    start = events(out, "start")[0]
    assert start["world_size"] == 2
    steps = events(out, "step")
    # two processes draw disjoint samples: 2 per optimizer step
    assert [s["samples"] for s in steps] == [2, 4]
    assert (out / "release" / "unet" / "unet_video.safetensors").is_file()
