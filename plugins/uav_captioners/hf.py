"""Captioners backed by local transformers model folders (``save_pretrained`` output).

Both captioners check their folder when they are built (it exists, holds a
``config.json`` of a model type they can run, and its processor loads) but load the
weights only on the first caption, so a wrong folder fails in a second, before any
upscaling, while a good one costs nothing until it is used. :meth:`close` drops the
weights again so the upscaler gets the (GPU) memory back. Nothing is downloaded:
every load passes ``local_files_only=True``.

Loading uses the ``dtype=`` argument of ``from_pretrained``, which transformers
added in 4.56 (it replaced ``torch_dtype``).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

Tensor = torch.Tensor

__all__ = ["LocalImageCaptioner", "LocalChatCaptioner", "DEFAULT_INSTRUCTION", "check_options"]

#: the question the release asks LLaVA-v1.5 about the first frame (SPEC §7.7)
DEFAULT_INSTRUCTION = "Describe this image and its style in a very detailed manner."

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


# ----------------------------------------------------------------------------- options
def check_options(name: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the valid options when ``options`` has an unknown key."""
    allowed = tuple(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"captioner {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(allowed)}")


def _int_option(key: str, value: Any, minimum: int) -> int:
    # options arrive as strings from the CLI (--captioner-option max_new_tokens=32)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an int >= {minimum}, got {value!r}")
    return value


