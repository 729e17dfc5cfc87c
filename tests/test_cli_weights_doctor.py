"""`uav weights` (search, verify, convert) and `uav doctor` on tiny random release folders."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av
import pytest
import torch
from typer.testing import CliRunner

import uav.cli
from uav import weights as R
from uav.cli.app import app
from uav.registry import default_registry
from uav.weights import make_tiny_release, tiny_unet, tiny_vae

uav.cli._load_commands()
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_release(tmp_path_factory.mktemp("w") / "upscale_a_video")


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def isolated_env(tmp_path: Path, weights: Path | None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No ./pretrained_models and an empty home, so only UAV_WEIGHTS can be found."""
    monkeypatch.chdir(tmp_path)
    return {"UAV_WEIGHTS": str(weights) if weights else str(tmp_path / "none"), "HOME": str(tmp_path)}


# ---------------------------------------------------------------------------- uav weights
def test_weights_lists_search_order_and_selection(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = isolated_env(tmp_path, tiny, monkeypatch)
    result = run("weights", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["env_var"] == "UAV_WEIGHTS" and report["selected"] == str(tiny)
    first, second, third = report["search_order"]
    assert first["path"] == str(tiny) and first["usable"] and first["tiny_random"] and first["missing"] == []
    assert first["parts"]["raft"] is None and first["parts"]["unet"].endswith("unet_video.safetensors")
    assert second["path"] == str(Path("pretrained_models") / "upscale_a_video") and not second["exists"]
    assert third["path"] == str(tmp_path / ".cache" / "uav" / "upscale_a_video")

    table = run("weights", env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0
    assert str(tiny) in table.stdout and "tiny RANDOM" in table.stdout and "uav upscale will use" in table.stdout


def test_weights_without_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = isolated_env(tmp_path, None, monkeypatch)
    report = json.loads(run("weights", "--json", env=env).stdout)
    assert report["selected"] is None and not any(e["exists"] for e in report["search_order"])
    result = run("weights", env=env)
    assert result.exit_code == 0 and "No usable weights found" in result.stderr


@pytest.mark.slow
def test_verify_loads_every_part_strictly(tiny: Path) -> None:
    result = run("weights", "verify", str(tiny), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["tiny_random"] and report["problems"] == []
    parts = report["parts"]
    unet_state = tiny_unet().state_dict()
    assert parts["unet"]["status"] == "ok" and parts["unet"]["tensors"] == len(unet_state)
    assert parts["unet"]["parameters"] == sum(v.numel() for v in unet_state.values())
    assert parts["unet"]["bytes"] == 4 * parts["unet"]["parameters"] and parts["unet"]["dtypes"] == ["float32"]
    for variant in ("3d", "video"):
        assert parts[f"vae_{variant}"]["tensors"] == len(tiny_vae(variant).state_dict())
    assert parts["raft"] == {"status": "missing"}
    assert parts["text_encoder"]["status"] == "ok" and parts["schedulers"]["status"] == "ok"

    table = run("weights", "verify", str(tiny), env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "unet" in table.stdout and "NOT an upscale" in table.stdout


def test_verify_reports_a_damaged_file_and_a_mismatched_config(tiny: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    unet_file = broken / "unet" / "unet_video.safetensors"
    unet_file.write_bytes(unet_file.read_bytes()[:1000])
    # the temporal decoder's config next to the per-frame decoder's weights: strict loading must refuse
    shutil.copy(broken / "vae" / "vae_video_config.json", broken / "vae" / "vae_3d_config.json")
    result = run("weights", "verify", str(broken), "--json")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert report["parts"]["unet"]["status"] == "error" and "unet_video.safetensors" in report["parts"]["unet"]["error"]
    assert report["parts"]["vae_3d"]["status"] == "error"
    assert report["parts"]["vae_video"]["status"] == "ok"
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {broken} is not usable: unet: cannot read weights file")


def test_verify_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = run("weights", "verify", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such folder"


@pytest.mark.slow
def test_convert_to_safetensors_round_trips(tmp_path: Path) -> None:
    folder = make_tiny_release(tmp_path / "bin_release", fmt="bin", with_text=False)
    before = R.load_unet(folder).state_dict()
    result = run("weights", "convert", str(folder), "--remove-original", "--json")
    assert result.exit_code == 0, result.stderr
    written = sorted(Path(p).relative_to(folder).as_posix() for p in json.loads(result.stdout)["written"])
    assert written == ["unet/unet_video.safetensors", "vae/vae_3d.safetensors", "vae/vae_video.safetensors"]
    assert not list(folder.rglob("*.bin"))
    after = R.load_unet(folder).state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    again = run("weights", "convert", str(folder))
    assert again.exit_code == 0 and "nothing to convert" in again.stdout


# ---------------------------------------------------------------------------- uav doctor
def test_doctor_json_reports_versions_gpus_ffmpeg_weights_plugins(tiny: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    env = isolated_env(tmp_path, tiny, monkeypatch)
    result = run("doctor", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["python"] == sys.version.split()[0]
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_available"] == torch.cuda.is_available()
    assert len(report["torch"]["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert report["ffmpeg"]["pyav"] == av.__version__
    assert report["ffmpeg"]["libraries"]["libavcodec"] == ".".join(map(str, av.library_versions["libavcodec"]))
    assert report["ffmpeg"]["encoders"]["png"] is True
    assert report["packages"]["diffusers"] and report["packages"]["opentimelineio"]
    assert report["weights"]["selected"] == str(tiny)
    assert any("tiny RANDOM" in p for p in report["problems"])  # random weights are not the release
    assert [p["name"] for p in report["plugins"]] == [p.name for p in default_registry().list_plugins()]


def test_doctor_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = isolated_env(tmp_path, None, monkeypatch)
    result = run("doctor", env={**env, "COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("uav doctor", "torch", "PyAV", "plugins", "no Upscale-A-Video weights found"):
        assert text in result.stdout, text


def test_every_command_is_registered() -> None:
    result = run("--help", env={"COLUMNS": "200"})
    for command in ("upscale", "weights", "doctor", "plugins", "eval", "compare"):
        assert command in result.stdout, command
