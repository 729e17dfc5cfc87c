"""A captioner backed by a local transformers image-to-text model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

Tensor = torch.Tensor

__all__ = ["LocalImageCaptioner"]


def _first_frame_image(frames: Tensor) -> Any:
    from PIL import Image

    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a torch.Tensor of shape (T, 3, H, W), got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape (T, 3, H, W) with T >= 1, got {tuple(frames.shape)}")
    frame = ((frames[0].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(frame.permute(1, 2, 0).numpy(), mode="RGB")


class LocalImageCaptioner:
    """Captions the first frame of a clip, as the published LLaVA step does (SPEC §7.7).

    Args:
        model: a local folder with a transformers image-to-text model and its
            processor (``save_pretrained`` output). Nothing is downloaded.
        device: where the model runs (default CPU).
        prompt: optional text prefix for conditional captioning models.
        max_new_tokens: caption length limit (the release's LLaVA uses 64).
        dtype: model dtype (default float32).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        prompt: str | None = None,
        max_new_tokens: int = 64,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if model is None:
            raise ValueError("the 'blip-local' captioner needs model=<local folder of a transformers image-to-text model>")
        path = Path(model).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"captioner model folder not found: {path}")
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
        try:
            import transformers
        except ImportError as exc:  # pragma: no cover - transformers is a declared dependency
            raise ImportError("the 'blip-local' captioner needs the transformers package") from exc
        self.path = path
        self.device = torch.device(device)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.processor = transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
        auto = getattr(transformers, "AutoModelForImageTextToText", None) or getattr(transformers, "AutoModelForVision2Seq")
        self.model = auto.from_pretrained(str(path), local_files_only=True, dtype=dtype).to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, frames: Tensor) -> str:
        """A one-line caption of ``frames[0]`` (``(T, 3, H, W)`` in ``[-1, 1]``)."""
        image = _first_frame_image(frames)
        kwargs: dict[str, Any] = {"images": image, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = self.prompt
        inputs = self.processor(**kwargs).to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        # The release joins lines into one prompt (SPEC §7.7).
        return " ".join(text.split())

    def __repr__(self) -> str:
        return f"LocalImageCaptioner({str(self.path)!r}, device={self.device})"
