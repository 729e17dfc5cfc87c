"""uav.captioning: frame choice, captioner life cycle and one-line errors, on real clips and tiny models."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from captioner_models import LLAVA_WORDS, make_text_only_model, make_tiny_blip, make_tiny_llava
from io_helpers import decode_index, index_frame, make_clip

from uav.captioning import (
    Caption,
    CaptionError,
    ClipCaptioner,
    caption_clip,
    check_captioner,
    parse_caption_frame,
    parse_captioner_options,
    resolve_frame,
    select_frame,
)
from uav.registry import Registry, build_plugin_manager, hookimpl


class IndexReader:
    """A captioner that reads the frame index spelled by io_helpers' bands: which frame did it get?"""

    def __init__(self, log: dict, **options):
        self.log = log
        log["built"] += 1
        log["options"] = options

    def __call__(self, frames: torch.Tensor) -> str:
        assert frames.ndim == 4 and frames.shape[:2] == (1, 3)
        assert -1.0 <= frames.min() and frames.max() <= 1.0
        pixels = ((frames[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
        return f"frame\n  {decode_index(pixels)}  of the clip "

    def close(self) -> None:
        self.log["closed"] += 1


@pytest.fixture
def index_registry():
    log = {"built": 0, "closed": 0}

    class Plugin:
        @hookimpl
        def register_captioners(self, register):
            register("index-reader", lambda **options: IndexReader(log, **options))

    pm = build_plugin_manager(load_entrypoints=False, blocked=[])
    pm.register(Plugin(), name="test-captioners")
    return Registry(pm), log


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "bands.mp4", num_frames=20)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return make_tiny_llava(tmp_path_factory.mktemp("llava"))


# ------------------------------------------------------------------------------ parsing
def test_frame_choices_parse_and_resolve():
    assert [parse_caption_frame(v) for v in ("first", " Middle ", "7", 0, 12)] == ["first", "middle", 7, 0, 12]
    for bad in ("last", "-1", -3, 1.5, True, None, ""):
        with pytest.raises(CaptionError, match="first, middle or a frame index"):
            parse_caption_frame(bad)
    assert [resolve_frame(f, 10) for f in ("first", "middle", 9)] == [0, 5, 9]
    assert [resolve_frame("middle", n) for n in (1, 2, 3)] == [0, 1, 1]
    with pytest.raises(CaptionError, match="caption frame 10 is out of range: the clip has 10 frame"):
        resolve_frame(10, 10)


def test_captioner_options_parse_as_key_value_strings():
    assert parse_captioner_options(["model=/m/llava", "instruction=Describe it: a=b", "seed=3"]) == {
        "model": "/m/llava", "instruction": "Describe it: a=b", "seed": "3"}
    assert parse_captioner_options(None) == {}
    for bad, match in [(["model"], "expected KEY=VALUE"), (["=x"], "expected KEY=VALUE"),
                       (["bad key=1"], "expected KEY=VALUE"), (["seed=1", "seed=2"], "'seed' is given twice")]:
        with pytest.raises(CaptionError, match=match):
            parse_captioner_options(bad)


# ------------------------------------------------------------------------------ frame choice
@pytest.mark.slow
def test_the_chosen_frame_of_a_video_is_the_one_captioned(clip, index_registry):
    registry, log = index_registry
    first = caption_clip(clip, "index-reader", registry=registry)
    assert first == Caption(text="frame 0 of the clip", captioner="index-reader", frame=0)
    assert first.to_dict() == {"caption": "frame 0 of the clip", "captioner": "index-reader", "frame": 0}
    assert caption_clip(clip, "index-reader", frame="middle", registry=registry).text == "frame 10 of the clip"
    assert caption_clip(clip, "index-reader", frame=13, registry=registry).frame == 13
    # within a shot's used range: indices count from its start, the result from the clip's first frame
    shot = caption_clip(clip, "index-reader", frame="middle", start=4, end=10, registry=registry)
    assert (shot.text, shot.frame) == ("frame 7 of the clip", 7)
    by_timecode = caption_clip(clip, "index-reader", frame="2", start="00:00:00:05", registry=registry)
    assert (by_timecode.text, by_timecode.frame) == ("frame 7 of the clip", 7)
    # each call builds its captioner and closes it again
    assert log["built"] == log["closed"] == 5


@pytest.mark.slow
def test_in_memory_frames_in_every_layout(index_registry):
    registry, _ = index_registry
    frames = np.stack([index_frame(k) for k in range(6)])  # (T, H, W, 3) uint8
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # (T, 3, H, W) in [-1, 1]
    for video in (frames, list(frames), tensor, tensor.permute(1, 0, 2, 3)[None],
                  (frames.astype(np.uint16) * 257)):
        caption = caption_clip(video, "index-reader", frame="middle", registry=registry)
        assert (caption.text, caption.frame) == ("frame 3 of the clip", 3)
    one = caption_clip(frames[4], "index-reader", registry=registry)  # a single (H, W, 3) frame
    assert (one.text, one.frame) == ("frame 4 of the clip", 0)
    assert caption_clip(frames, "index-reader", frame=1, start=2, end=5, registry=registry).frame == 3
    image, index = select_frame(tensor, 5)
    assert index == 5 and image.shape == (1, 3, *frames.shape[1:3]) and torch.equal(image, tensor[5:6])


def test_bad_frames_fail_before_any_captioner_is_built(clip, index_registry):
    registry, log = index_registry
    with pytest.raises(CaptionError, match="caption frame 20 is out of range: the clip has 20 frame"):
        caption_clip(clip, "index-reader", frame=20, registry=registry)
    with pytest.raises(CaptionError, match="caption frame 6 is out of range: the clip has 6 frame"):
        caption_clip(clip, "index-reader", frame=6, start=4, end=10, registry=registry)
    with pytest.raises(CaptionError, match="first, middle or a frame index"):
        caption_clip(clip, "index-reader", frame="last", registry=registry)
    with pytest.raises(ValueError, match="only 20 frames"):
        caption_clip(clip, "index-reader", end=30, registry=registry)
    with pytest.raises(ValueError, match="no such file"):
        caption_clip(clip.with_name("missing.mp4"), "index-reader", registry=registry)
    with pytest.raises(CaptionError, match="range .* is empty"):
        caption_clip(np.zeros((3, 8, 8, 3), np.uint8), "index-reader", start=3, registry=registry)
    assert log["built"] == 0


def test_a_clip_captioner_serves_many_clips_and_frees_once(clip, index_registry):
    registry, log = index_registry
    with ClipCaptioner("index-reader", {"model": "/x"}, registry=registry) as captioner:
        texts = [captioner.caption(clip, frame=k).text for k in (0, 1, 19)]
    assert texts == ["frame 0 of the clip", "frame 1 of the clip", "frame 19 of the clip"]
    assert log == {"built": 1, "closed": 1, "options": {"model": "/x"}}
    with pytest.raises(CaptionError, match="is closed"):
        captioner.caption(clip)
    captioner.close()  # idempotent
    assert log["closed"] == 1


# ------------------------------------------------------------------------------ real captioners
@pytest.mark.slow
def test_llava_captions_the_clip_and_its_model_is_freed(clip, tiny_llava, monkeypatch):
    from uav_captioners.hf import LocalChatCaptioner

    models, captioners = [], []
    load = LocalChatCaptioner.load

    def spying_load(self):
        model = load(self)
        models.append(weakref.ref(model))
        captioners.append(weakref.ref(self))
        return model

    monkeypatch.setattr(LocalChatCaptioner, "load", spying_load)
    caption = caption_clip(clip, "llava-local", {"model": str(tiny_llava), "max_new_tokens": "5", "device": "cpu"},
                           frame="middle")
    assert caption.captioner == "llava-local" and caption.frame == 10
    assert caption.text and set(caption.text.split()) <= LLAVA_WORDS and len(caption.text.split()) <= 5
    gc.collect()
    assert len(models) == 1 and models[0]() is None and captioners[0]() is None
    # the same request gives the same caption (seeded sampling)
    again = caption_clip(clip, "llava-local", {"model": tiny_llava, "max_new_tokens": 5}, frame=10)
    assert again == caption


def test_blip_captions_the_clip(clip, tmp_path):
    blip = make_tiny_blip(tmp_path / "blip")
    caption = caption_clip(clip, "blip-local", {"model": blip, "max_new_tokens": "4"})
    assert caption.captioner == "blip-local" and caption.frame == 0 and caption.text


def test_captioner_errors_are_one_line_caption_errors(clip, tiny_llava, tmp_path, monkeypatch):
    from uav_captioners.hf import LocalChatCaptioner

    def no_weights(self):
        raise AssertionError("checking a captioner must not load its weights")

    monkeypatch.setattr(LocalChatCaptioner, "load", no_weights)
    check_captioner("llava-local", {"model": str(tiny_llava)})  # cheap: folder, config and processor only
    bert = make_text_only_model(tmp_path)
    cases = [
        ("llava-local", {}, r"^the 'llava-local' captioner needs model="),
        ("llava-local", {"model": str(tmp_path / "nope")}, r"^captioner 'llava-local': captioner model folder not "
                                                           r"found: .*nope$"),
        ("llava-local", {"model": str(bert)}, r"^captioner 'llava-local': .* holds a 'bert' model, which is not"),
        ("llava-local", {"model": str(tiny_llava), "colour": "red"}, r"^captioner 'llava-local' has no option"),
        ("blip-local", {"model": str(tiny_llava)}, r"is a chat model; use the llava-local captioner for it$"),
        ("gpt-vision", {}, r"^unknown captioner 'gpt-vision'; installed: .*blip-local, llava-local"),
    ]
    for name, options, match in cases:
        for call in (lambda: check_captioner(name, options), lambda: caption_clip(clip, name, options)):
            with pytest.raises(CaptionError, match=match) as info:
                call()
            assert "\n" not in str(info.value)
