"""Tiny randomly initialised captioning models saved to local folders, built in the test.

Nothing is downloaded: the configs are built with tiny sizes, the tokenizers from a
small word list (``BertTokenizer`` from a vocab file for BLIP, a ``tokenizers``
word-level model for LLaVA), and everything goes through ``save_pretrained`` so the
captioners load it exactly as they load a real checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

BLIP_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", "the", "sky", "blue",
              "red"]
#: special tokens first; ids 0-5 never appear in a decoded caption
LLAVA_VOCAB = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "USER:", "ASSISTANT:", "a", "photo", "of", "cat", "dog",
               "the", "sky", "blue", "red", "green", "sofa", "painting", "style"]
LLAVA_WORDS = set(LLAVA_VOCAB[5:])

#: a minimal chat template in the shape of llava-hf's: "USER: <image> question ASSISTANT:"
_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image> "
    "{% else %}{{ part['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_tiny_blip(root: Path) -> Path:
    """A random BLIP captioning model (``blip``) and its processor in ``root/model``."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(BLIP_VOCAB) + "\n")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizer(str(root / "vocab.txt"), bos_token="[CLS]"),
    )
    config = BlipConfig(
        text_config=dict(vocab_size=len(BLIP_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=32, encoder_hidden_size=32,
                         bos_token_id=2, sep_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    return _save(root / "model", BlipForConditionalGeneration, config, processor)


def make_tiny_llava(root: Path) -> Path:
    """A random ``LlavaForConditionalGeneration`` (CLIP vision tower, Llama language model),
    its ``LlavaProcessor`` and chat template in ``root/model``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(LLAVA_VOCAB)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.decoder = decoders.WordPiece()  # joins the words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>",
                                        extra_special_tokens={"image_token": "<image>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, image_token="<image>", chat_template=_LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=16, patch_size=8, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(LLAVA_VOCAB), hidden_size=16, intermediate_size=32,
                                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=3),
        image_token_index=LLAVA_VOCAB.index("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    return _save(root / "model", LlavaForConditionalGeneration, config, processor)


def _save(folder: Path, model_class: Any, config: Any, processor: Any) -> Path:
    """A ``model_class`` from ``config`` (seed 0: the same random weights each time) and its
    ``processor`` saved in ``folder``, as a checkpoint folder is laid out."""
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_text_only_model(root: Path) -> Path:
    """A tiny BERT (no vision part): a transformers folder of the wrong model type for a captioner."""
    from transformers import BertConfig, BertModel

    folder = root / "bert"
    BertModel(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(folder)
    return folder
