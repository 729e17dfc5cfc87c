"""The optional ``blip-local`` captioner on a tiny random BLIP saved to a local folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uav.protocols import Captioner
from uav.registry import Registry

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", "the", "sky", "blue", "red"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    root = tmp_path_factory.mktemp("blip")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizer(str(root / "vocab.txt"), bos_token="[CLS]"),
    )
    config = BlipConfig(
        text_config=dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=32, encoder_hidden_size=32,
                         bos_token_id=2, sep_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(0)
    folder = root / "model"
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_local_captioner_loads_a_folder_and_captions_the_first_frame(tiny_blip):
    registry = Registry(load_entrypoints=False)
    captioner = registry.get("captioner", "blip-local", model=tiny_blip, max_new_tokens=6)
    assert isinstance(captioner, Captioner)
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(3, 3, 40, 48, generator=g) * 2 - 1
    caption = captioner(clip)
    assert isinstance(caption, str) and caption.strip()
    assert set(caption.split()) <= set(VOCAB[4:])  # decoded words, special tokens stripped
    assert "\n" not in caption
    # Only the first frame is captioned (as the release does): later frames do not matter.
    other = clip.clone()
    other[1:] = -other[1:]
    assert captioner(other) == caption


def test_captioner_needs_a_local_folder(tmp_path):
    registry = Registry(load_entrypoints=False)
    with pytest.raises(ValueError, match="needs model="):
        registry.get("captioner", "blip-local")
    with pytest.raises(FileNotFoundError, match="captioner model folder not found"):
        registry.get("captioner", "blip-local", model=tmp_path / "missing")
