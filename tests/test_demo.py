"""The README's two commands: the demo script runs honestly without weights, the test command is CI's."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from uav.cli.common import SELF_CHECK_BANNER
from uav.io import probe
from uav.weights import is_tiny_random

ROOT = Path(__file__).resolve().parents[1]


def _demo_env(out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "UAV_WEIGHTS"}
    env.update(UAV_DEMO_OUT=str(out), UAV_DEMO_SKIP_SETUP="1", COLUMNS="100", **extra)
    return env


@pytest.mark.skipif((ROOT / "pretrained_models" / "upscale_a_video").is_dir(),
                    reason="real weights are present: the demo would run the full model")
@pytest.mark.slow
def test_demo_without_weights_runs_a_labelled_self_check(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=_demo_env(out), capture_output=True,
                          text=True, timeout=600)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert SELF_CHECK_BANNER in said and "no Upscale-A-Video weights found" in said
    assert "Traceback" not in said

    sample = probe(out / "sample.mp4")
    assert (sample.width, sample.height, sample.num_frames, sample.has_audio) == (64, 48, 24, True)
    result = probe(out / "sample_uav_selfcheck_random.mp4")
    assert (result.width, result.height, result.num_frames, result.has_audio) == (256, 192, 24, True)
    assert not (out / "sample_uav.mp4").exists()  # a self-check never takes the name of an upscale
    assert is_tiny_random(out / "tiny_random_release")
    assert (out / "sample_selfcheck_frames.png").stat().st_size > 0


@pytest.mark.slow
def test_demo_with_explicit_weights_never_falls_back_to_the_self_check(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(tmp_path / "no_such_weights")],
                          env=_demo_env(out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --weights: folder")
    assert SELF_CHECK_BANNER not in proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sample.mp4"]


def test_readme_starts_with_exactly_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```[a-z]*\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    # the code block comes before any other section
    assert readme.index("```") < readme.index("\n## ")
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert (ROOT / "scripts" / "demo.sh").is_file() and (ROOT / "scripts" / "test.sh").is_file()


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md", "docs/cli.md", "docs/api.md",
                                  "docs/choosing-settings.md", "docs/weights.md"])
def test_docs_links_resolve(page: str) -> None:
    path = ROOT / page
    text = path.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local or page != "README.md"
    for target in local:
        assert (path.parent / target).exists(), f"{page} links to missing {target}"


def test_cli_reference_covers_every_upscale_option() -> None:
    """docs/cli.md documents each option `uav upscale --help` offers."""
    import typer

    import uav.cli

    uav.cli._load_commands()
    command = typer.main.get_command(uav.cli.app)
    reference = (ROOT / "docs" / "cli.md").read_text()
    weights = command.commands["weights"]
    commands = {"upscale": command.commands["upscale"], "doctor": command.commands["doctor"], "weights": weights,
                **{f"weights {n}": c for n, c in weights.commands.items()}}
    assert {"weights verify", "weights convert"} <= set(commands)
    for name, sub in commands.items():
        options = [opt for p in sub.params if p.param_type_name == "option" for opt in p.opts if opt.startswith("--")]
        for opt in options:
            if opt != "--help":
                assert f"`{opt}" in reference, f"docs/cli.md does not document {name} {opt}"
