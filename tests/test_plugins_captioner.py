"""The ``blip-local`` and ``llava-local`` captioners on tiny random models saved to local folders."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from captioner_models import BLIP_VOCAB, LLAVA_WORDS, make_text_only_model, make_tiny_blip, make_tiny_llava

from uav.protocols import Captioner
from uav.registry import Registry

DEFAULT_QUESTION = "Describe this image and its style in a very detailed manner."


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    return make_tiny_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return make_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def _clip(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, 40, 48, generator=g) * 2 - 1


def test_both_captioners_are_registered(registry):
    assert {"blip-local", "llava-local"} <= set(registry.names("captioner"))
    summaries = {c.name: c.summary for c in registry.components("captioner")}
    assert "LLaVA" in summaries["llava-local"]


def test_local_captioner_loads_a_folder_and_captions_the_first_frame(tiny_blip, registry):
    captioner = registry.get("captioner", "blip-local", model=tiny_blip, max_new_tokens=6)
    assert isinstance(captioner, Captioner)
    clip = _clip()
    caption = captioner(clip)
    assert isinstance(caption, str) and caption.strip()
    assert set(caption.split()) <= set(BLIP_VOCAB[4:])  # decoded words, special tokens stripped
    assert "\n" not in caption
    # Only the first frame is captioned (as the release does): later frames do not matter.
    other = clip.clone()
    other[1:] = -other[1:]
    assert captioner(other) == caption


def test_captioner_needs_a_local_folder(tmp_path, registry):
    for name in ("blip-local", "llava-local"):
        with pytest.raises(ValueError, match="needs model="):
            registry.get("captioner", name)
        with pytest.raises(FileNotFoundError, match="captioner model folder not found"):
            registry.get("captioner", name, model=tmp_path / "missing")


def test_llava_captioner_describes_the_first_frame_with_the_papers_instruction(tiny_llava, registry):
    # options as the CLI passes them: strings
    captioner = registry.get("captioner", "llava-local", model=str(tiny_llava), max_new_tokens="6", device="cpu")
    assert isinstance(captioner, Captioner)
    assert DEFAULT_QUESTION in captioner.conversation
    assert captioner.conversation.startswith("USER: <image>") and captioner.conversation.endswith("ASSISTANT:")
    assert (captioner.temperature, captioner.top_p, captioner.short_side) == (0.2, 0.7, 512)
    assert not captioner.loaded, "weights load on the first caption, not when the folder is checked"
    clip = _clip()
    caption = captioner(clip)
    assert captioner.loaded
    assert isinstance(caption, str) and caption == " ".join(caption.split()) and caption
    words = caption.split()
    assert 1 <= len(words) <= 6 and set(words) <= LLAVA_WORDS  # the answer only: no <image>, no prompt echo
    # seeded sampling: the same frame gives the same caption; only the first frame counts
    other = clip.clone()
    other[1:] = -other[1:]
    assert captioner(other) == caption
    # what the processor sees: frame 0, bicubic-resized to a short side of 512 (SPEC §7.7), and the chat text
    spy = _ProcessorSpy(captioner.processor)
    captioner.processor = spy
    assert captioner(clip) == caption
    (seen,) = spy.calls
    assert seen["text"] == captioner.conversation
    assert seen["images"].size == (614, 512)
    def bicubic_512(frame: torch.Tensor) -> np.ndarray:
        pixels = ((frame.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
        return np.asarray(Image.fromarray(pixels).resize((614, 512), Image.BICUBIC))

    assert np.array_equal(np.asarray(seen["images"]), bicubic_512(clip[0]))
    assert not np.array_equal(np.asarray(seen["images"]), bicubic_512(clip[1]))

class _ProcessorSpy:
    """Records the processor calls of a captioner and forwards everything."""

    def __init__(self, processor):
        self.processor = processor
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.processor(**kwargs)

    def __getattr__(self, name):
        return getattr(self.processor, name)


def test_llava_instruction_and_decoding_are_configurable(tiny_llava, registry):
    captioner = registry.get("captioner", "llava-local", model=tiny_llava, instruction="a painting style",
                             temperature="0", max_new_tokens=4, dtype="fp32", device="cpu", short_side=0)
    assert captioner.conversation == "USER: <image> a painting style ASSISTANT:"
    assert captioner.temperature == 0.0 and captioner.dtype == torch.float32
    greedy = captioner(_clip())
    assert 1 <= len(greedy.split()) <= 4
    # greedy decoding does not depend on the seed
    reseeded = registry.get("captioner", "llava-local", model=tiny_llava, instruction="a painting style",
                            temperature=0, max_new_tokens=4, seed=7, short_side=0)
    assert reseeded(_clip()) == greedy
    for bad, match in [({"max_new_tokens": "0"}, "max_new_tokens"), ({"top_p": "1.5"}, "top_p"),
                       ({"dtype": "int8"}, "dtype"), ({"instruction": " "}, "instruction"),
                       ({"device": "warp-drive"}, "device"), ({"temperature": "hot"}, "temperature")]:
        with pytest.raises(ValueError, match=match):
            registry.get("captioner", "llava-local", model=tiny_llava, **bad)


@pytest.mark.parametrize("name", ["blip-local", "llava-local"])
@pytest.mark.slow
def test_close_frees_the_model_and_a_later_caption_reloads_it(name, tiny_blip, tiny_llava, registry):
    folder = tiny_blip if name == "blip-local" else tiny_llava
    captioner = registry.get("captioner", name, model=folder, max_new_tokens=3)
    first = captioner(_clip())
    model = weakref.ref(captioner.model)
    parameter = weakref.ref(next(captioner.model.parameters()))
    captioner.close()
    gc.collect()
    assert model() is None and parameter() is None and not captioner.loaded
    assert captioner(_clip()) == first  # reloads from the folder
    captioner.close()
    # the chosen dtype reaches the weights and the pixels
    half = registry.get("captioner", name, model=folder, max_new_tokens=3, dtype="bf16", device="cpu")
    assert half(_clip()) and next(half.model.parameters()).dtype == torch.bfloat16
    with half:
        pass
    assert not half.loaded


def test_wrong_model_types_are_one_line_errors(tiny_blip, tiny_llava, tmp_path, registry):
    bert = make_text_only_model(tmp_path)
    cases = [
        ("llava-local", tiny_blip, "'blip' model .* has no chat template"),
        ("blip-local", tiny_llava, "'llava' model .* is a chat model; use the llava-local captioner"),
        ("llava-local", bert, "holds a 'bert' model, which is not an image-text-to-text model"),
        ("blip-local", bert, "holds a 'bert' model, which is not an image-to-text model"),
        ("llava-local", tmp_path, "has no config.json"),
    ]
    for name, folder, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            registry.get("captioner", name, model=folder)
        assert "\n" not in str(info.value)


def test_unknown_options_name_the_valid_ones(tiny_llava, registry):
    with pytest.raises(ValueError, match=r"'llava-local' has no option 'colour'; options: model, device, dtype, "
                                         r"instruction"):
        registry.get("captioner", "llava-local", model=tiny_llava, colour="red")
    with pytest.raises(ValueError, match="'blip-local' has no option 'instruction'"):
        registry.get("captioner", "blip-local", model=tiny_llava, instruction="hi")
