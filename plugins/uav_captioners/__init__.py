"""Built-in uav plugin: captioners.

There is deliberately no heavy default (the release uses LLaVA-v1.5-13B, SPEC §7.7).
``blip-local`` captions a clip's first frame with a transformers image-to-text model
(BLIP, GIT, ...) loaded from a local folder; transformers is imported only when
the captioner is built.
"""

from __future__ import annotations

from typing import Any

from uav.registry import hookimpl


def blip_local(**options: Any) -> Any:
    """Local transformers image-to-text model folder (BLIP, GIT, ...) captioning the first frame; options: model, device, prompt, max_new_tokens."""
    from .hf import LocalImageCaptioner

    return LocalImageCaptioner(**options)


@hookimpl
def register_captioners(register: Any) -> None:
    """Register ``blip-local``."""
    register("blip-local", blip_local)
