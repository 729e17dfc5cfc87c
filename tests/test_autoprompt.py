"""``prompt="auto"`` through the API and ``uav upscale``: the caption reaches the text encoder.

Tiny random BLIP models saved in the test (nothing downloaded) write the captions; a
spy on ``VideoUpscaler.encode_prompt`` shows what the text encoder was given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from captioner_models import BLIP_VOCAB, make_tiny_blip
from io_helpers import make_clip
from typer.testing import CliRunner

import uav.captioning as captioning
import uav.cli
from uav import VideoUpscaler
from uav.captioning import CaptionError, caption_clip
from uav.cli.app import app
from uav.settings import SettingsError, UpscaleSettings

uav.cli._load_commands()
runner = CliRunner()
ADDED = UpscaleSettings().added_prompt


@pytest.fixture(scope="module")
def blip(tmp_path_factory) -> Path:
    return make_tiny_blip(tmp_path_factory.mktemp("captioner") / "blip")


@pytest.fixture(scope="module")
def upscaler(release: Path) -> VideoUpscaler:
    return VideoUpscaler.from_pretrained(release, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "bands.mp4", num_frames=6)


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the text encoder is asked to encode, in order (the cache is bypassed)."""
    seen: list[str] = []
    real = VideoUpscaler.encode_prompt

    def spy(self: VideoUpscaler, text: str):
        seen.append(text)
        self._prompt_cache.pop(text, None)
        return real(self, text)

    monkeypatch.setattr(VideoUpscaler, "encode_prompt", spy)
    return seen


def _frames() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.random((3, 16, 16, 3)) * 255).astype(np.uint8)


def test_settings_accept_auto_and_the_caption_fields() -> None:
    s = UpscaleSettings.from_strings({"prompt": " Auto ", "captioner": "blip-local", "caption_frame": "4",
                                      "captioner_options": "model=/m;max_new_tokens=3"})
    assert s.auto_prompt and s.caption_frame == 4
    assert dict(s.captioner_options) == {"model": "/m", "max_new_tokens": "3"}
    assert s.to_dict()["captioner_options"] == {"model": "/m", "max_new_tokens": "3"}
    assert UpscaleSettings(captioner_options={"b": 1, "a": Path("/x")}).captioner_options == (("a", "/x"), ("b", 1))
    assert not UpscaleSettings(prompt="an automobile").auto_prompt
    assert UpscaleSettings().captioner == "llava-local" and UpscaleSettings().caption_frame == "first"
    for bad in ({"caption_frame": "last"}, {"caption_frame": -1}, {"caption_frame": True},
                {"captioner_options": {"not a key": "x"}}, {"captioner_options": ["model"]}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            UpscaleSettings(**bad)


@pytest.mark.slow
def test_api_auto_prompt_captions_and_encodes_the_caption(upscaler, blip, prompts) -> None:
    events: list[dict] = []
    options = {"model": str(blip), "max_new_tokens": 4}
    out = upscaler.upscale(_frames(), prompt="auto", captioner="blip-local", captioner_options=options,
                           caption_frame="middle", steps=1, seed=1, callback=events.append)
    assert out.shape == (3, 64, 64, 3)
    expected = caption_clip(_frames(), "blip-local", options, frame="middle")
    assert expected.frame == 1 and expected.text and set(expected.text.split()) <= set(BLIP_VOCAB)
    assert upscaler.last_caption == expected
    # the caption is the prompt, with the added prompt appended as for any prompt
    assert prompts[0] == f"{expected.text}, {ADDED}"
    assert not any("auto" in p.split(",")[0] for p in prompts)
    caption_events = [e for e in events if e["stage"] == "caption"]
    assert caption_events == [{"stage": "caption", "index": 1, "total": 1, **expected.to_dict()}]
    assert events.index(caption_events[0]) == 0  # captioned before any denoising

    # upscale_iter reports it the same way
    events.clear()
    chunks = list(upscaler.upscale_iter(_frames(), prompt="AUTO", captioner="blip-local",
                                        captioner_options=options, caption_frame="middle", steps=1, seed=1,
                                        callback=events.append))
    assert sum(c.shape[0] for c in chunks) == 3
    assert [e["caption"] for e in events if e["stage"] == "caption"] == [expected.text]
    assert upscaler.last_caption == expected


@pytest.mark.slow
def test_a_written_prompt_builds_no_captioner(upscaler, prompts, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a captioner was built for a written prompt")

    monkeypatch.setattr(captioning, "_build", refuse)
    upscaler.upscale(_frames(), prompt="a red sofa", steps=1, seed=1)
    assert upscaler.last_caption is None
    assert prompts[0] == f"a red sofa, {ADDED}"


def test_api_missing_captioner_folder_fails_before_upscaling(upscaler, tmp_path, monkeypatch) -> None:
    def no_denoising(*args, **kwargs):
        raise AssertionError("upscaling started")

    monkeypatch.setattr(VideoUpscaler, "_generate", no_denoising)
    with pytest.raises(CaptionError) as info:
        upscaler.check_inputs(prompt="auto", captioner="blip-local",
                              captioner_options={"model": str(tmp_path / "nowhere")})
    assert "\n" not in str(info.value) and "nowhere" in str(info.value)
    with pytest.raises(CaptionError):
        upscaler.upscale(_frames(), prompt="auto", captioner="blip-local",
                         captioner_options={"model": str(tmp_path / "nowhere")})


@pytest.mark.slow
def test_cli_prompt_auto_reaches_the_text_encoder_and_the_json(release, blip, clip, tmp_path, prompts) -> None:
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["upscale", str(clip), "-o", str(out), "--weights", str(release), "--steps", "1",
                                 "--seed", "3", "--prompt", "auto", "--captioner", "blip-local",
                                 "--captioner-option", f"model={blip}", "--captioner-option", "max_new_tokens=4",
                                 "--caption-frame", "2", "--start", "1", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = caption_clip(clip, "blip-local", {"model": blip, "max_new_tokens": 4}, frame=2, start=1)
    (record,) = summary["outputs"]
    assert record["caption"] == expected.text
    assert (record["captioner"], record["caption_frame"]) == ("blip-local", 3)  # frame 2 of [1, 6)
    assert "caption" in record["stage_seconds"]
    assert summary["settings"]["prompt"] == "auto"
    assert summary["settings"]["captioner_options"] == {"model": str(blip), "max_new_tokens": "4"}
    assert prompts[0] == f"{expected.text}, {ADDED}"
    assert Path(record["output"]).is_file()  # (named *_selfcheck_random: the release is tiny and random)


def test_cli_missing_captioner_folder_is_one_line_before_loading(clip, release, tmp_path, monkeypatch) -> None:
    def no_load(*args, **kwargs):
        raise AssertionError("the upscaler's weights were loaded")

    monkeypatch.setattr(VideoUpscaler, "from_pretrained", no_load)
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["upscale", str(clip), "-o", str(out), "--weights", str(release), "--prompt",
                                 "auto", "--captioner", "blip-local", "--captioner-option",
                                 f"model={tmp_path / 'missing'}"], catch_exceptions=False)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--caption-frame", "last"], "--caption-frame"),
    (["--captioner-option", "model"], "--captioner-option"),
])
def test_cli_bad_caption_options_are_one_line(clip, release, tmp_path, args, needle) -> None:
    result = runner.invoke(app, ["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "--weights", str(release),
                                 "--prompt", "auto", *args], catch_exceptions=False)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
