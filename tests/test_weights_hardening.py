"""Bad weights are refused with one line naming the file (and tensor): at `uav weights verify`,
at load through `uav upscale` and through the Python API. Also: what a folder holds, truthful
conversion reports, and the self-check warning of the Python API."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import uav.cli
from uav import VideoUpscaler
from uav import weights as W
from uav.cli.app import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_sample_clip import make_sample_clip  # noqa: E402

uav.cli._load_commands()
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return W.make_tiny_release(tmp_path_factory.mktemp("w") / "upscale_a_video")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=3, width=16, height=16)


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def copy_release(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest)
    (dest / W.TINY_RANDOM_MARKER).unlink()  # looks like a genuine release: no self-check excuses
    return dest


def poison(folder: Path, key_contains: str, change) -> tuple[Path, str]:
    """Rewrite one U-Net tensor with ``change(tensor)``; returns the file and the key."""
    path = folder / "unet" / "unet_video.safetensors"
    state = load_file(str(path))
    key = next(k for k in sorted(state) if key_contains in k)
    state[key] = change(state[key])
    save_file(state, str(path))
    return path, key


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


# ---------------------------------------------------------------------------- tensors
@pytest.mark.parametrize("kind", ["nan", "inf", "int8"])
@pytest.mark.slow
def test_unusable_tensors_fail_verify_and_load(kind: str, tiny: Path, clip: Path, tmp_path: Path) -> None:
    folder = copy_release(tiny, tmp_path / "rel")
    change = {
        "nan": lambda t: torch.where(torch.arange(t.numel()).view(t.shape) == 3, torch.nan, t),
        "inf": lambda t: torch.full_like(t, torch.inf),
        "int8": lambda t: (t * 10).to(torch.int8),
    }[kind]
    path, key = poison(folder, "conv_in.weight", change)
    expected = {"nan": "NaN", "inf": "infinite", "int8": "is int8"}[kind]

    result = run("weights", "verify", str(folder), "--no-text", "--json")
    assert result.exit_code == 2
    entry = json.loads(result.stdout)["parts"]["unet"]
    assert entry["status"] == "error" and str(path) in entry["error"] and key in entry["error"]
    line = one_error_line(result)
    assert str(path) in line and key in line and expected in line

    out = tmp_path / "out.mp4"
    result = run("upscale", str(clip), "-o", str(out), "--weights", str(folder), "--steps", "1")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(path) in line and key in line and expected in line
    assert not out.exists()

    with pytest.raises(W.ReleaseError, match=expected):
        VideoUpscaler.from_pretrained(folder, load_text_encoder=False)


def test_check_tensors_allows_only_counters_as_integers() -> None:
    W.check_tensors({"bn.num_batches_tracked": torch.tensor(3), "w": torch.ones(2, dtype=torch.bfloat16)}, "x")
    with pytest.raises(W.ReleaseError, match=r"x: tensor w is int64"):
        W.check_tensors({"w": torch.ones(2, dtype=torch.long)}, "x")
    with pytest.raises(W.ReleaseError, match=r"tensor w is complex64"):
        W.check_tensors({"w": torch.ones(2, dtype=torch.complex64)}, "x")


def test_refused_pickle_in_text_encoder_is_a_user_error(tiny: Path, clip: Path, tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = copy_release(tiny, tmp_path / "rel")
    for f in (folder / "text_encoder").glob("*.safetensors"):
        f.unlink()
    torch.save({"a": Evil()}, folder / "text_encoder" / "pytorch_model.bin")

    result = run("upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--weights", str(folder), "--steps", "1")
    assert result.exit_code == 2 and "pwned" not in result.stdout
    line = one_error_line(result)
    assert "refused: not a plain weights file" in line and "text_encoder" in line

    result = run("weights", "verify", str(folder), "--json")
    assert result.exit_code == 2
    assert "refused: not a plain weights file" in json.loads(result.stdout)["parts"]["text_encoder"]["error"]


@pytest.mark.parametrize("config", ['{"_class_name": "DDIMScheduler", "num_train_timesteps": "abc"}', "[1, 2]",
                                    "{not json"])
def test_garbage_scheduler_config_fails_at_load(config: str, tiny: Path, clip: Path, tmp_path: Path) -> None:
    folder = copy_release(tiny, tmp_path / "rel")
    cfg = folder / "scheduler" / "scheduler_config.json"
    cfg.write_text(config)
    result = run("upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--weights", str(folder), "--steps", "1")
    assert result.exit_code == 2
    assert str(cfg) in one_error_line(result)
    assert run("weights", "verify", str(folder), "--no-text").exit_code == 2


def test_garbage_network_config_is_a_release_error(tiny: Path, tmp_path: Path) -> None:
    folder = copy_release(tiny, tmp_path / "rel")
    cfg = folder / "unet" / "unet_video_config.json"
    cfg.write_text(json.dumps({"block_out_channels": "wide"}))
    with pytest.raises(W.ReleaseError, match="unet_video_config.json"):
        W.load_unet(folder)


# ---------------------------------------------------------------------------- what a folder holds
def test_self_check_with_an_unrelated_folder_says_what_it_holds(tiny: Path, clip: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    unrelated = tmp_path / "photos"
    (unrelated / "2024").mkdir(parents=True)
    (unrelated / "notes.txt").write_text("hi")
    partial = tmp_path / "partial"
    shutil.copytree(tiny / "unet", partial / "unet")
    real = copy_release(tiny, tmp_path / "real")
    cases = {
        empty: "holds nothing (an empty folder)",
        unrelated: "holds no Upscale-A-Video weights (2024/, notes.txt)",
        partial: "holds part of an Upscale-A-Video release (has unet; missing vae/vae_3d_config.json",
        real: "holds real weights",
    }
    for folder, said in cases.items():
        result = run("upscale", str(clip), "--weights", str(folder), "--self-check")
        assert result.exit_code == 2
        line = one_error_line(result)
        assert said in line, line
        assert "holds real weights" not in line or folder == real
    assert W.describe_folder(tiny) == "tiny RANDOM self-check networks"
    assert W.describe_folder(tmp_path / "nope") == "nothing (no such folder)"


# ---------------------------------------------------------------------------- convert
@pytest.mark.slow
def test_remove_original_after_a_plain_convert(tmp_path: Path) -> None:
    folder = W.make_tiny_release(tmp_path / "bin_release", fmt="bin", with_text=False)
    first = run("weights", "convert", str(folder), "--json")
    assert first.exit_code == 0
    report = json.loads(first.stdout)
    assert len(report["written"]) == 3 and report["removed"] == [] and report["removed_originals"] is False
    assert len(list(folder.rglob("*.bin"))) == 3

    second = run("weights", "convert", str(folder), "--remove-original", "--json")
    assert second.exit_code == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["written"] == [] and len(report["already_converted"]) == 3
    assert report["removed_originals"] is True and len(report["removed"]) == 3
    assert not list(folder.rglob("*.bin"))  # what --json says is what happened

    third = run("weights", "convert", str(folder), "--remove-original", "--json")
    assert json.loads(third.stdout)["removed_originals"] is False


@pytest.mark.slow
def test_a_stale_safetensors_that_differs_is_not_trusted(tmp_path: Path) -> None:
    folder = W.make_tiny_release(tmp_path / "bin_release", fmt="bin", with_text=False, vae=("3d",))
    W.convert_release(folder)
    st = folder / "unet" / "unet_video.safetensors"
    state = load_file(str(st))
    key = sorted(state)[0]
    state[key] = state[key] + 1
    save_file(state, str(st))
    result = run("weights", "convert", str(folder), "--remove-original")
    assert result.exit_code == 2 and "differs" in one_error_line(result)
    assert (folder / "unet" / "unet_video.bin").exists()  # nothing removed


# ---------------------------------------------------------------------------- self-check in the API
def test_api_warns_on_random_networks(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="uav"):
        VideoUpscaler.from_pretrained(tiny, load_text_encoder=False)
    [record] = [r for r in caplog.records if W.SELF_CHECK_NOTICE in r.getMessage()]
    assert record.levelno == logging.WARNING and str(tiny) in record.getMessage()
    caplog.clear()
    real = copy_release(tiny, tiny.parent / "unmarked")
    try:
        with caplog.at_level(logging.WARNING, logger="uav"):
            W.load_unet(real)
        assert not any(W.SELF_CHECK_NOTICE in r.getMessage() for r in caplog.records)
    finally:
        shutil.rmtree(real)


# ---------------------------------------------------------------------------- the self-check's input
@pytest.mark.slow
def test_self_check_runs_on_a_small_part_of_a_large_clip(tmp_path: Path) -> None:
    from uav.io import probe

    big = make_sample_clip(tmp_path / "big.mp4", frames=14, width=128, height=96, timecode="01:00:00:00")
    assert W.self_check_clip(big, start=0, end=2) is not None  # two frames, but too large
    cut = W.self_check_clip(big, start=2)
    assert cut is not None and cut.frames.shape == (10, 72, 96, 3)  # 96 px long side; 24*64*48 // (96*72) frames
    assert cut.writer_options["audio_start_frame"] == 2 and cut.writer_options["audio_end_frame"] == 12
    assert cut.writer_options["timecode"] == "01:00:00:02"
    assert "frames 2-11 of 2-13" in cut.note and "96x72 (downscaled from 128x96)" in cut.note

    small = make_sample_clip(tmp_path / "small.mp4", frames=4, width=32, height=24)
    assert W.self_check_clip(small) is None  # within the budget: the clip runs as it is

    out = tmp_path / "out.mp4"
    result = run("upscale", str(big), "-o", str(out), "--self-check", "--steps", "1", "--start", "2")
    assert result.exit_code == 0, result.stderr
    assert "frames 2-11 of 2-13" in " ".join(result.stderr.split())
    written = probe(tmp_path / "out_selfcheck_random.mp4")
    assert (written.width, written.height, written.num_frames, written.has_audio) == (384, 288, 10, True)
    assert not out.exists()


def test_raft_weights_with_nan_are_refused(tmp_path: Path) -> None:
    from torchvision.models.optical_flow import raft_large
    from uav_flow.raft import load_raft_state_dict

    state = raft_large(weights=None).state_dict()
    key = next(k for k in state if k.endswith("weight") and state[k].is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = torch.nan
    path = tmp_path / "raft-things.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"{path}: tensor {key} holds 1 NaN"):
        load_raft_state_dict(raft_large(weights=None), path)
