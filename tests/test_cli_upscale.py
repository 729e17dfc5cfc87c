"""`uav upscale` end to end with a tiny random release saved to disk, and its handling of bad input.

The commands run in-process through typer's CliRunner; stdout and stderr are captured
separately, so `--json` must leave exactly one JSON document on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import uav.cli
import uav.cli.jobs as cli_jobs
from uav import VideoUpscaler
from uav.cli.app import app
from uav.cli.common import SELF_CHECK_BANNER
from uav.io import probe, read_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample_clip import make_sample_clip  # noqa: E402

uav.cli._load_commands()  # the whole `uav` app, as the console script builds it
runner = CliRunner()
STEPS = ["--steps", "2", "--propagation-steps", "1", "--color-fix", "wavelet", "--seed", "7"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """10 frames of 32x24 at 24000/1001 with a tone and a start timecode."""
    return make_sample_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=10, width=32, height=24,
                            timecode="01:00:00:00")


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["upscale", *args], env=env, catch_exceptions=False)


def files_in(folder: Path) -> list[str]:
    """Every entry below ``folder``, hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_upscale_file_end_to_end_with_json_summary(release: Path, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "results" / "clip_4x.mp4"
    result = invoke(str(clip), "-o", str(out), "--weights", str(release), "--start", "1", "--end", "9",
                    "--json", *STEPS)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is the JSON document and nothing else
    # random networks: the banner is shown and the output can never pass for an upscale
    assert SELF_CHECK_BANNER in result.stderr
    assert summary["self_check"] is True and summary["notice"] == SELF_CHECK_BANNER
    written = tmp_path / "results" / "clip_4x_selfcheck_random.mp4"
    assert files_in(tmp_path / "results") == [written.name]  # no temporary file left next to it
    [entry] = summary["outputs"]
    assert entry["output"] == str(written) and entry["frames"] == 8
    assert entry["input_size"] == [32, 24] and entry["output_size"] == [128, 96]
    assert set(entry["stage_seconds"]) == {"flow", "denoise", "decode"}
    settings = summary["settings"]
    assert (settings["num_inference_steps"], settings["propagation_steps"], settings["color_fix"],
            settings["seed"]) == (2, [1], "wavelet", 7)

    info, src = probe(written), probe(clip)
    assert (info.width, info.height, info.num_frames, info.fps) == (128, 96, 8, src.fps)
    assert info.has_audio  # the source's tone, cut to frames [1, 9)
    assert abs(info.duration - 8 / float(src.fps)) < 1e-6
    assert info.start_timecode == "01:00:00:01"  # the source's timecode, offset by --start
    assert info.color_space == src.color_space


@pytest.mark.slow
def test_cli_output_equals_the_python_api(release: Path, clip: Path, tmp_path: Path) -> None:
    """Lossless PNG output of the CLI is bit-identical to VideoUpscaler.upscale with the same knobs."""
    out = tmp_path / "frames"
    result = invoke(str(clip), "-o", str(out), "--codec", "png", "--weights", str(release), "--quiet",
                    "--end", "6", "--prompt", "a cat", "--noise-level", "80", "--guidance-scale", "3", *STEPS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    # --quiet keeps the self-check warning, and only that
    assert result.stderr.strip() == f"WARNING: {SELF_CHECK_BANNER}"
    written = tmp_path / "frames_selfcheck_random"
    cli_frames = read_frames(written)
    api = VideoUpscaler.from_pretrained(release).upscale(
        str(clip), end=6, prompt="a cat", noise_level=80, guidance_scale=3.0, num_inference_steps=2,
        propagation_steps=(1,), color_fix="wavelet", seed=7)
    assert cli_frames.shape == api.shape == (6, 96, 128, 3)
    assert np.array_equal(cli_frames, api)


@pytest.mark.slow
def test_folder_of_videos_is_a_batch(release: Path, tmp_path: Path) -> None:
    src = tmp_path / "videos"
    src.mkdir()
    make_sample_clip(src / "a.mp4", frames=3, width=16, height=16, audio=False)
    make_sample_clip(src / "b.mov", frames=4, width=16, height=16, audio=False)
    (src / "notes.txt").write_text("not a video")
    out = tmp_path / "upscaled"
    result = invoke(str(src), "-o", str(out), "--weights", str(release), "--steps", "1", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["input_kind"] == "batch"
    assert files_in(out) == ["a_uav_selfcheck_random.mp4", "b_uav_selfcheck_random.mov"]
    assert [probe(out / name).num_frames for name in files_in(out)] == [3, 4]
    assert [o["frames"] for o in summary["outputs"]] == [3, 4]


@pytest.mark.slow
def test_folder_of_images_is_one_sequence(release: Path, tmp_path: Path) -> None:
    src = tmp_path / "shot"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        cv2.imwrite(str(src / f"f{i + 1}.png"), rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    result = invoke(str(src), "--weights", str(release), "--steps", "1", "--fps", "25", "--quiet")
    assert result.exit_code == 0, result.stderr
    written = tmp_path / "shot_uav_selfcheck_random.mp4"  # default name, beside the folder
    info = probe(written)
    assert (info.num_frames, info.width, info.height, info.fps) == (5, 80, 48, Fraction(25))


@pytest.mark.slow
def test_self_check_without_weights(clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"UAV_WEIGHTS": str(tmp_path / "nowhere"), "HOME": str(tmp_path)}
    result = invoke(str(clip), "-o", str(tmp_path / "demo.mp4"), "--self-check", "--steps", "1", "--end", "3",
                    "--json", env=env)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["weights"] == "(temporary tiny random release)" and summary["self_check"]
    assert (tmp_path / "demo_selfcheck_random.mp4").is_file() and not (tmp_path / "demo.mp4").exists()


@pytest.mark.slow
def test_real_size_input_runs_on_cpu(release: Path, tmp_path: Path) -> None:
    """A 320x240 clip through every stage on the CPU (1 step, no guidance, 2 frames)."""
    src = make_sample_clip(tmp_path / "sd.mp4", frames=2, width=320, height=240)
    t0 = time.perf_counter()
    result = invoke(str(src), "--weights", str(release), "--steps", "1", "--guidance-scale", "1",
                    "--propagation-steps", "0", "--color-fix", "adain", "--json")
    seconds = time.perf_counter() - t0
    assert result.exit_code == 0, result.stderr
    [entry] = json.loads(result.stdout)["outputs"]
    info = probe(entry["output"])
    assert (info.width, info.height, info.num_frames) == (1280, 960, 2)
    print(f"\n320x240, 2 frames, 1 step on CPU: {seconds:.1f} s; stages {entry['stage_seconds']}")


# ---------------------------------------------------------------------------- bad input
def _text_mp4(folder: Path) -> str:
    path = folder / "notes.mp4"
    path.write_text("these are notes, not a video\n" * 10)
    return str(path)


def _truncated_mp4(folder: Path) -> str:
    full = make_sample_clip(folder / "full.mp4", frames=6, width=32, height=24)
    path = folder / "cut.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return str(path)


def _truncated_faststart_mp4(folder: Path) -> str:
    """The index is intact (moov first) but the frame data stops two thirds in."""
    from io_helpers import make_clip

    full = make_clip(folder / "fast.mp4", num_frames=30, container_options={"movflags": "faststart"},
                     options={"crf": "0"})
    path = folder / "fastcut.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    full.unlink()
    return str(path)


def _zero_frame_mp4(folder: Path) -> str:
    import av

    path = folder / "empty.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        container.start_encoding()
    return str(path)


def _mixed_sizes(folder: Path) -> str:
    seq = folder / "mixed"
    seq.mkdir()
    cv2.imwrite(str(seq / "0001.png"), np.zeros((24, 32, 3), np.uint8))
    cv2.imwrite(str(seq / "0002.png"), np.zeros((20, 32, 3), np.uint8))
    return str(seq)


def _videos_and_images(folder: Path) -> str:
    mixed = folder / "both"
    mixed.mkdir()
    make_sample_clip(mixed / "a.mp4", frames=2, width=16, height=16, audio=False)
    cv2.imwrite(str(mixed / "0001.png"), np.zeros((16, 16, 3), np.uint8))
    return str(mixed)


BAD_INPUTS = {
    "missing file": (lambda d: str(d / "missing.mp4"), [], r"missing\.mp4: no such file"),
    "text file named .mp4": (_text_mp4, [], r"notes\.mp4: is not a video FFmpeg can read"),
    "truncated mp4": (_truncated_mp4, [], r"cut\.mp4: .*(truncated|not a video)"),
    "truncated mp4, index intact": (_truncated_faststart_mp4, [], r"fastcut\.mp4: is truncated"),
    "0-frame video": (_zero_frame_mp4, [], r"empty\.mp4: contains no video frames"),
    "image folder with mixed sizes": (_mixed_sizes, [], r"0002\.png: is 32x20 but"),
    "videos and images in one folder": (_videos_and_images, [], r"holds both videos"),
    "unknown codec": (None, ["--codec", "mpeg9"], r"--codec: unknown codec 'mpeg9'"),
    "pix_fmt of another codec": (None, ["--pix-fmt", "rgb48"], r"pix_fmt 'rgb48' is not available"),
    "suffix the codec cannot write": (None, ["-o", "{out}/x.avi"], r"must end in \.mp4"),
    "start past the end": (None, ["--start", "50"], r"start='?50'? is frame 50, past the last frame"),
    "bad propagation steps": (None, ["--propagation-steps", "24,x"], r"--propagation-steps must be"),
    "propagation step >= steps": (None, ["--steps", "4", "--propagation-steps", "5"], r"propagation_steps"),
    "noise level out of range": (None, ["--noise-level", "999"], r"noise_level must be in \[0, 350\]"),
    "unknown flow": (None, ["--flow", "magic"], r"--flow: unknown flow estimator 'magic'"),
    "unknown vae": (None, ["--vae", "2d"], r"--vae: expected 3d or video"),
    "no cuda": (None, ["--device", "cuda:7"], r"--device cuda:7"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_leaves_nothing(case: str, release: Path, clip: Path, tmp_path: Path) -> None:
    make, extra, pattern = BAD_INPUTS[case]
    if case == "no cuda" and __import__("torch").cuda.device_count() > 7:
        pytest.skip("this machine really has 8 GPUs")
    source = make(tmp_path) if make else str(clip)
    out_dir = tmp_path / "out"
    extra = [a.replace("{out}", str(out_dir)) for a in extra]
    result = invoke(source, "-o", str(out_dir / "result.mp4"), *extra, "--weights", str(release))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert files_in(out_dir) == []  # not even the output folder is left


def test_unwritable_output_folder(release: Path, clip: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = invoke(str(clip), "-o", str(blocker / "sub" / "out.mp4"), "--weights", str(release))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot be created" in result.stderr or "not a folder" in result.stderr
    if os.geteuid() != 0:  # root writes anywhere, so permissions only bind other users
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = invoke(str(clip), "-o", str(locked / "out.mp4"), "--weights", str(release))
        assert result.exit_code == 2 and "not writable" in result.stderr
        assert files_in(locked) == []


def test_json_mode_reports_errors_as_json(release: Path, tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.mp4"), "--weights", str(release), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"ok": False, "error": result.stderr.strip()[len("error: "):]}


def test_debug_shows_the_traceback(release: Path, tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.mp4"), "--weights", str(release), "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_failure_while_writing_leaves_no_output(release: Path, clip: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the first decoded chunk: no output, no temporary file, no folder made for it."""
    real = VideoUpscaler._generate

    def crash_after_first_chunk(self, *args, **kwargs):
        for n, chunk in enumerate(real(self, *args, **kwargs)):
            if n == 1:
                raise RuntimeError("simulated crash while decoding")
            yield chunk

    monkeypatch.setattr(VideoUpscaler, "_generate", crash_after_first_chunk)
    out_dir = tmp_path / "new" / "folder"
    result = invoke(str(clip), "-o", str(out_dir / "x.mp4"), "--weights", str(release), "--steps", "1",
                    "--quiet")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: internal error: RuntimeError: simulated crash while decoding (rerun with --debug for the traceback)")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()


def test_no_weights_found_names_where_it_looked(clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(str(clip), env={"UAV_WEIGHTS": str(tmp_path / "w"), "HOME": str(tmp_path)})
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith("error: no Upscale-A-Video weights found") and str(tmp_path / "w") in line
    assert "--self-check" in line and "\n" not in line


def test_self_check_refuses_real_weights(release: Path, clip: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    shutil.copytree(release, real)
    (real / "UAV_TINY_RANDOM_WEIGHTS").unlink()  # now it looks like a genuine release
    result = invoke(str(clip), "--weights", str(real), "--self-check")
    assert result.exit_code == 2 and "holds real weights" in result.stderr


# ---------------------------------------------------------------------------- contracts
def test_help_lists_every_documented_flag() -> None:
    result = runner.invoke(app, ["upscale", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--output", "--prompt", "--negative-prompt", "--noise-level", "--guidance-scale", "--steps",
                 "--propagation-steps", "--color-fix", "--flow", "--tiling", "--tile-size", "--vae", "--seed",
                 "--start", "--end", "--codec", "--pix-fmt", "--crf", "--weights", "--device", "--dtype",
                 "--self-check", "--quiet", "--json", "--debug"):
        assert flag in result.stdout, flag


def test_progress_bars_follow_the_stages() -> None:
    """Denoise counts steps x tiles; the decode bar's clock starts when the last step ends."""
    import io

    from rich.console import Console

    from uav.cli.common import ProgressReporter

    console = Console(file=io.StringIO(), width=120)
    with ProgressReporter(console, label="clip[1].mp4", frames=5, steps=2, flow=True) as progress:
        tasks = {t.description.split(": ")[-1]: t for t in progress._progress.tasks}
        assert not tasks["denoise steps"].started and not tasks["decode + write frames"].started
        progress({"stage": "flow", "index": 0, "total": 1})
        progress({"stage": "flow", "index": 1, "total": 1})
        assert tasks["denoise steps"].started
        for tile in range(2):
            for step in range(2):
                progress({"stage": "denoise", "index": step, "total": 2, "tile": tile, "tiles": 2})
                if (tile, step) != (1, 1):
                    assert not tasks["decode + write frames"].started
        assert tasks["decode + write frames"].started
        denoise = progress._progress.tasks[1]
        assert (denoise.completed, denoise.total) == (4, 4) and "(2 tiles)" in denoise.description
        progress({"stage": "decode", "index": 0, "total": 2, "frames": 3})
        progress({"stage": "decode", "index": 1, "total": 2, "frames": 2})
        assert progress._progress.tasks[2].completed == 5
    assert list(progress.stage_seconds) == ["flow", "denoise", "decode"]
    assert progress.events == {"flow": 2, "denoise": 4, "decode": 2}
    assert "clip[1].mp4: decode + write frames" in console.file.getvalue()  # the label is not eaten as markup


def test_output_naming(tmp_path: Path) -> None:
    video = tmp_path / "shot.mov"
    video.write_bytes(b"")
    kind, [job] = cli_jobs.plan_jobs(str(video), None, "h264", self_check=False)
    assert kind == "video" and job.output == tmp_path / "shot_uav.mov"  # h264 can stay in .mov
    _, [job] = cli_jobs.plan_jobs(str(video), None, "png", self_check=True)
    assert job.output == tmp_path / "shot_uav_selfcheck_random"  # a PNG folder
    (tmp_path / "results").mkdir()
    _, [job] = cli_jobs.plan_jobs(str(video), str(tmp_path / "results"), "h265", self_check=False)
    assert job.output == tmp_path / "results" / "shot_uav.mov"  # an existing folder receives the file
    _, [job] = cli_jobs.plan_jobs(str(tmp_path / "seq" / "%04d.png"), None, "h264", self_check=True)
    assert job.output == tmp_path / "seq_uav_selfcheck_random.mp4"
    assert cli_jobs.mark_self_check(Path("o/x_selfcheck_random.mp4")) == Path("o/x_selfcheck_random.mp4")
    assert cli_jobs.mark_self_check(Path("o/f/%06d.png")) == Path("o/f_selfcheck_random/%06d.png")
    with pytest.raises(ValueError, match="is the input itself"):
        cli_jobs.plan_jobs(str(video), str(video), "h264", self_check=False)
