"""Built-in uav plugin: captioners.

There is deliberately no bundled model (the release uses LLaVA-v1.5-13B, SPEC §7.7);
both captioners load a local transformers folder that the user provides:

* ``llava-local`` asks a chat vision-language model (LLaVA-style, e.g.
  ``llava-hf/llava-1.5-13b-hf`` saved locally) the release's question about the frame;
* ``blip-local`` captions the frame with an image-to-text model (BLIP, GIT, ...).

transformers is imported only when a captioner is built. Both caption the first frame
of what they are given; :func:`uav.captioning.caption_clip` picks which frame that is.
"""

from __future__ import annotations

from typing import Any

from uav.registry import hookimpl

_BLIP_OPTIONS = ("model", "device", "dtype", "prompt", "max_new_tokens")
_LLAVA_OPTIONS = ("model", "device", "dtype", "instruction", "max_new_tokens", "temperature", "top_p", "seed",
                  "short_side")


def blip_local(**options: Any) -> Any:
    """Local transformers image-to-text model folder (BLIP, GIT, ...) captioning the first frame; options: model, device, dtype, prompt, max_new_tokens."""
    from .hf import LocalImageCaptioner, check_options

    check_options("blip-local", options, _BLIP_OPTIONS)
    return LocalImageCaptioner(**options)


def llava_local(**options: Any) -> Any:
    """Local LLaVA-style chat model folder describing the first frame as the release does; options: model, device, dtype, instruction, max_new_tokens, temperature, top_p, seed, short_side."""
    from .hf import LocalChatCaptioner, check_options

    check_options("llava-local", options, _LLAVA_OPTIONS)
    return LocalChatCaptioner(**options)


@hookimpl
def register_captioners(register: Any) -> None:
    """Register ``blip-local`` and ``llava-local``."""
    register("blip-local", blip_local)
    register("llava-local", llava_local)