def _float_option(key: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ValueError(f"{key} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{key} must be {bounds}, got {value!r}")
    return float(value)


def _device_option(value: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; an unavailable CUDA device is a one-line error."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {value}: CUDA is not available here; use device=cpu")
    return device


def _dtype_option(value: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA (how the release runs LLaVA) and float32 elsewhere."""
    if isinstance(value, torch.dtype):
        return value
    key = str(value).strip().lower().removeprefix("torch.")
    if key == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if key not in _DTYPES:
        raise ValueError(f"dtype must be auto, fp32, fp16 or bf16, got {value!r}")
    return _DTYPES[key]


# ----------------------------------------------------------------------------- folders
def _model_folder(name: str, model: str | Path | None, what: str) -> Path:
    if model is None:
        raise ValueError(f"the {name!r} captioner needs model=<local folder of {what}>")
    path = Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"captioner model folder not found: {path}")
    return path


def _model_type(name: str, path: Path) -> str:
    """The ``model_type`` of ``path/config.json``, read without importing the model code."""
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"captioner {name!r}: {path} has no config.json; expected a transformers model folder "
                         "(the output of save_pretrained)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        raise ValueError(f"captioner {name!r}: {config} is not a transformers model config (unreadable JSON)") from None
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"captioner {name!r}: {config} names no model_type; expected a transformers model folder")
    return model_type


def _image_text_model_types() -> set[str]:
    """Model types transformers can load as image(+text)-to-text generators."""
    from transformers.models.auto import modeling_auto

    types: set[str] = set()
    # the Vision2Seq mapping was folded into ImageTextToText in transformers 5
    for table in ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES"):
        types.update(getattr(modeling_auto, table, {}))
    return types


def _auto_model() -> Any:
    import transformers

    return getattr(transformers, "AutoModelForImageTextToText", None) or getattr(transformers, "AutoModelForVision2Seq")


def _first_frame_image(frames: Tensor) -> Any:
    from PIL import Image

    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a torch.Tensor of shape (T, 3, H, W), got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape (T, 3, H, W) with T >= 1, got {tuple(frames.shape)}")
    frame = ((frames[0].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(frame.permute(1, 2, 0).numpy(), mode="RGB")


def _one_line(text: str) -> str:
    # The release joins the answer's lines into one prompt (SPEC §7.7).
    return " ".join(text.split())


class _LocalCaptioner:
    """Shared life cycle: validate at build, load on first use, :meth:`close` frees."""

    #: registry name, used in messages
    name = "captioner"

    path: Path
    device: torch.device
    dtype: torch.dtype
    processor: Any
    model: Any

    def _open(self, path: Path, device: str | torch.device, dtype: torch.dtype | str, expected: str) -> None:
        """Take the image-text model in ``path`` (``expected`` words which kind) on ``device``
        in ``dtype``, its processor loaded; the model loads on first use."""
        self.device = _device_option(device)
        self.dtype = _dtype_option(dtype, self.device)
        self.model_type = _model_type(self.name, path)
        if self.model_type not in _image_text_model_types():
            raise ValueError(f"captioner {self.name!r}: {path} holds a {self.model_type!r} model, which is not an "
                             f"{expected}")
        self.path = path
        self.processor = self._load_processor(path, self.model_type)
        self.model = None

    def _load_processor(self, path: Path, model_type: str) -> Any:
        import transformers

        try:
            return transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"captioner {self.name!r}: the processor in {path} (model_type {model_type!r}) "
                             f"does not load: {_one_line(str(exc))}") from None

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self.model is not None

    def load(self) -> Any:
        """Load the weights onto ``device`` in ``dtype`` (done by the first caption) and return the model."""
        if self.model is None:
            model = _auto_model().from_pretrained(str(self.path), local_files_only=True, dtype=self.dtype)
            self.model = model.to(self.device).eval()
        return self.model

    def close(self) -> None:
        """Drop the weights and return cached GPU memory; a later caption loads them again."""
        if self.model is None:
            return
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self) -> "_LocalCaptioner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"{type(self).__name__}({str(self.path)!r}, device={self.device}, dtype={self.dtype}, {state})"


class LocalImageCaptioner(_LocalCaptioner):
    """``blip-local``: captions the first frame with an image-to-text model (BLIP, GIT, ...).

    Args:
        model: a local folder with a transformers image-to-text model and its
            processor (``save_pretrained`` output). Nothing is downloaded.
        device: where the model runs (default CPU; ``auto`` picks CUDA when present).
        prompt: optional text prefix for conditional captioning models.
        max_new_tokens: caption length limit (the release's LLaVA uses 64).
        dtype: model dtype: a ``torch.dtype`` or ``auto``/``fp32``/``fp16``/``bf16``
            (default float32).

    Raises:
        ValueError: no ``model``, a folder without a ``config.json``, a model type
            transformers cannot run as image-to-text, or a chat model (use ``llava-local``).
        FileNotFoundError: the folder does not exist.
    """

    name = "blip-local"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        prompt: str | None = None,
        max_new_tokens: int | str = 64,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        path = _model_folder(self.name, model, "a transformers image-to-text model")
        self.max_new_tokens = _int_option("max_new_tokens", max_new_tokens, 1)
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
        self.prompt = prompt or None
        self._open(path, device, dtype, "image-to-text model (expected e.g. blip, git)")
        if getattr(self.processor, "chat_template", None):
            # chat models want an instruction in their template, which this captioner does not write
            raise ValueError(f"captioner {self.name!r}: the {self.model_type!r} model in {path} is a chat model; "
                             "use the llava-local captioner for it")

    @torch.inference_mode()
    def __call__(self, frames: Tensor) -> str:
        """A one-line caption of ``frames[0]`` (``(T, 3, H, W)`` in ``[-1, 1]``)."""
        image = _first_frame_image(frames)
        model = self.load()
        kwargs: dict[str, Any] = {"images": image, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = self.prompt
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        ids = model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return _one_line(self.processor.batch_decode(ids, skip_special_tokens=True)[0])


class LocalChatCaptioner(_LocalCaptioner):
    """``llava-local``: asks a chat vision-language model (LLaVA-style) to describe the first frame.

    The instruction goes through the processor's chat template as one user turn
    holding the image and the text, and only the answer's tokens are decoded. The
    defaults follow the release (SPEC §7.7): the first frame resized so its short
    side is 512 (bicubic), the question :data:`DEFAULT_INSTRUCTION`, sampling with
    temperature 0.2 and top-p 0.7, one beam, at most 64 new tokens, newlines turned
    into spaces. Sampling is seeded, so a caption is reproducible.

    Args:
        model: a local folder with a transformers image-text-to-text chat model and
            its processor, e.g. a download of ``llava-hf/llava-1.5-13b-hf``.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp32``, ``fp16``, ``bf16``.
        instruction: the question asked about the frame.
        max_new_tokens: answer length limit.
        temperature: sampling temperature; ``0`` decodes greedily.
        top_p: nucleus sampling mass.
        seed: seed of the sampling.
        short_side: the frame is resized so its short side is this many pixels
            before the processor sees it; ``0`` keeps the frame's size.

    Raises:
        ValueError: no ``model``, a folder without a ``config.json``, a model type
            that is not an image-text-to-text model, or a processor without a chat
            template (a BLIP folder: use ``blip-local``).
        FileNotFoundError: the folder does not exist.
    """

    name = "llava-local"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: torch.dtype | str = "auto",
        instruction: str = DEFAULT_INSTRUCTION,
        max_new_tokens: int | str = 64,
        temperature: float | str = 0.2,
        top_p: float | str = 0.7,
        seed: int | str = 0,
        short_side: int | str = 512,
    ) -> None:
        path = _model_folder(self.name, model, "a transformers image-text-to-text chat model such as LLaVA")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty str, got {instruction!r}")
        self.instruction = instruction.strip()
        self.max_new_tokens = _int_option("max_new_tokens", max_new_tokens, 1)
        self.temperature = _float_option("temperature", temperature, 0.0)
        self.top_p = _float_option("top_p", top_p, 0.0, 1.0)
        self.seed = _int_option("seed", seed, 0)
        self.short_side = _int_option("short_side", short_side, 0)
        self._open(path, device, dtype, "image-text-to-text model (expected a LLaVA-style chat model such as llava)")
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"captioner {self.name!r}: the {self.model_type!r} model in {path} has no chat template, "
                             "so it cannot be asked an instruction; use a LLaVA-style chat model "
                             "(or the blip-local captioner for BLIP/GIT)")
        #: the chat-templated text the model is prompted with (the image stands in as its token)
        self.conversation: str = self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.instruction}]}],
            add_generation_prompt=True, tokenize=False,
        )

    def _image(self, frames: Tensor) -> Any:
        from PIL import Image

        image = _first_frame_image(frames)
        if self.short_side:
            w, h = image.size
            scale = self.short_side / min(w, h)
            image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
        return image

    @torch.inference_mode()
    def __call__(self, frames: Tensor) -> str:
        """A one-line description of ``frames[0]`` (``(T, 3, H, W)`` in ``[-1, 1]``)."""
        image = self._image(frames)
        model = self.load()
        inputs = self.processor(images=image, text=self.conversation, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        sample = self.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": 1, "do_sample": sample}
        if sample:
            options.update(temperature=self.temperature, top_p=self.top_p)
        else:
            # a checkpoint's generation_config may ask for sampling; greedy means greedy
            options.update(temperature=None, top_p=None, top_k=None)
        pad = getattr(self.processor.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.processor.tokenizer, "eos_token_id", None)
        devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            ids = model.generate(**inputs, pad_token_id=pad, **options)
        answer = ids[:, inputs["input_ids"].shape[1]:]
        return _one_line(self.processor.batch_decode(answer, skip_special_tokens=True)[0])
