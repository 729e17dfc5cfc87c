"""``uav caption``: the caption alone on stdout, ``--json``, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from captioner_models import LLAVA_WORDS, make_text_only_model, make_tiny_blip, make_tiny_llava
from io_helpers import make_clip
from typer.testing import CliRunner

import uav.cli
from uav.captioning import caption_clip
from uav.cli.app import app

uav.cli._load_commands()
runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("captioners")
    return {"llava": make_tiny_llava(root / "llava"), "blip": make_tiny_blip(root / "blip"),
            "bert": make_text_only_model(root)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "bands.mp4", num_frames=12)


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_caption_prints_the_caption_alone(clip, models):
    result = run("caption", clip, "--captioner-option", f"model={models['llava']}",
                 "--captioner-option", "max_new_tokens=5", "--captioner-option", "device=cpu")
    assert result.exit_code == 0, result.stderr
    expected = caption_clip(clip, "llava-local", {"model": models["llava"], "max_new_tokens": 5, "device": "cpu"})
    assert result.stdout == expected.text + "\n"  # llava-local is the default captioner; nothing else on stdout
    assert set(expected.text.split()) <= LLAVA_WORDS


@pytest.mark.slow
def test_caption_json_names_the_caption_captioner_and_frame(clip, models):
    result = run("caption", clip, "--captioner", "blip-local", "--captioner-option", f"model={models['blip']}",
                 "--captioner-option", "max_new_tokens=4", "--frame", "middle", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"caption", "captioner", "frame"}
    assert doc["captioner"] == "blip-local" and doc["frame"] == 6
    assert doc["caption"] == caption_clip(clip, "blip-local", {"model": models["blip"], "max_new_tokens": 4},
                                          frame="middle").text
    ranged = json.loads(run("caption", clip, "--captioner", "blip-local", "--captioner-option",
                            f"model={models['blip']}", "--frame", "2", "--start", "3", "--end", "8", "--json").stdout)
    assert ranged["frame"] == 5


@pytest.mark.parametrize("case", ["missing folder", "no model", "wrong type", "chat model for blip", "no config",
                                  "unknown captioner", "unknown option", "bad option", "bad frame", "frame range",
                                  "missing input"])
def test_caption_errors_are_one_line_with_exit_code_2(case, clip, models, tmp_path):
    llava = ["--captioner-option", f"model={models['llava']}"]
    args = {
        "missing folder": [clip, "--captioner-option", f"model={tmp_path / 'nowhere'}"],
        "no model": [clip],
        "wrong type": [clip, "--captioner-option", f"model={models['bert']}"],
        "chat model for blip": [clip, "--captioner", "blip-local", *llava],
        "no config": [clip, "--captioner-option", f"model={tmp_path}"],
        "unknown captioner": [clip, "--captioner", "gpt-vision"],
        "unknown option": [clip, *llava, "--captioner-option", "colour=red"],
        "bad option": [clip, *llava, "--captioner-option", "max_new_tokens"],
        "bad frame": [clip, *llava, "--frame", "last"],
        "frame range": [clip, *llava, "--frame", "12"],
        "missing input": [tmp_path / "missing.mp4", *llava],
    }[case]
    expected = {
        "missing folder": "captioner model folder not found", "no model": "needs model=",
        "wrong type": "holds a 'bert' model", "chat model for blip": "is a chat model",
        "no config": "has no config.json", "unknown captioner": "unknown captioner 'gpt-vision'",
        "unknown option": "has no option 'colour'", "bad option": "expected KEY=VALUE",
        "bad frame": "first, middle or a frame index", "frame range": "out of range", "missing input": "no such file",
    }[case]
    result = run("caption", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    as_json = run("caption", *args, "--json")
    assert as_json.exit_code == 2 and json.loads(as_json.stdout)["ok"] is False
